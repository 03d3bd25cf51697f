with

weather as (
    select * from {{ ref('stg_nycflights__weather') }}
),

final as (
    select
        observation_id,
        origin,
        observed_at,
        temperature_f,
        dewpoint_f,
        humidity_pct,
        wind_direction_deg,
        wind_speed_mph,
        wind_gust_mph,
        precipitation_in,
        pressure_mb,
        visibility_mi
    from weather
)

select * from final
