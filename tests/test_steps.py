"""Steps: one definition of a cycle, shared by the CLI, the worker, WorkerClient and the DAG."""

from __future__ import annotations

import inspect

import pytest

from dbt_runner import ConfigurationError, DbtSession, Step, WorkerClient, cycle_steps


def test_a_cycle_is_staging_then_tests_or_one_build() -> None:
    run, test = cycle_steps(select="tag:x", threads=2, scope="full")
    assert (run.operation, run.label, dict(run.kwargs)) == (
        "run_staging",
        "staging",
        {"select": "tag:x", "threads": 2},
    )
    assert (test.operation, test.label) == ("run_tests", "tests")
    assert test.kwargs["scope"] == "full" and test.kwargs["select"] == "tag:x"
    assert [s.label for s in cycle_steps(tests=False)] == ["staging"]
    (build,) = cycle_steps(build=True)
    assert build.operation == "build_staging" and build.writes
    with pytest.raises(ConfigurationError, match="runs the tests"):
        cycle_steps(build=True, tests=False)


def test_steps_round_trip_through_json_and_refuse_what_the_method_does_not_take() -> None:
    step = Step("invoke", {"threads": 1, "writer_lock": True}, ("seed", "--full-refresh"))
    assert Step.from_dict(step.to_dict()) == step
    assert step.label == "seed" and step.writes
    assert not Step("run_tests").writes
    with pytest.raises(ConfigurationError, match="takes no scope"):
        Step("run_staging", {"scope": "full"})
    with pytest.raises(ConfigurationError, match="unknown step operation"):
        Step("drop_everything")
    with pytest.raises(ConfigurationError, match="needs dbt args"):
        Step("invoke")
    with pytest.raises(ConfigurationError, match="bad step"):
        Step.from_dict({"operation": "invoke", "args": "seed"})


@pytest.mark.parametrize("operation", ["run_staging", "run_tests", "build_staging"])
def test_a_step_takes_exactly_the_session_method_s_keywords(operation: str) -> None:
    """The keywords a Step accepts are the session method's, and WorkerClient's too."""
    from dbt_runner._steps import _KEYWORDS

    for owner in (DbtSession, WorkerClient):
        params = inspect.signature(getattr(owner, operation)).parameters
        assert set(params) - {"self"} == _KEYWORDS[operation], owner
