-- one row per SLA policy version: `default` (stream_id null) and one per stream (policy_name), each in force
-- over [effective_from_at, effective_to_at) (NULL = still in force); written by pipelines/reporting/sla.py
with

sla_policies as (
    select * from {{ source('commbox', 'sla_policies') }}
),

final as (
    select
        cast(policy_key as {{ cb_type_string() }}) as policy_key,
        cast(policy_name as {{ cb_type_string() }}) as policy_name,
        cast(effective_from_at as {{ cb_type_timestamp() }}) as effective_from_at,
        cast(effective_to_at as {{ cb_type_timestamp() }}) as effective_to_at,
        cast(stream_id as bigint) as stream_id,
        cast(is_default as {{ cb_type_boolean() }}) as is_default,
        cast(timezone as {{ cb_type_string() }}) as timezone,
        cast(business_hours_only as {{ cb_type_boolean() }}) as is_business_hours_only,
        cast(first_response_seconds as bigint) as first_response_target_seconds,
        cast(next_response_seconds as bigint) as next_response_target_seconds,
        cast(resolution_seconds as bigint) as resolution_target_seconds,
        cast(warning_fraction as {{ cb_type_float() }}) as warning_fraction,
        cast(critical_fraction as {{ cb_type_float() }}) as critical_fraction,
        cast(bot_counts_as_response as {{ cb_type_boolean() }}) as is_bot_response_counted,
        cast(windows_from_at as {{ cb_type_timestamp() }}) as windows_from_at,
        cast(windows_to_at as {{ cb_type_timestamp() }}) as windows_to_at
    from sla_policies
)

select * from final
