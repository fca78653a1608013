{{ config(materialized='table') }}
-- one row per business window, with the business seconds of the policy before it and its "slot":
-- [slot_start_at, window_end_at) runs from the previous window's end, so slots tile the timeline and
-- any instant falls in exactly one. The business-seconds clock at instant t inside a slot is
-- cumulative_seconds_before + max(0, t - window_start_at).
with

windows as (
    select * from {{ ref('stg_commbox__business_windows') }}
),

policies as (
    select * from {{ ref('stg_commbox__sla_policies') }}
),

final as (
    select
        windows.policy_key,
        windows.window_start_at,
        windows.window_end_at,
        windows.local_date,
        windows.window_seconds,
        coalesce(
            lag(windows.window_end_at) over (partition by windows.policy_key order by windows.window_start_at),
            policies.windows_from_at
        ) as slot_start_at,
        coalesce(
            sum(windows.window_seconds) over (
                partition by windows.policy_key
                order by windows.window_start_at
                rows between unbounded preceding and 1 preceding
            ),
            0
        ) as cumulative_seconds_before
    from windows
    inner join policies
        on policies.policy_key = windows.policy_key
)

select * from final
