"""Classification of failures into :class:`~dbt_runner.ErrorKind` — the one seam.

Every exception dbt hands back and every failed node's message passes through
:func:`classify_exception` / :func:`classify_message`. The rules are a table:
the first pattern that matches wins, so more specific rules come first. Each
rule is exercised by a test with a real message from psycopg2,
redshift_connector, duckdb, paramiko or dbt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ._exceptions import ErrorKind, HostKeyError, SSHAuthError, TunnelError

__all__ = ["RULES", "classify_exception", "classify_message", "exception_chain"]

_K = ErrorKind

#: (kind, pattern) — first match wins; patterns are case-insensitive.
RULES: tuple[tuple[ErrorKind, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        # --- our own watchdog, before anything that mentions connections ---
        (_K.TIMEOUT, r"dbt_runner watchdog|invocation timed out after"),
        # --- SSH tunnel ---
        (
            _K.TUNNEL,
            # only phrases SSH libraries and our tunnel produce: bare words such as
            # "bastion" also occur in user-chosen table names
            r"ssh tunnel|sshtunnel|ssh gateway|secsh channel|"
            r"channelexception|administratively prohibited|could not establish session to ssh",
        ),
        # --- too many connections (role/server/Redshift limits) ---
        (
            _K.TOO_MANY_CONNECTIONS,
            r"too many connections|too many clients|remaining connection slots are reserved|"
            r"connection limit .* exceeded|connection limit exceeded|"
            r"exceeded the maximum number of connections|max(imum)? connections? (limit )?reached|"
            r"cancelled by wlm|wlm queue|query \(\d+\) cancelled on user's request and ran out",
        ),
        # --- lock / serialization conflicts ---
        (
            _K.CONFLICT,
            r"lock timeout|could not obtain lock|deadlock detected|could not serialize access|"
            r"serializable isolation violation|error:\s*1023|"
            r"could not open relation with oid|conflict with concurrent transaction|"
            r"dropped by (a )?concurrent transaction|concurrently (updated|deleted)|"
            r"write-write conflict|conflict on tuple deletion|transactioncontext error|"
            r"could not set lock on file|conflicting lock is held|"
            r"tuple concurrently updated|canceling statement due to conflict with recovery",
        ),
        # --- authentication ---
        (
            _K.AUTH,
            r"password authentication failed|authentication failed|"
            r"no pg_hba\.conf entry|role \S+ does not exist|invalid password|"
            r"invalidclienttokenid|the security token included in the request is invalid|"
            r"fe_sendauth: no password supplied|sasl authentication",
        ),
        # --- statement timeouts (server side) ---
        (
            _K.TIMEOUT,
            r"canceling statement due to statement timeout|statement timeout|"
            r"query cancelled due to timeout|interrupt(ed)?! |interrupted",
        ),
        # --- connection-level faults ---
        (
            _K.CONNECTION,
            r"connection refused|could not connect to server|connection to server at .* failed|"
            r"server closed the connection unexpectedly|connection reset|broken pipe|"
            r"ssl syscall error|eof detected|terminating connection due to administrator command|"
            r"the database system is (shutting down|starting up|in recovery mode)|"
            r"connection already closed|connection not open|could not receive data from server|"
            r"could not send data to server|timeout expired|timed out|network is unreachable|"
            r"name or service not known|temporary failure in name resolution|"
            r"communication error|failed to establish a connection|no route to host|"
            r"interfaceerror|operationalerror: server closed|"
            r"unexpected eof|connection was closed|failed to connect",
        ),
        # --- compilation / parsing ---
        (
            _K.COMPILATION,
            r"compilation error|parsing error|jinja|macro .* not found|"
            r"depends on a node named .* which was not found|could not find profile|"
            r"runtime error\s+could not find|dbt_project\.yml",
        ),
    )
)

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
_CONNECTION_TYPES = frozenset(
    {
        "FailedToConnectError",
        "OperationalError",
        "InterfaceError",
        "ConnectionError",
        "ConnectionResetError",
        "ConnectionRefusedError",
        "BrokenPipeError",
        "TimeoutError",
    }
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes/contexts, outermost first, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


#: Echoes of user-chosen names in dbt's and PostgreSQL's messages (node names, file paths,
#: the SQL line): never classified on, so a model named ``bastion_logs`` or a project under
#: ``/srv/ssh_tunnel/`` cannot turn a failed model into a retried "tunnel" error.
_USER_TEXT = re.compile(
    r"^[ \t]*compiled code at .*$"
    r"|\bin (?:model|test|seed|snapshot|unit_test|analysis|sql operation|operation) "
    r"\S+ \([^()\n]*\)"
    r"|^[ \t]*LINE \d+:.*$",
    re.IGNORECASE | re.MULTILINE,
)


def classify_message(message: str, default: ErrorKind) -> ErrorKind:
    """The kind named by the first matching rule, else ``default``.

    >>> classify_message('FATAL: too many connections for role "dbt"', ErrorKind.MODEL_FAILURE)
    <ErrorKind.TOO_MANY_CONNECTIONS: 'too_many_connections'>
    >>> classify_message('Database Error in model bastion_logs (models/bastion_logs.sql): '
    ...                  'syntax error at or near "selec"', ErrorKind.MODEL_FAILURE)
    <ErrorKind.MODEL_FAILURE: 'model_failure'>
    """
    text = _USER_TEXT.sub(" ", message)
    for kind, pattern in RULES:
        if pattern.search(text):
            return kind
    return default


def classify_exception(exc: BaseException) -> ErrorKind:
    """The kind of an exception dbt (or a driver, or the tunnel) raised."""
    for link in exception_chain(exc):
        if isinstance(link, (HostKeyError, SSHAuthError)):
            return ErrorKind.AUTH  # never retried (DESIGN: host key / SSH auth failures)
        if isinstance(link, TunnelError):
            return ErrorKind.TUNNEL
    text = " | ".join(f"{type(e).__name__}: {e}" for e in exception_chain(exc))
    names = {type(e).__name__ for e in exception_chain(exc)}
    by_message = classify_message(text, default=ErrorKind.MODEL_FAILURE)
    if by_message is not ErrorKind.MODEL_FAILURE:
        return by_message
    if names & _COMPILATION_TYPES:
        return ErrorKind.COMPILATION
    if names & _CONNECTION_TYPES:
        return ErrorKind.CONNECTION
    return ErrorKind.MODEL_FAILURE
