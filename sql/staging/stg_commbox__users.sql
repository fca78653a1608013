-- one row per customer
with

users as (
    select * from {{ source('commbox', 'users') }}
),

final as (
    select
        cast(user_id as bigint) as user_id,
        cast(unique_id as {{ cb_type_string() }}) as unique_id,
        cast(first_name as {{ cb_type_string() }}) as first_name,
        cast(last_name as {{ cb_type_string() }}) as last_name,
        cast(email as {{ cb_type_string() }}) as email,
        cast(phone1 as {{ cb_type_string() }}) as phone1,
        cast(phone2 as {{ cb_type_string() }}) as phone2,
        cast(gender as {{ cb_type_string() }}) as gender,
        cast(locale as {{ cb_type_string() }}) as locale,
        cast(birthday as date) as birthday,
        cast(number_identities as bigint) as number_identities
    from users
)

select * from final
