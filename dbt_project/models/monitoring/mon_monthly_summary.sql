{#-
    One row per month and model version: what the retrain rules read.
    - Performance decay is the primary trigger: the live ROC AUC, once at least
      `monitor_min_labelled` flights have outcomes, below the lower end of the
      version's own test-window 95% interval.
    - Drift alone counts by what the model relies on: the share of its feature
      importance carried by the drifting inputs. Weather drifts with the seasons;
      a model that leans little on weather does not retrain for it. A month with
      fewer than `monitor_min_predictions` predictions never alerts on drift.
-#}

with

performance as (
    select * from {{ ref('mon_performance') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

drift as (
    select * from {{ ref('mon_feature_drift') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

inputs as (
    select
        prediction_month,
        model_version,
        count(*) as monitored_features,
        sum(case when is_drifted then 1 else 0 end) as drifted_features,
        coalesce(
            sum(case when is_drifted then coalesce(importance, 0) else 0 end) / nullif(sum(coalesce(importance, 0)), 0),
            0
        ) as drifted_importance_share,
        max(psi) as max_feature_psi,
        max(missing_rate) as max_missing_rate
    from drift
    where feature != 'probability'
    group by prediction_month, model_version
),

most_drifted as (
    select
        prediction_month,
        model_version,
        feature as most_drifted_feature
    from (
        select
            prediction_month,
            model_version,
            feature,
            row_number() over (partition by prediction_month, model_version order by psi desc, feature asc) as psi_rank
        from drift
        where feature != 'probability'
    ) as ranked
    where psi_rank = 1
),

prediction as (
    select
        prediction_month,
        model_version,
        psi as prediction_psi,
        wasserstein_over_std as prediction_distance
    from drift
    where feature = 'probability'
),

final as (
    select
        performance.prediction_month,
        performance.model_version,
        performance.predictions,
        performance.labelled,
        performance.label_coverage,
        performance.roc_auc,
        performance.estimated_roc_auc,
        performance.reference_roc_auc_lo,
        performance.performance_decayed,
        inputs.monitored_features,
        inputs.drifted_features,
        inputs.drifted_importance_share,
        most_drifted.most_drifted_feature,
        inputs.max_feature_psi,
        inputs.max_missing_rate,
        prediction.prediction_psi,
        prediction.prediction_distance,
        coalesce(
            performance.predictions >= {{ var('monitor_min_predictions') | int }}
            and inputs.drifted_importance_share >= {{ var('monitor_drift_importance_share') | float }},
            false
        ) as drift_alert
    from performance
    left join inputs
        on performance.prediction_month = inputs.prediction_month
        and performance.model_version = inputs.model_version
    left join most_drifted
        on performance.prediction_month = most_drifted.prediction_month
        and performance.model_version = most_drifted.model_version
    left join prediction
        on performance.prediction_month = prediction.prediction_month
        and performance.model_version = prediction.model_version
)

select * from final
