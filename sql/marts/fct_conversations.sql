-- one row per conversation created by as_of_at: first response and first resolution (calendar and
-- business seconds, SLA state), resolutions, reopens, messages by side (unknown_messages: is_manager
-- NULL), agents involved, clocks breached / undetermined / running, one-touch (NULL when an unknown-side
-- message could be a second agent message); allow-listed custom fields (content__*) from the conversation
with

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

events as (
    select * from {{ ref('fct_sla_events') }}
),

messages as (
    select * from {{ ref('int_messages_classified') }}
),

history as (
    select * from {{ ref('int_status_history') }}
),

objects as (
    select * from {{ ref('stg_commbox__objects') }}
),

first_responses as (
    select * from events where metric = 'first_response' and clock_number = 1
),

first_resolutions as (
    select * from events where metric = 'resolution' and clock_number = 1
),

status_counts as (
    select
        object_id,
        sum(case when is_resolution then 1 else 0 end) as resolutions,
        sum(case when is_reopen then 1 else 0 end) as reopens,
        max(case when is_resolution then valid_from_at end) as last_resolved_at,
        max(case when is_current then status_id end) as status_id,
        max(case when is_current then status_name end) as status_name,
        max(case when is_current and (is_open or is_paused) then 1 else 0 end) = 1 as is_open
    from history
    group by object_id
),

message_counts as (
    select
        object_id,
        sum(case when sender_side = 'customer' then 1 else 0 end) as customer_messages,
        sum(case when sender_side = 'agent' then 1 else 0 end) as agent_messages,
        sum(case when sender_side = 'bot' then 1 else 0 end) as bot_messages,
        sum(case when sender_side = 'unknown' then 1 else 0 end) as unknown_messages,
        count(distinct case when sender_side = 'agent' then manager_id end) as agents_involved,
        min(sent_at) as first_message_at,
        max(sent_at) as last_message_at
    from messages
    group by object_id
),

event_counts as (
    select
        object_id,
        sum(case when is_breached then 1 else 0 end) as breached_events,
        sum(case when is_undetermined then 1 else 0 end) as undetermined_events,
        sum(case when is_running then 1 else 0 end) as running_clocks
    from events
    group by object_id
),

final as (
    select
        conversations.object_id,
        conversations.stream_id,
        conversations.policy_key,
        conversations.created_at,
        status_counts.status_id,
        status_counts.status_name,
        coalesce(status_counts.is_open, false) as is_open,
        conversations.assigned_manager_id,
        {{ cb_custom_fields('objects') }}
        message_counts.first_message_at,
        message_counts.last_message_at,
        first_responses.stopped_at as first_response_at,
        first_responses.stop_reason as first_response_stop_reason,
        first_responses.calendar_seconds as first_response_calendar_seconds,
        first_responses.business_seconds as first_response_business_seconds,
        first_responses.state as first_response_state,
        first_resolutions.stopped_at as first_resolved_at,
        status_counts.last_resolved_at,
        first_resolutions.calendar_seconds as resolution_calendar_seconds,
        first_resolutions.business_seconds as resolution_business_seconds,
        first_resolutions.state as resolution_state,
        coalesce(status_counts.resolutions, 0) as resolutions,
        coalesce(status_counts.reopens, 0) as reopens,
        coalesce(message_counts.customer_messages, 0) as customer_messages,
        coalesce(message_counts.agent_messages, 0) as agent_messages,
        coalesce(message_counts.bot_messages, 0) as bot_messages,
        coalesce(message_counts.unknown_messages, 0) as unknown_messages,
        coalesce(message_counts.agents_involved, 0) as agents_involved,
        coalesce(event_counts.breached_events, 0) as breached_events,
        coalesce(event_counts.undetermined_events, 0) as undetermined_events,
        coalesce(event_counts.running_clocks, 0) as running_clocks,
        case
            when coalesce(status_counts.resolutions, 0) = 0
                or coalesce(status_counts.reopens, 0) > 0
                or coalesce(message_counts.agent_messages, 0) > 1
                then false
            when coalesce(message_counts.unknown_messages, 0) > 0 then null
            else coalesce(message_counts.agent_messages, 0) = 1
        end as is_one_touch
    from conversations
    left join objects
        on objects.object_id = conversations.object_id
    left join status_counts
        on status_counts.object_id = conversations.object_id
    left join message_counts
        on message_counts.object_id = conversations.object_id
    left join event_counts
        on event_counts.object_id = conversations.object_id
    left join first_responses
        on first_responses.object_id = conversations.object_id
    left join first_resolutions
        on first_resolutions.object_id = conversations.object_id
)

select * from final
