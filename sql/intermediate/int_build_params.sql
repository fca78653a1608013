-- one row: the "now" of this build. Clocks still running are measured up to as_of_at, which is the
-- build's parameter (views.build_views(as_of=...)) or, by default, the end of the loaded data.
with

objects as (
    select * from {{ ref('stg_commbox__objects') }}
),

messages as (
    select * from {{ ref('stg_commbox__messages') }}
),

activities as (
    select * from {{ ref('stg_commbox__activities') }}
),

data_ends as (
    select max(updated_at) as last_at from objects
    union all
    select max(created_at) as last_at from objects
    union all
    select max(sent_at) as last_at from messages
    union all
    select max(created_at) as last_at from activities
),

final as (
    select
        coalesce({{ cb_as_of() }}, max(last_at)) as as_of_at
    from data_ends
)

select * from final
