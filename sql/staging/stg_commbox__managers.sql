-- one row per agent, admin or bot; permission 5 is a bot even when is_bot was not sent
with

managers as (
    select * from {{ source('commbox', 'managers') }}
),

final as (
    select
        cast(manager_id as bigint) as manager_id,
        cast(first_name as {{ cb_type_string() }}) as first_name,
        cast(last_name as {{ cb_type_string() }}) as last_name,
        cast(email as {{ cb_type_string() }}) as email,
        cast(permission_id as bigint) as permission_id,
        coalesce(cast(is_bot as {{ cb_type_boolean() }}), false) or coalesce(cast(permission_id as bigint) = 5, false) as is_bot,
        cast(team_id as bigint) as team_id,
        cast(team_name as {{ cb_type_string() }}) as team_name
    from managers
)

select * from final
