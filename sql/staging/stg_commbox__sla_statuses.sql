-- one row per ObjectStatusType: whether it counts as open, paused (clock stopped) or resolved
with

sla_statuses as (
    select * from commbox_raw.sla_statuses
),

final as (
    select
        cast(status_id as bigint) as status_id,
        cast(status_name as varchar) as status_name,
        cast(is_open as boolean) as is_open,
        cast(is_paused as boolean) as is_paused,
        cast(is_resolved as boolean) as is_resolved
    from sla_statuses
)

select * from final
