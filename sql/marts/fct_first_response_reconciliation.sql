-- one row per conversation created by as_of_at: the first and last human agent message the views see
-- (int_messages_classified, sender_side 'agent': bots and unknown sides left out) against CommBox's
-- own firstResponseTime / lastResponseTime (objects.first_response_at / last_response_at), which
-- CommBox defines the same way. difference_seconds = the views' time - CommBox's. Agreement: both
-- NULL, or less than one second apart ('agree'); otherwise 'unknown' when an unknown-side message
-- could explain it (one sent at or before the first agent message, or at or after the last, or any
-- when no agent message is seen), else 'disagree'. A CommBox time after as_of_at has not happened
-- yet in this build and is compared as NULL.
with

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

objects as (
    select * from {{ ref('stg_commbox__objects') }}
),

messages as (
    select * from {{ ref('int_messages_classified') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

message_sides as (
    select
        object_id,
        min(case when sender_side = 'agent' then sent_at end) as first_agent_message_at,
        max(case when sender_side = 'agent' then sent_at end) as last_agent_message_at,
        min(case when sender_side = 'unknown' then sent_at end) as first_unknown_message_at,
        max(case when sender_side = 'unknown' then sent_at end) as last_unknown_message_at,
        sum(case when sender_side = 'unknown' then 1 else 0 end) as unknown_messages
    from messages
    group by object_id
),

compared as (
    select
        conversations.object_id,
        conversations.stream_id,
        message_sides.first_agent_message_at,
        message_sides.last_agent_message_at,
        message_sides.first_unknown_message_at,
        message_sides.last_unknown_message_at,
        coalesce(message_sides.unknown_messages, 0) as unknown_messages,
        objects.first_response_at as commbox_first_response_at,
        objects.last_response_at as commbox_last_response_at,
        case
            when objects.first_response_at <= params.as_of_at then objects.first_response_at
        end as commbox_first_response_compared_at,
        case
            when objects.last_response_at <= params.as_of_at then objects.last_response_at
        end as commbox_last_response_compared_at
    from conversations
    cross join params
    inner join objects
        on objects.object_id = conversations.object_id
    left join message_sides
        on message_sides.object_id = conversations.object_id
),

differences as (
    select
        compared.*,
        {{ cb_epoch('first_agent_message_at') }} - {{ cb_epoch('commbox_first_response_compared_at') }}
            as first_response_difference_seconds,
        {{ cb_epoch('last_agent_message_at') }} - {{ cb_epoch('commbox_last_response_compared_at') }}
            as last_response_difference_seconds
    from compared
),

agreements as (
    select
        differences.*,
        case
            when first_agent_message_at is null and commbox_first_response_compared_at is null then 'agree'
            when abs(first_response_difference_seconds) < 1 then 'agree'
            when unknown_messages > 0
                and (first_agent_message_at is null or first_unknown_message_at <= first_agent_message_at)
                then 'unknown'
            else 'disagree'
        end as first_response_agreement,
        case
            when last_agent_message_at is null and commbox_last_response_compared_at is null then 'agree'
            when abs(last_response_difference_seconds) < 1 then 'agree'
            when unknown_messages > 0
                and (last_agent_message_at is null or last_unknown_message_at >= last_agent_message_at)
                then 'unknown'
            else 'disagree'
        end as last_response_agreement
    from differences
),

final as (
    select
        object_id,
        stream_id,
        first_agent_message_at,
        commbox_first_response_at,
        first_response_difference_seconds,
        first_response_agreement,
        case first_response_agreement when 'agree' then true when 'disagree' then false end as is_in_agreement,
        last_agent_message_at,
        commbox_last_response_at,
        last_response_difference_seconds,
        last_response_agreement,
        case
            last_response_agreement when 'agree' then true when 'disagree' then false
        end as is_last_response_in_agreement,
        unknown_messages
    from agreements
)

select * from final
