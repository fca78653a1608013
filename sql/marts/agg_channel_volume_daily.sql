-- one row per stream x local date (fct_backlog_daily's days: from the stream's first conversation to
-- as_of_at): conversations created that day (new), resolution clocks stopped that day (resolved: a
-- conversation resolved twice counts twice) and the backlog open or paused at the end of the day
-- (or at as_of_at for today); local dates in the time zone of the policy version of each row
with

backlog as (
    select * from {{ ref('fct_backlog_daily') }}
),

conversations as (
    select * from {{ ref('fct_conversations') }}
),

events as (
    select * from {{ ref('fct_sla_events') }}
),

days as (
    select * from {{ ref('stg_commbox__calendar_days') }}
),

created as (
    select
        conversations.stream_id,
        days.local_date,
        count(*) as new_conversations
    from conversations
    inner join days
        on days.policy_key = conversations.policy_key
        and days.day_start_at <= conversations.created_at
        and conversations.created_at < days.day_end_at
    group by conversations.stream_id, days.local_date
),

resolved as (
    select
        events.stream_id,
        days.local_date,
        count(*) as resolved_conversations
    from events
    inner join days
        on days.policy_key = events.policy_key
        and days.day_start_at <= events.stopped_at
        and events.stopped_at < days.day_end_at
    where events.metric = 'resolution'
        and events.stopped_at is not null
    group by events.stream_id, days.local_date
),

final as (
    select
        backlog.stream_id,
        backlog.local_date,
        coalesce(created.new_conversations, 0) as new_conversations,
        coalesce(resolved.resolved_conversations, 0) as resolved_conversations,
        backlog.open_conversations as backlog_conversations
    from backlog
    left join created
        on created.stream_id = backlog.stream_id
        and created.local_date = backlog.local_date
    left join resolved
        on resolved.stream_id = backlog.stream_id
        and resolved.local_date = backlog.local_date
)

select * from final
