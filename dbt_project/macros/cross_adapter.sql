{#- Adapter differences live here, so model SQL is identical on DuckDB and Postgres. -#}

{% macro utc_month(ts) -%}
    {{ return(adapter.dispatch('utc_month')(ts)) }}
{%- endmacro %}

{% macro default__utc_month(ts) -%}
    to_char({{ ts }} at time zone 'UTC', 'YYYY-MM')
{%- endmacro %}

{% macro duckdb__utc_month(ts) -%}
    strftime({{ ts }} at time zone 'UTC', '%Y-%m')
{%- endmacro %}


{% macro hours_between(start_ts, end_ts) -%}
    {{ return(adapter.dispatch('hours_between')(start_ts, end_ts)) }}
{%- endmacro %}

{% macro default__hours_between(start_ts, end_ts) -%}
    cast(extract(epoch from ({{ end_ts }} - {{ start_ts }})) / 3600.0 as double precision)
{%- endmacro %}

{% macro duckdb__hours_between(start_ts, end_ts) -%}
    cast(epoch({{ end_ts }}) - epoch({{ start_ts }}) as double) / 3600.0
{%- endmacro %}


{% macro add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('add_days')(date_expr, days)) }}
{%- endmacro %}

{% macro default__add_days(date_expr, days) -%}
    cast({{ date_expr }} + ({{ days }}) * interval '1 day' as date)
{%- endmacro %}


{% macro iso_day_of_week(date_expr) -%}
    cast(extract(isodow from {{ date_expr }}) as integer)
{%- endmacro %}


{#- A stable text key from natural-key columns, the same on every engine. -#}
{% macro surrogate_key(columns) -%}
    md5(
        {%- for column in columns %}
        coalesce(cast({{ column }} as varchar), '∅'){% if not loop.last %} || '|' ||{% endif %}
        {%- endfor %}
    )
{%- endmacro %}


{#- `month` var as a filter on an incremental model's month column. -#}
{% macro month_filter(column) -%}
    {%- if var('month') -%}
        {{ column }} = '{{ var("month") }}'
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}


{% macro month_of_date(date_expr) -%}
    {{ return(adapter.dispatch('month_of_date')(date_expr)) }}
{%- endmacro %}

{% macro default__month_of_date(date_expr) -%}
    to_char({{ date_expr }}, 'YYYY-MM')
{%- endmacro %}

{% macro duckdb__month_of_date(date_expr) -%}
    strftime({{ date_expr }}, '%Y-%m')
{%- endmacro %}
