-- one row per responsible agent x local date (the date a clock started, in its stream's time zone):
-- clocks they held, met, breached, undetermined (counted apart), compliance, responses they sent and
-- their response times (of determined clocks only)
with

events as (
    select * from {{ ref('fct_sla_events') }}
),

responsible as (
    select
        responsible_manager_id as manager_id,
        started_local_date as local_date,
        count(*) as events,
        sum(case when is_met then 1 else 0 end) as met_events,
        sum(case when is_breached then 1 else 0 end) as breached_events,
        sum(case when is_undetermined then 1 else 0 end) as undetermined_events,
        sum(case when is_running then 1 else 0 end) as running_events
    from events
    where responsible_manager_id is not null
    group by responsible_manager_id, started_local_date
),

responded as (
    select
        responder_manager_id as manager_id,
        started_local_date as local_date,
        count(*) as responses,
        avg(calendar_seconds) as avg_response_seconds,
        avg(business_seconds) as avg_response_business_seconds,
        {{ cb_median('calendar_seconds') }} as median_response_seconds
    from events
    where stop_reason = 'responded'
        and responder_side = 'agent'
        and responder_manager_id is not null
        and not is_undetermined
    group by responder_manager_id, started_local_date
),

keys as (
    select manager_id, local_date from responsible
    union distinct
    select manager_id, local_date from responded
),

final as (
    select
        keys.manager_id,
        keys.local_date,
        coalesce(responsible.events, 0) as events,
        coalesce(responsible.met_events, 0) as met_events,
        coalesce(responsible.breached_events, 0) as breached_events,
        coalesce(responsible.undetermined_events, 0) as undetermined_events,
        coalesce(responsible.running_events, 0) as running_events,
        cast(responsible.met_events as {{ cb_type_float() }})
        / nullif(responsible.met_events + responsible.breached_events, 0) as compliance,
        coalesce(responded.responses, 0) as responses,
        responded.avg_response_seconds,
        responded.avg_response_business_seconds,
        responded.median_response_seconds
    from keys
    left join responsible
        on responsible.manager_id = keys.manager_id
        and responsible.local_date = keys.local_date
    left join responded
        on responded.manager_id = keys.manager_id
        and responded.local_date = keys.local_date
)

select * from final
