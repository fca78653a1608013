-- one row per response clock: a customer message that opens the conversation or follows a response
-- starts it, the next response stops it. Ties on sent_at are ordered by message_id. Bot messages that
-- do not count as responses are skipped, so the clock keeps running through them.
with

messages as (
    select * from commbox_reporting.int_messages_classified
),

counted as (
    select
        message_id,
        object_id,
        sent_at,
        manager_id,
        sender_side,
        is_response,
        sum(case when is_response then 1 else 0 end) over (
            partition by object_id
            order by sent_at, message_id
            rows between unbounded preceding and current row
        ) as responses_so_far
    from messages
    where sender_side = 'customer' or is_response
),

customer_messages as (
    select
        object_id,
        responses_so_far,
        message_id,
        sent_at,
        row_number() over (
            partition by object_id, responses_so_far
            order by sent_at, message_id
        ) as position_in_episode,
        count(*) over (partition by object_id, responses_so_far) as customer_messages
    from counted
    where sender_side = 'customer'
),

episode_starts as (
    select
        object_id,
        responses_so_far,
        message_id as start_message_id,
        sent_at as started_at,
        customer_messages,
        row_number() over (partition by object_id order by sent_at, message_id) as episode_number
    from customer_messages
    where position_in_episode = 1
),

responses as (
    select
        object_id,
        responses_so_far,
        message_id,
        sent_at,
        manager_id,
        sender_side
    from counted
    where is_response
),

final as (
    select
        episode_starts.object_id,
        episode_starts.episode_number,
        case when episode_starts.episode_number = 1 then 'first_response' else 'next_response' end as metric,
        episode_starts.start_message_id,
        episode_starts.started_at,
        episode_starts.customer_messages,
        responses.message_id as response_message_id,
        responses.sent_at as responded_at,
        responses.manager_id as responder_manager_id,
        responses.sender_side as responder_side
    from episode_starts
    left join responses
        on responses.object_id = episode_starts.object_id
        and responses.responses_so_far = episode_starts.responses_so_far + 1
)

select * from final
