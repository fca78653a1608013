-- one row per message (CommBox "child") of a conversation; is_from_manager_side = sent from the
-- agent/bot side, false = the customer, NULL = not known (list answers that carry no sender)
with

childs as (
    select * from {{ source('commbox', 'childs') }}
),

final as (
    select
        cast(child_id as bigint) as message_id,
        cast(object_id as bigint) as object_id,
        cast(stream_id as bigint) as stream_id,
        cast(created_at as {{ cb_type_timestamp() }}) as sent_at,
        cast(is_manager as {{ cb_type_boolean() }}) as is_from_manager_side,
        cast(manager_id as bigint) as manager_id,
        cast(user_id as bigint) as user_id
    from childs
)

select * from final
