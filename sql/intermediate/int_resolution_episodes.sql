-- one row per resolution clock: an episode starts when the conversation is created (or reopened) and
-- stops at its next resolution
with

history as (
    select * from {{ ref('int_status_history') }}
),

episodes as (
    select
        object_id,
        episode_number,
        min(case when is_open or is_paused then valid_from_at end) as started_at,
        min(case when is_resolution then valid_from_at end) as resolved_at
    from history
    group by object_id, episode_number
),

final as (
    select
        object_id,
        episode_number,
        started_at,
        resolved_at
    from episodes
    where started_at is not null
)

select * from final
