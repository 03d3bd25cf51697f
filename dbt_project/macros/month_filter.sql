{#-
    The month a run processes as a filter on an incremental model's month column
    ('YYYY-MM'): `column = '<month>'` for a monthly run, `true` (everything) when
    no month is given. The month is the `month` var or else the LAB_DBT_MONTH
    environment variable. `lab` passes the variable: it is read when the SQL is
    compiled, so a new month leaves dbt's partial parse valid, where a changed
    `--vars` makes dbt parse the whole project again (about 2 s of a monthly run here).
-#}
{% macro month_filter(column) -%}
    {%- set month = var('month') or env_var('LAB_DBT_MONTH', '') -%}
    {%- if month -%}
        {{ column }} = '{{ month }}'
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
