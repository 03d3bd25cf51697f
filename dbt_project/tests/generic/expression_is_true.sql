{#- Fails on every row where `expression` is not true. -#}
{% test expression_is_true(model, expression, column_name=none, where=none) %}
select *
from {{ model }}
where not ({{ expression }})
{% if where %} and {{ where }} {% endif %}
{% endtest %}
