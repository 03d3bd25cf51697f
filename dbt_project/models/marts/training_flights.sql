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

history as (
    select * from {{ ref('int_route_carrier_history_daily') }}
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
        flights.departure_delay_minutes,
        flights.departure_delay_minutes > {{ var('late_departure_minutes') }} as is_departure_delayed,
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
        -- weather observed before the scheduled hour
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
        -- route and carrier history up to the day before
        history.window_end_date as history_window_end_date,
        history.route_flights_window,
        history.route_late_share,
        history.route_mean_delay_minutes,
        history.carrier_flights_window,
        history.carrier_late_share,
        history.carrier_mean_delay_minutes,
        history.route_carrier_flights_window,
        history.route_carrier_late_share
    from flights
    inner join planes
        on flights.flight_id = planes.flight_id
    inner join weather
        on flights.flight_id = weather.flight_id
    inner join routes
        on flights.origin = routes.origin
        and flights.dest = routes.dest
    left join history
        on flights.origin = history.origin
        and flights.dest = history.dest
        and flights.carrier = history.carrier
        and flights.flight_date = history.as_of_date
)

select * from final
