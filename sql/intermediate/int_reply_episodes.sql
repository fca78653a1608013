-- one row per response clock: a customer message that opens the conversation or follows a response
-- starts it, the next response stops it. Ties on sent_at are ordered by message_id. Bot messages that
-- do not count as responses are skipped, so the clock keeps running through them.
-- Unknown-side messages (is_manager NULL) split nothing: the messages between two responses form one
-- gap, and a gap holding an unknown message makes its clock undetermined, since the unknown message
-- may be an earlier customer message (an earlier start) or a reply (an earlier stop). A gap with
-- unknown messages but no customer message still gets a possible clock, started by its first unknown
-- message and undetermined: whether it exists at all is not known.
with

messages as (
    select * from {{ ref('int_messages_classified') }}
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
    where sender_side in ('customer', 'unknown') or is_response
),

gap_messages as (
    select
        object_id,
        responses_so_far,
        message_id,
        sent_at,
        sender_side,
        row_number() over (
            partition by object_id, responses_so_far
            order by case when sender_side = 'customer' then 0 else 1 end, sent_at, message_id
        ) as position_in_gap,
        sum(case when sender_side = 'customer' then 1 else 0 end) over (
            partition by object_id, responses_so_far
        ) as customer_messages,
        sum(case when sender_side = 'unknown' then 1 else 0 end) over (
            partition by object_id, responses_so_far
        ) as unknown_messages
    from counted
    where sender_side in ('customer', 'unknown')
),

episode_starts as (
    select
        object_id,
        responses_so_far,
        message_id as start_message_id,
        sent_at as started_at,
        customer_messages,
        unknown_messages,
        row_number() over (partition by object_id order by sent_at, message_id) as episode_number
    from gap_messages
    where position_in_gap = 1
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
        episode_starts.unknown_messages,
        episode_starts.unknown_messages > 0 as is_undetermined,
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
