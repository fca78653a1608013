-- one row per ObjectStatusType: whether it counts as open, paused (clock stopped) or resolved
with

sla_statuses as (
    select * from {{ source('commbox', 'sla_statuses') }}
),

final as (
    select
        cast(status_id as bigint) as status_id,
        cast(status_name as {{ cb_type_string() }}) as status_name,
        cast(is_open as {{ cb_type_boolean() }}) as is_open,
        cast(is_paused as {{ cb_type_boolean() }}) as is_paused,
        cast(is_resolved as {{ cb_type_boolean() }}) as is_resolved
    from sla_statuses
)

select * from final
