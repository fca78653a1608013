-- one row per stream seen in the data or in the API's streams: CommBox's own SLA figures
-- (/stats/streamsSLAExceptions as loaded in `streams`: open conversations in SLA breach and in SLA
-- critical when the run read them, observed_at) against ours at as_of_at, measured the way CommBox
-- states them: open conversations whose first response (or the wait so far) went past its target in
-- calendar time (paused time left out), and open ones still waiting past the critical fraction of
-- it; then our first agent replies against CommBox's firstResponseTime
-- (fct_first_response_reconciliation), counted by agreement. The vendor's columns are NULL when
-- the API's streams were never loaded (has_vendor_figures false).
with

vendor as (
    select * from {{ ref('stg_commbox__streams') }}
),

conversations as (
    select * from {{ ref('fct_conversations') }}
),

outcomes as (
    select * from {{ ref('fct_sla_clock_outcomes') }}
),

policies as (
    select * from {{ ref('stg_commbox__sla_policies') }}
),

replies as (
    select * from {{ ref('fct_first_response_reconciliation') }}
),

params as (
    select * from {{ ref('int_build_params') }}
),

first_clocks as (
    select
        outcomes.object_id,
        outcomes.outcome,
        outcomes.is_past_target,
        outcomes.outcome = 'running'
            and not outcomes.is_past_target
            and outcomes.elapsed_seconds >= round(outcomes.target_seconds * policies.critical_fraction)
            as is_critical
    from outcomes
    inner join policies
        on policies.policy_key = outcomes.policy_key
    where outcomes.metric = 'first_response'
        and outcomes.clock_number = 1
        and outcomes.time_basis = 'calendar'
),

ours as (
    select
        conversations.stream_id,
        count(*) as open_conversations,
        sum(case when first_clocks.is_past_target then 1 else 0 end) as breached_conversations,
        sum(case when first_clocks.is_critical then 1 else 0 end) as critical_conversations
    from conversations
    left join first_clocks
        on first_clocks.object_id = conversations.object_id
    where conversations.is_open
    group by conversations.stream_id
),

reply_counts as (
    select
        stream_id,
        sum(case when first_response_agreement = 'agree' then 1 else 0 end) as first_replies_agree,
        sum(case when first_response_agreement = 'disagree' then 1 else 0 end) as first_replies_disagree,
        sum(case when first_response_agreement = 'unknown' then 1 else 0 end) as first_replies_unknown
    from replies
    group by stream_id
),

stream_ids as (
    select stream_id from vendor
    union distinct
    select stream_id from conversations
),

final as (
    select
        stream_ids.stream_id,
        vendor.stream_id is not null as has_vendor_figures,
        vendor.observed_at as vendor_observed_at,
        params.as_of_at,
        vendor.open_count as vendor_open_conversations,
        vendor.sla_breach_count as vendor_breached_conversations,
        vendor.sla_critical_count as vendor_critical_conversations,
        coalesce(ours.open_conversations, 0) as open_conversations,
        coalesce(ours.breached_conversations, 0) as breached_conversations,
        coalesce(ours.critical_conversations, 0) as critical_conversations,
        coalesce(reply_counts.first_replies_agree, 0) as first_replies_agree,
        coalesce(reply_counts.first_replies_disagree, 0) as first_replies_disagree,
        coalesce(reply_counts.first_replies_unknown, 0) as first_replies_unknown
    from stream_ids
    cross join params
    left join vendor
        on vendor.stream_id = stream_ids.stream_id
    left join ours
        on ours.stream_id = stream_ids.stream_id
    left join reply_counts
        on reply_counts.stream_id = stream_ids.stream_id
)

select * from final
