-- one row per customer
with

users as (
    select * from commbox_raw.users
),

final as (
    select
        cast(user_id as bigint) as user_id,
        cast(unique_id as varchar) as unique_id,
        cast(first_name as varchar) as first_name,
        cast(last_name as varchar) as last_name,
        cast(email as varchar) as email,
        cast(phone1 as varchar) as phone1,
        cast(phone2 as varchar) as phone2,
        cast(gender as varchar) as gender,
        cast(locale as varchar) as locale,
        cast(birthday as date) as birthday,
        cast(number_identities as bigint) as number_identities
    from users
)

select * from final
