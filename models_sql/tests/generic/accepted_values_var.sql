{#-
  accepted_values whose list is a project var, so the domain of a status or
  currency column is configuration, not code (the raw contract does not define
  these domains). The schema.yml entries are enabled only when the var is a
  non-empty list, and their severity is the var accepted_values_severity
  (default warn). With sort_column, only the recent window
  (staging_recent_filter) is checked; without it, the whole table.
  NULLs are not checked (as in dbt's accepted_values).

    data_tests:
      - accepted_values_var:
          arguments: {values_var: accepted_currencies, sort_column: add_time}
          config:
            enabled: "{{ var('accepted_currencies') | length > 0 }}"
            severity: "{{ var('accepted_values_severity') }}"
-#}
{% test accepted_values_var(model, column_name, values_var, sort_column=none) %}

{%- set values = var(values_var) -%}
{%- if values is string or values is mapping or values is not iterable -%}
  {{ exceptions.raise_compiler_error(
      "var '" ~ values_var ~ "' must be a list of values, got '" ~ values ~ "'") }}
{%- endif %}

select {{ column_name }} as value_field, count(*) as n_records
from {{ model }}
where {{ column_name }} is not null
  and {{ column_name }} not in (
    {%- for value in values %}
    '{{ value | string | replace("'", "''") }}'{% if not loop.last %},{% endif %}
    {%- endfor %}
  )
  {%- if sort_column %}
  and {{ staging_recent_filter(model, sort_column) }}
  {%- endif %}
group by {{ column_name }}

{% endtest %}
