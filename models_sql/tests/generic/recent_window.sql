{#-
  The hourly (scope "recent") data tests: their cost follows the batch, not
  the history. "Recent" is the trailing test_window_s seconds of the model's
  sort column, measured back from max(sort_column) of the model itself (the
  same high-water mark the incremental run uses). On Redshift the window is a
  range on the SORTKEY, so zone maps skip older blocks; on PostgreSQL an index
  on the sort column plays that role.

    data_tests:
      - recent_unique:
          arguments: {columns: ["order_id"], sort_column: add_time}
-#}


{#-
  Key uniqueness of every key touched in the recent window, checked against
  the WHOLE table: a key with a row in the window fails when any other row
  with that key exists, however old it is (on stg_uni_tracking_info the row
  an update replaces can be days old). Fails with one row per duplicated key
  and its number of rows. The join is on the key (its first column is the
  DISTKEY, so the join is co-located on Redshift). Keys with a NULL part are
  not compared (recent_not_null on the key columns catches those).

  When the sort column is itself part of the key (stg_uni_tracking_spath's
  pathTime), every row sharing a recent row's key has that same sort value,
  so it lies in the window too: the whole-table side is then restricted to
  the window as well, which proves the same and reads only the window.
-#}
{% test recent_unique(model, columns, sort_column) %}

with recent_keys as (

    select distinct {{ columns | join(', ') }}
    from {{ model }}
    where {{ staging_recent_filter(model, sort_column) }}
    {%- for column in columns %}
      and {{ column }} is not null
    {%- endfor %}

)

select
    {%- for column in columns %}
    t.{{ column }},
    {%- endfor %}
    count(*) as duplicate_rows
from {{ model }} t
inner join recent_keys r
    on {% for column in columns %}t.{{ column }} = r.{{ column }}{% if not loop.last %} and {% endif %}{% endfor %}
{%- if sort_column | lower in columns | map('lower') | list %}
where t.{{ staging_recent_filter(model, sort_column) }}
{%- endif %}
group by {% for column in columns %}t.{{ column }}{% if not loop.last %}, {% endif %}{% endfor %}
having count(*) > 1

{% endtest %}


{#-
  not_null over the recent window. A row whose sort column itself is NULL is
  never in any window: incremental runs cannot insert one (their scan filter
  drops it), only a full refresh can; the full-scope not_null catches it.
-#}
{% test recent_not_null(model, column_name, sort_column) %}

select {{ column_name }}
from {{ model }}
where {{ staging_recent_filter(model, sort_column) }}
  and {{ column_name }} is null

{% endtest %}
