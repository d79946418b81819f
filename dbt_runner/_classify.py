"""Classification of failures into :class:`~dbt_runner.ErrorKind` — the one seam.

Evidence is read most structural first, and text last:

1. our own exceptions carry their kind (:attr:`DbtRunnerError.kind`);
2. the driver's error code: the SQLSTATE of psycopg2 (``pgcode``) and of
   redshift_connector (the ``'C'`` field of its error dict, also when dbt only
   kept the dict's text in a node message). A code not in :data:`SQLSTATES`
   (undefined column, a user's ``RAISE``) is the SQL's own failure;
   ``XX000`` (internal error) leaves the decision to the message;
3. the exception's class where the class alone decides (DuckDB's exception
   classes, paramiko/sshtunnel, the socket errors);
4. only where no code exists: patterns anchored at the start of the driver's
   own message (after the ``FATAL:``/``ERROR:`` severity and libpq's
   ``connection to server at ... failed:`` prefix). Never a substring anywhere:
   user SQL and object names (a column ``interrupted_at``, a model
   ``lock_timeout_audit``) must not decide a kind. dbt's own echoes of user
   text (``in model <name> (<path>)``, ``LINE n:``, ``compiled code at``) are
   dropped before matching;
5. broad classes last (dbt's ``FailedToConnectError`` is a connection fault,
   dbt's parsing/compilation errors are compilation).

Configuration-shaped failures (SSL mismatch, missing password, unknown
database) come with a ``hint`` naming the setting to change. Each rule of
:data:`RULES` and each entry of :data:`SQLSTATES` is exercised by a test with a
real failure.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from ._aws import AUTH_HINT, TRANSIENT_CODES
from ._aws import kind_of as _aws_kind
from ._exceptions import DbtRunnerError, ErrorKind

__all__ = [
    "RULES",
    "SQLSTATES",
    "Verdict",
    "classify_exception",
    "classify_message",
    "diagnose",
    "diagnose_message",
    "exception_chain",
]

_K = ErrorKind
_SSL_HINT = (
    "the server does not speak SSL while sslmode requires it: set "
    "DBT_RUNNER_WAREHOUSE__SSLMODE=disable only if that server really has no SSL "
    "(or sslmode in your own profiles.yml), else point it at the SSL-enabled endpoint"
)
_PASSWORD_HINT = (
    "no password was sent: set DBT_RUNNER_WAREHOUSE__PASSWORD (or password in your profiles.yml)"
)
_DBNAME_HINT = (
    "the database does not exist: check DBT_RUNNER_WAREHOUSE__DBNAME (or dbname in your "
    "profiles.yml)"
)
_LOGIN_HINT = "check DBT_RUNNER_WAREHOUSE__USER and DBT_RUNNER_WAREHOUSE__PASSWORD"
#: ``{cert}`` / ``{host}`` are filled from the driver's message (a rule's named groups)
_WRONG_NAME = (
    "set DBT_RUNNER_WAREHOUSE__HOST (or host in your profiles.yml) to the name the "
    "certificate is for and, through a bastion, DBT_RUNNER_SSH__REMOTE_HOST to the address "
    "the bastion reaches (sslmode=verify-ca would check the CA only)"
)
_WRONG_NAME_HINT = (
    "the server's certificate is for {cert}, not WAREHOUSE__HOST={host}: " + _WRONG_NAME
)
_WRONG_NAME_PY_HINT = "the server's certificate is not for WAREHOUSE__HOST={host}: " + _WRONG_NAME
_UNKNOWN_CA_HINT = (
    "the server's certificate is not signed by a CA this client trusts: PostgreSQL: set "
    "DBT_RUNNER_WAREHOUSE__SSLROOTCERT (or sslrootcert in your profiles.yml) to the CA file "
    "that signed it; Redshift: redshift_connector trusts its bundled Redshift CAs and the "
    "system's trust store (SSL_CERT_FILE); else you reached another server than you meant"
)
_NO_ROOT_HINT = (
    "libpq needs the CA that signed the server's certificate to verify it (sslmode "
    "verify-full, the default, or verify-ca): set DBT_RUNNER_WAREHOUSE__SSLROOTCERT (or "
    "sslrootcert in your profiles.yml) to that CA's file, or choose "
    "DBT_RUNNER_WAREHOUSE__SSLMODE=require to encrypt without verifying the server"
)


@dataclass(frozen=True)
class Verdict:
    """A failure's kind and, for a configuration-shaped one, the setting to change."""

    kind: ErrorKind
    hint: str | None = None


#: SQLSTATE (or class prefix of two characters) -> verdict; exact codes win over classes
SQLSTATES: dict[str, Verdict] = {
    "53300": Verdict(_K.TOO_MANY_CONNECTIONS),  # too_many_connections
    "40001": Verdict(_K.CONFLICT),  # serialization_failure
    "40P01": Verdict(_K.CONFLICT),  # deadlock_detected
    "55P03": Verdict(_K.CONFLICT),  # lock_not_available (lock_timeout, NOWAIT)
    "57014": Verdict(_K.TIMEOUT),  # query_canceled (statement_timeout, a cancel)
    "57P01": Verdict(_K.CONNECTION),  # admin_shutdown
    "57P02": Verdict(_K.CONNECTION),  # crash_shutdown
    "57P03": Verdict(_K.CONNECTION),  # cannot_connect_now (starting up, shutting down)
    "08": Verdict(_K.CONNECTION),  # connection_exception class
    "28P01": Verdict(_K.AUTH, _LOGIN_HINT),  # invalid_password
    "28000": Verdict(_K.AUTH, _LOGIN_HINT),  # invalid_authorization (unknown role, pg_hba)
    "3D000": Verdict(_K.CONFIGURATION, _DBNAME_HINT),  # invalid_catalog_name
    "42P07": Verdict(_K.CONFLICT),  # duplicate_table: two first builds at once
}

#: login-time errors (limits, auth, unknown database) come from the server as FATAL: a
#: user's own RAISE of the same words is an ERROR, and its text decides nothing
_FATAL = r"(?:FATAL:\s+)"

#: (kind, pattern anchored at the start of a driver message line, hint) — first match wins
RULES: tuple[tuple[ErrorKind, re.Pattern[str], str | None], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE), hint)
    for kind, pattern, hint in (
        # --- our own watchdog
        (_K.TIMEOUT, r"invocation timed out after \d", None),
        # --- too many connections (PostgreSQL, Redshift)
        (_K.TOO_MANY_CONNECTIONS, _FATAL + r"too many connections for (role|database) ", None),
        (_K.TOO_MANY_CONNECTIONS, _FATAL + r"sorry, too many clients already", None),
        (_K.TOO_MANY_CONNECTIONS, _FATAL + r"remaining connection slots are reserved", None),
        (_K.TOO_MANY_CONNECTIONS, _FATAL + r'connection limit "?\d+"? exceeded', None),
        # --- lock / serialization conflicts
        (_K.CONFLICT, r"canceling statement due to lock timeout", None),
        (_K.CONFLICT, r"could not obtain lock on ", None),
        (_K.CONFLICT, r"deadlock detected", None),
        (_K.CONFLICT, r"could not serialize access due to ", None),
        (_K.CONFLICT, r"tuple concurrently (updated|deleted)", None),
        (_K.CONFLICT, r"1023$", None),  # Redshift: "ERROR: 1023 / DETAIL: Serializable ..."
        (_K.CONFLICT, r"could not open relation with OID \d+", None),
        (_K.CONFLICT, r"table \d+ dropped by concurrent transaction", None),
        (_K.CONFLICT, r"TransactionContext Error: (Catalog write-write conflict|Conflict )", None),
        (_K.CONFLICT, r"IO Error: Could not set lock on file ", None),
        # concurrent first builds: both saw no table and both created it
        (_K.CONFLICT, r'relation "[^"]*" already exists$', None),
        (_K.CONFLICT, r'duplicate key value violates unique constraint "pg_type_typname_nsp', None),
        # --- configuration-shaped: deterministic, the message names the setting
        (_K.CONFIGURATION, r"server does not support SSL, but SSL was required", _SSL_HINT),
        # TLS verification (before the connection faults: redshift_connector reports it
        # as a "communication error"): a certificate for another name, an unknown CA
        (
            _K.CONFIGURATION,
            r'server certificate for (?P<cert>"[^"]*"(?: \(and \d+ other names?\))?) does not '
            r'match host name (?P<host>"[^"]*")',
            _WRONG_NAME_HINT,
        ),
        (
            _K.CONFIGURATION,
            r"(?:\('communication error', SSLCertVerificationError\(\d+, [\"'])?"
            r"\[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed: Hostname mismatch, "
            r"certificate is not valid for (?P<host>'[^']*')",
            _WRONG_NAME_PY_HINT,
        ),
        (
            _K.CONFIGURATION,
            r"(?:\('communication error', SSLCertVerificationError\(\d+, [\"'])?"
            r"\[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed: ",
            _UNKNOWN_CA_HINT,
        ),
        (_K.CONFIGURATION, r"SSL error: certificate verify failed", _UNKNOWN_CA_HINT),
        (_K.CONFIGURATION, r'root certificate file "[^"]*" does not exist', _NO_ROOT_HINT),
        (_K.CONFIGURATION, r"fe_sendauth: no password supplied", _PASSWORD_HINT),
        (_K.CONFIGURATION, _FATAL + r'database "[^"]*" does not exist$', _DBNAME_HINT),
        # --- authentication
        (_K.AUTH, _FATAL + r'password authentication failed for user "', _LOGIN_HINT),
        (_K.AUTH, _FATAL + r"no pg_hba\.conf entry for ", None),
        (_K.AUTH, _FATAL + r'role "[^"]*" does not exist$', _LOGIN_HINT),
        # --- AWS (Redshift IAM through redshift_connector): botocore's own message form;
        # throttling and AWS's own failures are transient, any other refusal is auth
        (_K.CONNECTION, rf"An error occurred \(({'|'.join(sorted(TRANSIENT_CODES))})\)", None),
        (_K.AUTH, r"An error occurred \([\w.]+\) when calling the \w+ operation", AUTH_HINT),
        (_K.AUTH, r"Unable to locate credentials$", AUTH_HINT),
        (_K.CONNECTION, r'Could not connect to the endpoint URL: "', None),
        # --- statement timeouts on the server, DuckDB's interrupt
        (_K.TIMEOUT, r"canceling statement due to statement timeout", None),
        (_K.TIMEOUT, r"INTERRUPT Error: Interrupted", None),
        # --- connection faults (libpq, redshift_connector, sockets)
        (_K.CONNECTION, r"Connection refused", None),
        (_K.CONNECTION, r"could not connect to server", None),
        (_K.CONNECTION, r"server closed the connection unexpectedly", None),
        (_K.CONNECTION, r"timeout expired$", None),
        (_K.CONNECTION, r"SSL SYSCALL error: ", None),
        (_K.CONNECTION, r"SSL connection has been closed unexpectedly", None),
        (_K.CONNECTION, _FATAL + r"?terminating connection due to administrator command", None),
        (
            _K.CONNECTION,
            _FATAL + r"?the database system is (shutting down|starting up|in recovery mode)",
            None,
        ),
        (_K.CONNECTION, r'could not translate host name "', None),
        (_K.CONNECTION, r"connection already closed$", None),
        (_K.CONNECTION, r"could not (receive|send) data (from|to) server", None),
        (_K.CONNECTION, r"\('(communication error|connection time out)', ", None),
        (_K.CONNECTION, r"\[Errno \d+\] Connection reset by peer", None),
        # --- dbt's own error headers
        (_K.COMPILATION, r"(Compilation|Parsing|Dependency) Error\b", None),
        (_K.COMPILATION, r"Could not find profile named '", None),
    )
)

#: dbt's header naming the node (user text in name and path): only its first word counts
_DBT_HEADER = re.compile(
    r"^(?P<what>\w+) Error in (?:model|test|seed|snapshot|unit_test|analysis|sql operation|"
    r"operation|macro|source) .*$",
    re.IGNORECASE,
)
#: lines that echo user text: the failing SQL, a caret under it, compiled-code paths
_ECHO = re.compile(r"^(?:LINE \d+:|\^|compiled code at |HINT:|QUERY:|CONTEXT:)", re.IGNORECASE)
#: prefixes before the driver's own message
_PREFIX = re.compile(
    r"^(?:(?:connection to server (?:at \"[^\"]*\"(?: \([^)]*\))?, port \d+|on socket \"[^\"]*\")"
    r" failed:\s*)|(?:ERROR:\s+)|(?:psycopg2\.\w+\.)?(?:\w+\.)*\w+Error: (?=\S))",
)
_REDSHIFT_DICT = re.compile(r"^\{'S': '[A-Z]+'.*\}$")

#: DuckDB exception classes whose class alone decides (module ``duckdb``/``_duckdb``)
_DUCKDB_KINDS = {
    "InterruptException": _K.TIMEOUT,
    "TransactionException": _K.CONFLICT,
    "ConnectionException": _K.CONNECTION,
    "BinderException": _K.MODEL_FAILURE,
    "CatalogException": _K.MODEL_FAILURE,
    "ParserException": _K.MODEL_FAILURE,
    "ConversionException": _K.MODEL_FAILURE,
    "ConstraintException": _K.MODEL_FAILURE,
}
#: socket and SSH classes whose class alone decides
_STRONG_TYPES: dict[str, ErrorKind] = {
    "ConnectionRefusedError": _K.CONNECTION,
    "ConnectionResetError": _K.CONNECTION,
    "ConnectionAbortedError": _K.CONNECTION,
    "BrokenPipeError": _K.CONNECTION,
    "gaierror": _K.CONNECTION,
}
_COMPILATION_TYPES = frozenset(
    {
        "CompilationError",
        "ParsingError",
        "DbtProjectError",
        "DbtProfileError",
        "UndefinedMacroError",
        "DbtReferenceError",
        "TargetNotFoundError",
        "JinjaRenderingError",
        "DuplicateResourceNameError",
        "UndefinedCompilationError",
        "DbtSelectorsError",
    }
)
#: dbt errors that say the project's setup is incomplete: fixed by configuration, not code
_CONFIGURATION_TYPES: dict[str, Verdict] = {
    # profiles.yml / dbt_project.yml: an unknown target, bad YAML, a missing field (plain
    # dbt exits 2 on these)
    "DbtConfigError": Verdict(
        _K.CONFIGURATION, "fix the profile or project the message names (target, YAML, keys)"
    ),
    "EnvVarMissingError": Verdict(
        _K.CONFIGURATION, "set the environment variable the message names (env_var())"
    ),
    "UninstalledPackagesFoundError": Verdict(
        _K.CONFIGURATION,
        "install the packages: `dbt-runner deps`, or DBT_RUNNER_INSTALL_DEPS=auto (the "
        "default) so a session runs dbt deps when they are missing",
    ),
}
#: broad classes, consulted last: a failed connect whose message nobody recognised
_CONNECTION_TYPES = frozenset(
    {"FailedToConnectError", "OperationalError", "InterfaceError", "TimeoutError"}
)
#: SQLSTATEs whose verdict depends on which object the server names (a catalog race)
_SQLSTATE_WHEN: dict[str, tuple[re.Pattern[str], Verdict]] = {
    # a concurrent CREATE of the same table: PostgreSQL's type catalog refuses the second
    "23505": (re.compile(r'"pg_type_typname_nsp_index"'), Verdict(_K.CONFLICT)),
}


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, outermost first, each once (a wrapper's
    ``.exception``, as dbt's ``ExceptionExit`` carries it, counts as its cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        wrapped = getattr(current, "exception", None)
        if isinstance(wrapped, BaseException) and id(wrapped) not in seen:
            current = wrapped
            continue
        current = current.__cause__ or current.__context__


def text_of(exc: BaseException) -> str:
    """``str(exc)``, or its class name when its ``__str__`` fails (dbt's ``ExceptionExit``
    has no ``message``): a diagnosis never crashes on an exception's type."""
    try:
        return str(exc)
    except Exception:
        return type(exc).__name__


def _driver_lines(message: str) -> Iterator[tuple[str | None, str]]:
    """(dbt header word or SQLSTATE, driver message line) pairs, user echoes dropped.

    The first element is the word of dbt's header (``Database``, ``Compilation``)
    or a SQLSTATE found in a redshift_connector error dict; lines carry text only.
    """
    for raw in message.splitlines():
        line = raw.strip()
        if not line or _ECHO.match(line):
            continue
        header = _DBT_HEADER.match(line)
        if header:
            yield header["what"], ""
            continue
        if _REDSHIFT_DICT.match(line):
            fields = _redshift_fields(line)
            if fields is not None:
                code = fields.get("C")
                yield (code if isinstance(code, str) else None), str(fields.get("M") or "")
                continue
        previous = None
        while previous != line:  # strip stacked prefixes ("...failed: FATAL: ...")
            previous, line = line, _PREFIX.sub("", line, count=1).strip()
        yield None, line


def _redshift_fields(line: str) -> dict[str, object] | None:
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, dict) else None


def _is_sqlstate(code: str | None) -> bool:
    """True for a SQLSTATE that decides: ``XX000`` (internal error) says nothing, and is
    how Redshift reports a serialization conflict ("1023"): its message decides."""
    return bool(code) and len(code or "") == 5 and (code or "").upper() != "XX000"


def _by_sqlstate(code: str | None, text: str = "") -> Verdict | None:
    if not code or not _is_sqlstate(code):
        return None
    code = code.upper()
    when = _SQLSTATE_WHEN.get(code)
    if when is not None and when[0].search(text):
        return when[1]
    return SQLSTATES.get(code) or SQLSTATES.get(code[:2])


def diagnose_message(message: str, default: ErrorKind) -> Verdict:
    """The verdict on a message text (a failed node's message, an error string)."""
    lines = list(_driver_lines(message))
    for tag, line in lines:
        if _is_sqlstate(tag):
            return _by_sqlstate(tag, line) or Verdict(default)
    for tag, line in lines:
        if tag and tag.lower() in ("compilation", "parsing", "dependency"):
            return Verdict(_K.COMPILATION)
        if not line:
            continue
        for kind, pattern, hint in RULES:
            match = pattern.match(line)
            if match:
                found = match.groupdict()
                return Verdict(kind, hint.format(**found) if hint and found else hint)
    return Verdict(default)


def classify_message(message: str, default: ErrorKind) -> ErrorKind:
    """The kind of a message text, else ``default``.

    >>> classify_message('FATAL:  too many connections for role "dbt"', ErrorKind.MODEL_FAILURE)
    <ErrorKind.TOO_MANY_CONNECTIONS: 'too_many_connections'>
    >>> classify_message('Runtime Error in model m (models/m.sql)\\n  Binder Error: Referenced '
    ...                  'column "interrupted_at" not found', ErrorKind.MODEL_FAILURE)
    <ErrorKind.MODEL_FAILURE: 'model_failure'>
    """
    return diagnose_message(message, default).kind


def _sqlstate_of(exc: BaseException) -> str | None:
    code = getattr(exc, "pgcode", None)  # psycopg2
    if isinstance(code, str):
        return code
    if exc.args and isinstance(exc.args[0], dict):  # redshift_connector
        value = exc.args[0].get("C")
        return value if isinstance(value, str) else None
    return None


def _duckdb_kind(exc: BaseException) -> ErrorKind | None:
    for cls in type(exc).__mro__:
        if cls.__module__.lstrip("_").startswith("duckdb") and cls.__name__ in _DUCKDB_KINDS:
            return _DUCKDB_KINDS[cls.__name__]
    return None


def diagnose(exc: BaseException, default: ErrorKind = _K.MODEL_FAILURE) -> Verdict:
    """The verdict on an exception dbt, a driver or the tunnel raised (its whole chain).

    The one decision of a failure's kind: nothing re-labels it afterwards.
    ``default`` is the kind when no evidence says otherwise (the SQL's own
    failure): ``compilation`` while parsing, ``connection`` for the doctor's
    probes. A ``BaseException`` that is not an ``Exception`` (an interrupt, an
    orchestrator's termination) is ``cancelled``. Never raises.
    """
    if not isinstance(exc, Exception):
        return Verdict(_K.CANCELLED)
    chain = list(exception_chain(exc))
    for link in chain:
        if isinstance(link, DbtRunnerError):
            return Verdict(link.kind)
        for cls in type(link).__mro__:
            if cls.__name__ in _CONFIGURATION_TYPES:
                return _CONFIGURATION_TYPES[cls.__name__]
    for link in chain:
        code = _sqlstate_of(link)
        if _is_sqlstate(code):
            # the server's own category decides; an unlisted one (undefined column 42703,
            # a user's RAISE P0001) is the SQL's failure, whatever its text says
            return _by_sqlstate(code, text_of(link)) or Verdict(default)
    for link in chain:
        ssh = _ssh_kind(link)
        if ssh is not None:  # the tunnel's own mapping (dbt_runner._ssh.errors)
            return Verdict(ssh)
        aws = _aws_kind(link)
        if aws is not None:  # AWS's answer to an IAM login (dbt_runner._aws, its one seam)
            return Verdict(aws, AUTH_HINT if aws is _K.AUTH else None)
        # a DuckDB message names its class first ("IO Error: Could not set lock ..."):
        # the class decides unless that message is one of the rules
        kind = _duckdb_kind(link)
        if kind is not None:
            return diagnose_message(text_of(link), kind)
        names = {cls.__name__ for cls in type(link).__mro__}
        for name, strong in _STRONG_TYPES.items():
            if name in names:
                return Verdict(strong)
    for link in chain:
        verdict = diagnose_message(text_of(link), default)
        if verdict.kind is not default:
            return verdict
    names = {cls.__name__ for link in chain for cls in type(link).__mro__}
    if names & _COMPILATION_TYPES:
        return Verdict(_K.COMPILATION)
    if names & _CONNECTION_TYPES:
        return Verdict(_K.CONNECTION)
    return Verdict(default)


def _ssh_kind(exc: BaseException) -> ErrorKind | None:
    """An SSH library's exception, judged by the tunnel's mapping (paramiko is loaded
    only when one is seen)."""
    module = type(exc).__module__ or ""
    if not module.startswith(("paramiko", "sshtunnel")):
        return None
    from ._ssh import kind_of

    return kind_of(exc)


def classify_exception(exc: BaseException) -> ErrorKind:
    """The kind of an exception dbt (or a driver, or the tunnel) raised."""
    return diagnose(exc).kind
