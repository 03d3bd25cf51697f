{#-
    Hours (a double) from one timestamp to another, e.g. how old a weather observation is.
    Postgres takes the epoch of the interval between them; DuckDB subtracts the epochs
    of the two timestamps with its epoch() function.
-#}
{% macro hours_between(start_ts, end_ts) -%}
    {{ return(adapter.dispatch('hours_between')(start_ts, end_ts)) }}
{%- endmacro %}

{% macro default__hours_between(start_ts, end_ts) -%}
    cast(extract(epoch from ({{ end_ts }} - {{ start_ts }})) / 3600.0 as double precision)
{%- endmacro %}

{% macro duckdb__hours_between(start_ts, end_ts) -%}
    cast(epoch({{ end_ts }}) - epoch({{ start_ts }}) as double) / 3600.0
{%- endmacro %}
