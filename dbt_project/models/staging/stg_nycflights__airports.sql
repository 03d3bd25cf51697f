with

source as (
    select * from {{ source('nycflights', 'airports') }}
),

renamed as (
    select
        faa as airport_code,
        name as airport_name,
        cast(lat as double precision) as latitude,
        cast(lon as double precision) as longitude,
        cast(alt as integer) as altitude_ft,
        tzone as time_zone,
        _loaded_at
    from source
)

select * from renamed
