"""Redshift IAM authentication against a real AWS API (moto server) and the stand-in.

The moto server on loopback issues the temporary logins (``GetClusterCredentials``,
Serverless ``GetCredentials``: :mod:`testbed.moto_serverless`), and the Redshift
stand-in accepts exactly those (:mod:`testbed.redshift_iam`: the issued password, valid
until the issued expiration): no in-process mock. Direct and through a real OpenSSH
bastion; the generated profile and a team's own ``profiles.yml`` with ``method: iam``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dbt_runner import DbtSession, ErrorKind, RunResult, Settings
from dbt_runner.synthetic import create_raw_tables, load_batch
from testbed.redshift_iam import IamWarehouse
from testbed.settings import NO_WAITS, PROJECT, ssh_of
from testbed.sshd import SshdServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

T0 = 1_700_000_000
MODELS = ("stg_ecs_order_info", "stg_uni_tracking_info", "stg_uni_tracking_spath")


def load_raw(iam: IamWarehouse) -> None:
    """Half an hour of raw deliveries in schema ``raw`` (as the database's owner)."""
    conn = iam.db.connect()
    try:
        create_raw_tables(conn, "postgres")
        load_batch(conn, "postgres", T0, T0 + 1800, orders_per_minute=4)
    finally:
        conn.close()


def iam_settings(
    iam: IamWarehouse,
    state_dir: Path,
    *,
    serverless: bool = False,
    sshd: SshdServer | None = None,
    **overrides: Any,
) -> Settings:
    values: dict[str, Any] = {
        "project_dir": PROJECT,
        "warehouse": iam.warehouse(serverless),
        "state_dir": state_dir,
        "threads": 3,
        "retry": dict(NO_WAITS),
    }
    if sshd is not None:
        values["ssh"] = ssh_of(sshd)
    values.update(overrides)
    return Settings(**values)


def ok(result: RunResult) -> RunResult:
    assert result.success, result.summary()
    return result


def test_provisioned_cluster_direct_one_login_per_session(
    redshift_iam: IamWarehouse, tmp_path: Path
) -> None:
    load_raw(redshift_iam)
    settings = iam_settings(redshift_iam, tmp_path / "state")
    with DbtSession(settings) as session:
        staging = ok(session.run_staging())
        ok(session.run_tests())
    assert sorted(n.name for n in staging.nodes if n.resource_type == "model") == sorted(MODELS)
    # every connection of the session (writer lock, dbt's per node) used one login
    assert redshift_iam.calls("GetClusterCredentials") == 1
    user = redshift_iam.login_user()
    assert user in redshift_iam.roles()
