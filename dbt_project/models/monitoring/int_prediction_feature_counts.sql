{#-
    How many predictions of a month and model version saw each value of each model
    input (and of the probability, the prediction drift). Every drift figure is
    computed from these counts: many features take few distinct values, so this
    is far smaller than one row per prediction and feature.
-#}
{%- set monitored = var('monitored_features') -%}

with

predictions as (
    select * from {{ ref('stg_lab_api__predictions') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

final as (
    {%- for name in monitored['categorical'] + monitored['numeric'] + ['probability'] %}
        {%- set column = name if name == 'probability' else 'input_' ~ name %}
        {%- set numeric = name not in monitored['categorical'] %}
        {%- if not loop.first %}
            union all
        {%- endif %}
        select
            prediction_month,
            model_version,
            '{{ name }}' as feature,
            cast({{ column if numeric else 'null' }} as double precision) as numeric_value,
            cast({{ 'null' if numeric else column }} as varchar) as category,
            count(*) as predictions
        from predictions
        group by prediction_month, model_version, {{ column }}
    {%- endfor %}
)

select * from final
