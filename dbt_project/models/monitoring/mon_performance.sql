{#-
    How each model version did per month, from its predictions and the outcomes landed so far:
    - live, on the labelled flights: ROC AUC (the rank statistic: ties count one half),
      average precision (scikit-learn's step-wise sum), Brier score, log loss, and the
      calibration gap (mean probability minus late share);
    - estimated from the probabilities alone, on every prediction, before any label
      lands (NannyML's CBPE, for a calibrated model): each flight counts as late with
      weight p and on time with weight 1 - p in the same formulas;
    - the estimate's error once the labels are in, and the version's own test-window
      ROC AUC with its 95% interval to judge decay against.
-#}

with

scored as (
    select * from {{ ref('mon_predictions_with_outcomes') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

reference as (
    select * from {{ source('model_reference', 'reference_models') }}
),

labelled as (
    select
        prediction_month,
        model_version,
        probability,
        cast(case when is_late then 1 else 0 end as double precision) as actual_late,
        cast(case when is_late then 0 else 1 end as double precision) as actual_on_time
    from scored
    where is_late is not null
),

-- one row per distinct probability: the rank statistics below work on these
scores as (
    select
        'live' as basis,
        prediction_month,
        model_version,
        probability,
        sum(actual_late) as late,
        sum(actual_on_time) as on_time
    from labelled
    group by prediction_month, model_version, probability
    union all
    select
        'estimated' as basis,
        prediction_month,
        model_version,
        probability,
        sum(probability) as late,
        sum(1 - probability) as on_time
    from scored
    group by prediction_month, model_version, probability
),

ranked as (
    select
        basis,
        prediction_month,
        model_version,
        late,
        on_time,
        sum(on_time) over ascending - on_time as on_time_below,
        sum(late) over descending as late_at_or_above,
        sum(on_time) over descending as on_time_at_or_above
    from scores
    window
        ascending as (
            partition by basis, prediction_month, model_version order by probability rows unbounded preceding
        ),
        descending as (
            partition by basis, prediction_month, model_version order by probability desc rows unbounded preceding
        )
),

rank_metrics as (
    select
        basis,
        prediction_month,
        model_version,
        case
            when sum(late) > 0 and sum(on_time) > 0
                then sum(late * (on_time_below + 0.5 * on_time)) / (sum(late) * sum(on_time))
        end as roc_auc,
        case
            when sum(late) > 0
                then sum(late * late_at_or_above / (late_at_or_above + on_time_at_or_above)) / sum(late)
        end as average_precision
    from ranked
    group by basis, prediction_month, model_version
),

counts as (
    select
        prediction_month,
        model_version,
        count(*) as predictions,
        count(is_late) as labelled,
        sum(case when is_cancelled then 1 else 0 end) as cancelled,
        sum(case when has_flight then 0 else 1 end) as unmatched,
        avg(probability) as mean_probability,
        avg(probability * (1 - probability)) as estimated_brier,
        avg(-(probability * ln(probability) + (1 - probability) * ln(1 - probability))) as estimated_log_loss
    from scored
    group by prediction_month, model_version
),

live as (
    select
        prediction_month,
        model_version,
        avg(actual_late) as late_share,
        avg((probability - actual_late) * (probability - actual_late)) as brier,
        avg(-ln(case when actual_late = 1 then probability else 1 - probability end)) as log_loss,
        avg(probability) - avg(actual_late) as calibration_gap
    from labelled
    group by prediction_month, model_version
),

final as (
    select
        counts.prediction_month,
        counts.model_version,
        counts.predictions,
        counts.labelled,
        counts.cancelled,
        counts.unmatched,
        cast(counts.labelled as double precision) / counts.predictions as label_coverage,
        live.late_share,
        counts.mean_probability,
        live_rank.roc_auc,
        live_rank.average_precision,
        live.brier,
        live.log_loss,
        live.calibration_gap,
        estimated_rank.roc_auc as estimated_roc_auc,
        estimated_rank.average_precision as estimated_average_precision,
        counts.estimated_brier,
        counts.estimated_log_loss,
        estimated_rank.roc_auc - live_rank.roc_auc as roc_auc_estimate_error,
        reference.roc_auc as reference_roc_auc,
        reference.roc_auc_lo as reference_roc_auc_lo,
        reference.roc_auc_hi as reference_roc_auc_hi,
        coalesce(
            counts.labelled >= {{ var('monitor_min_labelled') | int }}
            and live_rank.roc_auc < reference.roc_auc_lo,
            false
        ) as performance_decayed
    from counts
    left join live
        on counts.prediction_month = live.prediction_month
        and counts.model_version = live.model_version
    left join rank_metrics as live_rank
        on counts.prediction_month = live_rank.prediction_month
        and counts.model_version = live_rank.model_version
        and live_rank.basis = 'live'
    left join rank_metrics as estimated_rank
        on counts.prediction_month = estimated_rank.prediction_month
        and counts.model_version = estimated_rank.model_version
        and estimated_rank.basis = 'estimated'
    left join reference
        on counts.model_version = reference.model_version
)

select * from final
