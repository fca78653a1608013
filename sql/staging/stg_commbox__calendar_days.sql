-- one row per policy and local date, with the UTC bounds of that local day (23 or 25 hours across DST)
with

calendar_days as (
    select * from {{ source('commbox', 'calendar_days') }}
),

final as (
    select
        cast(policy_key as {{ cb_type_string() }}) as policy_key,
        cast(stream_id as bigint) as stream_id,
        cast(local_date as date) as local_date,
        cast(day_start_at as {{ cb_type_timestamp() }}) as day_start_at,
        cast(day_end_at as {{ cb_type_timestamp() }}) as day_end_at,
        cast(is_business_day as {{ cb_type_boolean() }}) as is_business_day,
        cast(business_seconds as bigint) as business_seconds
    from calendar_days
)

select * from final
