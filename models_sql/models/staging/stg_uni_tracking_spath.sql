{#-
  Tracking path events: one row per (order_id, traceSeq, pathTime). Events are
  append-only but may be delivered more than once. Source scan 30 min
  (source_lookback_s), delete window 2 h (delete_window_s) on pathTime, the
  SORTKEY and part of the key, so a re-read event's earlier copy always lies
  inside the window. See docs/models.md.

  path_key is the composite key as one column: order_id || '|' || traceSeq ||
  '|' || pathTime (injective: the last two parts are integers, so the string
  splits unambiguously from the right). delete+insert uses it as its
  single-column unique_key, which keeps every adapter's DELETE in the simple
  "where (key) in (...) and <predicate>" form the delete window needs (see
  macros/staging.sql). Keys are never NULL (tested), so neither is path_key.
-#}
{{ config(
    unique_key='path_key',
    incremental_predicates=staging_delete_window('pathTime'),
    sort='pathTime',
    dist='order_id',
) }}

with scanned as (

    select
        order_id,
        traceSeq,
        pathTime,
        location,
        description,
        order_id || '|' || cast(traceSeq as varchar) || '|' || cast(pathTime as varchar)
            as path_key
    from {{ source('raw', 'uni_tracking_spath') }}
    {{ staging_scan_filter('pathTime') }}

)

{{ staging_latest_per_key(
    'scanned',
    unique_key=['order_id', 'traceSeq', 'pathTime'],
    sort_column='pathTime',
    columns=['order_id', 'traceSeq', 'pathTime', 'location', 'description', 'path_key'],
) }}
