-- one row per stream (channel) read, with the API's counters as of the last run
with

streams as (
    select * from {{ source('commbox', 'streams') }}
),

final as (
    select
        cast(stream_id as bigint) as stream_id,
        cast(open_count as bigint) as open_count,
        cast(sla_breach_count as bigint) as sla_breach_count,
        cast(sla_critical_count as bigint) as sla_critical_count,
        cast(availability_state as bigint) as availability_state,
        observed_at
    from streams
)

select * from final
