-- one row per SLA clock with the instants it reaches warning (>= warning fraction of the target),
-- critical (>= critical fraction) and breach (> target), as if it kept running after its stop.
-- Found from cumulative business seconds: the threshold's position on the policy's business clock
-- falls in exactly one window. Breach is "more than the target", so a target that runs out exactly at
-- closing time breaches at the next opening; warning and critical are reached at closing time.
with

segment_seconds as (
    select * from {{ ref('int_sla_clock_segment_seconds') }}
),

clocks as (
    select * from {{ ref('int_sla_clocks') }}
),

slots as (
    select * from {{ ref('int_business_window_slots') }}
),

thresholds as (
    select
        object_id,
        metric,
        clock_number,
        'warning' as threshold,
        round(target_seconds * warning_fraction) as threshold_seconds,
        false as is_strict
    from clocks
    union all
    select
        object_id,
        metric,
        clock_number,
        'critical' as threshold,
        round(target_seconds * critical_fraction) as threshold_seconds,
        false as is_strict
    from clocks
    union all
    select
        object_id,
        metric,
        clock_number,
        'breach' as threshold,
        target_seconds as threshold_seconds,
        true as is_strict
    from clocks
),

crossing_segments as (
    select
        thresholds.object_id,
        thresholds.metric,
        thresholds.clock_number,
        thresholds.threshold,
        thresholds.is_strict,
        segment_seconds.policy_key,
        segment_seconds.is_business_hours_only,
        segment_seconds.segment_start_at,
        thresholds.threshold_seconds - segment_seconds.counted_before_seconds as remaining_seconds,
        segment_seconds.business_at_start
        + thresholds.threshold_seconds
        - segment_seconds.counted_before_seconds as business_target
    from thresholds
    inner join segment_seconds
        on segment_seconds.object_id = thresholds.object_id
        and segment_seconds.metric = thresholds.metric
        and segment_seconds.clock_number = thresholds.clock_number
    where (
        thresholds.is_strict
        and segment_seconds.counted_before_seconds <= thresholds.threshold_seconds
        and (
            segment_seconds.length_seconds is null
            or thresholds.threshold_seconds < segment_seconds.counted_before_seconds + segment_seconds.length_seconds
        )
    ) or (
        not thresholds.is_strict
        and segment_seconds.counted_before_seconds < thresholds.threshold_seconds
        and (
            segment_seconds.length_seconds is null
            or thresholds.threshold_seconds <= segment_seconds.counted_before_seconds + segment_seconds.length_seconds
        )
    )
),

located as (
    select
        crossing_segments.object_id,
        crossing_segments.metric,
        crossing_segments.clock_number,
        crossing_segments.threshold,
        case
            when crossing_segments.is_business_hours_only
                then {{ cb_epoch('slots.window_start_at') }}
                    + crossing_segments.business_target
                    - slots.cumulative_seconds_before
            else {{ cb_epoch('crossing_segments.segment_start_at') }} + crossing_segments.remaining_seconds
        end as reached_epoch_seconds
    from crossing_segments
    left join slots
        on slots.policy_key = crossing_segments.policy_key
        and crossing_segments.is_business_hours_only
        and (
            (
                crossing_segments.is_strict
                and slots.cumulative_seconds_before <= crossing_segments.business_target
                and crossing_segments.business_target < slots.cumulative_seconds_before + slots.window_seconds
            ) or (
                not crossing_segments.is_strict
                and slots.cumulative_seconds_before < crossing_segments.business_target
                and crossing_segments.business_target <= slots.cumulative_seconds_before + slots.window_seconds
            )
        )
),

final as (
    select
        object_id,
        metric,
        clock_number,
        {{ cb_from_epoch("max(case when threshold = 'warning' then reached_epoch_seconds end)") }} as warning_at,
        {{ cb_from_epoch("max(case when threshold = 'critical' then reached_epoch_seconds end)") }} as critical_at,
        {{ cb_from_epoch("max(case when threshold = 'breach' then reached_epoch_seconds end)") }} as breach_at
    from located
    group by object_id, metric, clock_number
)

select * from final
