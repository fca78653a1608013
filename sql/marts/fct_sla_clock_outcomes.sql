-- one row per SLA clock x time basis ('business', 'calendar'): the clock measured in business time
-- (business seconds, paused time left out) and in calendar time (wall-clock seconds, paused time left
-- out), each against the clock's own target, so the reports can show either basis and never mix them.
-- The outcomes partition the clocks: undetermined (depends on an unknown-side message), else running
-- (not stopped at as_of_at), else breached (stopped past its target), else met; is_past_target also
-- marks running clocks already past their target. In the policy's own basis (is_policy_basis) the
-- outcome agrees with fct_sla_events.state. started_local_hour is the hour of the local day the clock
-- started in (seconds since local midnight / 3600: on a daylight-saving day, the hours after the
-- change are counted from midnight, one off the wall clock).
with

events as (
    select * from {{ ref('fct_sla_events') }}
),

days as (
    select * from {{ ref('stg_commbox__calendar_days') }}
),

managers as (
    select * from {{ ref('stg_commbox__managers') }}
),

bases as (
    select 'business' as time_basis
    union all
    select 'calendar' as time_basis
),

measured as (
    select
        events.object_id,
        events.stream_id,
        events.policy_key,
        events.metric,
        events.clock_number,
        bases.time_basis,
        case when bases.time_basis = 'business' then events.is_business_hours_only
            else not events.is_business_hours_only end as is_policy_basis,
        events.started_at,
        events.started_local_date,
        events.stopped_at,
        events.stop_reason,
        events.responsible_manager_id,
        events.responder_side,
        events.target_seconds,
        case when bases.time_basis = 'business' then events.business_seconds
            else events.calendar_seconds - events.paused_seconds end as elapsed_seconds,
        events.is_undetermined
    from events
    cross join bases
),

final as (
    select
        measured.object_id,
        measured.stream_id,
        measured.policy_key,
        measured.metric,
        measured.clock_number,
        measured.time_basis,
        measured.is_policy_basis,
        measured.started_at,
        measured.started_local_date,
        cast(floor(({{ cb_epoch('measured.started_at') }} - {{ cb_epoch('days.day_start_at') }}) / 3600) as bigint)
            as started_local_hour,
        measured.stopped_at,
        measured.stop_reason,
        measured.responsible_manager_id,
        coalesce(managers.is_bot, false) as is_responsible_bot,
        measured.responder_side,
        measured.target_seconds,
        measured.elapsed_seconds,
        case
            when measured.is_undetermined then 'undetermined'
            when measured.stopped_at is null then 'running'
            when measured.elapsed_seconds > measured.target_seconds then 'breached'
            else 'met'
        end as outcome,
        not measured.is_undetermined and measured.elapsed_seconds > measured.target_seconds as is_past_target
    from measured
    left join days
        on days.policy_key = measured.policy_key
        and days.local_date = measured.started_local_date
    left join managers
        on managers.manager_id = measured.responsible_manager_id
)

select * from final
