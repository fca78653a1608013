{{ config(materialized='table') }}
-- one row per SLA clock: conversation x metric (first_response, next_response, resolution) x clock
-- start. Elapsed time is measured to stopped_at, or to as_of_at while the clock runs. state is met /
-- breached once stopped, else ok / warning / critical / breached; severity is the level reached
-- either way. A clock whose start or stop depends on an unknown-side message has state and severity
-- 'undetermined', is neither met nor breached and has no warning/critical/breach instants.
-- responsible_manager_id holds the conversation when the SLA was decided: at breach_at if breached,
-- else at the stop (or as_of_at).
with

clocks as (
    select * from {{ ref('int_sla_clocks') }}
),

segment_seconds as (
    select * from {{ ref('int_sla_clock_segment_seconds') }}
),

deadlines as (
    select * from {{ ref('int_sla_clock_deadlines') }}
),

assignments as (
    select * from {{ ref('int_assignment_history') }}
),

days as (
    select * from {{ ref('stg_commbox__calendar_days') }}
),

elapsed as (
    select
        object_id,
        metric,
        clock_number,
        sum(elapsed_seconds) as elapsed_seconds,
        sum(business_seconds) as business_seconds,
        sum(calendar_seconds) as running_calendar_seconds
    from segment_seconds
    group by object_id, metric, clock_number
),

measured as (
    select
        clocks.*,
        elapsed.elapsed_seconds,
        elapsed.business_seconds,
        {{ cb_epoch('clocks.evaluated_at') }} - {{ cb_epoch('clocks.started_at') }} as calendar_seconds,
        {{ cb_epoch('clocks.evaluated_at') }} - {{ cb_epoch('clocks.started_at') }} - elapsed.running_calendar_seconds
            as paused_seconds,
        case when not clocks.is_undetermined then deadlines.warning_at end as warning_at,
        case when not clocks.is_undetermined then deadlines.critical_at end as critical_at,
        case when not clocks.is_undetermined then deadlines.breach_at end as breach_at,
        case
            when clocks.is_undetermined then 'undetermined'
            when elapsed.elapsed_seconds > clocks.target_seconds then 'breached'
            when elapsed.elapsed_seconds >= round(clocks.target_seconds * clocks.critical_fraction) then 'critical'
            when elapsed.elapsed_seconds >= round(clocks.target_seconds * clocks.warning_fraction) then 'warning'
            else 'ok'
        end as severity
    from clocks
    inner join elapsed
        on elapsed.object_id = clocks.object_id
        and elapsed.metric = clocks.metric
        and elapsed.clock_number = clocks.clock_number
    left join deadlines
        on deadlines.object_id = clocks.object_id
        and deadlines.metric = clocks.metric
        and deadlines.clock_number = clocks.clock_number
),

decided as (
    select
        measured.*,
        case
            when measured.severity = 'breached' and measured.breach_at is not null then measured.breach_at
            else measured.evaluated_at
        end as decided_at
    from measured
),

final as (
    select
        decided.object_id,
        decided.stream_id,
        decided.policy_key,
        decided.metric,
        decided.clock_number,
        decided.started_at,
        days.local_date as started_local_date,
        decided.start_message_id,
        decided.stopped_at,
        decided.stop_reason,
        decided.stopped_at is null as is_running,
        decided.evaluated_at,
        decided.response_message_id,
        decided.responder_manager_id,
        decided.responder_side,
        start_assignments.manager_id as start_manager_id,
        decided_assignments.manager_id as responsible_manager_id,
        decided.is_business_hours_only,
        decided.target_seconds,
        decided.elapsed_seconds,
        decided.calendar_seconds,
        decided.business_seconds,
        decided.paused_seconds,
        decided.warning_at,
        decided.critical_at,
        decided.breach_at,
        decided.severity,
        case
            when decided.stopped_at is null or decided.is_undetermined then decided.severity
            when decided.severity = 'breached' then 'breached'
            else 'met'
        end as state,
        decided.stopped_at is not null and decided.severity not in ('breached', 'undetermined') as is_met,
        decided.severity = 'breached' as is_breached,
        decided.is_undetermined
    from decided
    left join assignments as start_assignments
        on start_assignments.object_id = decided.object_id
        and start_assignments.valid_from_at <= decided.started_at
        and (start_assignments.valid_to_at is null or decided.started_at < start_assignments.valid_to_at)
    left join assignments as decided_assignments
        on decided_assignments.object_id = decided.object_id
        and decided_assignments.valid_from_at <= decided.decided_at
        and (decided_assignments.valid_to_at is null or decided.decided_at < decided_assignments.valid_to_at)
    left join days
        on days.policy_key = decided.policy_key
        and days.day_start_at <= decided.started_at
        and decided.started_at < days.day_end_at
)

select * from final
