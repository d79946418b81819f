{#-
  Orders: one row per order_id. add_time is fixed when the order is created;
  orders are append-only but may be delivered more than once.
  Source scan 30 min (source_lookback_s), delete window 2 h (delete_window_s),
  both measured back from max(add_time) of this table. See docs/models.md.
-#}
{{ config(
    unique_key='order_id',
    incremental_predicates=staging_delete_window('add_time'),
    sort='add_time',
    dist='order_id',
) }}

with scanned as (

    select order_id, shop_id, customer_id, order_status, amount, currency, add_time
    from {{ source('raw', 'ecs_order_info') }}
    {{ staging_scan_filter('add_time') }}

)

{{ staging_latest_per_key(
    'scanned',
    unique_key=['order_id'],
    sort_column='add_time',
    columns=['order_id', 'shop_id', 'customer_id', 'order_status', 'amount', 'currency', 'add_time'],
) }}
