{{ config(materialized='table') }}
-- one row per conversation created by as_of_at, with the SLA policy of its stream (or the default):
-- policy_name, and the version of it in force when the conversation was created (policy_key). Each
-- clock is measured against the version in force when it started (int_sla_clocks).
with

objects as (
    select * from {{ ref('stg_commbox__objects') }}
),

policies as (
    select * from {{ ref('stg_commbox__sla_policies') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

stream_policies as (
    select distinct
        policy_name,
        stream_id
    from policies
    where not is_default
),

keyed as (
    select
        objects.object_id,
        objects.stream_id,
        objects.status_id as current_status_id,
        objects.created_at,
        objects.assigned_manager_id,
        coalesce(stream_policies.policy_name, 'default') as policy_name
    from objects
    cross join params
    left join stream_policies
        on stream_policies.stream_id = objects.stream_id
    where objects.created_at <= params.as_of_at
),

final as (
    select
        keyed.object_id,
        keyed.stream_id,
        keyed.current_status_id,
        keyed.created_at,
        keyed.assigned_manager_id,
        keyed.policy_name,
        policies.policy_key,
        policies.timezone,
        policies.is_business_hours_only,
        policies.first_response_target_seconds,
        policies.next_response_target_seconds,
        policies.resolution_target_seconds,
        policies.warning_fraction,
        policies.critical_fraction,
        policies.is_bot_response_counted
    from keyed
    inner join policies
        on policies.policy_name = keyed.policy_name
        and policies.effective_from_at <= keyed.created_at
        and (policies.effective_to_at is null or keyed.created_at < policies.effective_to_at)
)

select * from final
