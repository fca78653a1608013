-- one row per running segment [segment_start_at, segment_end_at) of an SLA clock; segment_end_at NULL
-- = still running (open-ended). Response clocks run in one open-ended segment from their start (the
-- stop is applied when elapsed time is measured). Resolution clocks run while the conversation is in
-- an open status and pause in a paused one; a final open-ended projection segment from the stop (or
-- from as_of_at while paused) lets the deadlines be located as if the clock kept running.
with

clocks as (
    select * from {{ ref('int_sla_clocks') }}
),

history as (
    select * from {{ ref('int_status_history') }}
),

response_segments as (
    select
        object_id,
        metric,
        clock_number,
        started_at as segment_start_at,
        cast(null as {{ cb_type_timestamp() }}) as segment_end_at,
        false as is_projection
    from clocks
    where metric <> 'resolution'
),

resolution_running as (
    select
        clocks.object_id,
        clocks.metric,
        clocks.clock_number,
        history.valid_from_at as segment_start_at,
        history.valid_to_at as segment_end_at,
        false as is_projection
    from clocks
    inner join history
        on history.object_id = clocks.object_id
        and history.episode_number = clocks.clock_number - 1
        and history.is_open
    where clocks.metric = 'resolution'
),

still_running as (
    select distinct
        object_id,
        metric,
        clock_number
    from resolution_running
    where segment_end_at is null
),

resolution_projections as (
    select
        clocks.object_id,
        clocks.metric,
        clocks.clock_number,
        clocks.evaluated_at as segment_start_at,
        cast(null as {{ cb_type_timestamp() }}) as segment_end_at,
        true as is_projection
    from clocks
    left join still_running
        on still_running.object_id = clocks.object_id
        and still_running.clock_number = clocks.clock_number
        and still_running.metric = clocks.metric
    where clocks.metric = 'resolution'
        and still_running.object_id is null
),

segments as (
    select * from response_segments
    union all
    select * from resolution_running
    union all
    select * from resolution_projections
),

final as (
    select
        object_id,
        metric,
        clock_number,
        row_number() over (
            partition by object_id, metric, clock_number
            order by segment_start_at, is_projection
        ) as segment_number,
        segment_start_at,
        segment_end_at,
        is_projection
    from segments
)

select * from final
