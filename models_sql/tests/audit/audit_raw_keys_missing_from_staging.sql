{#-
  AUDIT (tag `audit`, not `staging`): keys present in raw but missing from
  staging over the trailing audit_window_s (default 24 h) of each raw table,
  measured back from that raw table's newest row.

  The 15-minute incremental cycle only re-reads raw rows up to
  source_lookback_s older than staging's high-water mark (HWM); a row
  delivered later than that is never picked up. This test lists every such
  key, one row per key:
    stg_ecs_order_info      an order_id missing from staging
    stg_uni_tracking_info   an order_id whose newest raw update_time is not in
                            staging (missing, or an older version kept)
    stg_uni_tracking_spath  a path event (order_id|traceSeq|pathTime) missing
  Only raw rows older than HWM - source_lookback_s are compared: newer ones
  are still ahead of the next incremental run, so an audit scheduled between
  a raw load and the next cycle raises no false alarm.
  Recover with `dbt run --full-refresh --select tag:staging` or one run with a
  wider source_lookback_s (and delete_window_s) covering the late rows.

  The staging tables are addressed by name, not ref(): a ref would make this
  test a child of the staging models, and dbt's default (eager) indirect
  selection would then pull it into `dbt test --select tag:staging`.
  store_failures keeps the listed keys in the test's audit table.
-#}
{{ config(tags=['audit'], store_failures=true) }}

{%- set window = staging_window_var('audit_window_s') -%}
{%- set lookback = staging_window_var('source_lookback_s') -%}
{%- set orders = source('raw', 'ecs_order_info') -%}
{%- set info = source('raw', 'uni_tracking_info') -%}
{%- set spath = source('raw', 'uni_tracking_spath') -%}
{%- set stg_orders = api.Relation.create(database=target.database, schema=target.schema, identifier='stg_ecs_order_info') -%}
{%- set stg_info = api.Relation.create(database=target.database, schema=target.schema, identifier='stg_uni_tracking_info') -%}
{%- set stg_spath = api.Relation.create(database=target.database, schema=target.schema, identifier='stg_uni_tracking_spath') -%}

with raw_orders as (

    select distinct order_id, add_time
    from {{ orders }}
    where add_time >= (select max(add_time) from {{ orders }}) - {{ window }}

), raw_info as (

    select order_id, max(update_time) as update_time
    from {{ info }}
    where update_time >= (select max(update_time) from {{ info }}) - {{ window }}
    group by order_id

), raw_spath as (

    select distinct order_id, traceSeq, pathTime
    from {{ spath }}
    where pathTime >= (select max(pathTime) from {{ spath }}) - {{ window }}

)

select
    'stg_ecs_order_info' as model_name,
    r.order_id as missing_key,
    r.add_time as sort_value
from raw_orders r
left join {{ stg_orders }} s on s.order_id = r.order_id
where s.order_id is null
  and r.add_time < (select max(add_time) from {{ stg_orders }}) - {{ lookback }}

union all

select
    'stg_uni_tracking_info' as model_name,
    r.order_id as missing_key,
    r.update_time as sort_value
from raw_info r
left join {{ stg_info }} s on s.order_id = r.order_id and s.update_time >= r.update_time
where s.order_id is null
  and r.update_time < (select max(update_time) from {{ stg_info }}) - {{ lookback }}

union all

select
    'stg_uni_tracking_spath' as model_name,
    r.order_id || '|' || cast(r.traceSeq as varchar) || '|' || cast(r.pathTime as varchar)
        as missing_key,
    r.pathTime as sort_value
from raw_spath r
left join {{ stg_spath }} s
    on s.order_id = r.order_id and s.traceSeq = r.traceSeq and s.pathTime = r.pathTime
where s.order_id is null
  and r.pathTime < (select max(pathTime) from {{ stg_spath }}) - {{ lookback }}
