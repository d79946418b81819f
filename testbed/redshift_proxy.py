"""A Redshift stand-in: a small wire-protocol proxy in front of PostgreSQL.

dbt-redshift talks to Redshift through redshift_connector, which speaks the
PostgreSQL v3 protocol with a few Redshift habits that PostgreSQL rejects.
``RedshiftProxy`` listens on 127.0.0.1 and, per client connection (one thread
each), forwards the traffic to a PostgreSQL server while:

* speaking TLS to its clients as Redshift does: an SSLRequest is answered
  ``S`` and the connection is wrapped with the test PKI's certificate
  (``tls=None`` answers ``N`` instead, for a test that needs a server without
  SSL); the leg to PostgreSQL is plain TCP on loopback. GSSENCRequest gets ``N``;
* dropping the startup parameters PostgreSQL does not know
  (``client_protocol_version``, ``driver_version``, ``os_version``,
  ``driver_discovery_version``, ...) -- it would fail with
  ``unrecognized configuration parameter "client_protocol_version"``;
* rewriting the ``server_version`` ParameterStatus (Debian's
  ``"15.18 (Debian 15.18-0+deb12u1)"``, which redshift_connector cannot parse)
  to its numeric part (``"15.18"``);
* stripping Redshift-only DDL clauses (``diststyle``, ``distkey``,
  ``[compound|interleaved] sortkey``, ``encode``, ``backup`` from
  ``CREATE TABLE``; ``with no schema binding`` from ``CREATE VIEW``) in
  Query and Parse messages, and recording every such statement in
  ``ddl_log`` so tests can assert what dbt asked Redshift for.

``install_redshift_stubs`` creates the Redshift catalog objects dbt-redshift
queries (``pg_get_late_binding_view_cols()``, ``svv_external_columns``,
``svv_table_info``) as empty stand-ins in a database.
"""

from __future__ import annotations

import contextlib
import re
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from testbed.postgres import PostgresServer

# ---------------------------------------------------------------------------
# SQL rewriting
# ---------------------------------------------------------------------------

_ENCODINGS = (
    "raw|az64|bytedict|delta32k|delta|lzo|mostly8|mostly16|mostly32|runlength|"
    "text255|text32k|zstd|auto"
)
# Words that cannot be the column after a bare "distkey" (they start the
# next column attribute or clause instead).
_ATTRIBUTE_WORDS = (
    "not|null|encode|distkey|sortkey|primary|unique|references|default|identity|"
    "generated|collate|constraint|check|diststyle|compound|interleaved|backup|as|like"
)
_IDENT = r'(?:"[^"]*"|[a-z_][a-z0-9_$]*)'
_COLUMNS = rf"\(\s*{_IDENT}(?:\s*,\s*{_IDENT})*\s*\)"
_CLAUSE_RE = re.compile(
    "|".join(
        [
            r"\bdiststyle\s+(?:even|key|all|auto)\b",
            rf"\bdistkey\s*{_COLUMNS}",
            rf"\b(?:(?:compound|interleaved)\s+)?sortkey\s*{_COLUMNS}",
            r"\b(?:(?:compound|interleaved)\s+)?sortkey\s+auto\b",
            rf"\bencode\s+(?:{_ENCODINGS})\b",
            r"\bbackup\s+(?:yes|no)\b",
            # "distkey col" (no parentheses)
            rf"\bdistkey\s+(?!(?:{_ATTRIBUTE_WORDS})\b){_IDENT}",
            # column attributes: "a int distkey sortkey,"
            rf"\b(?:distkey|sortkey)\b(?=\s*(?:[,)]|$|(?:{_ATTRIBUTE_WORDS})\b))",
        ]
    ),
    re.IGNORECASE,
)
_CREATE_TABLE_RE = re.compile(
    r"\bcreate\s+(?:(?:local|global)\s+)?(?:(?:temp|temporary)\s+)?table\b"
    r"|\bcreate\s+materialized\s+view\b",
    re.IGNORECASE,
)
_CREATE_VIEW_RE = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?view\b", re.IGNORECASE)
# Late-binding views: "create view v as (...) with no schema binding".
_NO_SCHEMA_BINDING_RE = re.compile(r"\bwith\s+no\s+schema\s+binding\b", re.IGNORECASE)
_AUTO_REFRESH_RE = re.compile(r"\bauto\s+refresh\s+(?:yes|no)\b", re.IGNORECASE)
_AS_RE = re.compile(r"\bas\b", re.IGNORECASE)
_TABLE_NAME_RE = re.compile(
    rf"\b(?:table|view)\s+(?:if\s+not\s+exists\s+)?((?:{_IDENT}\s*\.\s*)*{_IDENT})", re.IGNORECASE
)
_DOLLAR_TAG_RE = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def _mask(sql: str) -> str:
    """``sql`` with the insides of literals and comments blanked (same length).

    String literals and comments become spaces, quoted identifiers become
    ``x``s, so regexes on the result only see SQL keywords at their original
    offsets.
    """
    out = list(sql)
    n = len(sql)
    i = 0
    while i < n:  # i strictly increases every iteration
        c = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
        elif sql.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:  # nested comments, as PostgreSQL allows
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out[i:j] = " " * (j - i)
            i = j
        elif c == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and (i < 2 or not sql[i - 2].isalnum())
            j = i + 1
            while j < n:
                if backslash and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    if j + 1 < n and sql[j + 1] == "'":
                        j += 2
                    else:
                        break
                else:
                    j += 1
            j = min(j, n - 1)
            out[i + 1 : j] = " " * (j - i - 1)
            i = j + 1
        elif c == '"':
            j = i + 1
            while j < n:
                if sql[j] == '"':
                    if j + 1 < n and sql[j + 1] == '"':
                        j += 2
                    else:
                        break
                else:
                    j += 1
            j = min(j, n - 1)
            out[i + 1 : j] = "x" * (j - i - 1)
            i = j + 1
        elif c == "$" and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
            m = _DOLLAR_TAG_RE.match(sql, i)
            if m is None:
                i += 1
                continue
            tag = m.group(0)
            end = sql.find(tag, m.end())
            end = n if end < 0 else end
            out[m.end() : end] = " " * (end - m.end())
            i = end + len(tag)
        else:
            i += 1
    return "".join(out)


def _statement_spans(masked: str) -> list[tuple[int, int]]:
    """(start, end) of each ';'-separated statement in masked SQL."""
    spans, start = [], 0
    for m in re.finditer(";", masked):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(masked)))
    return spans


def _header_end(masked: str, start: int, end: int) -> int:
    """End of a CREATE TABLE's header: the top-level ``AS`` of a CTAS, else ``end``."""
    depth = 0
    i = start
    while i < end:
        c = masked[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(depth - 1, 0)
        elif depth == 0 and c in "aA":
            m = _AS_RE.match(masked, i)
            if m and (i == 0 or not (masked[i - 1].isalnum() or masked[i - 1] in "_$")):
                return i
        i += 1
    return end


def _canonical_clause(text: str) -> str:
    """'compound sortkey(\\n  a , b)' -> 'compound sortkey(a,b)'."""
    parts = re.split(r'("[^"]*")', text)
    canon = "".join(p if p.startswith('"') else p.lower() for p in parts)
    canon = re.sub(r"\s+", " ", canon).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", canon).rstrip()


def strip_redshift_ddl(sql: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Remove Redshift-only clauses from the CREATE TABLE/VIEW statements in ``sql``.

    Tables (and materialized views) lose ``diststyle``, ``distkey``,
    ``[compound|interleaved] sortkey``, ``encode``, ``backup`` (and ``auto
    refresh``); views lose ``with no schema binding``.

    Returns the rewritten SQL and, for each CREATE TABLE/VIEW statement, the
    statement as sent and the clauses removed from it (canonical, lower case,
    e.g. ``["diststyle key", "distkey(order_id)", "compound sortkey(pathtime)"]``).
    Text inside literals, comments and the query of a CTAS is left alone.
    """
    masked = _mask(sql)
    removals: list[tuple[int, int]] = []
    records: list[tuple[str, list[str]]] = []
    for start, end in _statement_spans(masked):
        matches: list[re.Match[str]] = []
        create = _CREATE_TABLE_RE.search(masked, start, end)
        if create is not None:
            header_end = _header_end(masked, create.end(), end)
            matches.extend(_CLAUSE_RE.finditer(masked, create.end(), header_end))
            matches.extend(_AUTO_REFRESH_RE.finditer(masked, create.end(), header_end))
        else:
            create = _CREATE_VIEW_RE.search(masked, start, end)
            if create is None:
                continue
            matches.extend(_NO_SCHEMA_BINDING_RE.finditer(masked, create.end(), end))
        matches.sort(key=lambda m: m.start())
        clauses = []
        for m in matches:
            clauses.append(_canonical_clause(sql[m.start() : m.end()]))
            removals.append((m.start(), m.end()))
        records.append((sql[start:end].strip(), clauses))
    if not removals:
        return sql, records
    pieces, pos = [], 0
    for start, end in removals:
        pieces.append(sql[pos:start])
        pieces.append(" ")
        pos = end
    pieces.append(sql[pos:])
    return "".join(pieces), records


class DdlEntry(NamedTuple):
    """One CREATE TABLE/VIEW statement seen by the proxy."""

    statement: str
    """The statement as the client sent it (before stripping)."""
    clauses: list[str]
    """The Redshift clauses stripped from it, e.g. ``["distkey(order_id)"]``."""

    @property
    def table(self) -> str | None:
        """The created table's name (last part, unquoted, lower case)."""
        m = _TABLE_NAME_RE.search(_mask(self.statement))
        if m is None:
            return None
        start, end = m.span(1)
        last = re.split(r"\s*\.\s*", self.statement[start:end])[-1]
        return last[1:-1] if last.startswith('"') else last.lower()


# ---------------------------------------------------------------------------
# Wire protocol
# ---------------------------------------------------------------------------

_PROTOCOL_V3 = 196608
_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104
_CANCEL_REQUEST = 80877102
_MAX_STARTUP_LEN = 10_000
_MAX_MESSAGE_LEN = 1 << 30

#: Startup parameters redshift_connector sends that PostgreSQL rejects.
UNSUPPORTED_STARTUP_PARAMETERS = frozenset(
    {
        "client_protocol_version",
        "driver_version",
        "os_version",
        "driver_discovery_version",
        "plugin_name",
        "idp_type",
        "provider_name",
        "token_type",
        "identity_namespace",
        "idc_client_display_name",
    }
)


class ProtocolError(Exception):
    pass


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    for _ in range(n):  # at least one byte per successful recv
        if len(buf) >= n:
            break
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ProtocolError("connection closed during startup")
        buf += chunk
    return bytes(buf)


def _parse_startup_params(body: bytes) -> list[tuple[bytes, bytes]]:
    fields = body.split(b"\x00")
    # body is key\0value\0...key\0value\0\0 -> trailing two empty fields
    pairs = []
    for i in range(0, len(fields) - 1, 2):
        if not fields[i]:
            break
        pairs.append((fields[i], fields[i + 1]))
    return pairs


def _build_startup(pairs: list[tuple[bytes, bytes]]) -> bytes:
    body = struct.pack("!i", _PROTOCOL_V3)
    body += b"".join(k + b"\x00" + v + b"\x00" for k, v in pairs) + b"\x00"
    return struct.pack("!i", len(body) + 4) + body


def _message(typ: bytes, body: bytes) -> bytes:
    return typ + struct.pack("!i", len(body) + 4) + body


class _Framer:
    """Splits a byte stream into typed protocol messages and rewrites some of them."""

    def __init__(self, rewrite: Callable[[int, bytes], bytes | None]) -> None:
        self._buf = bytearray()
        self._rewrite = rewrite

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        for _ in range(len(buf) // 5 + 1):  # every message is >= 5 bytes
            if len(buf) - pos < 5:
                break
            typ = buf[pos]
            length = struct.unpack_from("!i", buf, pos + 1)[0]
            if length < 4 or length > _MAX_MESSAGE_LEN:
                raise ProtocolError(f"bad message length {length} for type {chr(typ)!r}")
            if len(buf) - pos < 1 + length:
                break
            replaced = self._rewrite(typ, bytes(buf[pos + 5 : pos + 1 + length]))
            if replaced is None:
                out += buf[pos : pos + 1 + length]
            else:
                out += _message(bytes([typ]), replaced)
            pos += 1 + length
        del buf[:pos]
        return bytes(out)


def _numeric_version(value: bytes) -> bytes:
    m = re.match(rb"\s*(\d+(?:\.\d+)*)", value)
    return m.group(1) if m else b"15.0"


class RedshiftProxy:
    """Redshift wire-protocol stand-in on 127.0.0.1 forwarding to PostgreSQL.

    ``ddl_log`` lists ``(statement, clauses)`` for every CREATE TABLE/VIEW that went
    through, e.g. ``("create table ... diststyle key distkey (id) ...",
    ["diststyle key", "distkey(id)", "compound sortkey(id)"])``.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        host: str = "127.0.0.1",
        server_version: str | None = None,
        idle_timeout_s: float = 600.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls
        self.server_version = server_version
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._ddl: list[tuple[str, DdlEntry]] = []
        self.dropped_startup_parameters: set[str] = set()
        #: Unexpected exceptions from session threads (a test may assert it stays empty).
        self.errors: list[Exception] = []
        self._closing = threading.Event()
        self._sessions: dict[threading.Thread, list[socket.socket]] = {}
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.host: str = host
        self.port: int = int(self._listener.getsockname()[1])
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"redshift-proxy-{self.port}", daemon=True
        )
        self._accept_thread.start()

    @classmethod
    def for_server(
        cls, server: PostgresServer, *, tls: bool = True, named: bool = False
    ) -> RedshiftProxy:
        """A stand-in in front of ``server``; TLS to clients unless ``tls=False``, with the
        certificate for ``warehouse.test`` instead of the loopback one when ``named``."""
        from testbed.tls import test_pki

        context = test_pki().server_context(named=named) if tls else None
        return cls(server.host, server.port, tls=context)

    # -- ddl log -----------------------------------------------------------

    @property
    def ddl_log(self) -> list[DdlEntry]:
        """Snapshot of ``(statement, clauses)`` for each CREATE TABLE/VIEW, oldest first."""
        with self._lock:
            return [entry for _, entry in self._ddl]

    def ddl_log_for(self, database: str) -> list[DdlEntry]:
        """Like ``ddl_log`` but only statements sent on connections to ``database``."""
        with self._lock:
            return [entry for db, entry in self._ddl if db == database]

    def clauses_for(self, table: str, database: str | None = None) -> list[list[str]]:
        """Stripped clauses of each CREATE TABLE/VIEW of ``table`` (one list per statement)."""
        entries = self.ddl_log if database is None else self.ddl_log_for(database)
        return [e.clauses for e in entries if e.table == table.lower()]

    def clear_ddl_log(self) -> None:
        with self._lock:
            self._ddl.clear()

    def _record(self, database: str, records: list[tuple[str, list[str]]]) -> None:
        with self._lock:
            self._ddl.extend((database, DdlEntry(stmt, clauses)) for stmt, clauses in records)

    # -- lifecycle ---------------------------------------------------------

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, drop every open session and join all threads."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._accept_thread.join(timeout_s)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sessions = dict(self._sessions)
        for socks in sessions.values():
            for s in socks:
                with contextlib.suppress(OSError):
                    # the plain socket's shutdown: SSLSocket.shutdown would also drop
                    # the TLS object under the session thread that is using it
                    socket.socket.shutdown(s, socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout_s
        for thread in sessions:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> RedshiftProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._closing.is_set():  # ends with close()
                if not sel.select(timeout=0.1):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                thread = threading.Thread(
                    target=self._session, args=(client,), name="redshift-proxy-session", daemon=True
                )
                with self._lock:
                    self._sessions[thread] = [client]
                thread.start()

    # -- one client connection ---------------------------------------------

    def _session(self, client: socket.socket) -> None:
        me = threading.current_thread()
        server: socket.socket | None = None
        try:
            client.settimeout(10)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            startup, database, client = self._read_startup(client)
            with self._lock:
                self._sessions[me][0] = client
            if startup is None:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sessions[me].append(server)
            if self._closing.is_set():
                return
            server.sendall(startup)
            if database is None:  # cancel request: nothing comes back
                return
            self._pump(client, server, database)
        except (OSError, ProtocolError):
            pass  # a side hung up, or close()
        except Exception as exc:  # keep a bad message from killing the thread silently
            with self._lock:
                self.errors.append(exc)
        finally:
            for s in (client, server):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()
            with self._lock:
                self._sessions.pop(me, None)

    def _read_startup(
        self, client: socket.socket
    ) -> tuple[bytes | None, str | None, socket.socket]:
        """(packet to send upstream, database, client socket); (None, None, _) to hang up.

        A CancelRequest is returned as-is with database None. After an
        SSLRequest the returned client socket is the TLS-wrapped one.
        """
        for _ in range(3):  # SSLRequest, GSSENCRequest, then the real one
            length = struct.unpack("!i", _recv_exact(client, 4))[0]
            if not 8 <= length <= _MAX_STARTUP_LEN:
                raise ProtocolError(f"bad startup packet length {length}")
            body = _recv_exact(client, length - 4)
            code = struct.unpack_from("!i", body)[0]
            if (
                code == _SSL_REQUEST
                and self.tls is not None
                and not isinstance(client, ssl.SSLSocket)
            ):
                client.sendall(b"S")
                client = self.tls.wrap_socket(client, server_side=True)
                continue
            if code in (_SSL_REQUEST, _GSSENC_REQUEST):
                client.sendall(b"N")
                continue
            if code == _CANCEL_REQUEST:
                return struct.pack("!i", length) + body, None, client
            if code != _PROTOCOL_V3:
                raise ProtocolError(f"unsupported protocol {code}")
            params = _parse_startup_params(body[4:])
            kept = []
            for key, value in params:
                name = key.decode("utf-8", "replace")
                if name in UNSUPPORTED_STARTUP_PARAMETERS:
                    with self._lock:
                        self.dropped_startup_parameters.add(name)
                else:
                    kept.append((key, value))
            values = dict(kept)
            database = values.get(b"database") or values.get(b"user") or b""
            return _build_startup(kept), database.decode("utf-8", "replace"), client
        return None, None, client

    def _pump(self, client: socket.socket, server: socket.socket, database: str) -> None:
        def from_client(typ: int, body: bytes) -> bytes | None:
            if typ == ord("Q"):
                sql = body[:-1]
                prefix, suffix = b"", b"\x00"
            elif typ == ord("P"):
                name_end = body.index(b"\x00")
                query_end = body.index(b"\x00", name_end + 1)
                prefix, sql, suffix = (
                    body[: name_end + 1],
                    body[name_end + 1 : query_end],
                    body[query_end:],
                )
            else:
                return None
            if not re.search(rb"(?i)create", sql):
                return None
            text = sql.decode("utf-8", "surrogateescape")
            rewritten, records = strip_redshift_ddl(text)
            if records:
                self._record(database, records)
            if rewritten == text:
                return None
            return prefix + rewritten.encode("utf-8", "surrogateescape") + suffix

        def from_server(typ: int, body: bytes) -> bytes | None:
            if typ != ord("S") or not body.startswith(b"server_version\x00"):
                return None
            value = body[len(b"server_version\x00") : -1]
            new = self.server_version.encode() if self.server_version else _numeric_version(value)
            return b"server_version\x00" + new + b"\x00"

        up, down = _Framer(from_client), _Framer(from_server)
        client.settimeout(30)
        server.settimeout(30)
        last_traffic = time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, (server, up))
            sel.register(server, selectors.EVENT_READ, (client, down))
            # Ends on EOF from either side, close(), or idle_timeout_s of silence.
            while not self._closing.is_set():
                events = sel.select(timeout=0.2)
                if not events:
                    if time.monotonic() - last_traffic > self.idle_timeout_s:
                        return
                    continue
                last_traffic = time.monotonic()
                for key, _ in events:
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    target, framer = key.data
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    # TLS: decrypted bytes buffered in the SSL object are invisible to select()
                    while isinstance(source, ssl.SSLSocket) and source.pending():
                        data += source.recv(source.pending())
                    out = framer.feed(data)
                    if out:
                        target.sendall(out)


# ---------------------------------------------------------------------------
# Catalog stubs
# ---------------------------------------------------------------------------

REDSHIFT_STUBS_SQL = """
SET allow_system_table_mods = on;

-- Late-binding views' columns; dbt calls it with a column definition list:
--   pg_get_late_binding_view_cols() cols(view_schema name, view_name name,
--       col_name name, col_type varchar, ordinal_position int)
CREATE OR REPLACE FUNCTION pg_catalog.pg_get_late_binding_view_cols()
RETURNS SETOF record LANGUAGE sql STABLE AS $stub$
    SELECT NULL::name, NULL::name, NULL::name, NULL::varchar, NULL::int WHERE false
$stub$;

CREATE OR REPLACE VIEW pg_catalog.svv_external_columns AS
SELECT NULL::text AS schemaname, NULL::text AS tablename, NULL::text AS columnname,
       NULL::text AS external_type, NULL::int AS columnnum, NULL::int AS part_key,
       NULL::text AS is_nullable
WHERE false;
GRANT SELECT ON pg_catalog.svv_external_columns TO PUBLIC;

-- Used by `dbt docs generate` (extended catalog stats).
CREATE OR REPLACE VIEW pg_catalog.svv_table_info AS
SELECT NULL::text AS database, NULL::text AS schema, NULL::oid AS table_id,
       NULL::text AS "table", NULL::text AS encoded, NULL::text AS diststyle,
       NULL::text AS sortkey1, NULL::int AS max_varchar, NULL::text AS sortkey1_enc,
       NULL::int AS sortkey_num, NULL::bigint AS size, NULL::numeric AS pct_used,
       NULL::bigint AS empty, NULL::numeric AS unsorted, NULL::numeric AS stats_off,
       NULL::numeric AS tbl_rows, NULL::numeric AS skew_sortkey1,
       NULL::numeric AS skew_rows, NULL::numeric AS estimated_visible_rows,
       NULL::text AS risk_event, NULL::numeric AS vacuum_sort_benefit,
       NULL::timestamp AS create_time
WHERE false;
GRANT SELECT ON pg_catalog.svv_table_info TO PUBLIC;

RESET allow_system_table_mods;
"""


def install_redshift_stubs(server: PostgresServer, dbname: str) -> None:
    """Create the empty Redshift catalog stand-ins dbt-redshift queries in ``dbname``."""
    server.execute(REDSHIFT_STUBS_SQL, dbname=dbname)
