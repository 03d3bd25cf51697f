{{
    config(
        materialized='incremental',
        unique_key='route_carrier_day_id',
        incremental_strategy='delete+insert',
        on_schema_change='fail',
    )
}}

with

history as (
    select * from {{ ref('int_route_carrier_history_daily') }}
    {% if is_incremental() %}
        where {{ month_filter(month_of_date('as_of_date')) }}
    {% endif %}
),

routes as (
    select * from {{ ref('int_routes') }}
),

final as (
    select
        history.route_carrier_day_id,
        history.origin,
        history.dest,
        history.carrier,
        history.as_of_date,
        {{ month_of_date('history.as_of_date') }} as as_of_month,
        history.window_end_date as history_window_end_date,
        routes.distance_miles,
        history.route_flights_window,
        history.route_late_share,
        history.route_mean_delay_minutes,
        history.carrier_flights_window,
        history.carrier_late_share,
        history.carrier_mean_delay_minutes,
        history.route_carrier_flights_window,
        history.route_carrier_late_share
    from history
    inner join routes
        on history.origin = routes.origin
        and history.dest = routes.dest
)

select * from final
