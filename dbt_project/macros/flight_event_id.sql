{#-
    The id of a flight's outcome event, spelled as ingestion/events.py spells
    FlightEvent.event_id: '<local flight date>/<carrier>/<flight number>/<origin>/<kind>',
    the kind 'cancelled' or 'departed'. A batch row gets the id its event would have,
    so the batch and the stream name one outcome alike (the API dedupes by it).
-#}
{% macro flight_event_id(flight_date, carrier, flight_number, origin, is_cancelled) -%}
    cast(
        {{ date_text(flight_date) }}
        || '/' || {{ carrier }}
        || '/' || cast({{ flight_number }} as varchar)
        || '/' || {{ origin }}
        || '/' || case when {{ is_cancelled }} then 'cancelled' else 'departed' end
        as varchar
    )
{%- endmacro %}
