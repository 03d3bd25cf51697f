{#-
    Every flight's outcome and when it became known: the API counts these, as the
    training mart does, only once known before a request's prediction instant.
    Each row names its outcome event, so a stream event the API also receives for
    a flight already here is recognised by its event_id and counted once.
-#}
with

outcomes as (
    select * from {{ ref('int_flight_outcomes') }}
),

final as (
    select
        flight_id,
        event_id,
        origin,
        dest,
        carrier,
        tailnum,
        scheduled_departure_at,
        outcome_known_at,
        is_cancelled,
        is_late,
        departure_delay_minutes
    from outcomes
)

select * from final
