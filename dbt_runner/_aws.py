"""Redshift IAM authentication: temporary database logins from AWS.

The one importer of boto3 and botocore (as ``_ssh/`` is of paramiko). With
``DBT_RUNNER_WAREHOUSE__METHOD=iam`` a session asks AWS for a temporary database
login when it opens (:func:`fetch_login`):

- a provisioned cluster (``CLUSTER_ID``): ``redshift:GetClusterCredentials`` for
  ``DB_USER`` (with ``DB_GROUPS``, ``AUTO_CREATE``); the user comes back as
  ``IAM:<user>`` (``IAMA:<user>`` with auto-create);
- Redshift Serverless (``WORKGROUP``): ``redshift-serverless:GetCredentials``; the
  database user is the caller's IAM identity (``IAM:<user>`` / ``IAMR:<role>``).

Both are asked for :data:`DURATION_S` (AWS's longest). The AWS credentials that sign
the call come from ``IAM_PROFILE`` or the default chain (environment, profile files,
container or instance role); ``AWS_ENDPOINT_URL`` is honoured (botocore's own).
botocore's own retries are off: the session's retry policy is the one retry layer.

The password is a secret: a :class:`~pydantic.SecretStr` in :class:`Login` (never in
its repr), handed to dbt only through a ``DBT_ENV_SECRET_*`` variable. botocore logs
every response body at DEBUG (``botocore.parsers``): :class:`RedactLogins`, installed
on that logger when this module loads, blanks the bodies that carry a temporary
database password (ours, and redshift_connector's own IAM calls); nothing else of
botocore's logging changes.

Errors are judged at one seam, :func:`kind_of` (also what ``diagnose()`` asks when a
botocore error reaches it through redshift_connector's own IAM path), and translated by
:func:`aws_errors`: AWS refusing (denied, expired or unknown AWS credentials, unknown
cluster or workgroup, any other 4xx) is :class:`~dbt_runner.CredentialsError` of kind
``auth`` (exit 2, never retried); an unreachable endpoint, throttling or a 5xx is kind
``connection`` (transient); a missing profile or region is a
:class:`~dbt_runner.ConfigurationError` naming the setting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from ._exceptions import ConfigurationError, CredentialsError, ErrorKind
from ._settings import ENV_PREFIX, WarehouseSettings

__all__ = [
    "AUTH_HINT",
    "DURATION_S",
    "TRANSIENT_CODES",
    "AwsKeys",
    "Identity",
    "Login",
    "RedactLogins",
    "aws_errors",
    "caller_identity",
    "describe_target",
    "fetch_login",
    "kind_of",
]

#: seconds a temporary login is asked for: the longest both APIs give (900..3600)
DURATION_S = 3600

_W = f"{ENV_PREFIX}WAREHOUSE__"
_INSTALL = "pip install 'dbt-runner[redshift]'"


class RedactLogins(logging.Filter):
    """Blank a botocore DEBUG record that quotes a temporary database password (the body
    of a ``GetClusterCredentials``/``GetCredentials`` answer); others pass unchanged.

    >>> record = logging.LogRecord("botocore.parsers", logging.DEBUG, "", 0,
    ...     "Response body:\\n%r", (b"<DbPassword>s3cr3t</DbPassword>",), None)
    >>> RedactLogins().filter(record), record.getMessage()
    (True, 'Response body: (a temporary database password: redacted by dbt_runner)')
    """

    _MARKERS = ("DbPassword", "dbPassword")

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: not ours to judge
            return True
        if any(marker in text for marker in self._MARKERS):
            head = text.split(":", 1)[0] if ":" in text else "botocore"
            record.msg = f"{head}: (a temporary database password: redacted by dbt_runner)"
            record.args = ()
        return True


def _install_redaction() -> None:
    target = logging.getLogger("botocore.parsers")
    if not any(isinstance(f, RedactLogins) for f in target.filters):
        target.addFilter(RedactLogins())


_install_redaction()

#: error codes that mean a request was throttled or AWS failed on its side: transient
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestThrottled",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
    }
)

#: how botocore names where the AWS credentials were found -> words for a person
_SOURCES = {
    "env": "environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
    "explicit": "explicit keys (access_key_id in profiles.yml)",
    "shared-credentials-file": "shared credentials file (~/.aws/credentials)",
    "config-file": "AWS config file (~/.aws/config)",
    "assume-role": "assumed role (role_arn in the AWS profile)",
    "assume-role-with-web-identity": "web identity role (AWS_WEB_IDENTITY_TOKEN_FILE)",
    "sso": "IAM Identity Center (SSO) profile",
    "container-role": "container role (ECS/EKS task credentials)",
    "iam-role": "instance role (EC2 instance metadata)",
    "custom-process": "credential_process of the AWS profile",
}


@dataclass(frozen=True)
class AwsKeys:
    """Explicit AWS keys (a user's own ``profiles.yml``: ``access_key_id`` /
    ``secret_access_key``); the secret never shows in a repr."""

    access_key_id: str
    secret_access_key: SecretStr = field(repr=False)


@dataclass(frozen=True)
class Login:
    """A temporary database login from AWS: ``user`` and ``password`` until ``expiration``.

    >>> now = dt.datetime.now(dt.timezone.utc)
    >>> login = Login("IAM:dbt", SecretStr("s3cr3t"), now + dt.timedelta(hours=1), now)
    >>> "s3cr3t" in repr(login), login.user
    (False, 'IAM:dbt')
    """

    user: str
    password: SecretStr = field(repr=False)
    expiration: dt.datetime
    #: when it was fetched (to tell how much of its lifetime is left)
    fetched_at: dt.datetime

    def needs_refresh(self, now: dt.datetime | None = None) -> bool:
        """True when less than half of its lifetime is left (then a session fetches a new
        one before its next command: a command that starts with a fresh login has at
        least half an hour before new connections would be refused).

        >>> t = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        >>> login = Login("IAM:u", SecretStr("x"), t + dt.timedelta(hours=1), t)
        >>> login.needs_refresh(t + dt.timedelta(minutes=29)), login.needs_refresh(
        ...     t + dt.timedelta(minutes=31))
        (False, True)
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        return now >= self.fetched_at + (self.expiration - self.fetched_at) / 2


@dataclass(frozen=True)
class Identity:
    """Who asks AWS (for ``doctor``): where the AWS credentials were found and the caller's
    ARN (``sts:GetCallerIdentity``). No key, no secret."""

    source: str
    arn: str


def describe_target(wh: WarehouseSettings) -> str:
    """What a login is asked for, in words (no secrets): ``cluster analytics, db user dbt``.

    >>> describe_target(WarehouseSettings(type="redshift", host="h", dbname="d",
    ...     method="iam", workgroup="wg"))
    'Redshift Serverless workgroup wg'
    """
    if wh.workgroup is not None:
        return f"Redshift Serverless workgroup {wh.workgroup}"
    groups = f", groups {','.join(wh.db_groups)}" if wh.db_groups else ""
    return f"Redshift cluster {wh.cluster_id}, db user {wh.db_user}{groups}"


# ---------------------------------------------------------------------- the one seam
#: the hint of an ``auth`` failure from AWS
AUTH_HINT = (
    "AWS refused the temporary login: check the AWS credentials ("
    f"{_W}IAM_PROFILE or the default chain), that their IAM policy allows "
    "redshift:GetClusterCredentials (provisioned) or redshift-serverless:GetCredentials "
    f"(Serverless), and {_W}CLUSTER_ID / {_W}WORKGROUP / {_W}REGION"
)


def kind_of(exc: BaseException) -> ErrorKind | None:
    """The kind of a boto3/botocore exception (None for any other exception).

    ``configuration``: no region, unknown profile, invalid parameter, the endpoint's TLS;
    ``auth``: no or bad AWS credentials, AWS refused (any 4xx error code);
    ``connection``: unreachable endpoint, throttling, AWS's own 5xx.
    """
    module = type(exc).__module__ or ""
    if not module.startswith(("botocore", "boto3")):
        return None
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in TRANSIENT_CODES or status >= 500
        return ErrorKind.CONNECTION if transient else ErrorKind.AUTH
    if isinstance(
        exc, bx.ProfileNotFound | bx.NoRegionError | bx.ParamValidationError | bx.SSLError
    ):
        return ErrorKind.CONFIGURATION
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return ErrorKind.CONNECTION
    if isinstance(
        exc,
        bx.NoCredentialsError
        | bx.PartialCredentialsError
        | bx.CredentialRetrievalError
        | bx.TokenRetrievalError
        | bx.SSOError,
    ):
        return ErrorKind.AUTH
    return ErrorKind.CONFIGURATION


@contextlib.contextmanager
def aws_errors(what: str, wh: WarehouseSettings) -> Iterator[None]:
    """Translate boto3/botocore exceptions raised in the block (``what``: which call).

    ``configuration`` becomes :class:`~dbt_runner.ConfigurationError`, ``auth`` and
    ``connection`` :class:`~dbt_runner.CredentialsError`; the original stays
    ``__cause__``. Messages carry AWS's error code and message, never a key or password.
    """
    where = f"{what} ({describe_target(wh)})"
    try:
        yield
    except Exception as exc:
        kind = kind_of(exc)
        if kind is None:
            raise
        raise _translated(exc, kind, where) from exc


def _translated(exc: Exception, kind: ErrorKind, where: str) -> Exception:
    from botocore import exceptions as bx

    if isinstance(exc, bx.ProfileNotFound):
        return ConfigurationError(
            f"{_W}IAM_PROFILE: {exc} (the profiles of ~/.aws/config and ~/.aws/credentials)"
        )
    if isinstance(exc, bx.NoRegionError):
        return ConfigurationError(_no_region(where))
    if kind is ErrorKind.CONFIGURATION:
        return ConfigurationError(f"{where}: {type(exc).__name__}: {exc}")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return CredentialsError(
            f"{where}: {exc}: give AWS credentials as AWS tools take them: {_W}IAM_PROFILE "
            "(a profile of ~/.aws/config), AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a "
            "container or instance role",
            kind,
        )
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        if kind is ErrorKind.CONNECTION:
            return CredentialsError(f"{where}: {code}: {message} (AWS could not answer now)", kind)
        return CredentialsError(f"{where}: {code}: {message}\nfix: {AUTH_HINT}", kind)
    if kind is ErrorKind.CONNECTION:
        return CredentialsError(
            f"{where}: the AWS endpoint could not be reached: {type(exc).__name__}: {exc}", kind
        )
    return CredentialsError(
        f"{where}: the AWS credentials could not be obtained: {type(exc).__name__}: {exc}", kind
    )


def _no_region(where: str) -> str:
    return f"{where}: no AWS region: set {_W}REGION (or AWS_REGION, or region in the AWS profile)"


# ---------------------------------------------------------------------- AWS calls
def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigurationError(
            f"{_W}METHOD=iam needs boto3, which comes with dbt-redshift: {_INSTALL}"
        ) from None
    return boto3


def _session(wh: WarehouseSettings, keys: AwsKeys | None) -> Any:
    """A boto3 session with ``keys``, ``IAM_PROFILE`` or the default chain, and a region."""
    boto3 = _boto3()
    kwargs: dict[str, Any] = {"profile_name": wh.iam_profile, "region_name": wh.region}
    if keys is not None:
        kwargs["aws_access_key_id"] = keys.access_key_id
        kwargs["aws_secret_access_key"] = keys.secret_access_key.get_secret_value()
    session = boto3.Session(**kwargs)
    if session.region_name is None:
        raise ConfigurationError(_no_region(describe_target(wh)))
    return session


def _client(session: Any, service: str, wh: WarehouseSettings) -> Any:
    """A client of ``session`` with the warehouse's timeouts and no retries of botocore's."""
    from botocore.config import Config

    timeout = wh.connect_timeout_s
    config = Config(
        connect_timeout=timeout,
        read_timeout=max(timeout, 10),
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return session.client(service, config=config)


def boto3_installed() -> bool:
    """True when boto3 can be imported (the ``s3`` or ``redshift`` extra)."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        return False
    return True


def s3_client() -> Any:
    """An S3 client of the default credential chain (``AWS_ENDPOINT_URL`` honoured), short
    connect timeouts and botocore's standard retries (for the artifact cache: a store that
    does not answer is a warning there, never a failed run)."""
    from botocore.config import Config

    config = Config(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
    )
    return _boto3().client("s3", config=config)


def fetch_login(wh: WarehouseSettings, keys: AwsKeys | None = None) -> Login:
    """A temporary login for ``wh`` (``METHOD=iam``) from AWS, valid :data:`DURATION_S`.

    Raises :class:`~dbt_runner.CredentialsError` (``auth`` or ``connection``) or
    :class:`~dbt_runner.ConfigurationError` (no region, unknown profile, no boto3).
    """
    fetched_at = dt.datetime.now(dt.timezone.utc)
    if wh.workgroup is not None:
        with aws_errors("redshift-serverless:GetCredentials", wh):
            client = _client(_session(wh, keys), "redshift-serverless", wh)
            answer = client.get_credentials(
                workgroupName=wh.workgroup, dbName=wh.dbname, durationSeconds=DURATION_S
            )
        user, password, expiration = answer["dbUser"], answer["dbPassword"], answer["expiration"]
    else:
        with aws_errors("redshift:GetClusterCredentials", wh):
            client = _client(_session(wh, keys), "redshift", wh)
            answer = client.get_cluster_credentials(
                ClusterIdentifier=wh.cluster_id,
                DbUser=wh.db_user,
                DbName=wh.dbname,
                DbGroups=list(wh.db_groups),
                AutoCreate=wh.auto_create,
                DurationSeconds=DURATION_S,
            )
        user, password, expiration = answer["DbUser"], answer["DbPassword"], answer["Expiration"]
    if expiration.tzinfo is None:
        expiration = expiration.replace(tzinfo=dt.timezone.utc)
    return Login(str(user), SecretStr(str(password)), expiration, fetched_at)


def caller_identity(wh: WarehouseSettings, keys: AwsKeys | None = None) -> Identity:
    """Where the AWS credentials come from and whose they are (``sts:GetCallerIdentity``)."""
    from botocore.exceptions import NoCredentialsError

    with aws_errors("sts:GetCallerIdentity", wh):
        session = _session(wh, keys)
        credentials = session.get_credentials()  # the default chain, resolved here
        if credentials is None:
            raise NoCredentialsError()
        method = str(getattr(credentials, "method", None) or "unknown")
        arn = _client(session, "sts", wh).get_caller_identity()["Arn"]
    profile = f" [profile {wh.iam_profile}]" if wh.iam_profile else ""
    return Identity(f"{_SOURCES.get(method, method)}{profile}", str(arn))
