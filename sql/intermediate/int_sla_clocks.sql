{{ config(materialized='table') }}
-- one row per SLA clock (conversation x metric x clock_number) with its target. A response clock also
-- stops when the conversation stops being open (stop_reason 'closed'); one that starts while the
-- conversation is already closed is dropped. Conversations whose current status is neither open,
-- paused nor resolved (e.g. Deleted, Irrelevant) have no clocks. is_undetermined: the clock's start or
-- stop depends on an unknown-side message (int_reply_episodes); resolution clocks never do. A clock is
-- measured against the policy version in force when it started: changing [sla] never rewrites the past.
with

reply_episodes as (
    select * from {{ ref('int_reply_episodes') }}
),

resolution_episodes as (
    select * from {{ ref('int_resolution_episodes') }}
),

conversations as (
    select * from {{ ref('int_conversation_policies') }}
),

history as (
    select * from {{ ref('int_status_history') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

policies as (
    select * from {{ ref('stg_commbox__sla_policies') }}
),

closures as (
    select
        reply_episodes.object_id,
        reply_episodes.episode_number,
        min(
            case
                when history.valid_from_at > reply_episodes.started_at then history.valid_from_at
                else reply_episodes.started_at
            end
        ) as closed_at
    from reply_episodes
    inner join history
        on history.object_id = reply_episodes.object_id
        and not (history.is_open or history.is_paused)
        and (history.valid_to_at is null or history.valid_to_at > reply_episodes.started_at)
    group by reply_episodes.object_id, reply_episodes.episode_number
),

response_clocks as (
    select
        reply_episodes.object_id,
        reply_episodes.metric,
        reply_episodes.episode_number as clock_number,
        reply_episodes.started_at,
        reply_episodes.start_message_id,
        case
            when closures.closed_at is not null
                and (reply_episodes.responded_at is null or closures.closed_at < reply_episodes.responded_at)
                then closures.closed_at
            else reply_episodes.responded_at
        end as stopped_at,
        case
            when closures.closed_at is not null
                and (reply_episodes.responded_at is null or closures.closed_at < reply_episodes.responded_at)
                then 'closed'
            when reply_episodes.responded_at is not null then 'responded'
        end as stop_reason,
        reply_episodes.response_message_id,
        reply_episodes.responder_manager_id,
        reply_episodes.responder_side,
        reply_episodes.is_undetermined
    from reply_episodes
    left join closures
        on closures.object_id = reply_episodes.object_id
        and closures.episode_number = reply_episodes.episode_number
),

resolution_clocks as (
    select
        object_id,
        'resolution' as metric,
        episode_number + 1 as clock_number,
        started_at,
        cast(null as bigint) as start_message_id,
        resolved_at as stopped_at,
        case when resolved_at is not null then 'resolved' end as stop_reason,
        cast(null as bigint) as response_message_id,
        cast(null as bigint) as responder_manager_id,
        cast(null as {{ cb_type_string() }}) as responder_side,
        false as is_undetermined
    from resolution_episodes
),

clocks as (
    select * from response_clocks
    where coalesce(stop_reason, 'running') <> 'closed' or stopped_at > started_at
    union all
    select * from resolution_clocks
),

current_statuses as (
    select
        object_id,
        is_open or is_paused or is_resolved as is_counted
    from history
    where is_current
),

final as (
    select
        clocks.object_id,
        conversations.stream_id,
        policies.policy_key,
        clocks.metric,
        clocks.clock_number,
        clocks.started_at,
        clocks.start_message_id,
        clocks.stopped_at,
        clocks.stop_reason,
        clocks.response_message_id,
        clocks.responder_manager_id,
        clocks.responder_side,
        clocks.is_undetermined,
        coalesce(clocks.stopped_at, params.as_of_at) as evaluated_at,
        policies.is_business_hours_only,
        case clocks.metric
            when 'first_response' then policies.first_response_target_seconds
            when 'next_response' then policies.next_response_target_seconds
            else policies.resolution_target_seconds
        end as target_seconds,
        policies.warning_fraction,
        policies.critical_fraction
    from clocks
    cross join params
    inner join conversations
        on conversations.object_id = clocks.object_id
    inner join policies
        on policies.policy_name = conversations.policy_name
        and policies.effective_from_at <= clocks.started_at
        and (policies.effective_to_at is null or clocks.started_at < policies.effective_to_at)
    inner join current_statuses
        on current_statuses.object_id = clocks.object_id
    where current_statuses.is_counted
)

select * from final
