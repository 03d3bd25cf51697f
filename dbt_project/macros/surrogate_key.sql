{#-
    A stable text key from natural-key columns, the same on every engine: md5 of the
    columns cast to text, '|'-separated, with '∅' for null so a null and an empty
    string give different keys. (dbt_utils.generate_surrogate_key is not installable
    offline; md5 and varchar mean the same on DuckDB and Postgres.) A timestamptz as
    text follows the session's time zone: pass it as `<column> at time zone 'UTC'`.
    Cast to varchar: Postgres's md5 returns text, which an incremental run's schema
    check tells apart from the varchar a contracted mart declares.
-#}
{% macro surrogate_key(columns) -%}
    cast(md5(
        {%- for column in columns %}
        coalesce(cast({{ column }} as varchar), '∅'){% if not loop.last %} || '|' ||{% endif %}
        {%- endfor %}
    ) as varchar)
{%- endmacro %}
