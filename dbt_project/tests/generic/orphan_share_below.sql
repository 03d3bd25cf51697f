{#-
    A relationships test for keys that are allowed to be missing from the parent
    up to a documented share: returns one row (a failure) when the share of
    non-null child keys without a parent row exceeds `max_share`.
-#}
{% test orphan_share_below(model, column_name, to, field, max_share) %}
with

child as (
    select {{ column_name }} as key_value from {{ model }} where {{ column_name }} is not null
),

orphans as (
    select count(*) as orphan_count
    from child
    left join {{ to }} as parent on child.key_value = parent.{{ field }}
    where parent.{{ field }} is null
),

totals as (
    select count(*) as child_count from child
)

select orphans.orphan_count, totals.child_count
from orphans
cross join totals
where orphans.orphan_count > {{ max_share }} * totals.child_count
{% endtest %}
