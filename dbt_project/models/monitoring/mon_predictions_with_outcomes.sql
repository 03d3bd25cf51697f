{#-
    Every monitored prediction beside its flight's outcome, once the outcome is known
    (int_flight_outcomes: from the batch flights, or from the stream's event before
    the flight's month lands): matched by carrier, flight number, origin and scheduled
    departure. A cancelled flight never gets a label (it did not leave late; it did
    not leave), and a flight with no outcome yet has none either: label coverage counts both.
-#}

with

predictions as (
    select * from {{ ref('stg_lab_api__predictions') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

outcomes as (
    select * from {{ ref('int_flight_outcomes') }}
),

final as (
    select
        predictions.prediction_id,
        predictions.prediction_month,
        predictions.model_version,
        predictions.carrier,
        predictions.flight_number,
        predictions.origin,
        predictions.scheduled_departure_at,
        predictions.probability,
        predictions.is_delayed,
        outcomes.flight_id,
        outcomes.flight_id is not null as has_flight,
        coalesce(outcomes.is_cancelled, false) as is_cancelled,
        outcomes.is_late,
        outcomes.outcome_known_at
    from predictions
    left join outcomes
        on predictions.carrier = outcomes.carrier
        and predictions.flight_number = outcomes.flight_number
        and predictions.origin = outcomes.origin
        and predictions.scheduled_departure_at = outcomes.scheduled_departure_at
)

select * from final
