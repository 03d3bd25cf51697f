{#-
    'YYYY-MM' of a timestamp's UTC month: the `flight_month` key of incremental runs.
    Postgres formats with to_char; DuckDB has no to_char and formats with strftime.
    varchar, not Postgres's text: a contracted mart declares varchar, and an incremental
    run's schema check on Postgres tells the two apart.
-#}
{% macro utc_month(ts) -%}
    {{ return(adapter.dispatch('utc_month')(ts)) }}
{%- endmacro %}

{% macro default__utc_month(ts) -%}
    cast(to_char({{ ts }} at time zone 'UTC', 'YYYY-MM') as varchar)
{%- endmacro %}

{% macro duckdb__utc_month(ts) -%}
    strftime({{ ts }} at time zone 'UTC', '%Y-%m')
{%- endmacro %}
