{#-
  Tracking info: one row per order_id, re-sent with a newer update_time on
  every change; staging keeps the newest. Source scan 30 min
  (source_lookback_s). No delete window: the row an update replaces can be
  arbitrarily old, so the DELETE must find it by order_id alone (the DISTKEY
  on Redshift). See docs/models.md.
-#}
{{ config(
    unique_key='order_id',
    sort='update_time',
    dist='order_id',
) }}

with scanned as (

    select order_id, tracking_number, carrier_code, tracking_status, update_time
    from {{ source('raw', 'uni_tracking_info') }}
    {{ staging_scan_filter('update_time') }}

)

{{ staging_latest_per_key(
    'scanned',
    unique_key=['order_id'],
    sort_column='update_time',
    columns=['order_id', 'tracking_number', 'carrier_code', 'tracking_status', 'update_time'],
) }}
