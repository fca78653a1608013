-- one row per half-open business interval [window_start_at, window_end_at) of a policy, in UTC
with

business_windows as (
    select * from {{ source('commbox', 'business_windows') }}
),

final as (
    select
        cast(policy_key as {{ cb_type_string() }}) as policy_key,
        cast(stream_id as bigint) as stream_id,
        cast(window_start_at as {{ cb_type_timestamp() }}) as window_start_at,
        cast(window_end_at as {{ cb_type_timestamp() }}) as window_end_at,
        cast(local_date as date) as local_date,
        cast(window_seconds as bigint) as window_seconds
    from business_windows
)

select * from final
