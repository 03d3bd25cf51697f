{#-
    ISO day of week of a date (1 = Monday .. 7 = Sunday), as an integer. extract(isodow ...)
    means the same on DuckDB and Postgres, so there is nothing to dispatch.
-#}
{% macro iso_day_of_week(date_expr) -%}
    cast(extract(isodow from {{ date_expr }}) as integer)
{%- endmacro %}
