{#-
    'YYYY-MM' of a date (no time zone involved, unlike utc_month).
    Postgres formats with to_char; DuckDB has no to_char and formats with strftime.
-#}
{% macro month_of_date(date_expr) -%}
    {{ return(adapter.dispatch('month_of_date')(date_expr)) }}
{%- endmacro %}

{% macro default__month_of_date(date_expr) -%}
    to_char({{ date_expr }}, 'YYYY-MM')
{%- endmacro %}

{% macro duckdb__month_of_date(date_expr) -%}
    strftime({{ date_expr }}, '%Y-%m')
{%- endmacro %}
