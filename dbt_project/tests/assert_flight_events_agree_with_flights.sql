{#-
    Every stream event agrees with its flight's batch row where both exist: the same
    kind (cancelled or not) and event id, the same instant the outcome became known
    (the event's `at`), the same delay (both unknown or equal), and the same
    destination, plane and scheduled departure. int_flight_outcomes takes the batch
    row and drops such an event, so a disagreement would otherwise go unseen: the
    API, which applies events as they arrive, would have counted something else.
    Returns each disagreeing event beside its batch row.
-#}
with

events as (
    select * from {{ ref('stg_lab_stream__flight_events') }}
),

outcomes as (
    select * from {{ ref('int_flight_outcomes') }}
),

batch_outcomes as (
    select * from outcomes
    where outcome_source = 'batch'
),

disagreements as (
    select
        events.event_id,
        batch_outcomes.event_id as batch_event_id,
        events.is_cancelled,
        batch_outcomes.is_cancelled as batch_is_cancelled,
        events.outcome_known_at,
        batch_outcomes.outcome_known_at as batch_outcome_known_at,
        events.departure_delay_minutes,
        batch_outcomes.departure_delay_minutes as batch_departure_delay_minutes,
        events.dest,
        batch_outcomes.dest as batch_dest,
        events.tailnum,
        batch_outcomes.tailnum as batch_tailnum,
        events.scheduled_departure_at,
        batch_outcomes.scheduled_departure_at as batch_scheduled_departure_at
    from events
    inner join batch_outcomes
        on events.flight_id = batch_outcomes.flight_id
    where
        events.event_id != batch_outcomes.event_id
        or events.is_cancelled != batch_outcomes.is_cancelled
        or events.outcome_known_at != batch_outcomes.outcome_known_at
        or events.departure_delay_minutes is distinct from batch_outcomes.departure_delay_minutes
        or events.dest != batch_outcomes.dest
        or events.tailnum is distinct from batch_outcomes.tailnum
        or events.scheduled_departure_at != batch_outcomes.scheduled_departure_at
)

select * from disagreements
