-- one row per customer identity (an e-mail address, a phone number, a WhatsApp or web handle)
with

user_identities as (
    select * from {{ source('commbox', 'user_identities') }}
),

final as (
    select
        cast(identity_id as bigint) as identity_id,
        cast(user_id as bigint) as user_id,
        cast(stream_provider_type as bigint) as stream_provider_type,
        cast(stream_provider_id as {{ cb_type_string() }}) as stream_provider_id,
        cast(stream_provider_email as {{ cb_type_string() }}) as stream_provider_email,
        cast(first_name as {{ cb_type_string() }}) as first_name,
        cast(last_name as {{ cb_type_string() }}) as last_name
    from user_identities
)

select * from final
