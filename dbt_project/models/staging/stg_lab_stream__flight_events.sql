with

source as (
    select * from {{ source('lab_stream', 'flight_events') }}
),

renamed as (
    select
        cast(event_id as varchar) as event_id,
        {{ surrogate_key(['year', 'month', 'day', 'carrier', 'flight', 'origin']) }} as flight_id,
        cast(kind as varchar) as event_kind,
        carrier,
        cast(flight as integer) as flight_number,
        origin,
        dest,
        tailnum,
        make_date(year, month, day) as flight_date,
        scheduled_departure_at,
        -- Quoted: DuckDB reads a bare `at` as a keyword.
        "at" as outcome_known_at,  -- noqa: RF06
        kind = 'cancelled' as is_cancelled,
        cast(departure_delay_minutes as double precision) as departure_delay_minutes,
        _source_file,
        _loaded_at
    from source
),

-- The same event landed twice counts once: its first landing, ties broken by the entry.
ranked as (
    select
        *,
        row_number() over (
            partition by event_id
            order by _loaded_at asc nulls last, _source_file asc nulls last
        ) as landing_rank
    from renamed
),

final as (
    select
        event_id,
        flight_id,
        event_kind,
        carrier,
        flight_number,
        origin,
        dest,
        tailnum,
        flight_date,
        scheduled_departure_at,
        outcome_known_at,
        is_cancelled,
        departure_delay_minutes,
        _loaded_at
    from ranked
    where landing_rank = 1
)

select * from final
