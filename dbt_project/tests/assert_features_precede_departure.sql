{#-
    No feature of a flight may draw on data timed at or after its scheduled
    departure: the weather must be observed before the scheduled hour, and the
    history window must end before the flight's day. Returns the offending rows.
-#}
with

training as (
    select * from {{ ref('training_flights') }}
),

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

violations as (
    select
        training.flight_id,
        training.weather_observed_at,
        flights.scheduled_hour_at,
        training.history_window_end_date,
        training.flight_date
    from training
    inner join flights
        on training.flight_id = flights.flight_id
    where
        training.weather_observed_at >= flights.scheduled_hour_at
        or training.weather_observed_at >= training.scheduled_departure_at
        or training.history_window_end_date >= training.flight_date
)

select * from violations
