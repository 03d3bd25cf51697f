with

planes as (
    select * from {{ ref('stg_nycflights__planes') }}
),

final as (
    select
        tailnum,
        year_built as plane_year_built,
        seat_count as plane_seat_count,
        engine_count as plane_engine_count,
        engine_type as plane_engine_type,
        manufacturer as plane_manufacturer
    from planes
)

select * from final
