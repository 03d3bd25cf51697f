{#-
    Drift of every model input, and of the probability, per month and model version,
    against that version's fixed reference:
    - PSI on the reference bins, each share floored at 0.0001 (Evidently's rule) so an
      empty bin weighs in instead of dividing by zero;
    - a numeric feature's Wasserstein-1 distance to the reference's 100 quantiles
      (the area between the two CDFs), over the reference standard deviation, and
      the Kolmogorov-Smirnov statistic (their largest gap) beside it;
    - a categorical feature's Jensen-Shannon distance (base 2) over its bins
      (top categories, other, unseen, missing), and the bin whose share moved most.
    A feature drifts when its distance reaches `monitor_distance_alert`; one whose
    distance is undefined (a constant reference) falls back to the PSI alert band.
-#}

with

bins as (
    select * from {{ ref('mon_feature_bins') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

counts as (
    select * from {{ ref('int_prediction_feature_counts') }}
    where numeric_value is not null
    {% if is_incremental() %}
        and {{ month_filter('prediction_month') }}
    {% endif %}
),

features as (
    select * from {{ source('model_reference', 'reference_features') }}
),

quantiles as (
    select
        model_version,
        feature,
        quantile_value,
        1.0 / count(*) over (partition by model_version, feature) as weight
    from {{ source('model_reference', 'reference_quantiles') }}
),

floored as (
    select
        *,
        greatest(current_share, 0.0001) as current_floored,
        greatest(reference_share, 0.0001) as reference_floored,
        (current_share + reference_share) / 2 as mixture_share,
        abs(current_share - reference_share) as share_change
    from bins
),

by_bins as (
    select
        prediction_month,
        model_version,
        feature,
        sum((current_floored - reference_floored) * ln(current_floored / reference_floored)) as psi,
        sum(case when bin_kind = 'missing' then current_share else 0 end) as missing_rate,
        sum(case when bin_kind = 'missing' then reference_share else 0 end) as reference_missing_share,
        sqrt(greatest(0, (
            sum(case when current_share > 0 then current_share * ln(current_share / mixture_share) else 0 end)
            + sum(case when reference_share > 0 then reference_share * ln(reference_share / mixture_share) else 0 end)
        ) / (2 * ln(2)))) as js_distance_all_bins,
        max(share_change) as largest_share_change,
        sum(predictions) as predictions
    from floored
    group by prediction_month, model_version, feature
),

largest_change as (
    select
        prediction_month,
        model_version,
        feature,
        bin_label as largest_share_change_bin
    from (
        select
            prediction_month,
            model_version,
            feature,
            bin_label,
            row_number() over (
                partition by prediction_month, model_version, feature
                order by share_change desc, bin_index asc
            ) as change_rank
        from floored
    ) as ranked
    where change_rank = 1
),

current_totals as (
    select
        prediction_month,
        model_version,
        feature,
        sum(predictions) as predictions
    from counts
    group by prediction_month, model_version, feature
),

points as (
    select
        counts.prediction_month,
        counts.model_version,
        counts.feature,
        counts.numeric_value as point_value,
        cast(counts.predictions as double precision) / current_totals.predictions as current_weight,
        0.0 as reference_weight
    from counts
    inner join current_totals
        on counts.prediction_month = current_totals.prediction_month
        and counts.model_version = current_totals.model_version
        and counts.feature = current_totals.feature
    union all
    select
        current_totals.prediction_month,
        current_totals.model_version,
        current_totals.feature,
        quantiles.quantile_value as point_value,
        0.0 as current_weight,
        quantiles.weight as reference_weight
    from current_totals
    inner join quantiles
        on current_totals.model_version = quantiles.model_version
        and current_totals.feature = quantiles.feature
),

merged as (
    select
        prediction_month,
        model_version,
        feature,
        point_value,
        sum(current_weight) as current_weight,
        sum(reference_weight) as reference_weight
    from points
    group by prediction_month, model_version, feature, point_value
),

cdfs as (
    select
        prediction_month,
        model_version,
        feature,
        point_value,
        sum(current_weight) over cumulative as current_cdf,
        sum(reference_weight) over cumulative as reference_cdf,
        lead(point_value) over cumulative as next_point_value
    from merged
    window cumulative as (
        partition by prediction_month, model_version, feature
        order by point_value
        rows between unbounded preceding and current row
    )
),

wasserstein as (
    select
        prediction_month,
        model_version,
        feature,
        sum(abs(current_cdf - reference_cdf) * (next_point_value - point_value)) as wasserstein,
        max(abs(current_cdf - reference_cdf)) as ks_statistic
    from cdfs
    where next_point_value is not null
    group by prediction_month, model_version, feature
),

final as (
    select
        by_bins.prediction_month,
        by_bins.model_version,
        by_bins.feature,
        features.kind,
        features.importance,
        by_bins.predictions,
        by_bins.missing_rate,
        by_bins.reference_missing_share,
        by_bins.psi,
        case when features.kind = 'numeric' then wasserstein.wasserstein end as wasserstein,
        case
            when features.kind = 'numeric' and features.reference_std > 0
                then wasserstein.wasserstein / features.reference_std
        end as wasserstein_over_std,
        case when features.kind = 'numeric' then wasserstein.ks_statistic end as ks_statistic,
        case when features.kind = 'categorical' then by_bins.js_distance_all_bins end as js_distance,
        by_bins.largest_share_change,
        largest_change.largest_share_change_bin,
        case
            when by_bins.psi >= {{ var('monitor_psi_alert') | float }} then 'alert'
            when by_bins.psi >= {{ var('monitor_psi_warn') | float }} then 'warn'
            else 'ok'
        end as psi_band
    from by_bins
    inner join features
        on by_bins.model_version = features.model_version
        and by_bins.feature = features.feature
    inner join largest_change
        on by_bins.prediction_month = largest_change.prediction_month
        and by_bins.model_version = largest_change.model_version
        and by_bins.feature = largest_change.feature
    left join wasserstein
        on by_bins.prediction_month = wasserstein.prediction_month
        and by_bins.model_version = wasserstein.model_version
        and by_bins.feature = wasserstein.feature
)

select
    *,
    coalesce(
        coalesce(wasserstein_over_std, js_distance) >= {{ var('monitor_distance_alert') | float }},
        psi_band = 'alert'
    ) as is_drifted
from final
