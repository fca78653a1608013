-- one row per message (CommBox "child") of a conversation; is_manager = sent from the agent/bot side
with

childs as (
    select * from commbox_raw.childs
),

final as (
    select
        cast(child_id as bigint) as message_id,
        cast(object_id as bigint) as object_id,
        cast(stream_id as bigint) as stream_id,
        cast(created_at as timestamptz) as sent_at,
        coalesce(cast(is_manager as boolean), false) as is_from_manager_side,
        cast(manager_id as bigint) as manager_id,
        cast(user_id as bigint) as user_id
    from childs
)

select * from final
