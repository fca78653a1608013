-- one row per stream x local date (the date a clock started, in the stream's time zone): clocks,
-- met, breached, compliance = met / (met + breached), undetermined (clocks that depend on an
-- unknown-side message: neither met nor breached, counted apart), warning and critical counts (the
-- level reached without breaching), still running, and the average and median first response (of
-- determined clocks stopped by a reply)
with

events as (
    select * from {{ ref('fct_sla_events') }}
),

final as (
    select
        stream_id,
        started_local_date as local_date,
        count(*) as events,
        sum(case when is_met then 1 else 0 end) as met_events,
        sum(case when is_breached then 1 else 0 end) as breached_events,
        cast(sum(case when is_met then 1 else 0 end) as {{ cb_type_float() }})
        / nullif(sum(case when is_met or is_breached then 1 else 0 end), 0) as compliance,
        sum(case when is_undetermined then 1 else 0 end) as undetermined_events,
        sum(case when severity = 'warning' then 1 else 0 end) as warning_events,
        sum(case when severity = 'critical' then 1 else 0 end) as critical_events,
        sum(case when is_running then 1 else 0 end) as running_events,
        sum(case when metric = 'first_response' then 1 else 0 end) as first_response_events,
        sum(case when metric = 'first_response' and is_breached then 1 else 0 end) as first_response_breached_events,
        avg(case when metric = 'first_response' and stop_reason = 'responded' and not is_undetermined then calendar_seconds end)
            as avg_first_response_seconds,
        {{ cb_median("case when metric = 'first_response' and stop_reason = 'responded' and not is_undetermined then calendar_seconds end") }}
            as median_first_response_seconds,
        {{ cb_median("case when metric = 'first_response' and stop_reason = 'responded' and not is_undetermined then business_seconds end") }}
            as median_first_response_business_seconds
    from events
    group by stream_id, started_local_date
)

select * from final
