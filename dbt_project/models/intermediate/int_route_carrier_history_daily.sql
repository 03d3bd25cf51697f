{#-
    Point-in-time history, one row per route (origin, dest), carrier and day: what
    was known at the start of that day. Each window covers the
    `history_window_days` days ending the day BEFORE `as_of_date` (a RANGE frame
    that stops at 1 day preceding), so a flight never sees itself, its own day,
    or anything later.
-#}
{{ config(materialized='table') }}

{%- set window_frame -%}
    range between interval '{{ var("history_window_days") }} days' preceding and interval '1 day' preceding
{%- endset %}

with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

operated as (
    select
        origin,
        dest,
        carrier,
        flight_date,
        case when departure_delay_minutes > {{ var('late_departure_minutes') }} then 1 else 0 end as is_late,
        departure_delay_minutes
    from flights
    where not is_cancelled
),

calendar as (
    select distinct flight_date as as_of_date from flights
),

route_keys as (
    select distinct
        origin,
        dest
    from flights
),

carrier_keys as (
    select distinct carrier from flights
),

-- A key enters on the day it is first scheduled. Rows for earlier days would
-- reveal that the route will exist (knowledge from the future), and a
-- month-by-month run could not produce them, so backfills and full builds
-- would disagree.
route_carrier_keys as (
    select
        origin,
        dest,
        carrier,
        min(flight_date) as first_scheduled_date
    from flights
    group by origin, dest, carrier
),

route_days as (
    select
        origin,
        dest,
        flight_date,
        count(*) as flights,
        sum(is_late) as late,
        sum(departure_delay_minutes) as delay
    from operated
    group by origin, dest, flight_date
),

carrier_days as (
    select
        carrier,
        flight_date,
        count(*) as flights,
        sum(is_late) as late,
        sum(departure_delay_minutes) as delay
    from operated
    group by carrier, flight_date
),

route_carrier_days as (
    select
        origin,
        dest,
        carrier,
        flight_date,
        count(*) as flights,
        sum(is_late) as late
    from operated
    group by origin, dest, carrier, flight_date
),

-- The spines: every key on every calendar day, with that day's counts (null when none flew).

route_calendar as (
    select
        route_keys.origin,
        route_keys.dest,
        calendar.as_of_date,
        route_days.flights,
        route_days.late,
        route_days.delay
    from route_keys
    cross join calendar
    left join route_days
        on route_keys.origin = route_days.origin
        and route_keys.dest = route_days.dest
        and calendar.as_of_date = route_days.flight_date
),

carrier_calendar as (
    select
        carrier_keys.carrier,
        calendar.as_of_date,
        carrier_days.flights,
        carrier_days.late,
        carrier_days.delay
    from carrier_keys
    cross join calendar
    left join carrier_days
        on carrier_keys.carrier = carrier_days.carrier
        and calendar.as_of_date = carrier_days.flight_date
),

route_carrier_calendar as (
    select
        route_carrier_keys.origin,
        route_carrier_keys.dest,
        route_carrier_keys.carrier,
        calendar.as_of_date,
        route_carrier_days.flights,
        route_carrier_days.late
    from route_carrier_keys
    inner join calendar
        on route_carrier_keys.first_scheduled_date <= calendar.as_of_date
    left join route_carrier_days
        on route_carrier_keys.origin = route_carrier_days.origin
        and route_carrier_keys.dest = route_carrier_days.dest
        and route_carrier_keys.carrier = route_carrier_days.carrier
        and calendar.as_of_date = route_carrier_days.flight_date
),

-- The windows: sums over the `history_window_days` days before each calendar day.

route_history as (
    select
        origin,
        dest,
        as_of_date,
        sum(flights) over days_before as route_flights,
        sum(late) over days_before as route_late,
        sum(delay) over days_before as route_delay
    from route_calendar
    window days_before as (partition by origin, dest order by as_of_date {{ window_frame }})
),

carrier_history as (
    select
        carrier,
        as_of_date,
        sum(flights) over days_before as carrier_flights,
        sum(late) over days_before as carrier_late,
        sum(delay) over days_before as carrier_delay
    from carrier_calendar
    window days_before as (partition by carrier order by as_of_date {{ window_frame }})
),

route_carrier_history as (
    select
        origin,
        dest,
        carrier,
        as_of_date,
        sum(flights) over days_before as route_carrier_flights,
        sum(late) over days_before as route_carrier_late
    from route_carrier_calendar
    window days_before as (partition by origin, dest, carrier order by as_of_date {{ window_frame }})
),

final as (
    select
        {{ surrogate_key(['rc.origin', 'rc.dest', 'rc.carrier', 'rc.as_of_date']) }} as route_carrier_day_id,
        rc.origin,
        rc.dest,
        rc.carrier,
        rc.as_of_date,
        {{ add_days('rc.as_of_date', '-' ~ var('history_window_days')) }} as window_start_date,
        {{ add_days('rc.as_of_date', -1) }} as window_end_date,
        cast(coalesce(route_history.route_flights, 0) as integer) as route_flights_window,
        cast(route_history.route_late as double precision)
        / nullif(route_history.route_flights, 0) as route_late_share,
        cast(route_history.route_delay as double precision)
        / nullif(route_history.route_flights, 0) as route_mean_delay_minutes,
        cast(coalesce(carrier_history.carrier_flights, 0) as integer) as carrier_flights_window,
        cast(carrier_history.carrier_late as double precision)
        / nullif(carrier_history.carrier_flights, 0) as carrier_late_share,
        cast(carrier_history.carrier_delay as double precision)
        / nullif(carrier_history.carrier_flights, 0) as carrier_mean_delay_minutes,
        cast(coalesce(rc.route_carrier_flights, 0) as integer) as route_carrier_flights_window,
        cast(rc.route_carrier_late as double precision)
        / nullif(rc.route_carrier_flights, 0) as route_carrier_late_share
    from route_carrier_history as rc
    inner join route_history
        on rc.origin = route_history.origin
        and rc.dest = route_history.dest
        and rc.as_of_date = route_history.as_of_date
    inner join carrier_history
        on rc.carrier = carrier_history.carrier
        and rc.as_of_date = carrier_history.as_of_date
)

select * from final
