{{
    config(
        materialized='incremental',
        unique_key='flight_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
    where not is_cancelled
    {% if is_incremental() %}
        and {{ month_filter('flight_month') }}
    {% endif %}
),

planes as (
    select * from {{ ref('int_flights_enriched_with_planes') }}
),

weather as (
    select * from {{ ref('int_flights_joined_to_weather') }}
),

known as (
    select * from {{ ref('int_flights_known_before_prediction') }}
),

routes as (
    select * from {{ ref('int_routes') }}
),

final as (
    select
        flights.flight_id,
        flights.flight_date,
        flights.flight_month,
        flights.scheduled_departure_at,
        -- every feature below is as of this instant, the declared horizon before departure
        known.predicted_at,
        {{ var('prediction_horizon_minutes') | int }} as prediction_horizon_minutes,
        flights.departure_delay_minutes,
        flights.departure_delay_minutes > {{ var('late_departure_minutes') | int }} as is_departure_delayed,
        -- schedule
        flights.carrier,
        flights.origin,
        flights.dest,
        cast(extract(month from flights.flight_date) as integer) as month_of_year,
        {{ iso_day_of_week('flights.flight_date') }} as day_of_week,
        flights.departure_hour_local,
        flights.departure_minute_of_day,
        routes.distance_miles,
        -- plane
        planes.has_plane_record,
        planes.plane_age_years,
        planes.plane_seat_count,
        planes.plane_engine_count,
        planes.plane_engine_type,
        planes.plane_manufacturer,
        -- weather observed before the prediction
        weather.weather_observed_at,
        weather.weather_age_hours,
        weather.temperature_f,
        weather.dewpoint_f,
        weather.humidity_pct,
        weather.wind_direction_deg,
        weather.wind_speed_mph,
        weather.wind_gust_mph,
        weather.precipitation_in,
        weather.pressure_mb,
        weather.visibility_mi,
        -- route and carrier outcomes known in the window before the prediction
        known.route_flights_window,
        known.route_late_share,
        known.route_mean_delay_minutes,
        known.carrier_flights_window,
        known.carrier_late_share,
        known.carrier_mean_delay_minutes,
        known.route_carrier_flights_window,
        known.route_carrier_late_share,
        -- the same day: the origin's last hours and the plane's previous departure
        known.origin_departures_2h,
        known.origin_late_share_2h,
        known.origin_mean_delay_minutes_2h,
        known.origin_cancellations_3h,
        known.plane_previous_departure_at,
        known.plane_previous_delay_minutes,
        known.plane_previous_departure_age_hours
    from flights
    inner join planes
        on flights.flight_id = planes.flight_id
    inner join weather
        on flights.flight_id = weather.flight_id
    inner join routes
        on flights.origin = routes.origin
        and flights.dest = routes.dest
    inner join known
        on flights.flight_id = known.flight_id
)

select * from final
