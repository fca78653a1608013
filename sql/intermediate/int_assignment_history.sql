-- one row per assignment interval [valid_from_at, valid_to_at) of a conversation, from AssignChange
-- activities (type 6); manager_id NULL = unassigned. Before the first change the conversation is with
-- the change's manager_from_id; without changes it is with its current assignee since it was created.
with

activities as (
    select * from {{ ref('stg_commbox__activities') }}
),

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

changes as (
    select
        activities.object_id,
        activities.activity_id,
        activities.created_at,
        activities.manager_from_id,
        activities.manager_to_id,
        row_number() over (
            partition by activities.object_id
            order by activities.created_at, activities.activity_id
        ) as change_number
    from activities
    cross join params
    inner join conversations
        on conversations.object_id = activities.object_id
    where activities.activity_type_id = 6
        and activities.created_at <= params.as_of_at
),

before_first_change as (
    select
        changes.object_id,
        0 as assignment_sequence,
        changes.manager_from_id as manager_id,
        conversations.created_at as valid_from_at,
        changes.created_at as valid_to_at
    from changes
    inner join conversations
        on conversations.object_id = changes.object_id
    where changes.change_number = 1
        and changes.created_at > conversations.created_at
),

after_changes as (
    select
        object_id,
        change_number as assignment_sequence,
        manager_to_id as manager_id,
        created_at as valid_from_at,
        lead(created_at) over (partition by object_id order by change_number) as valid_to_at
    from changes
),

without_changes as (
    select
        conversations.object_id,
        0 as assignment_sequence,
        conversations.assigned_manager_id as manager_id,
        conversations.created_at as valid_from_at,
        cast(null as {{ cb_type_timestamp() }}) as valid_to_at
    from conversations
    left join changes
        on changes.object_id = conversations.object_id
        and changes.change_number = 1
    where changes.object_id is null
),

final as (
    select * from before_first_change
    union all
    select * from after_changes
    union all
    select * from without_changes
)

select * from final
