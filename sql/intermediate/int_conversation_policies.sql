{{ config(materialized='table') }}
-- one row per conversation created by as_of_at, with the SLA policy of its stream (or the default)
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

default_policy as (
    select policy_key from policies where is_default
),

keyed as (
    select
        objects.object_id,
        objects.stream_id,
        objects.status_id as current_status_id,
        objects.created_at,
        objects.assigned_manager_id,
        coalesce(stream_policies.policy_key, default_policy.policy_key) as policy_key
    from objects
    cross join params
    cross join default_policy
    left join policies as stream_policies
        on stream_policies.stream_id = objects.stream_id
        and not stream_policies.is_default
    where objects.created_at <= params.as_of_at
),

final as (
    select
        keyed.object_id,
        keyed.stream_id,
        keyed.current_status_id,
        keyed.created_at,
        keyed.assigned_manager_id,
        keyed.policy_key,
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
        on policies.policy_key = keyed.policy_key
)

select * from final
