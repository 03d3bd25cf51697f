with

source as (
    select * from {{ source('nycflights', 'weather') }}
),

renamed as (
    select
        -- time_hour as UTC wall time: a timestamptz as text follows the session's time zone
        {{ surrogate_key(['origin', "time_hour at time zone 'UTC'"]) }} as observation_id,
        origin,
        time_hour as observed_at,
        cast(temp as double precision) as temperature_f,
        cast(dewp as double precision) as dewpoint_f,
        cast(humid as double precision) as humidity_pct,
        cast(wind_dir as double precision) as wind_direction_deg,
        cast(wind_speed as double precision) as wind_speed_mph,
        cast(wind_gust as double precision) as wind_gust_mph,
        cast(precip as double precision) as precipitation_in,
        cast(pressure as double precision) as pressure_mb,
        cast(visib as double precision) as visibility_mi,
        _loaded_at
    from source
)

select * from renamed
