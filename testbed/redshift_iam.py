"""Redshift IAM for the test bed: the stand-in accepts exactly the logins moto issued.

Two halves, both real parts:

- :func:`provision_roles` is a hook of the moto server's child process
  (:mod:`testbed.moto_server`). After each successful ``redshift:GetClusterCredentials``
  or ``redshift-serverless:GetCredentials`` it does on PostgreSQL (the database behind
  the Redshift stand-in) what Redshift does when it issues a temporary login: the role
  named by the answer's ``DbUser`` (``IAM:<user>``, ``IAMA:<user>``, ``IAMR:<role>``)
  gets the answer's password (stored md5: redshift_connector's SCRAM client fails on
  PostgreSQL 15), valid until the answer's expiration, and joins the ``DbGroups``
  asked for. Auto-create (``IAMA:``) and Serverless create a missing role; without it a
  missing role stays missing, so the login fails as on Redshift. Any other password is
  then refused by PostgreSQL itself. One difference, stricter than Redshift: a role has
  one password, so a new login for the same user ends the previous one's validity for
  new connections (on Redshift each stays valid until its own expiration); open
  connections are not affected on either. The hook reads the admin connection from a JSON
  file (:class:`IamWarehouse` writes it); without that file it does nothing.
- :class:`IamWarehouse` (the ``redshift_iam`` fixture of :mod:`testbed.aws_fixtures`)
  sets a test up: the cluster and the Serverless workgroup in moto, a database group
  with the test database's privileges, the settings and profile values to reach it,
  and a way to let time pass (:meth:`IamWarehouse.expire`).
"""

from __future__ import annotations

import json
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.moto_server import MotoServer
    from testbed.pg_fixtures import RedshiftDatabase
    from testbed.postgres import PostgresServer

__all__ = ["EXPIRED", "IamWarehouse", "provision_roles"]

#: a VALID UNTIL in the past: the issued login has expired (time passed)
EXPIRED = "2000-01-01 00:00:00+00"
#: the Serverless identity of moto's default test keys (``sts:GetCallerIdentity``)
SERVERLESS_USER = "IAM:moto"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _issued(
    action: str, params: dict[str, Any], body: bytes
) -> tuple[str, str, str, bool, list[str]] | None:
    """(user, password, expiration, create missing role, groups) of an issued login."""
    if action == "GetClusterCredentials":
        root = ET.fromstring(body)

        def text(tag: str) -> str:
            node = root.find(f".//{{*}}{tag}")
            return node.text or "" if node is not None else ""

        groups = [str(v) for k, v in sorted(params.items()) if k.startswith("DbGroups.")]
        user = text("DbUser")
        return user, text("DbPassword"), text("Expiration"), user.startswith("IAMA:"), groups
    if action == "GetCredentials":
        data = json.loads(body)
        expiration = datetime.fromtimestamp(float(data["expiration"]), timezone.utc)
        return data["dbUser"], data["dbPassword"], expiration.isoformat(), True, []
    return None


def provision_roles(config_path: str) -> Callable[[str, dict[str, Any], int, bytes], None]:
    """The moto hook (``testbed.redshift_iam:provision_roles=PATH``), see the module."""
    path = Path(config_path)

    def hook(action: str, params: dict[str, Any], status: int, body: bytes) -> None:
        if status != 200 or action not in ("GetClusterCredentials", "GetCredentials"):
            return
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            return
        issued = _issued(action, params, body)
        if issued is None:
            return
        user, password, expiration, create, groups = issued
        import psycopg2

        conn = psycopg2.connect(**config["admin"], connect_timeout=10)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("select 1 from pg_roles where rolname = %s", (user,))
                if cur.fetchone() is None:
                    if not create:
                        return  # like Redshift: no such user, no auto-create: login fails
                    cur.execute(f"create role {_quote(user)} login")
                valid_until = config.get("valid_until") or expiration
                cur.execute(
                    f"alter role {_quote(user)} login password %s valid until %s",
                    (password, valid_until),
                )
                for group in groups:
                    cur.execute("select 1 from pg_roles where rolname = %s", (group,))
                    if cur.fetchone() is not None:
                        cur.execute(f"grant {_quote(group)} to {_quote(user)}")
        finally:
            conn.close()

    return hook


@dataclass
class IamWarehouse:
    """A Redshift stand-in database reached with temporary logins from the moto server."""

    db: RedshiftDatabase
    moto: MotoServer
    pg: PostgresServer
    config_path: Path
    #: the moto server's record of answered actions (``testbed.moto_server:record_to``)
    actions_path: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    cluster_id: str = "analytics"
    workgroup: str = "analytics-wg"
    region: str = "us-east-1"
    _seen: int = 0

    @property
    def db_user(self) -> str:
        """The DB_USER of the provisioned cluster (one per test: roles are server-wide)."""
        return f"dbt_{self.suffix}"

    @property
    def group(self) -> str:
        """A database group holding the test database's privileges (DB_GROUPS)."""
        return f"dbr_writers_{self.suffix}"

    def login_user(self, serverless: bool = False, auto_create: bool = True) -> str:
        """The database user AWS issues the login for."""
        if serverless:
            return SERVERLESS_USER
        return ("IAMA:" if auto_create else "IAM:") + self.db_user

    def setup(self) -> IamWarehouse:
        import boto3

        self._seen = len(self._records())  # the server's record is the whole session's
        self.config_path.write_text(json.dumps({"admin": self._admin()}))
        boto3.client("redshift", region_name=self.region).create_cluster(
            ClusterIdentifier=self.cluster_id,
            NodeType="ra3.xlplus",
            MasterUsername="admin",
            MasterUserPassword="Admin-pass-1",
        )
        serverless = boto3.client("redshift-serverless", region_name=self.region)
        serverless.create_namespace(namespaceName="analytics-ns", dbName=self.db.dbname)
        serverless.create_workgroup(workgroupName=self.workgroup, namespaceName="analytics-ns")
        owner = _quote(self.db.user)
        self.pg.execute(f"create role {_quote(self.group)} nologin")
        self.pg.execute(f"grant {owner} to {_quote(self.group)}")
        # Serverless: the IAM identity's user, given the group's privileges by an admin
        self.pg.execute(f"create role {_quote(SERVERLESS_USER)} nologin")
        self.pg.execute(f"grant {_quote(self.group)} to {_quote(SERVERLESS_USER)}")
        return self

    def _admin(self) -> dict[str, Any]:
        return {
            "host": self.pg.host,
            "port": self.pg.port,
            "user": self.pg.superuser,
            "password": self.pg.superuser_password,
            "dbname": "postgres",
            "sslmode": "require" if self.pg.ssl else "disable",
        }

    def warehouse(self, serverless: bool = False, **extra: Any) -> dict[str, Any]:
        """``WAREHOUSE__*`` values for METHOD=iam (provisioned, or Serverless)."""
        values: dict[str, Any] = {
            "type": "redshift",
            "method": "iam",
            "host": self.db.host,
            "port": self.db.port,
            "dbname": self.db.dbname,
            "sslmode": self.db.sslmode,
            "schema": "stg",
            "region": self.region,
        }
        if serverless:
            values["workgroup"] = self.workgroup
        else:
            values.update(
                cluster_id=self.cluster_id,
                db_user=self.db_user,
                db_groups=self.group,
                auto_create=True,
            )
        return {**values, **extra}

    def dbt_output(self, serverless: bool = False, **extra: Any) -> dict[str, Any]:
        """A dbt-redshift target with ``method: iam`` (its own IAM fields)."""
        output: dict[str, Any] = {
            "type": "redshift",
            "method": "iam",
            "host": self.db.host,
            "port": self.db.port,
            "dbname": self.db.dbname,
            "schema": "team",
            "threads": 2,
            "sslmode": self.db.sslmode,
            "region": self.region,
            "connect_timeout": 10,
            "retries": 0,
        }
        if serverless:
            output.update(is_serverless=True, serverless_work_group=self.workgroup, user="unused")
        else:
            output.update(
                cluster_id=self.cluster_id,
                user=self.db_user,
                db_groups=[self.group],
                autocreate=True,
            )
        return {**output, **extra}

    def _records(self) -> list[dict[str, Any]]:
        try:
            lines = self.actions_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line]

    def calls(self, action: str, status: int = 200) -> int:
        """How many ``action`` requests the moto server answered with ``status`` since
        :meth:`setup`."""
        records = self._records()[self._seen :]
        return sum(1 for r in records if r["action"] == action and r["status"] == status)

    def roles(self) -> dict[str, str | None]:
        """The IAM roles on the server now: name -> VALID UNTIL (ISO) or None."""
        rows = self.pg.execute(
            "select rolname, rolvaliduntil from pg_roles where rolname like 'IAM%'"
        )
        return {name: (until.isoformat() if until else None) for name, until in rows}

    def expire(self) -> None:
        """Let time pass: every login issued so far and from now on has expired."""
        config = json.loads(self.config_path.read_text())
        config["valid_until"] = EXPIRED
        self.config_path.write_text(json.dumps(config))
        for name in self.roles():
            self.pg.execute(f"alter role {_quote(name)} valid until '{EXPIRED}'")

    def teardown(self) -> None:
        """Forget the logins: drop the IAM roles and the group (their objects first)."""
        self.config_path.unlink(missing_ok=True)
        for name in [*self.roles(), self.group]:
            if not self.pg.execute(f"select 1 from pg_roles where rolname = {_lit(name)}"):
                continue
            self.pg.execute(f"drop owned by {_quote(name)} cascade", dbname=self.db.dbname)
            self.pg.drop_role(name)


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
