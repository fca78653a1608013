-- one row per responsible agent (or bot) x time basis x local date a clock started on: the clocks
-- they held when each was decided (fct_sla_events.responsible_manager_id), partitioned as in
-- agg_sla_attainment_daily (met + breached + running + undetermined = clocks), the running ones
-- already past target, and breach_rate = (breached + running past target) / (met + breached +
-- running past target), NULL when there is none of these; is_bot keeps bots apart from people
with

outcomes as (
    select * from {{ ref('fct_sla_clock_outcomes') }}
),

final as (
    select
        responsible_manager_id as manager_id,
        time_basis,
        started_local_date as local_date,
        max(case when is_responsible_bot then 1 else 0 end) = 1 as is_bot,
        count(*) as clocks,
        sum(case when outcome = 'met' then 1 else 0 end) as met_clocks,
        sum(case when outcome = 'breached' then 1 else 0 end) as breached_clocks,
        sum(case when outcome = 'running' then 1 else 0 end) as running_clocks,
        sum(case when outcome = 'running' and is_past_target then 1 else 0 end) as running_past_target_clocks,
        sum(case when outcome = 'undetermined' then 1 else 0 end) as undetermined_clocks,
        cast(sum(case when outcome = 'breached' or (outcome = 'running' and is_past_target) then 1 else 0 end)
            as {{ cb_type_float() }})
        / nullif(sum(case when outcome in ('met', 'breached') or (outcome = 'running' and is_past_target) then 1 else 0 end), 0)
            as breach_rate
    from outcomes
    where responsible_manager_id is not null
    group by responsible_manager_id, time_basis, started_local_date
)

select * from final
