with

source as (
    select * from {{ source('nycflights', 'airlines') }}
),

renamed as (
    select
        carrier,
        name as airline_name,
        _loaded_at
    from source
)

select * from renamed
