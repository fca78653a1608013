-- one row per conversation (CommBox "object"), as loaded; renamed and typed only. first_response_at and
-- last_response_at are CommBox's own firstResponseTime / lastResponseTime (fct_first_response_reconciliation).
-- Custom fields (content__* columns) pass through as loaded when allow-listed (var commbox_custom_fields).
with

objects as (
    select * from {{ source('commbox', 'objects') }}
),

final as (
    select
        cast(object_id as bigint) as object_id,
        cast(stream_id as bigint) as stream_id,
        cast(sub_stream_id as bigint) as sub_stream_id,
        cast(object_type as bigint) as object_type_id,
        cast(status_id as bigint) as status_id,
        cast(created_at as {{ cb_type_timestamp() }}) as created_at,
        cast(updated_at as {{ cb_type_timestamp() }}) as updated_at,
        cast(closed_at as {{ cb_type_timestamp() }}) as closed_at,
        cast(first_response_at as {{ cb_type_timestamp() }}) as first_response_at,
        cast(last_response_at as {{ cb_type_timestamp() }}) as last_response_at,
        cast(assigned_manager_id as bigint) as assigned_manager_id,
        {{ cb_custom_fields('objects') }}
        cast(user_id as bigint) as user_id
    from objects
)

select * from final
