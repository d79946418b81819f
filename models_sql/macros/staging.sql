{#-
  Shared pieces of the three incremental staging models (docs/models.md).

  Everything here renders to plain SQL that Redshift, PostgreSQL and DuckDB
  all accept unchanged: no adapter dispatch, no quoting of identifiers.

  The high-water mark (HWM) of a staging model is max(<sort column>) of the
  staging table itself ({{ this }}), read when the model runs. The source scan
  and the delete window are both measured back from that same HWM.
-#}

{% macro staging_window_var(name) -%}
  {#- a window var as a non-negative integer number of seconds -#}
  {%- set raw_value = var(name) -%}
  {%- set seconds = raw_value | int(-1) -%}
  {%- if seconds < 0 or (raw_value | string | trim) != (seconds | string) -%}
    {{ exceptions.raise_compiler_error(
        "var '" ~ name ~ "' must be a non-negative whole number of seconds, got '"
        ~ raw_value ~ "'") }}
  {%- endif -%}
  {{- return(seconds) -}}
{%- endmacro %}


{% macro staging_scan_filter(sort_column) -%}
  {#-
    WHERE clause of the source scan. Full refresh (or first build): no filter.
    Incremental: raw rows with sort_column >= HWM - source_lookback_s, where
    HWM is the staging table's own max, so a skipped or failed cycle simply
    widens the next scan instead of losing rows. An empty staging table
    (HWM null) scans everything (timestamps are epoch seconds, >= 0).
  -#}
  {%- if is_incremental() %}
    where {{ sort_column }} >= (
        select coalesce(max({{ sort_column }}), 0) from {{ this }}
    ) - {{ staging_window_var('source_lookback_s') }}
  {%- endif %}
{%- endmacro %}


{% macro staging_delete_window(sort_column) -%}
  {#-
    incremental_predicates for a model with a delete window: delete+insert
    only deletes staging rows whose sort column is within delete_window_s of
    the same HWM the scan used (the DELETE runs before the INSERT, so the
    subquery still sees the pre-run table).

    The predicate names the sort column UNQUALIFIED and the staging table only
    inside its own subquery. That is valid on all three adapters because every
    model uses a single-column unique_key, so each adapter's DELETE has the
    target table alone in its outer scope:
      postgres: delete from <this> as DBT_INTERNAL_DEST where (k) in (...) and <pred>
      redshift: delete from <this> where (k) in (...) and <pred>
      duckdb:   delete from <this> where (k) in (...) and <pred>
    (dbt-duckdb's composite-key branch joins the target, aliased
    DBT_INCREMENTAL_TARGET, with the temp table, where no qualifier works on
    every adapter; hence stg_uni_tracking_spath's derived path_key.)

    Invariant, enforced here at compile time: the delete window must cover the
    source scan, otherwise a re-read row whose earlier copy lies between
    HWM - delete_window_s and HWM - source_lookback_s is inserted again while
    the earlier copy is kept: a duplicate key.
  -#}
  {%- set lookback = staging_window_var('source_lookback_s') -%}
  {%- set window = staging_window_var('delete_window_s') -%}
  {%- if window < lookback -%}
    {{ exceptions.raise_compiler_error(
        "model " ~ model.name ~ ": delete window delete_window_s=" ~ window
        ~ " s is shorter than the source scan source_lookback_s=" ~ lookback
        ~ " s. Incremental runs re-insert raw rows up to " ~ lookback
        ~ " s older than the high-water mark, but would only delete staging rows up to "
        ~ window ~ " s older, so rows between the two windows would appear twice"
        ~ " (duplicate unique keys). Set delete_window_s >= source_lookback_s.") }}
  {%- endif -%}
  {{- return([
      sort_column ~ " >= (select max(" ~ sort_column ~ ") from " ~ this ~ ") - " ~ window
  ]) -}}
{%- endmacro %}


{% macro staging_latest_per_key(relation, unique_key, sort_column, columns) -%}
  {#-
    One row per unique_key: the one with the greatest sort column; ties
    (re-deliveries, exact duplicates) broken by the remaining columns in a
    fixed order, NULLs last on every adapter, so an incremental run and a full
    refresh keep the same row. `columns` is the output column list.
  -#}
  {%- set order_by = [sort_column ~ " desc nulls last"] -%}
  {%- for column in columns if column not in unique_key and column != sort_column -%}
    {%- do order_by.append(column ~ " desc nulls last") -%}
  {%- endfor -%}
  select {{ columns | join(', ') }}
  from (
      select
          {{ columns | join(',\n          ') }},
          row_number() over (
              partition by {{ unique_key | join(', ') }}
              order by {{ order_by | join(', ') }}
          ) as dbt_runner_rank
      from {{ relation }}
  ) ranked
  where dbt_runner_rank = 1
{%- endmacro %}


{% macro staging_recent_filter(model, sort_column) -%}
  {#-
    Condition of the hourly ("recent" scope) data tests
    (tests/generic/recent_window.sql): the row's sort column lies within
    test_window_s of max(sort column) of the model itself.

    The bound is read when the test runs (one max() on the sort column: the
    SORTKEY on Redshift, an index on PostgreSQL) and written into the test's
    SQL as a literal. A planner sees the true width of the window that way:
    Redshift restricts the scan to the blocks whose zone maps overlap it, and
    PostgreSQL estimates the few recent rows from its statistics and uses
    the indexes, where a scalar subquery would leave it guessing a third of
    the table and scanning all of it. An empty model has no recent rows.
    While parsing, or when the table does not exist yet (`dbt compile` or
    `docs generate` before the first run), the bound stays a subquery.
  -#}
  {%- set window = staging_window_var('test_window_s') -%}
  {%- set existing = adapter.get_relation(
        database=model.database, schema=model.schema, identifier=model.identifier)
      if execute else none -%}
  {%- if existing is none -%}
    {{ sort_column }} >= (select max({{ sort_column }}) from {{ model }}) - {{ window }}
  {%- else -%}
    {%- set hwm = run_query("select max(" ~ sort_column ~ ") from " ~ model).columns[0].values()[0] -%}
    {%- if hwm is none -%}
      1 = 0
    {%- else -%}
      {{ sort_column }} >= {{ (hwm | int) - window }}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}
