{#-
    The `month` var as a filter on an incremental model's month column ('YYYY-MM'):
    `column = '<month>'` for a monthly run, `true` (everything) when the var is unset.
-#}
{% macro month_filter(column) -%}
    {%- if var('month') -%}
        {{ column }} = '{{ var("month") }}'
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}
