{#-
    The weather a forecaster had at the prediction instant: the latest observation
    at the origin taken strictly before it, and at most `weather_lookback_hours`
    before it. Observations are hourly, on the hour, so the candidates are exactly
    the N whole hours before the instant: an equi-join both engines run as a hash
    join. Flights with none keep nulls.
-#}
with

flights as (
    select
        *,
        {{ prediction_instant('scheduled_departure_at') }} as predicted_at,
        -- The last whole hour strictly before the instant, as whole hours after the
        -- scheduled hour (negative: before it): floor((minutes after it - 1) / 60).
        cast(floor(
            (departure_minute_of_day % 60 - {{ var('prediction_horizon_minutes') | int }} - 1) / 60.0
        ) as integer) as last_hour_offset
    from {{ ref('stg_nycflights__flights') }}
),

weather as (
    select * from {{ ref('stg_nycflights__weather') }}
),

lookback as (
    {%- for hours in range(var('weather_lookback_hours')) %}
        {%- if not loop.first %}
            union all
        {%- endif %}
        select {{ hours }} as hours_before
    {%- endfor %}
),

candidate_hours as (
    select
        flights.flight_id,
        flights.origin,
        lookback.hours_before,
        flights.scheduled_hour_at
        + (flights.last_hour_offset - lookback.hours_before) * interval '1 hour' as candidate_at
    from flights
    cross join lookback
),

candidates as (
    select
        candidate_hours.flight_id,
        candidate_hours.hours_before,
        weather.observed_at,
        weather.temperature_f,
        weather.dewpoint_f,
        weather.humidity_pct,
        weather.wind_direction_deg,
        weather.wind_speed_mph,
        weather.wind_gust_mph,
        weather.precipitation_in,
        weather.pressure_mb,
        weather.visibility_mi,
        row_number() over (
            partition by candidate_hours.flight_id
            order by candidate_hours.hours_before
        ) as recency_rank
    from candidate_hours
    inner join weather
        on candidate_hours.origin = weather.origin
        and candidate_hours.candidate_at = weather.observed_at
),

latest as (
    select * from candidates
    where recency_rank = 1
),

final as (
    select
        flights.flight_id,
        latest.observed_at as weather_observed_at,
        {{ hours_between('latest.observed_at', 'flights.predicted_at') }} as weather_age_hours,
        latest.temperature_f,
        latest.dewpoint_f,
        latest.humidity_pct,
        latest.wind_direction_deg,
        latest.wind_speed_mph,
        latest.wind_gust_mph,
        latest.precipitation_in,
        latest.pressure_mb,
        latest.visibility_mi
    from flights
    left join latest
        on flights.flight_id = latest.flight_id
)

select * from final
