-- one row per stream x metric x time basis x local date a clock started on: the clocks partitioned
-- (met + breached + running + undetermined = clocks), the running ones already past their target,
-- attainment = met / (met + breached + running past target) (a running clock past its target can no
-- longer be met; NULL when there is none of these), the target, and the median time of the clocks
-- that stopped (met or breached), all in that time basis
with

outcomes as (
    select * from {{ ref('fct_sla_clock_outcomes') }}
),

final as (
    select
        stream_id,
        metric,
        time_basis,
        started_local_date as local_date,
        count(*) as clocks,
        sum(case when outcome = 'met' then 1 else 0 end) as met_clocks,
        sum(case when outcome = 'breached' then 1 else 0 end) as breached_clocks,
        sum(case when outcome = 'running' then 1 else 0 end) as running_clocks,
        sum(case when outcome = 'running' and is_past_target then 1 else 0 end) as running_past_target_clocks,
        sum(case when outcome = 'undetermined' then 1 else 0 end) as undetermined_clocks,
        cast(sum(case when outcome = 'met' then 1 else 0 end) as {{ cb_type_float() }})
        / nullif(sum(case when outcome in ('met', 'breached') or (outcome = 'running' and is_past_target) then 1 else 0 end), 0)
            as attainment,
        min(target_seconds) as min_target_seconds,
        max(target_seconds) as max_target_seconds,
        {{ cb_median("case when outcome in ('met', 'breached') then elapsed_seconds end") }} as median_elapsed_seconds
    from outcomes
    group by stream_id, metric, time_basis, started_local_date
)

select * from final
