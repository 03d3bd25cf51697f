{#-
    What was known of other flights at each flight's prediction instant: route,
    carrier and route-carrier history over `history_window_days`, the origin's last
    two hours of departures and three hours of cancellations, and the plane's
    previous departure. One row per operated flight.

    Outcomes and predictions share one time line: each outcome at the instant it
    became known, each flight to predict at its prediction instant (adding nothing
    to any sum). Every window stops one microsecond (the timestamps' resolution)
    before the current row, so a prediction counts exactly the outcomes known
    strictly before it: never its own flight, never a delay still unfolding.
-#}
{{ config(materialized="table") }}

{%- set before_now = "interval '1 microsecond' preceding" -%}
{#- In hours, not days: on Postgres a day of a timestamptz follows the session's time
    zone, so a window across a DST change would be an hour longer or shorter
    than the API's (and DuckDB's, pinned to UTC). -#}
{%- set history_days -%}
    range between interval '{{ var("history_window_days") | int * 24 }} hours' preceding and {{ before_now }}
{%- endset -%}

with

outcomes as (
    select * from {{ ref('int_flight_outcomes') }}
),

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
    where not is_cancelled
),

timeline as (
    select
        cast(null as varchar) as flight_id,
        origin,
        dest,
        carrier,
        tailnum,
        outcome_known_at as happened_at,
        case when is_cancelled then 0 else 1 end as departed,
        case when is_cancelled then 1 else 0 end as cancelled,
        case when is_late then 1 when not is_late then 0 end as late,
        -- Exact decimals, not floats: Postgres slides a window over an exact sum
        -- (subtracting what leaves the frame) but re-adds a float sum for every row.
        cast(departure_delay_minutes as decimal(12, 3)) as delay,
        case when not is_cancelled and tailnum is not null then outcome_known_at end as plane_departed_at
    from outcomes
    union all
    select
        flight_id,
        origin,
        dest,
        carrier,
        tailnum,
        {{ prediction_instant('scheduled_departure_at') }} as happened_at,
        0 as departed,
        0 as cancelled,
        null as late,
        null as delay,
        null as plane_departed_at
    from flights
),

windows as (
    select
        flight_id,
        tailnum,
        happened_at as predicted_at,
        sum(departed) over route_days as route_flights,
        sum(late) over route_days as route_late,
        sum(delay) over route_days as route_delay,
        sum(departed) over carrier_days as carrier_flights,
        sum(late) over carrier_days as carrier_late,
        sum(delay) over carrier_days as carrier_delay,
        sum(departed) over route_carrier_days as route_carrier_flights,
        sum(late) over route_carrier_days as route_carrier_late,
        sum(departed) over origin_two_hours as origin_departures,
        sum(late) over origin_two_hours as origin_late,
        sum(delay) over origin_two_hours as origin_delay,
        sum(cancelled) over origin_three_hours as origin_cancellations,
        max(plane_departed_at) over plane_so_far as plane_departed_at
    from timeline
    window
        route_days as (
            partition by origin, dest order by happened_at
            {{ history_days }}
        ),
        carrier_days as (
            partition by carrier order by happened_at
            {{ history_days }}
        ),
        route_carrier_days as (
            partition by origin, dest, carrier order by happened_at
            {{ history_days }}
        ),
        origin_two_hours as (
            partition by origin order by happened_at
            range between interval '2 hours' preceding and {{ before_now }}
        ),
        origin_three_hours as (
            partition by origin order by happened_at
            range between interval '3 hours' preceding and {{ before_now }}
        ),
        plane_so_far as (
            partition by tailnum order by happened_at
            range between unbounded preceding and {{ before_now }}
        )
),

-- A plane's departures, one per instant (the larger delay if the data holds two).
plane_departures as (
    select
        tailnum,
        outcome_known_at,
        max(departure_delay_minutes) as delay
    from outcomes
    where not is_cancelled and tailnum is not null
    group by tailnum, outcome_known_at
),

final as (
    select
        windows.flight_id,
        windows.predicted_at,
        cast(coalesce(windows.route_flights, 0) as integer) as route_flights_window,
        cast(windows.route_late as double precision) / nullif(windows.route_flights, 0) as route_late_share,
        cast(windows.route_delay as double precision) / nullif(windows.route_flights, 0) as route_mean_delay_minutes,
        cast(coalesce(windows.carrier_flights, 0) as integer) as carrier_flights_window,
        cast(windows.carrier_late as double precision) / nullif(windows.carrier_flights, 0) as carrier_late_share,
        cast(windows.carrier_delay as double precision)
        / nullif(windows.carrier_flights, 0) as carrier_mean_delay_minutes,
        cast(coalesce(windows.route_carrier_flights, 0) as integer) as route_carrier_flights_window,
        cast(windows.route_carrier_late as double precision)
        / nullif(windows.route_carrier_flights, 0) as route_carrier_late_share,
        cast(coalesce(windows.origin_departures, 0) as integer) as origin_departures_2h,
        cast(windows.origin_late as double precision) / nullif(windows.origin_departures, 0) as origin_late_share_2h,
        cast(windows.origin_delay as double precision)
        / nullif(windows.origin_departures, 0) as origin_mean_delay_minutes_2h,
        cast(coalesce(windows.origin_cancellations, 0) as integer) as origin_cancellations_3h,
        windows.plane_departed_at as plane_previous_departure_at,
        plane_departures.delay as plane_previous_delay_minutes,
        {{ hours_between('windows.plane_departed_at', 'windows.predicted_at') }} as plane_previous_departure_age_hours
    from windows
    left join plane_departures
        on windows.tailnum = plane_departures.tailnum
        and windows.plane_departed_at = plane_departures.outcome_known_at
    where windows.flight_id is not null
)

select * from final
