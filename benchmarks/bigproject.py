"""A generated, realistic dbt project of a few hundred models, always the same.

Not a test: the project the parse-cache benchmark (``benchmarks/artifact_cache.py``)
and its tests run on. ``generate(root, models=300)`` writes, deterministically (a
seeded :class:`random.Random`, no clock, sorted output):

* ``seeds/``: 10 small CSVs (``raw_<domain>``: id, category, amount_cents, created_at);
* ``macros/``: 10 macros the models call (money, safe division, a date trunc, a
  ``generate_schema_name`` override, a jinja loop helper) and a generic test;
* ``models/staging``: one staging model per seed and then more over them (20 % of
  ``models``), each with a ``schema.yml`` entry: ``unique`` + ``not_null`` on ``id``,
  ``accepted_values`` on ``category``;
* ``models/intermediate``: 55 %, each ``ref`` s two or three earlier models (staging
  or intermediate: a DAG of depth ~10) and joins them;
* ``models/marts``: the rest, tables that aggregate three or four intermediates,
  with ``unique``/``not_null`` tests, a ``relationships`` test now and then and the
  project's own generic test;
* ``dbt_project.yml`` with vars, per-folder materializations and tags, and a
  ``sources.yml`` that declares the seeds as a source too.

Every model outputs ``id, category, amount, created_at`` with a unique ``id``: each
table holds at most a few hundred rows, so a ``dbt build`` measures dbt, not the
warehouse. Its SQL runs on DuckDB and PostgreSQL alike.

    python -m benchmarks.bigproject /tmp/big --models 300     # writes /tmp/big/dbt_project.yml ...
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

__all__ = ["CATEGORIES", "PROJECT_NAME", "generate"]

PROJECT_NAME = "bench_big"
CATEGORIES = ("alpha", "beta", "gamma", "delta", "epsilon")
_DOMAINS = (
    "orders",
    "customers",
    "payments",
    "shipments",
    "returns",
    "invoices",
    "products",
    "stores",
    "campaigns",
    "sessions",
)
_SEED_ROWS = 40

_MACROS = {
    "money.sql": """\
{% macro cents_to_units(column, scale=100) -%}
    round(cast({{ column }} as numeric) / {{ scale }}, 2)
{%- endmacro %}

{% macro safe_divide(numerator, denominator) -%}
    case when {{ denominator }} = 0 then null else {{ numerator }} / {{ denominator }} end
{%- endmacro %}
""",
    "dates.sql": """\
{% macro day_of(column) -%}
    date_trunc('day', cast({{ column }} as timestamp))
{%- endmacro %}
""",
    "columns.sql": """\
{% macro passthrough(alias, columns=('id', 'category', 'amount', 'created_at')) -%}
    {%- for column in columns -%}
        {{ alias }}.{{ column }}{% if not loop.last %}, {% endif %}
    {%- endfor -%}
{%- endmacro %}
""",
    "weights.sql": """\
{% macro weighted(column, weight) -%}
    coalesce({{ column }}, 0) * {{ weight }}
{%- endmacro %}
""",
    "schema_name.sql": """\
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ target.schema }}
{%- endmacro %}
""",
    "categories.sql": """\
{% macro category_case(column) -%}
    case {{ column }}
    {%- for name in var('categories') %}
        when '{{ name }}' then {{ loop.index }}
    {%- endfor %}
        else 0
    end
{%- endmacro %}
""",
    "audit.sql": """\
{% macro audit_columns() -%}
    '{{ var("batch_label") }}' as batch_label
{%- endmacro %}
""",
    "limits.sql": """\
{% macro bounded(column, low, high) -%}
    least(greatest({{ column }}, {{ low }}), {{ high }})
{%- endmacro %}
""",
    "ids.sql": """\
{% macro renumber(order_by) -%}
    row_number() over (order by {{ order_by }})
{%- endmacro %}
""",
    "noop.sql": """\
{% macro describe_layer(layer) -%}
    {{ return('layer ' ~ layer) }}
{%- endmacro %}
""",
}

_GENERIC_TEST = """\
{% test non_negative(model, column_name) %}
select {{ column_name }} from {{ model }} where {{ column_name }} < 0
{% endtest %}
"""


def generate(root: Path, models: int = 300, seed: int = 0) -> Path:
    """Write the project under ``root`` (created; must not hold another project) and return it.

    >>> project = generate(Path("/tmp/big"), models=300)               # doctest: +SKIP
    >>> len(list((project / "models").rglob("*.sql")))                  # doctest: +SKIP
    300
    """
    if models < 30:
        raise ValueError("models must be >= 30 (ten staging models over the ten seeds)")
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / "dbt_project.yml", _project_yml())
    for name, text in _MACROS.items():
        _write(root / "macros" / name, text)
    _write(root / "macros" / "tests" / "non_negative.sql", _GENERIC_TEST)
    for i, domain in enumerate(_DOMAINS):
        _write(root / "seeds" / f"raw_{domain}.csv", _seed_csv(random.Random(seed * 100 + i)))
    _write(root / "models" / "staging" / "sources.yml", _sources_yml())

    n_staging = max(len(_DOMAINS), models // 5)
    n_marts = max(1, models // 4)
    n_int = models - n_staging - n_marts
    staging = [f"stg_{_DOMAINS[i % len(_DOMAINS)]}_{i:03d}" for i in range(n_staging)]
    intermediate = [f"int_step_{i:03d}" for i in range(n_int)]
    marts = [f"{'fct' if i % 2 else 'dim'}_mart_{i:03d}" for i in range(n_marts)]

    yml: dict[str, list[str]] = {"staging": [], "intermediate": [], "marts": []}
    for i, name in enumerate(staging):
        domain = _DOMAINS[i % len(_DOMAINS)]
        _write(root / "models" / "staging" / f"{name}.sql", _staging_sql(i, domain, rng))
        yml["staging"].append(_model_yml(name, accepted=True))
    for i, name in enumerate(intermediate):
        pool = staging + intermediate[:i]
        # mostly recent parents: a DAG some ten levels deep, not a flat fan-out
        recent = pool[-40:]
        parents = sorted(set(rng.sample(recent, k=min(len(recent), rng.choice((2, 2, 3))))))
        _write(root / "models" / "intermediate" / f"{name}.sql", _intermediate_sql(parents, rng))
        yml["intermediate"].append(_model_yml(name, tests=(i % 3 == 0)))
    for i, name in enumerate(marts):
        k = min(len(intermediate), rng.choice((3, 4)))
        parents = sorted(set(rng.sample(intermediate, k=k)))
        _write(root / "models" / "marts" / f"{name}.sql", _mart_sql(parents))
        relationship = staging[i % len(staging)] if i % 5 == 0 else None
        yml["marts"].append(_model_yml(name, non_negative=True, relationship=relationship))
    for layer, entries in yml.items():
        _write(
            root / "models" / layer / "schema.yml",
            "version: 2\n\nmodels:\n" + "".join(entries),
        )
    _write(root / "tests" / "assert_marts_have_rows.sql", _singular_test(marts[0]))
    return root


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _project_yml() -> str:
    categories = ", ".join(f'"{c}"' for c in CATEGORIES)
    return f"""\
name: {PROJECT_NAME}
version: "1.0.0"
config-version: 2
profile: {PROJECT_NAME}

model-paths: ["models"]
macro-paths: ["macros"]
seed-paths: ["seeds"]
test-paths: ["tests"]

vars:
  categories: [{categories}]
  batch_label: "bench"
  weight: 0.5

seeds:
  {PROJECT_NAME}:
    +column_types:
      id: integer
      amount_cents: bigint

models:
  {PROJECT_NAME}:
    staging:
      +materialized: view
      +tags: ["staging"]
    intermediate:
      +materialized: table
      +tags: ["intermediate"]
    marts:
      +materialized: table
      +tags: ["marts"]
"""


def _seed_csv(rng: random.Random) -> str:
    lines = ["id,category,amount_cents,created_at"]
    for i in range(1, _SEED_ROWS + 1):
        day = 1 + rng.randrange(28)
        lines.append(
            f"{i},{rng.choice(CATEGORIES)},{rng.randrange(0, 100_000)},2026-01-{day:02d} 00:00:00"
        )
    return "\n".join(lines) + "\n"


def _sources_yml() -> str:
    tables = "".join(f"      - name: raw_{d}\n" for d in _DOMAINS)
    return (
        'version: 2\n\nsources:\n  - name: seeded\n    schema: "{{ target.schema }}"\n'
        f"    tables:\n{tables}"
    )


def _staging_sql(i: int, domain: str, rng: random.Random) -> str:
    # the first ten read the seeds through ref(), the others through the source
    if i < len(_DOMAINS):
        relation = f"{{{{ ref('raw_{domain}') }}}}"
    else:
        relation = f"{{{{ source('seeded', 'raw_{domain}') }}}}"
    scale = rng.choice((100, 100, 1000))
    return f"""\
-- staging: {domain}, {{{{ describe_layer('staging') }}}}
select
    id,
    category,
    {{{{ cents_to_units('amount_cents', {scale}) }}}} as amount,
    {{{{ day_of('created_at') }}}} as created_at,
    {{{{ category_case('category') }}}} as category_rank,
    {{{{ audit_columns() }}}}
from {relation}
"""


def _intermediate_sql(parents: list[str], rng: random.Random) -> str:
    first, rest = parents[0], parents[1:]
    ctes = ",\n".join(
        f"p{k} as (select * from {{{{ ref('{p}') }}}})" for k, p in enumerate(parents)
    )
    joins = "\n".join(f"left join p{k + 1} on p{k + 1}.id = p0.id" for k in range(len(rest)))
    extra = "".join(
        f" + {{{{ weighted('p{k + 1}.amount', var('weight')) }}}}" for k in range(len(rest))
    )
    low = rng.randrange(0, 10)
    return f"""\
-- intermediate over {first} and {len(rest)} more
with
{ctes}
select
    {{{{ passthrough('p0', ('id', 'category', 'created_at')) }}}},
    {{{{ bounded('p0.amount', {low}, 1000000) }}}}{extra} as amount
from p0
{joins}
"""


def _mart_sql(parents: list[str]) -> str:
    union = "\n    union all\n    ".join(
        f"select id, category, amount, created_at from {{{{ ref('{p}') }}}}" for p in parents
    )
    return f"""\
with unioned as (
    {union}
)
select
    {{{{ renumber('category, day') }}}} as id,
    category,
    day as created_at,
    sum(amount) as amount,
    {{{{ safe_divide('sum(amount)', 'count(*)') }}}} as mean_amount
from (select *, {{{{ day_of('created_at') }}}} as day from unioned) as u
group by category, day
"""


def _model_yml(
    name: str,
    *,
    tests: bool = True,
    accepted: bool = False,
    non_negative: bool = False,
    relationship: str | None = None,
) -> str:
    out = f"  - name: {name}\n    description: generated model {name}\n"
    if not tests:
        return out
    out += "    columns:\n      - name: id\n        data_tests:\n          - unique\n"
    out += "          - not_null\n"
    if relationship is not None:
        out += (
            "      - name: category\n        data_tests:\n          - relationships:\n"
            f"              arguments:\n                to: ref('{relationship}')\n"
            "                field: category\n"
        )
    elif accepted:
        values = ", ".join(CATEGORIES)
        out += (
            "      - name: category\n        data_tests:\n          - accepted_values:\n"
            f"              arguments:\n                values: [{values}]\n"
        )
    if non_negative:
        out += "      - name: amount\n        data_tests:\n          - non_negative\n"
    return out


def _singular_test(mart: str) -> str:
    return f"select 1 as missing where not exists (select 1 from {{{{ ref('{mart}') }}}})\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--models", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    project = generate(args.root, models=args.models, seed=args.seed)
    print(project)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
