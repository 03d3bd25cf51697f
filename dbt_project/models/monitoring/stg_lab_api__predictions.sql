{#-
    One row per flight and model version: the first prediction the log holds for it.
    A flight asked about again (a retry, a replay of the same month) is the same
    prediction, not another one, so replaying and landing a month twice changes no
    monitoring row. The model input comes out of the logged JSON once, typed, as
    `input_<feature>` (the request's own carrier, origin and dest are the flight key).
-#}
{%- set monitored = var('monitored_features') -%}
{%- set names = monitored['categorical'] + monitored['numeric'] -%}

with

source as (
    select * from {{ source('lab_api', 'predictions') }}
),

parsed as (
    select
        prediction_id,
        predicted_at,
        model_name,
        model_version,
        carrier,
        cast(flight as integer) as flight_number,
        tailnum,
        origin,
        dest,
        scheduled_departure_at,
        {{ utc_month('scheduled_departure_at') }} as prediction_month,
        probability,
        is_delayed,
        {{ json_document('features', names) }} as feature_values,
        row_number() over (
            partition by model_version, carrier, flight, origin, scheduled_departure_at
            order by predicted_at, prediction_id
        ) as nth_prediction
    from source
    {% if is_incremental() %}
        where {{ month_filter(utc_month('scheduled_departure_at')) }}
    {% endif %}
),

final as (
    select
        prediction_id,
        predicted_at,
        model_name,
        model_version,
        carrier,
        flight_number,
        tailnum,
        origin,
        dest,
        scheduled_departure_at,
        prediction_month,
        probability,
        is_delayed,
        {%- for name in names %}
            {%- set text = json_field('feature_values', name, loop.index) %}
            {{ text if name in monitored['categorical'] else json_number(text) }} as input_{{ name }}
            {%- if not loop.last %},{% endif %}
        {%- endfor %}
    from parsed
    where nth_prediction = 1
)

select * from final
