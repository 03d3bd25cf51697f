{#- Every airport code the API accepts: the registry plus destinations flown to that it lacks. -#}
with

airports as (
    select * from {{ ref('stg_nycflights__airports') }}
),

routes as (
    select * from {{ ref('int_routes') }}
),

unregistered as (
    select distinct routes.dest as airport_code
    from routes
    left join airports
        on routes.dest = airports.airport_code
    where airports.airport_code is null
),

final as (
    select
        airport_code,
        airport_name,
        time_zone,
        true as is_in_registry
    from airports
    union all
    select
        airport_code,
        cast(null as varchar) as airport_name,
        cast(null as varchar) as time_zone,
        false as is_in_registry
    from unregistered
)

select * from final
