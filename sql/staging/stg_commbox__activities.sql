-- one row per activity-log entry; status and assignment changes carry their from/to ids
with

activities as (
    select * from {{ source('commbox', 'activities') }}
),

final as (
    select
        cast(activity_id as {{ cb_type_string() }}) as activity_id,
        cast(object_id as bigint) as object_id,
        cast(stream_id as bigint) as stream_id,
        cast(activity_type as bigint) as activity_type_id,
        cast(created_at as {{ cb_type_timestamp() }}) as created_at,
        cast(user_id as bigint) as actor_user_id,
        cast(status_from_id as bigint) as status_from_id,
        cast(status_to_id as bigint) as status_to_id,
        cast(manager_from_id as bigint) as manager_from_id,
        cast(manager_to_id as bigint) as manager_to_id
    from activities
)

select * from final
