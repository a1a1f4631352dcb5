"""The deferred peewee database, its initialisation from a URL, and shared field types."""

from __future__ import annotations

import datetime as dt
import os
import select
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import peewee as pw
from playhouse.pool import PooledMySQLDatabase
from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

MAX_ID = 2**63 - 1  # the largest BIGINT: every id and amount the API accepts is at most this

db = pw.DatabaseProxy()


class BaseModel(pw.Model):
    """Base of every table: bound to the deferred database."""

    class Meta:
        database = db
        legacy_table_names = False


class UtcDateTimeField(pw.DateTimeField):
    """A naive-UTC datetime with microseconds (DATETIME(6) on MySQL)."""

    field_type = "DATETIME(6)"


def utcnow() -> dt.datetime:
    """Naive UTC now, the form every timestamp column stores."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def iso(value: dt.datetime | None) -> str | None:
    """Format a stored naive-UTC datetime as ISO 8601 with a Z."""
    if value is None:
        return None
    if isinstance(value, str):  # SQLite may hand back text for raw queries
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class ImmediateSqlite(pw.SqliteDatabase):
    """SQLite whose transactions take the write lock at BEGIN (embedded mode).

    A deferred transaction that reads and then writes fails at once with "database is locked"
    when another writer committed in between (busy_timeout does not apply to that case); with
    BEGIN IMMEDIATE writers queue on busy_timeout instead. Found under k6 load on `make run`.
    """

    def begin(self, lock_type: str | None = None) -> Any:
        # atomic()/transaction() reach BEGIN through begin(), also through the DatabaseProxy
        # (overriding transaction() alone never ran there: 342 of 400 concurrent charges failed).
        return super().begin(lock_type or "IMMEDIATE")


class PooledMySQL(PooledMySQLDatabase):
    """peewee's MySQL pool, with cheap and bounded checks of a pooled connection.

    peewee pings a pooled connection (under the pool lock) each time it is checked out; with a
    connection opened per message and per request that is one extra round trip each, serialized
    across threads. Instead, on checkout:

    * a connection whose socket is readable while idle is dead: the server killed it, restarted,
      or the network path closed it (an idle MySQL connection has nothing to read but the EOF or
      the error packet of its end). Found with a zero-timeout poll, no round trip, and replaced
      by a fresh one, so a `KILL`ed connection never reaches a query;
    * a connection returned less than PING_AFTER seconds ago is handed out without a ping;
    * an older one is pinged with PING_TIMEOUT. A ping that times out means the server does not
      answer at all: the checkout fails at once (503 on the web) instead of pinging every pooled
      connection in turn under the pool lock.

    New connections do their handshake within CONNECT_TIMEOUT; queries then read with the
    database's read timeout.
    """

    PING_AFTER = 2.0
    PING_TIMEOUT = 2.0
    HANDSHAKE_TIMEOUT = 3.0

    def __init__(self, *args: Any, query_timeout: float = 10.0, **kwargs: Any) -> None:
        kwargs.setdefault("read_timeout", self.HANDSHAKE_TIMEOUT)
        kwargs.setdefault("write_timeout", self.HANDSHAKE_TIMEOUT)
        super().__init__(*args, **kwargs)
        self.query_timeout = query_timeout
        self._returned: dict[int, float] = {}

    def _connect(self) -> Any:
        conn = super()._connect()
        # The handshake ran with the short timeouts; queries get the longer one.
        conn._read_timeout = conn._write_timeout = self.query_timeout
        return conn

    def _is_closed(self, conn: Any) -> bool:
        if not getattr(conn, "open", True):
            return True
        if _peer_closed(conn):
            self._discard(conn)
            return True
        returned = self._returned.get(id(conn))
        if returned is not None and time.monotonic() - returned < self.PING_AFTER:
            return False
        started = time.monotonic()
        conn._read_timeout = conn._write_timeout = self.PING_TIMEOUT
        try:
            conn.ping(False)
        except Exception as exc:
            self._discard(conn)
            if time.monotonic() - started >= self.PING_TIMEOUT * 0.9:
                raise pw.OperationalError(
                    f"the database did not answer a ping within {self.PING_TIMEOUT:g} s: {exc}"
                ) from exc
            return True
        finally:
            conn._read_timeout = conn._write_timeout = self.query_timeout
        return False

    def _discard(self, conn: Any) -> None:
        self._returned.pop(id(conn), None)
        self._close_raw(conn)

    def _can_reuse(self, conn: Any) -> bool:
        # peewee rolls back on every check-in when the driver can't report a transaction (one
        # round trip each time); PyMySQL can, through the server status flags.
        if not getattr(conn, "open", True):
            return False
        if getattr(conn, "server_status", 1) & SERVER_STATUS_IN_TRANS:
            return bool(super()._can_reuse(conn))
        return True

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        if close_conn:
            self._returned.pop(id(conn), None)
        else:
            self._returned[id(conn)] = time.monotonic()
        super()._close(conn, close_conn)


def _peer_closed(conn: Any) -> bool:
    """True when an idle connection's socket has something to read (EOF or an error packet)."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return True
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def make_database(url: str, *, max_connections: int = 32) -> pw.Database:
    """Build (not connect) a peewee database for a sqlite:/// or mysql:// URL."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] or ":memory:"
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        return ImmediateSqlite(
            path,
            pragmas={"journal_mode": "wal", "busy_timeout": 10_000, "foreign_keys": 1},
            timeout=10,
            check_same_thread=False,
        )
    if parsed.scheme in ("mysql", "mysql+pymysql"):
        opts: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        # TLS: ?ssl=disabled|preferred. PyMySQL 1.2 tries TLS by default; on loopback it only costs
        # a handshake per connection and encryption per query, so it is off there unless asked for.
        loopback = (parsed.hostname or "127.0.0.1") in ("127.0.0.1", "localhost", "::1")
        ssl_disabled = opts.get("ssl", "disabled" if loopback else "preferred") == "disabled"
        return PooledMySQL(
            (parsed.path or "/").lstrip("/") or "concert",
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 3306,
            user=unquote(parsed.username or "root"),
            password=unquote(parsed.password or ""),
            charset="utf8mb4",
            ssl_disabled=ssl_disabled,
            max_connections=int(opts.get("max_connections", max_connections)),
            stale_timeout=300,
            timeout=10,
            connect_timeout=float(opts.get("connect_timeout", 3)),
            # A query that gets no answer for this long fails (the server froze or the network
            # dropped); ?read_timeout=N raises it for long maintenance queries.
            query_timeout=float(opts.get("read_timeout", 10)),
        )
    raise ValueError(f"unsupported database URL {url!r}")


def init_database(url: str) -> pw.Database:
    """Point the deferred `db` at a real database and return it."""
    database = make_database(url)
    db.initialize(database)
    return database


def is_mysql() -> bool:
    """True when the bound database is MySQL/MariaDB."""
    return isinstance(db.obj, pw.MySQLDatabase)
