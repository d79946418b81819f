"""Failure classification: every rule against real messages from drivers, dbt and the tunnel.

Each message below is text the named component really produces (copied from its
source, its documentation or a captured run), so a rule that stops matching
real-world wording fails here.
"""

from __future__ import annotations

import re
import socket

import pytest

from dbt_runner import ErrorKind, HostKeyError, SSHAuthError, TunnelError
from dbt_runner._classify import (
    RULES,
    _driver_lines,
    classify_exception,
    classify_message,
    diagnose,
    diagnose_message,
)

K = ErrorKind

WRONG_NAME_LIBPQ = (
    'connection to server at "127.0.0.1", port 37931 failed: server certificate for '
    '"127.0.0.1" (and 1 other name) does not match host name "warehouse.test"\n'
)
WRONG_NAME_REDSHIFT = (
    "('communication error', SSLCertVerificationError(1, \"[SSL: CERTIFICATE_VERIFY_FAILED] "
    "certificate verify failed: Hostname mismatch, certificate is not valid for "
    "'warehouse.test'. (_ssl.c:1006)\"))"
)
WRONG_NAME_PYTHON_SSL = (
    "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, "
    "certificate is not valid for 'warehouse.test'. (_ssl.c:1006)"
)
UNKNOWN_CA_REDSHIFT = (
    "('communication error', SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] "
    "certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)'))"
)

#: (source, message, expected kind)
CASES: list[tuple[str, str, ErrorKind]] = [
    # --- our watchdog
    (
        "dbt_runner watchdog",
        "invocation timed out after 900s (dbt_runner watchdog, DBT_RUNNER_TIMEOUT_S); "
        "its connections were cancelled",
        K.TIMEOUT,
    ),
    # --- SSH failures are judged by their exception types (test_ssh_kinds_*), never text
    ("paramiko text", "SSH session not active", K.MODEL_FAILURE),
    # --- names users chose never decide the kind
    ("postgres", 'relation "bastion.paramiko_log" does not exist', K.MODEL_FAILURE),
    # --- too many connections
    (
        "psycopg2",
        'connection to server at "10.0.0.5", port 5439 failed: '
        'FATAL:  too many connections for role "dbt"',
        K.TOO_MANY_CONNECTIONS,
    ),
    (
        "psycopg2 (PostgreSQL <16)",
        "FATAL:  remaining connection slots are reserved for non-replication superuser connections",
        K.TOO_MANY_CONNECTIONS,
    ),
    (
        "psycopg2 (PostgreSQL 16+)",
        "FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute",
        K.TOO_MANY_CONNECTIONS,
    ),
    ("psycopg2", "FATAL:  sorry, too many clients already", K.TOO_MANY_CONNECTIONS),
    (
        "Redshift via psycopg2",
        'FATAL:  connection limit "500" exceeded for non-bootstrap users',
        K.TOO_MANY_CONNECTIONS,
    ),
    (
        "redshift_connector",
        "{'S': 'FATAL', 'C': '53300', 'M': 'connection limit \"500\" exceeded for "
        "non-bootstrap users', 'F': '/home/ec2-user/padb/src/pg/src/backend/utils/init/"
        "postinit.c', 'L': '1218', 'R': 'InitPostgres'}",
        K.TOO_MANY_CONNECTIONS,
    ),
    # --- lock / serialization conflicts
    ("PostgreSQL", "canceling statement due to lock timeout", K.CONFLICT),
    (
        "PostgreSQL",
        "deadlock detected\nDETAIL:  Process 4242 waits for ShareLock on transaction 815; "
        "blocked by process 4243.",
        K.CONFLICT,
    ),
    ("PostgreSQL", "could not serialize access due to concurrent update", K.CONFLICT),
    ("PostgreSQL NOWAIT", 'could not obtain lock on relation "stg_ecs_order_info"', K.CONFLICT),
    ("PostgreSQL", "tuple concurrently updated", K.CONFLICT),
    (
        "redshift_connector",
        "{'S': 'ERROR', 'C': 'XX000', 'M': '1023', 'D': 'Serializable isolation violation on "
        "table - 123, transactions forming the cycle are: 1, 2 (pid:3)'}",
        K.CONFLICT,
    ),
    (
        "Redshift via psycopg2",
        "ERROR:  1023\nDETAIL:  Serializable isolation violation on table - 156362, "
        "transactions forming the cycle are: 1525298, 1525304 (pid:14218)",
        K.CONFLICT,
    ),
    ("Redshift", "could not open relation with OID 12345", K.CONFLICT),
    ("Redshift", "table 3379442 dropped by concurrent transaction", K.CONFLICT),
    (
        "DuckDB",
        'TransactionContext Error: Catalog write-write conflict on create with "main.stg"',
        K.CONFLICT,
    ),
    ("DuckDB", "TransactionContext Error: Conflict on update!", K.CONFLICT),
    # two first builds at once (dbt-core #3538's shape on PostgreSQL / the Redshift stand-in)
    (
        "dbt-postgres",
        "Database Error in model stg_ecs_order_info (models/staging/stg_ecs_order_info.sql)\n"
        '  relation "stg_ecs_order_info" already exists',
        K.CONFLICT,
    ),
    (
        "dbt-postgres",
        "Database Error in model stg_ecs_order_info (models/staging/stg_ecs_order_info.sql)\n"
        '  duplicate key value violates unique constraint "pg_type_typname_nsp_index"\n'
        "  DETAIL:  Key (typname, typnamespace)=(stg_ecs_order_info, 16385) already exists.",
        K.CONFLICT,
    ),
    (
        "DuckDB",
        'IO Error: Could not set lock on file "/data/x.duckdb": Conflicting lock is held in '
        "/usr/bin/python3.11 (PID 4242). See also https://duckdb.org/docs/current/connect/"
        "concurrency",
        K.CONFLICT,
    ),
    # --- authentication
    ("psycopg2", 'FATAL:  password authentication failed for user "dbt"', K.AUTH),
    (
        "psycopg2",
        'connection to server at "10.0.0.5", port 5432 failed: FATAL:  no pg_hba.conf entry '
        'for host "10.0.0.9", user "dbt", database "analytics", no encryption',
        K.AUTH,
    ),
    ("psycopg2", 'FATAL:  role "dbt" does not exist', K.AUTH),
    ("psycopg2", "fe_sendauth: no password supplied", K.CONFIGURATION),
    (
        "psycopg2 (sslmode=require, server without SSL)",
        'connection to server at "127.0.0.1", port 5432 failed: server does not support SSL, '
        "but SSL was required",
        K.CONFIGURATION,
    ),
    ("psycopg2", 'FATAL:  database "analytcs" does not exist', K.CONFIGURATION),
    # --- TLS verification (captured from libpq 17 / redshift_connector 2.1 against the
    # test bed's servers; tests/integration/test_tls_bastion.py makes them for real)
    ("libpq 17, verify-full, another name", WRONG_NAME_LIBPQ, K.CONFIGURATION),
    ("redshift_connector, verify-full, another name", WRONG_NAME_REDSHIFT, K.CONFIGURATION),
    ("Python ssl, verify-full, another name", WRONG_NAME_PYTHON_SSL, K.CONFIGURATION),
    ("redshift_connector, an unknown CA", UNKNOWN_CA_REDSHIFT, K.CONFIGURATION),
    (
        "libpq 17, an unknown CA",
        'connection to server at "127.0.0.1", port 37931 failed: SSL error: certificate verify '
        "failed\n",
        K.CONFIGURATION,
    ),
    (
        "libpq 17, verify-full without a CA file",
        'connection to server at "127.0.0.1", port 37931 failed: root certificate file '
        '"/root/.postgresql/root.crt" does not exist\nEither provide the file, use the '
        "system's trusted roots with sslrootcert=system, or change sslmode to disable server "
        "certificate verification.\n",
        K.CONFIGURATION,
    ),
    (
        "Redshift IAM (boto3)",
        "An error occurred (InvalidClientTokenId) when calling the GetClusterCredentials "
        "operation: The security token included in the request is invalid.",
        K.AUTH,
    ),
    (
        "Redshift IAM through redshift_connector, wrapped by dbt (moto, IAM enforced)",
        "Database Error\n  An error occurred (AccessDenied) when calling the GetCredentials "
        "operation: User: arn:aws:iam::123456789012:user/alice is not authorized to perform: "
        "redshift-serverless:GetCredentials",
        K.AUTH,
    ),
    (
        "Redshift IAM (boto3, AWS throttling)",
        "An error occurred (ThrottlingException) when calling the GetClusterCredentials "
        "operation (reached max retries: 4): Rate exceeded",
        K.CONNECTION,
    ),
    ("Redshift IAM (botocore NoCredentialsError)", "Unable to locate credentials", K.AUTH),
    (
        "Redshift IAM (botocore EndpointConnectionError)",
        'Could not connect to the endpoint URL: "https://redshift.eu-west-1.amazonaws.com/"',
        K.CONNECTION,
    ),
    # --- statement timeouts on the server
    ("PostgreSQL", "canceling statement due to statement timeout", K.TIMEOUT),
    ("DuckDB", "INTERRUPT Error: Interrupted!", K.TIMEOUT),
    # --- connection faults
    (
        "psycopg2",
        'connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?",
        K.CONNECTION,
    ),
    (
        "psycopg2",
        "server closed the connection unexpectedly\n\tThis probably means the server "
        "terminated abnormally\n\tbefore or while processing the request.",
        K.CONNECTION,
    ),
    (
        "psycopg2",
        'connection to server at "127.0.0.1", port 44497 failed: timeout expired',
        K.CONNECTION,
    ),
    ("psycopg2", "SSL SYSCALL error: EOF detected", K.CONNECTION),
    ("PostgreSQL", "terminating connection due to administrator command", K.CONNECTION),
    ("PostgreSQL", "FATAL:  the database system is starting up", K.CONNECTION),
    (
        "psycopg2",
        'could not translate host name "cluster.invalid" to address: Name or service not known',
        K.CONNECTION,
    ),
    ("psycopg2", "connection already closed", K.CONNECTION),
    (
        "libpq < 14",
        "could not connect to server: Connection refused\n\tIs the server running on host "
        '"localhost" (127.0.0.1) and accepting\n\tTCP/IP connections on port 5432?',
        K.CONNECTION,
    ),
    ("libpq", "SSL connection has been closed unexpectedly", K.CONNECTION),
    ("libpq", "could not receive data from server: Connection timed out", K.CONNECTION),
    ("Python socket", "[Errno 104] Connection reset by peer", K.CONNECTION),
    (
        "redshift_connector",
        "('communication error', ConnectionRefusedError(111, 'Connection refused'))",
        K.CONNECTION,
    ),
    ("redshift_connector", "('connection time out', TimeoutError('timed out'))", K.CONNECTION),
    # --- compilation
    (
        "dbt",
        "Compilation Error in model stg_x (models/stg_x.sql)\n  'this_macro_does_not_exist' "
        "is undefined. This can happen when calling a macro that does not exist.",
        K.COMPILATION,
    ),
    ("dbt", "Parsing Error\n  Invalid models config given in models/schema.yml", K.COMPILATION),
    (
        "dbt",
        "Compilation Error\n  Model 'model.mini.a' (models/a.sql) depends on a node named 'b' "
        "which was not found",
        K.COMPILATION,
    ),
    (
        "dbt",
        "Runtime Error\n  Could not find profile named 'mini'",
        K.COMPILATION,
    ),
]

#: messages no rule may claim: a model's own SQL error is a model failure
UNMATCHED = [
    "Runtime Error in model broken (models/broken.sql)\n  Catalog Error: Table with name "
    "this_table_does_not_exist does not exist!",
    'column "amount" must appear in the GROUP BY clause or be used in an aggregate function',
    "division by zero",
]


def _rule_index(message: str) -> int | None:
    for _, line in _driver_lines(message):
        for i, (_, pattern, _hint) in enumerate(RULES):
            if line and pattern.match(line):
                return i
    return None


@pytest.mark.parametrize(
    ("source", "message", "expected"),
    CASES,
    ids=[f"{kind.value}:{src}:{msg[:40]}" for src, msg, kind in CASES],
)
def test_real_message_is_classified(source: str, message: str, expected: ErrorKind) -> None:
    assert classify_message(message, K.MODEL_FAILURE) is expected, source


def test_configuration_shaped_failures_name_the_setting() -> None:
    ssl = diagnose_message("server does not support SSL, but SSL was required", K.MODEL_FAILURE)
    assert ssl.kind is K.CONFIGURATION and "DBT_RUNNER_WAREHOUSE__SSLMODE" in (ssl.hint or "")
    missing = diagnose_message("fe_sendauth: no password supplied", K.MODEL_FAILURE)
    assert "DBT_RUNNER_WAREHOUSE__PASSWORD" in (missing.hint or "")


@pytest.mark.parametrize(
    ("message", "names"),
    [
        (WRONG_NAME_LIBPQ, ['is for "127.0.0.1" (and 1 other name)', 'HOST="warehouse.test"']),
        (WRONG_NAME_REDSHIFT, ["is not for WAREHOUSE__HOST='warehouse.test'"]),
    ],
)
def test_a_certificate_for_another_name_says_the_fix_and_is_never_retried(
    message: str, names: list[str]
) -> None:
    from dbt.adapters.exceptions import FailedToConnectError

    verdict = diagnose(FailedToConnectError(message))  # as dbt raises it
    assert verdict.kind is K.CONFIGURATION
    hint = verdict.hint or ""
    for name in names:
        assert name in hint
    assert "set DBT_RUNNER_WAREHOUSE__HOST" in hint and "DBT_RUNNER_SSH__REMOTE_HOST" in hint
    assert not verdict.kind.is_transient and verdict.kind.exit_code == 2


@pytest.mark.parametrize("message", UNMATCHED)
def test_model_sql_errors_keep_the_default(message: str) -> None:
    assert classify_message(message, K.MODEL_FAILURE) is K.MODEL_FAILURE
    assert classify_message(message, K.TEST_FAILURE) is K.TEST_FAILURE


def test_every_rule_is_exercised_by_a_real_message() -> None:
    used = {_rule_index(message) for _, message, _ in CASES}
    unused = [
        f"#{i} {kind.value}: {pattern.pattern[:60]}"
        for i, (kind, pattern, _) in enumerate(RULES)
        if i not in used
    ]
    assert not unused, f"rules without a test case: {unused}"


def test_rules_are_compiled_case_insensitive() -> None:
    assert all(p.flags & re.IGNORECASE for _, p, _ in RULES)
    assert classify_message("DEADLOCK DETECTED", K.MODEL_FAILURE) is K.CONFLICT


# ---------------------------------------------------------------------- exceptions
def _raise_chain(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` raised while handling ``inner`` (an implicit ``__context__``, as dbt does)."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 - dbt-adapters raises this way
    except BaseException as exc:
        return exc


def test_dbt_compilation_error_object() -> None:
    from dbt_common.exceptions import CompilationError

    exc = CompilationError("'this_macro_does_not_exist' is undefined.")
    assert classify_exception(exc) is K.COMPILATION


def test_dbt_parsing_error_by_type_alone() -> None:
    from dbt.exceptions import ParsingError

    assert classify_exception(ParsingError("unexpected key 'colums'")) is K.COMPILATION


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection to server at "127.0.0.1", port 1 failed: Connection refused',
            K.CONNECTION,
        ),
        ('FATAL:  password authentication failed for user "dbt"', K.AUTH),
        ('FATAL:  too many connections for role "dbt"', K.TOO_MANY_CONNECTIONS),
        # whatever the driver said, failing to connect is a connection fault
        ("something nobody has seen before", K.CONNECTION),
    ],
)
def test_dbt_failed_to_connect_wrapping_driver_messages(message: str, expected: ErrorKind) -> None:
    from dbt.adapters.exceptions import FailedToConnectError

    assert classify_exception(FailedToConnectError(message)) is expected


def test_dbt_database_error_from_redshift_conflict() -> None:
    from dbt_common.exceptions import DbtDatabaseError

    exc = DbtDatabaseError("table 3379442 dropped by concurrent transaction")
    assert classify_exception(exc) is K.CONFLICT


def test_real_psycopg2_refused_connection_wrapped_by_dbt() -> None:
    psycopg2 = pytest.importorskip("psycopg2", reason="pip install 'dbt-runner[postgres]'")
    from dbt.adapters.exceptions import FailedToConnectError

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(host="127.0.0.1", port=port, user="dbt", dbname="x", connect_timeout=5)
    exc = _raise_chain(FailedToConnectError(str(info.value)), info.value)
    assert classify_exception(exc) is K.CONNECTION


def test_real_redshift_connect_timeout_is_a_connection_fault() -> None:
    """redshift_connector raises a socket timeout as OperationalError(TimeoutError).

    A warehouse that does not answer in time is a transient connection fault
    (retried), the same as psycopg2's "timeout expired" — not the watchdog's
    ``timeout`` kind.
    """
    redshift_connector = pytest.importorskip(
        "redshift_connector", reason="pip install 'dbt-runner[redshift]'"
    )
    from dbt.adapters.exceptions import FailedToConnectError

    with socket.socket() as silent:  # accepts the TCP connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(redshift_connector.OperationalError) as info:
            redshift_connector.connect(
                host="127.0.0.1", port=port, user="u", password="p", database="d", timeout=0.3
            )
    exc = _raise_chain(FailedToConnectError(str(info.value)), info.value)
    assert classify_exception(exc) is K.CONNECTION


def test_real_duckdb_write_write_conflict() -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect(":memory:")
    first, second = con.cursor(), con.cursor()
    first.execute("begin")
    second.execute("begin")
    first.execute("create table stg (i int)")
    with pytest.raises(duckdb.Error) as info:
        second.execute("create table stg (i int)")
    assert classify_exception(info.value) is K.CONFLICT


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p, s: p.SSHException("SSH session not active"), K.TUNNEL),
        (lambda p, s: p.ChannelException(2, "Connect failed"), K.TUNNEL),
        (lambda p, s: p.AuthenticationException("Authentication timeout."), K.TUNNEL),
        (lambda p, s: p.AuthenticationException("Authentication failed."), K.AUTH),
        (
            lambda p, s: p.BadHostKeyException(
                "bastion", p.RSAKey.generate(1024), p.RSAKey.generate(1024)
            ),
            K.AUTH,
        ),
        (lambda p, s: s.HandlerSSHTunnelForwarderError("open failed"), K.TUNNEL),
    ],
    ids=[
        "session-gone",
        "channel-refused",
        "auth-timeout",
        "auth-refused",
        "host-key",
        "sshtunnel",
    ],
)
def test_ssh_kinds_are_the_tunnel_mapping_s(make: object, expected: ErrorKind) -> None:
    """One mapping: what the tunnel raises for an SSH exception is what diagnose says of
    it in dbt's chain (an auth timeout is a transient tunnel fault in both)."""
    import paramiko
    import sshtunnel

    from dbt_runner._ssh.errors import _OpenAttempt, translate_error

    exc = make(paramiko, sshtunnel)  # type: ignore[operator]
    assert classify_exception(exc) is expected
    attempt = _OpenAttempt("b", 22, "u", "w:5439", 1.0, None)
    mapped = translate_error(exc, attempt, "auth" if expected is K.AUTH else None)
    assert mapped is not None and mapped.kind is expected


def test_exception_with_a_broken_str_is_diagnosed() -> None:
    """dbt's ExceptionExit has no ``message`` (its str() raises): never a crash."""

    class NoMessage(Exception):
        def __str__(self) -> str:
            raise AttributeError("'ExceptionExit' object has no attribute 'message'")

    assert classify_exception(NoMessage()) is K.MODEL_FAILURE
    wrapper = NoMessage()
    wrapper.exception = ConnectionRefusedError("refused")  # type: ignore[attr-defined]
    assert classify_exception(wrapper) is K.CONNECTION


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1), GeneratorExit()])
def test_a_base_exception_is_a_cancel(exc: BaseException) -> None:
    assert classify_exception(exc) is K.CANCELLED


def test_real_sshtunnel_error_type_is_a_tunnel_fault() -> None:
    sshtunnel = pytest.importorskip("sshtunnel")
    exc = sshtunnel.HandlerSSHTunnelForwarderError("An error occurred while opening tunnels.")
    assert classify_exception(exc) is K.TUNNEL


def test_our_tunnel_error_is_a_tunnel_fault() -> None:
    assert classify_exception(TunnelError("bastion 10.0.0.1:22 unreachable")) is K.TUNNEL


@pytest.mark.parametrize("exc_type", [HostKeyError, SSHAuthError])
def test_host_key_and_ssh_auth_failures_are_not_transient(exc_type: type[TunnelError]) -> None:
    kind = classify_exception(exc_type("the bastion's host key does not match"))
    assert kind is K.AUTH
    assert not kind.is_transient


def test_cause_deep_in_the_chain_decides() -> None:
    from dbt_common.exceptions import DbtRuntimeError

    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as inner:
            raise DbtRuntimeError("Runtime Error\n  unexpected failure") from inner
    except DbtRuntimeError as outer:
        assert classify_exception(outer) is K.CONNECTION


def test_tunnel_error_as_cause_of_a_dbt_error() -> None:
    from dbt_common.exceptions import DbtRuntimeError

    exc = _raise_chain(DbtRuntimeError("query failed"), TunnelError("tunnel dropped"))
    assert classify_exception(exc) is K.TUNNEL


def test_a_cyclic_chain_terminates() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert classify_exception(a) is K.MODEL_FAILURE


def test_unknown_exception_is_a_model_failure() -> None:
    assert classify_exception(ValueError("Catalog Error: no such table")) is K.MODEL_FAILURE


# ------------------------------------------------------------ AWS (Redshift IAM): one seam
def _client_error(code: str, status: int, operation: str = "GetClusterCredentials") -> Exception:
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": code, "Message": f"{code} from AWS"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _client_error("AccessDenied", 403), K.AUTH),
        (lambda: _client_error("ExpiredToken", 400), K.AUTH),
        (lambda: _client_error("ClusterNotFound", 404), K.AUTH),
        (lambda: _client_error("ResourceNotFoundException", 400, "GetCredentials"), K.AUTH),
        (lambda: _client_error("ThrottlingException", 400), K.CONNECTION),
        (lambda: _client_error("InternalFailure", 500), K.CONNECTION),
        (lambda: _client_error("SomethingNew", 503), K.CONNECTION),
        (
            lambda: __import__("botocore.exceptions").exceptions.EndpointConnectionError(
                endpoint_url="https://redshift.eu-west-1.amazonaws.com/"
            ),
            K.CONNECTION,
        ),
        (lambda: __import__("botocore.exceptions").exceptions.NoCredentialsError(), K.AUTH),
        (
            lambda: __import__("botocore.exceptions").exceptions.NoRegionError(),
            K.CONFIGURATION,
        ),
    ],
)
def test_botocore_errors_through_dbt_are_judged_by_the_aws_seam(
    make: object, expected: ErrorKind
) -> None:
    """redshift_connector's IAM path raises botocore's exceptions; dbt wraps them in
    FailedToConnectError (a connection fault by itself): the AWS answer decides."""
    from dbt.adapters.exceptions import FailedToConnectError

    inner = make()  # type: ignore[operator]
    wrapped = _raise_chain(FailedToConnectError(str(inner)), inner)
    assert classify_exception(wrapped) is expected
