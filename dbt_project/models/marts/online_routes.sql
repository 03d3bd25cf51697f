with

routes as (
    select * from {{ ref('int_routes') }}
),

final as (
    select
        origin,
        dest,
        distance_miles
    from routes
)

select * from final
