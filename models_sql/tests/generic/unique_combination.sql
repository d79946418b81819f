{#-
  Generic test: no two rows share the same values of `columns` (a multi-column
  unique key). Fails with one row per duplicated combination and its count.
  Rows where any of the columns is NULL are not compared (not_null tests on
  the key columns catch those).

    data_tests:
      - unique_combination:
          arguments:
            columns: ["order_id", "traceSeq", "pathTime"]
-#}
{% test unique_combination(model, columns) %}

select {{ columns | join(', ') }}, count(*) as duplicate_rows
from {{ model }}
where {% for column in columns %}{{ column }} is not null{% if not loop.last %} and {% endif %}{% endfor %}
group by {{ columns | join(', ') }}
having count(*) > 1

{% endtest %}
