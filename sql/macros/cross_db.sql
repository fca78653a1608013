{#-
  The few places where DuckDB, PostgreSQL and BigQuery differ, as dispatched macros (a project that
  installs this package may override any of them: see docs/dbt.md). Each per-adapter body is one line
  between `%}` and `{%`, because the project's own runner (pipelines/reporting/views.py) reads these
  bodies too: one definition for dbt and for `commbox-etl views`.
  Arguments are SQL expressions, always wrapped in parentheses so that `a + b` stays one operand.
-#}

{#- seconds since 1970 of an absolute timestamp, as a double; never through a naive timestamp, so the
    session time zone cannot change it -#}
{% macro cb_epoch(expr) %}{{ return(adapter.dispatch('cb_epoch', 'commbox')(expr)) }}{% endmacro %}
{% macro default__cb_epoch(expr) %}cast(extract(epoch from ({{ expr }})) as double precision){% endmacro %}
{% macro duckdb__cb_epoch(expr) %}epoch(({{ expr }})){% endmacro %}
{% macro bigquery__cb_epoch(expr) %}(unix_micros(({{ expr }})) / 1000000){% endmacro %}

{#- back from seconds since 1970 to an absolute timestamp; no interval arithmetic (BigQuery's
    `interval (col) second` does not take a column everywhere) -#}
{% macro cb_from_epoch(expr) %}{{ return(adapter.dispatch('cb_from_epoch', 'commbox')(expr)) }}{% endmacro %}
{% macro default__cb_from_epoch(expr) %}to_timestamp(({{ expr }})){% endmacro %}
{% macro bigquery__cb_from_epoch(expr) %}timestamp_micros(cast(round(({{ expr }}) * 1000000) as int64)){% endmacro %}

{#- the median aggregate; BigQuery has no exact one, so it is an approximate quantile there -#}
{% macro cb_median(expr) %}{{ return(adapter.dispatch('cb_median', 'commbox')(expr)) }}{% endmacro %}
{% macro default__cb_median(expr) %}percentile_cont(0.5) within group (order by ({{ expr }})){% endmacro %}
{% macro duckdb__cb_median(expr) %}median(({{ expr }})){% endmacro %}
{% macro bigquery__cb_median(expr) %}approx_quantiles(({{ expr }}), 100)[offset(50)]{% endmacro %}

{#- column types: an absolute timestamp (timestamptz; BigQuery's timestamp is absolute already), text,
    a double and a boolean. bigint and date are spelt the same everywhere. -#}
{% macro cb_type_timestamp() %}{{ return(adapter.dispatch('cb_type_timestamp', 'commbox')()) }}{% endmacro %}
{% macro default__cb_type_timestamp() %}timestamptz{% endmacro %}
{% macro bigquery__cb_type_timestamp() %}timestamp{% endmacro %}

{% macro cb_type_string() %}{{ return(adapter.dispatch('cb_type_string', 'commbox')()) }}{% endmacro %}
{% macro default__cb_type_string() %}varchar{% endmacro %}
{% macro bigquery__cb_type_string() %}string{% endmacro %}

{% macro cb_type_float() %}{{ return(adapter.dispatch('cb_type_float', 'commbox')()) }}{% endmacro %}
{% macro default__cb_type_float() %}double precision{% endmacro %}
{% macro bigquery__cb_type_float() %}float64{% endmacro %}

{% macro cb_type_boolean() %}{{ return(adapter.dispatch('cb_type_boolean', 'commbox')()) }}{% endmacro %}
{% macro default__cb_type_boolean() %}boolean{% endmacro %}
{% macro bigquery__cb_type_boolean() %}bool{% endmacro %}
