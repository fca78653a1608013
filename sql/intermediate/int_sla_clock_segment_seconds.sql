{{ config(materialized='table') }}
-- one row per clock segment with its elapsed seconds up to the clock's evaluated_at (its stop, or
-- as_of_at while running), its full length and how much the clock had counted before it. Business
-- seconds come from a range join against the business-window slots: business(t) =
-- cumulative_seconds_before + max(0, t - window_start_at) for the slot holding t, so business seconds
-- between two instants are business(b) - business(a), the sum of their overlaps with the windows.
with

segments as (
    select * from {{ ref('int_sla_clock_segments') }}
),

clocks as (
    select * from {{ ref('int_sla_clocks') }}
),

slots as (
    select * from {{ ref('int_business_window_slots') }}
),

bounded as (
    select
        segments.object_id,
        segments.metric,
        segments.clock_number,
        segments.segment_number,
        segments.segment_start_at,
        segments.segment_end_at,
        segments.is_projection,
        clocks.policy_key,
        clocks.is_business_hours_only,
        case
            when segments.segment_start_at >= clocks.evaluated_at then segments.segment_start_at
            when segments.segment_end_at is null or segments.segment_end_at > clocks.evaluated_at
                then clocks.evaluated_at
            else segments.segment_end_at
        end as elapsed_end_at
    from segments
    inner join clocks
        on clocks.object_id = segments.object_id
        and clocks.metric = segments.metric
        and clocks.clock_number = segments.clock_number
),

business_clock as (
    select
        bounded.*,
        start_slots.cumulative_seconds_before
        + greatest(0, {{ cb_epoch('bounded.segment_start_at') }} - {{ cb_epoch('start_slots.window_start_at') }})
            as business_at_start,
        elapsed_slots.cumulative_seconds_before
        + greatest(0, {{ cb_epoch('bounded.elapsed_end_at') }} - {{ cb_epoch('elapsed_slots.window_start_at') }})
            as business_at_elapsed_end,
        end_slots.cumulative_seconds_before
        + greatest(0, {{ cb_epoch('bounded.segment_end_at') }} - {{ cb_epoch('end_slots.window_start_at') }})
            as business_at_end
    from bounded
    left join slots as start_slots
        on start_slots.policy_key = bounded.policy_key
        and start_slots.slot_start_at <= bounded.segment_start_at
        and bounded.segment_start_at < start_slots.window_end_at
    left join slots as elapsed_slots
        on elapsed_slots.policy_key = bounded.policy_key
        and elapsed_slots.slot_start_at <= bounded.elapsed_end_at
        and bounded.elapsed_end_at < elapsed_slots.window_end_at
    left join slots as end_slots
        on end_slots.policy_key = bounded.policy_key
        and end_slots.slot_start_at <= bounded.segment_end_at
        and bounded.segment_end_at < end_slots.window_end_at
),

measured as (
    select
        object_id,
        metric,
        clock_number,
        segment_number,
        segment_start_at,
        segment_end_at,
        elapsed_end_at,
        is_projection,
        policy_key,
        is_business_hours_only,
        business_at_start,
        business_at_elapsed_end - business_at_start as business_seconds,
        {{ cb_epoch('elapsed_end_at') }} - {{ cb_epoch('segment_start_at') }} as calendar_seconds,
        business_at_end - business_at_start as business_length_seconds,
        {{ cb_epoch('segment_end_at') }} - {{ cb_epoch('segment_start_at') }} as calendar_length_seconds
    from business_clock
),

counted as (
    select
        measured.*,
        case when is_business_hours_only then business_seconds else calendar_seconds end as elapsed_seconds,
        case
            when is_business_hours_only then business_length_seconds
            else calendar_length_seconds
        end as length_seconds
    from measured
),

final as (
    select
        counted.*,
        coalesce(
            sum(length_seconds) over (
                partition by object_id, metric, clock_number
                order by segment_number
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as counted_before_seconds
    from counted
)

select * from final
