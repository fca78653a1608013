{{ config(materialized='table') }}
-- one row per status interval [valid_from_at, valid_to_at) of a conversation, from StatusChange
-- activities (type 2). Before the first change the conversation is in the change's status_from_id
-- (Open when unknown); without changes it is in its current status since it was created.
-- A resolution is an entry into a resolved status from an unresolved one; a reopen is an entry into
-- an open or paused status from a resolved one; each reopen starts a new episode.
with

activities as (
    select * from {{ ref('stg_commbox__activities') }}
),

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

statuses as (
    select * from {{ ref('stg_commbox__sla_statuses') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

changes as (
    select
        activities.object_id,
        activities.activity_id,
        activities.created_at,
        activities.status_from_id,
        activities.status_to_id,
        row_number() over (
            partition by activities.object_id
            order by activities.created_at, activities.activity_id
        ) as change_number
    from activities
    cross join params
    inner join conversations
        on conversations.object_id = activities.object_id
    where activities.activity_type_id = 2
        and activities.status_to_id is not null
        and activities.created_at <= params.as_of_at
),

before_first_change as (
    select
        changes.object_id,
        0 as status_sequence,
        coalesce(changes.status_from_id, 1) as status_id,
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
        change_number as status_sequence,
        status_to_id as status_id,
        created_at as valid_from_at,
        lead(created_at) over (partition by object_id order by change_number) as valid_to_at
    from changes
),

without_changes as (
    select
        conversations.object_id,
        0 as status_sequence,
        conversations.current_status_id as status_id,
        conversations.created_at as valid_from_at,
        cast(null as {{ cb_type_timestamp() }}) as valid_to_at
    from conversations
    left join changes
        on changes.object_id = conversations.object_id
        and changes.change_number = 1
    where changes.object_id is null
),

intervals as (
    select * from before_first_change
    union all
    select * from after_changes
    union all
    select * from without_changes
),

classified as (
    select
        intervals.object_id,
        intervals.status_sequence,
        intervals.status_id,
        coalesce(statuses.status_name, 'Unknown') as status_name,
        intervals.valid_from_at,
        intervals.valid_to_at,
        coalesce(statuses.is_open, false) as is_open,
        coalesce(statuses.is_paused, false) as is_paused,
        coalesce(statuses.is_resolved, false) as is_resolved,
        lag(coalesce(statuses.is_resolved, false)) over (
            partition by intervals.object_id
            order by intervals.valid_from_at, intervals.status_sequence
        ) as is_previous_resolved
    from intervals
    left join statuses
        on statuses.status_id = intervals.status_id
),

flagged as (
    select
        object_id,
        status_sequence,
        status_id,
        status_name,
        valid_from_at,
        valid_to_at,
        is_open,
        is_paused,
        is_resolved,
        valid_to_at is null as is_current,
        is_resolved and is_previous_resolved is not null and not is_previous_resolved as is_resolution,
        (is_open or is_paused) and coalesce(is_previous_resolved, false) as is_reopen
    from classified
),

final as (
    select
        object_id,
        status_sequence,
        status_id,
        status_name,
        valid_from_at,
        valid_to_at,
        is_open,
        is_paused,
        is_resolved,
        is_current,
        is_resolution,
        is_reopen,
        sum(case when is_reopen then 1 else 0 end) over (
            partition by object_id
            order by valid_from_at, status_sequence
            rows between unbounded preceding and current row
        ) as episode_number
    from flagged
)

select * from final
