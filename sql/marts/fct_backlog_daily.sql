-- one row per stream x local date, from the stream's first conversation to as_of_at: conversations
-- open (or paused) at the end of the day (or at as_of_at for today), their age, and how many have a
-- running clock in warning, critical or breach at that moment (the worst clock per conversation,
-- from its deadlines), and how many have a running undetermined clock (one that depends on an
-- unknown-side message: it has no deadlines, so it never counts as warning, critical or breached)
with

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

history as (
    select * from {{ ref('int_status_history') }}
),

events as (
    select * from {{ ref('fct_sla_events') }}
),

days as (
    select * from {{ ref('stg_commbox__calendar_days') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

policies as (
    select * from {{ ref('stg_commbox__sla_policies') }}
),

-- each policy's local days, each from the version in force when the day starts
policy_days as (
    select
        policies.policy_name,
        days.local_date,
        days.day_start_at,
        days.day_end_at
    from days
    inner join policies
        on policies.policy_key = days.policy_key
        and policies.effective_from_at <= days.day_start_at
        and (policies.effective_to_at is null or days.day_start_at < policies.effective_to_at)
),

stream_starts as (
    select
        stream_id,
        policy_name,
        min(created_at) as first_created_at
    from conversations
    group by stream_id, policy_name
),

snapshots as (
    select
        stream_starts.stream_id,
        stream_starts.policy_name,
        days.local_date,
        case when days.day_end_at < params.as_of_at then days.day_end_at else params.as_of_at end as snapshot_at
    from stream_starts
    cross join params
    inner join policy_days as days
        on days.policy_name = stream_starts.policy_name
        and days.day_end_at > stream_starts.first_created_at
        and days.day_start_at <= params.as_of_at
),

open_at_snapshot as (
    select
        snapshots.stream_id,
        snapshots.local_date,
        snapshots.snapshot_at,
        history.object_id,
        history.is_paused,
        {{ cb_epoch('snapshots.snapshot_at') }} - {{ cb_epoch('conversations.created_at') }} as age_seconds
    from snapshots
    inner join conversations
        on conversations.stream_id = snapshots.stream_id
        and conversations.policy_name = snapshots.policy_name
    inner join history
        on history.object_id = conversations.object_id
        and (history.is_open or history.is_paused)
        and history.valid_from_at < snapshots.snapshot_at
        and (history.valid_to_at is null or history.valid_to_at >= snapshots.snapshot_at)
),

clock_levels as (
    select
        open_at_snapshot.object_id,
        open_at_snapshot.local_date,
        max(
            case
                when events.breach_at is not null and open_at_snapshot.snapshot_at > events.breach_at then 3
                when events.critical_at is not null and open_at_snapshot.snapshot_at >= events.critical_at then 2
                when events.warning_at is not null and open_at_snapshot.snapshot_at >= events.warning_at then 1
                else 0
            end
        ) as worst_level,
        sum(case when events.is_undetermined then 1 else 0 end) as undetermined_clocks
    from open_at_snapshot
    inner join events
        on events.object_id = open_at_snapshot.object_id
        and events.started_at < open_at_snapshot.snapshot_at
        and (events.stopped_at is null or events.stopped_at >= open_at_snapshot.snapshot_at)
    group by open_at_snapshot.object_id, open_at_snapshot.local_date
),

final as (
    select
        snapshots.stream_id,
        snapshots.local_date,
        snapshots.snapshot_at,
        count(open_at_snapshot.object_id) as open_conversations,
        sum(case when open_at_snapshot.is_paused then 1 else 0 end) as paused_conversations,
        avg(open_at_snapshot.age_seconds) as avg_age_seconds,
        max(open_at_snapshot.age_seconds) as max_age_seconds,
        sum(case when open_at_snapshot.age_seconds > 86400 then 1 else 0 end) as older_than_1_day,
        sum(case when clock_levels.worst_level = 1 then 1 else 0 end) as warning_conversations,
        sum(case when clock_levels.worst_level = 2 then 1 else 0 end) as critical_conversations,
        sum(case when clock_levels.worst_level = 3 then 1 else 0 end) as breached_conversations,
        sum(case when clock_levels.undetermined_clocks > 0 then 1 else 0 end) as undetermined_conversations
    from snapshots
    left join open_at_snapshot
        on open_at_snapshot.stream_id = snapshots.stream_id
        and open_at_snapshot.local_date = snapshots.local_date
    left join clock_levels
        on clock_levels.object_id = open_at_snapshot.object_id
        and clock_levels.local_date = open_at_snapshot.local_date
    group by snapshots.stream_id, snapshots.local_date, snapshots.snapshot_at
)

select * from final
