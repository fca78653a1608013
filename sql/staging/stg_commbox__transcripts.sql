-- one row per conversation: its transcript as text
with

transcripts as (
    select * from {{ source('commbox', 'transcripts') }}
),

final as (
    select
        cast(object_id as bigint) as object_id,
        cast(stream_id as bigint) as stream_id,
        cast(user_id as bigint) as user_id,
        cast(transcript as {{ cb_type_string() }}) as transcript
    from transcripts
)

select * from final
