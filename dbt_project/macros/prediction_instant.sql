{#-
    When a flight's prediction is made: its scheduled departure minus the declared
    horizon (var `prediction_horizon_minutes`). Every feature counts only what was
    known strictly before this instant; the API computes the same instant.
-#}
{% macro prediction_instant(scheduled_departure_at) -%}
    ({{ scheduled_departure_at }} - {{ var('prediction_horizon_minutes') | int }} * interval '1 minute')
{%- endmacro %}
