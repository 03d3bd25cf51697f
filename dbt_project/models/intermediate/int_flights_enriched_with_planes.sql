with

flights as (
    select * from {{ ref('stg_nycflights__flights') }}
),

planes as (
    select * from {{ ref('stg_nycflights__planes') }}
),

enriched as (
    select
        flights.flight_id,
        flights.tailnum,
        planes.tailnum is not null as has_plane_record,
        cast(extract(year from flights.flight_date) as integer) - planes.year_built as plane_age_years,
        planes.seat_count as plane_seat_count,
        planes.engine_count as plane_engine_count,
        planes.engine_type as plane_engine_type,
        planes.manufacturer as plane_manufacturer
    from flights
    left join planes
        on flights.tailnum = planes.tailnum
)

select * from enriched
