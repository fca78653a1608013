-- one row per message sent by as_of_at, with its side (customer, agent, bot, unknown) and whether it
-- answers the customer: agents always do; bots only when the policy sets bot_counts_as_response. A
-- message whose is_manager is NULL is 'unknown': never a customer message, never a response; the
-- clocks it could have started or stopped are undetermined (int_reply_episodes)
with

messages as (
    select * from {{ ref('stg_commbox__messages') }}
),

managers as (
    select * from {{ ref('stg_commbox__managers') }}
),

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

sided as (
    select
        messages.message_id,
        messages.object_id,
        conversations.stream_id,
        conversations.policy_key,
        messages.sent_at,
        messages.manager_id,
        conversations.is_bot_response_counted,
        case
            when messages.is_from_manager_side is null then 'unknown'
            when not messages.is_from_manager_side then 'customer'
            when coalesce(managers.is_bot, false) then 'bot'
            else 'agent'
        end as sender_side
    from messages
    cross join params
    inner join conversations
        on conversations.object_id = messages.object_id
    left join managers
        on managers.manager_id = messages.manager_id
    where messages.sent_at <= params.as_of_at
),

final as (
    select
        message_id,
        object_id,
        stream_id,
        policy_key,
        sent_at,
        manager_id,
        sender_side,
        case
            when sender_side = 'agent' then true
            when sender_side = 'bot' then is_bot_response_counted
            else false
        end as is_response
    from sided
)

select * from final
