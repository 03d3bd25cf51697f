{#-
    A date plus (or minus) a number of days, still a date. Date + interval gives a
    timestamp on both engines, hence the cast; the one default implementation serves
    DuckDB and Postgres alike, and it dispatches so another adapter can override it.
-#}
{% macro add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('add_days')(date_expr, days)) }}
{%- endmacro %}

{% macro default__add_days(date_expr, days) -%}
    cast({{ date_expr }} + ({{ days }}) * interval '1 day' as date)
{%- endmacro %}
