{#-
    Reading many fields of one JSON text column, parsed once per row.
    `json_document(column, names)` is the parsed document, selected once in a CTE;
    `json_field(document, name, position)` is one field of it as text (null when the
    key is absent or JSON null). DuckDB extracts every path in one call into a list
    (reading the fields one by one re-parses the text each time, ~20x slower);
    Postgres parses to `json` and reads keys with ->>.
-#}
{% macro json_document(column, names) -%}
    {{ return(adapter.dispatch('json_document')(column, names)) }}
{%- endmacro %}

{% macro default__json_document(column, names) -%}
    cast({{ column }} as json)
{%- endmacro %}

{% macro duckdb__json_document(column, names) -%}
    json_extract_string({{ column }}, [{% for name in names %}'$.{{ name }}'{% if not loop.last %}, {% endif %}{% endfor %}])
{%- endmacro %}

{% macro json_field(document, name, position) -%}
    {{ return(adapter.dispatch('json_field')(document, name, position)) }}
{%- endmacro %}

{% macro default__json_field(document, name, position) -%}
    ({{ document }} ->> '{{ name }}')
{%- endmacro %}

{% macro duckdb__json_field(document, name, position) -%}
    {{ document }}[{{ position }}]
{%- endmacro %}

{#- A JSON scalar's text as a number: true/false count as 1/0, like the model's input. -#}
{% macro json_number(text) -%}
    cast(case {{ text }} when 'true' then '1' when 'false' then '0' else {{ text }} end as double precision)
{%- endmacro %}
