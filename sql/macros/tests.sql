{#- A generic test: no two rows share the same values of `columns` (the grain of a model whose key
    spans several columns). Fails with the duplicated key values. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as duplicate_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
