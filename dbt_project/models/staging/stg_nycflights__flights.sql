with

source as (
    select * from {{ source('nycflights', 'flights') }}
),

renamed as (
    select
        {{ surrogate_key(['year', 'month', 'day', 'carrier', 'flight', 'origin']) }} as flight_id,
        carrier,
        cast(flight as integer) as flight_number,
        tailnum,
        origin,
        dest,
        make_date(year, month, day) as flight_date,
        cast(hour as integer) as departure_hour_local,
        cast(hour * 60 + minute as integer) as departure_minute_of_day,
        time_hour as scheduled_hour_at,
        time_hour + minute * interval '1 minute' as scheduled_departure_at,
        {{ utc_month('time_hour') }} as flight_month,
        dep_time is null as is_cancelled,
        cast(dep_delay as double precision) as departure_delay_minutes,
        -- The delay counts from the scheduled minute, across midnight when it runs late.
        time_hour + (minute + dep_delay) * interval '1 minute' as actual_departure_at,
        cast(arr_delay as double precision) as arrival_delay_minutes,
        cast(distance as double precision) as distance_miles,
        _loaded_at
    from source
)

select * from renamed
