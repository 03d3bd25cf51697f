{#-
    The mart's own instants, each checked against something the mart does not
    derive it from, so every condition can fail on a real row:
    - predicted_at is the declared horizon (the var, written out here rather than
      through the models' macro) before the flight's scheduled departure in staging,
      and the mart says which horizon it used;
    - the weather was observed strictly before predicted_at and within the
      look-back, and weather_age_hours is that observation's age at predicted_at;
    - the plane's previous departure was known strictly before predicted_at;
    - the flight itself had not left by predicted_at (else it would count its own
      outcome: the horizon must exceed the earliest departure ahead of schedule);
    - a share or mean is null exactly when its count is zero, and a route-carrier
      count never exceeds the route's or the carrier's.
    The feature values themselves are recomputed from the raw lake, independently
    of these models, by tests/warehouse/test_leakage.py. Returns the offending rows.
-#}
{%- set horizon_minutes = var('prediction_horizon_minutes') | int -%}

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
        training.predicted_at,
        training.prediction_horizon_minutes,
        flights.scheduled_departure_at,
        training.weather_observed_at,
        training.weather_age_hours,
        training.plane_previous_departure_age_hours
    from training
    left join flights
        on training.flight_id = flights.flight_id
    where
        flights.flight_id is null
        or training.prediction_horizon_minutes != {{ horizon_minutes }}
        or training.predicted_at != flights.scheduled_departure_at - {{ horizon_minutes }} * interval '1 minute'
        or training.weather_observed_at >= training.predicted_at
        or training.weather_observed_at
        < training.predicted_at - {{ var('weather_lookback_hours') }} * interval '1 hour'
        or (training.weather_observed_at is null) != (training.weather_age_hours is null)
        or abs(
            training.weather_age_hours
            - {{ hours_between('training.weather_observed_at', 'training.predicted_at') }}
        ) > 1e-9
        or training.plane_previous_departure_age_hours <= 0
        or flights.actual_departure_at < training.predicted_at
        or (training.route_flights_window = 0) != (training.route_late_share is null)
        or (training.carrier_flights_window = 0) != (training.carrier_late_share is null)
        or (training.route_carrier_flights_window = 0) != (training.route_carrier_late_share is null)
        or (training.origin_departures_2h = 0) != (training.origin_late_share_2h is null)
        or training.route_carrier_flights_window > training.route_flights_window
        or training.route_carrier_flights_window > training.carrier_flights_window
)

select * from violations
