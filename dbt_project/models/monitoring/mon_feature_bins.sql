{#-
    Each month's share of predictions in every fixed bin of its model version's
    reference, beside the reference's own share: the input of PSI, the
    Jensen-Shannon distance and the report's histograms. A bin no prediction fell
    in is still a row, with share 0.
-#}

with

counts as (
    select * from {{ ref('int_prediction_feature_counts') }}
    {% if is_incremental() %}
        where {{ month_filter('prediction_month') }}
    {% endif %}
),

bins as (
    select * from {{ source('model_reference', 'reference_bins') }}
),

categories as (
    select * from {{ source('model_reference', 'reference_categories') }}
),

numeric_assigned as (
    select
        counts.prediction_month,
        counts.model_version,
        counts.feature,
        bins.bin_index,
        counts.predictions
    from counts
    inner join bins
        on counts.model_version = bins.model_version
        and counts.feature = bins.feature
        and bins.bin_kind = 'range'
        and counts.numeric_value > bins.lower_edge
        and counts.numeric_value <= bins.upper_edge
),

-- a category the training window never held falls in the `unseen` bin
categorical_assigned as (
    select
        counts.prediction_month,
        counts.model_version,
        counts.feature,
        coalesce(categories.bin_index, unseen.bin_index) as bin_index,
        counts.predictions
    from counts
    inner join bins as unseen
        on counts.model_version = unseen.model_version
        and counts.feature = unseen.feature
        and unseen.bin_kind = 'unseen'
    left join categories
        on counts.model_version = categories.model_version
        and counts.feature = categories.feature
        and counts.category = categories.category
    where counts.category is not null
),

missing_assigned as (
    select
        counts.prediction_month,
        counts.model_version,
        counts.feature,
        bins.bin_index,
        counts.predictions
    from counts
    inner join bins
        on counts.model_version = bins.model_version
        and counts.feature = bins.feature
        and bins.bin_kind = 'missing'
    where counts.numeric_value is null and counts.category is null
),

assigned as (
    select * from numeric_assigned
    union all
    select * from categorical_assigned
    union all
    select * from missing_assigned
),

per_bin as (
    select
        prediction_month,
        model_version,
        feature,
        bin_index,
        sum(predictions) as predictions
    from assigned
    group by prediction_month, model_version, feature, bin_index
),

totals as (
    select
        prediction_month,
        model_version,
        feature,
        sum(predictions) as predictions
    from counts
    group by prediction_month, model_version, feature
),

final as (
    select
        totals.prediction_month,
        totals.model_version,
        totals.feature,
        bins.bin_index,
        bins.bin_kind,
        bins.bin_label,
        bins.share as reference_share,
        cast(coalesce(per_bin.predictions, 0) as bigint) as predictions,
        cast(coalesce(per_bin.predictions, 0) as double precision) / totals.predictions as current_share
    from totals
    inner join bins
        on totals.model_version = bins.model_version
        and totals.feature = bins.feature
    left join per_bin
        on totals.prediction_month = per_bin.prediction_month
        and totals.model_version = per_bin.model_version
        and totals.feature = per_bin.feature
        and bins.bin_index = per_bin.bin_index
)

select * from final
