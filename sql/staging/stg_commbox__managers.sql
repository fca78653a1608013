-- one row per agent, admin or bot; permission 5 is a bot even when is_bot was not sent
with

managers as (
    select * from commbox_raw.managers
),

final as (
    select
        cast(manager_id as bigint) as manager_id,
        cast(first_name as varchar) as first_name,
        cast(last_name as varchar) as last_name,
        cast(email as varchar) as email,
        cast(permission_id as bigint) as permission_id,
        coalesce(cast(is_bot as boolean), false) or coalesce(cast(permission_id as bigint) = 5, false) as is_bot,
        cast(team_id as bigint) as team_id,
        cast(team_name as varchar) as team_name
    from managers
)

select * from final
