"""TEST-BED CODE: the smallest Redshift Serverless API for the test bed's moto server.

moto 5.2.6 has no ``redshift-serverless`` backend. This module adds one to the moto
*child process* (:mod:`testbed.moto_server`, ``--extension
testbed.moto_serverless:extend``), written the way moto writes its own services, so
that the real boto3 client reaches it over HTTP exactly as it reaches AWS:

- a :class:`~moto.core.base_backend.BaseBackend` in a moto ``BackendDict`` (per account
  and region; moto's ``/moto-api/reset`` forgets it with every other service);
- a :class:`~moto.core.responses.BaseResponse` dispatched for every request whose
  ``X-Amz-Target`` is ``RedshiftServerless.*`` (the JSON protocol of the real API), so
  moto's own IAM enforcement (``INITIAL_NO_AUTH_ACTION_COUNT``, ``/moto-api/reset-auth``)
  applies to it as to any moto service (action ``redshift-serverless:GetCredentials``).

Operations, in the real API's JSON shapes (botocore's ``redshift-serverless`` model):
``CreateNamespace``, ``CreateWorkgroup``, ``GetWorkgroup``, ``DeleteWorkgroup`` and
``GetCredentials``. ``GetCredentials`` answers what Redshift Serverless answers: the
database user is the caller's IAM identity (``IAM:<user>`` for an IAM user,
``IAMR:<role>`` for an assumed role, from moto's own STS/IAM state), a fresh random
password, ``expiration`` ``durationSeconds`` (900..3600, default 900) from now, and
``nextRefreshTime``. An unknown workgroup is ``ResourceNotFoundException``.

Anything else of the service answers ``501`` (not implemented here).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.common_types import TYPE_RESPONSE
from moto.core.exceptions import JsonRESTError, _RESTError
from moto.core.responses import BaseResponse

__all__ = ["RedshiftServerlessBackend", "RedshiftServerlessResponse", "extend"]

_TARGET = "RedshiftServerless."
_DEFAULT_PORT = 5439


class ResourceNotFoundException(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__("ResourceNotFoundException", message)


class ValidationException(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__("ValidationException", message)


class ConflictException(JsonRESTError):
    def __init__(self, message: str) -> None:
        super().__init__("ConflictException", message)


class RedshiftServerlessBackend(BaseBackend):
    """Namespaces and workgroups of one account and region."""

    def __init__(self, region_name: str, account_id: str) -> None:
        super().__init__(region_name, account_id)
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.workgroups: dict[str, dict[str, Any]] = {}

    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:redshift-serverless:{self.region_name}:{self.account_id}:{kind}/{name}"

    def create_namespace(self, name: str, db_name: str | None) -> dict[str, Any]:
        if name in self.namespaces:
            raise ConflictException(f"Namespace {name} already exists")
        namespace = {
            "namespaceName": name,
            "namespaceArn": self._arn("namespace", name),
            "namespaceId": secrets.token_hex(8),
            "dbName": db_name or "dev",
            "status": "AVAILABLE",
            "creationDate": dt.datetime.now(dt.timezone.utc).timestamp(),
        }
        self.namespaces[name] = namespace
        return namespace

    def create_workgroup(
        self, name: str, namespace: str, base_capacity: int | None, port: int | None
    ) -> dict[str, Any]:
        if name in self.workgroups:
            raise ConflictException(f"Workgroup {name} already exists")
        if namespace not in self.namespaces:
            raise ResourceNotFoundException(f"Namespace {namespace} does not exist")
        address = f"{name}.{self.account_id}.{self.region_name}.redshift-serverless.amazonaws.com"
        workgroup = {
            "workgroupName": name,
            "workgroupArn": self._arn("workgroup", name),
            "workgroupId": secrets.token_hex(8),
            "namespaceName": namespace,
            "baseCapacity": base_capacity or 128,
            "status": "AVAILABLE",
            "endpoint": {"address": address, "port": port or _DEFAULT_PORT},
            "creationDate": dt.datetime.now(dt.timezone.utc).timestamp(),
        }
        self.workgroups[name] = workgroup
        return workgroup

    def get_workgroup(self, name: str) -> dict[str, Any]:
        if name not in self.workgroups:
            raise ResourceNotFoundException(f"Workgroup {name} does not exist")
        return self.workgroups[name]

    def delete_workgroup(self, name: str) -> dict[str, Any]:
        return self.workgroups.pop(name, None) or self.get_workgroup(name)

    def get_credentials(
        self, workgroup: str | None, duration_s: int | None, access_key_id: str
    ) -> dict[str, Any]:
        if workgroup is None:
            raise ValidationException("workgroupName is required (customDomainName: not here)")
        self.get_workgroup(workgroup)
        duration = 900 if duration_s is None else int(duration_s)
        if not 900 <= duration <= 3600:
            raise ValidationException("durationSeconds must be between 900 and 3600")
        now = dt.datetime.now(dt.timezone.utc)
        return {
            "dbUser": self._db_user(access_key_id),
            "dbPassword": secrets.token_urlsafe(24),
            "expiration": (now + dt.timedelta(seconds=duration)).timestamp(),
            "nextRefreshTime": (now + dt.timedelta(seconds=duration // 2)).timestamp(),
        }

    def _db_user(self, access_key_id: str) -> str:
        """Redshift Serverless' database user for the caller: IAM:<user> / IAMR:<role>."""
        from moto.sts.models import sts_backends

        _, arn, _ = sts_backends[self.account_id][self.partition].get_caller_identity(
            access_key_id, self.region_name
        )
        resource = arn.split(":", 5)[-1]  # user/NAME or assumed-role/ROLE/SESSION
        kind, _, rest = resource.partition("/")
        if kind == "assumed-role":
            return "IAMR:" + rest.split("/")[0]
        return "IAM:" + rest.split("/")[-1]


redshiftserverless_backends = BackendDict(RedshiftServerlessBackend, "redshift-serverless")


class RedshiftServerlessResponse(BaseResponse):
    """The JSON protocol handlers, one method per action (moto's convention)."""

    def __init__(self) -> None:
        super().__init__(service_name="redshift-serverless")

    @property
    def backend(self) -> RedshiftServerlessBackend:
        return redshiftserverless_backends[self.current_account][self.region]

    def _authenticate_and_authorize_normal_action(self, resource: str = "*") -> None:
        """moto's IAM check; its refusals in the JSON protocol's shape (moto writes XML)."""
        try:
            super()._authenticate_and_authorize_normal_action(resource)
        except _RESTError as exc:
            if isinstance(exc, JsonRESTError):
                raise
            raise exc.to_json() from exc

    def create_namespace(self) -> TYPE_RESPONSE:
        namespace = self.backend.create_namespace(
            self._get_param("namespaceName"), self._get_param("dbName")
        )
        return 200, {}, json.dumps({"namespace": namespace})

    def create_workgroup(self) -> TYPE_RESPONSE:
        workgroup = self.backend.create_workgroup(
            self._get_param("workgroupName"),
            self._get_param("namespaceName"),
            self._get_param("baseCapacity"),
            self._get_param("port"),
        )
        return 200, {}, json.dumps({"workgroup": workgroup})

    def get_workgroup(self) -> TYPE_RESPONSE:
        workgroup = self.backend.get_workgroup(self._get_param("workgroupName"))
        return 200, {}, json.dumps({"workgroup": workgroup})

    def delete_workgroup(self) -> TYPE_RESPONSE:
        workgroup = self.backend.delete_workgroup(self._get_param("workgroupName"))
        return 200, {}, json.dumps({"workgroup": workgroup})

    def get_credentials(self) -> TYPE_RESPONSE:
        answer = self.backend.get_credentials(
            self._get_param("workgroupName"),
            self._get_param("durationSeconds"),
            self.get_access_key(),
        )
        return 200, {}, json.dumps(answer)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def extend(app: WsgiApp) -> WsgiApp:
    """The moto WSGI ``app`` answering ``RedshiftServerless.*`` requests too."""
    from flask import Flask
    from moto.core.utils import convert_to_flask_response
    from moto.moto_server.werkzeug_app import BackendRequest

    serverless = Flask("moto-redshift-serverless")
    serverless.request_class = BackendRequest
    serverless.add_url_rule(
        "/",
        endpoint="RedshiftServerlessResponse.dispatch",
        view_func=convert_to_flask_response(RedshiftServerlessResponse.dispatch),
        methods=["POST"],
    )

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(_TARGET):
            return serverless(environ, start_response)  # type: ignore[no-any-return]
        return app(environ, start_response)

    return wsgi
