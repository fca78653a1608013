{#-
  Macros that read the package's vars. The runner (pipelines/reporting/views.py) renders the same
  calls from its own settings: `as_of` and `[reporting] custom_fields`.
-#}

{#- the build's "now" for clocks still running: var('commbox_as_of') as a UTC timestamp literal, or NULL,
    which the models read as the end of the loaded data (deterministic) -#}
{% macro cb_as_of() -%}
{%- set as_of = var('commbox_as_of', none) -%}
{%- if as_of -%}
cast('{{ as_of }}' as {{ cb_type_timestamp() }})
{%- else -%}
cast(null as {{ cb_type_timestamp() }})
{%- endif -%}
{%- endmacro %}

{#- the allow-listed custom fields (`content__*` columns of the raw objects table), each followed by a
    comma, for a select list; var('commbox_custom_fields', []) -#}
{% macro cb_custom_fields(relation_alias) -%}
{%- for column in var('commbox_custom_fields', []) -%}
{%- if not modules.re.match('^content__[a-z0-9_]+$', column) -%}
{{ exceptions.raise_compiler_error("commbox_custom_fields: " ~ column ~ " is not a content__* column name") }}
{%- endif -%}
{{ relation_alias }}.{{ column }},
{% endfor -%}
{%- endmacro %}
