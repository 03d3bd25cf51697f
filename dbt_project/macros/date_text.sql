{#-
    A date as 'YYYY-MM-DD' text (varchar), whatever the session's date style: the
    date part of a flight event's id. Postgres formats with to_char (a plain cast
    follows DateStyle); DuckDB has no to_char and formats with strftime.
-#}
{% macro date_text(date_expr) -%}
    {{ return(adapter.dispatch('date_text')(date_expr)) }}
{%- endmacro %}

{% macro default__date_text(date_expr) -%}
    cast(to_char({{ date_expr }}, 'YYYY-MM-DD') as varchar)
{%- endmacro %}

{% macro duckdb__date_text(date_expr) -%}
    strftime({{ date_expr }}, '%Y-%m-%d')
{%- endmacro %}
