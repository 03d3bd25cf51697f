{#-
    No feature of a flight may draw on data timed at or after its prediction
    instant: weather observed before it, the plane's previous departure before it,
    and the instant itself the declared horizon before the scheduled departure.
    Returns the offending rows.
-#}
with

training as (
    select * from {{ ref('training_flights') }}
),

violations as (
    select
        flight_id,
        predicted_at,
        weather_observed_at,
        plane_previous_departure_at
    from training
    where
        predicted_at != {{ prediction_instant('scheduled_departure_at') }}
        or weather_observed_at >= predicted_at
        or plane_previous_departure_at >= predicted_at
)

select * from violations
