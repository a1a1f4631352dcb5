"""The deferred peewee database, its initialisation from a URL, and shared field types."""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import peewee as pw
from playhouse.pool import PooledMySQLDatabase
from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

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

    def transaction(self, lock_type: str | None = None) -> Any:
        return super().transaction(lock_type or "IMMEDIATE")


class PooledMySQL(PooledMySQLDatabase):
    """peewee's MySQL pool, without a network ping on every checkout.

    peewee pings a pooled connection (under the pool lock) each time it is checked out; with a
    connection opened per message and per request that is one extra round trip each, serialized
    across threads. A connection returned less than PING_AFTER seconds ago is handed out without
    the ping; an older one is pinged, and one PyMySQL saw fail is discarded. So a restarted
    server still never leaves a dead connection in use for long.
    """

    PING_AFTER = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned: dict[int, float] = {}

    def _is_closed(self, conn: Any) -> bool:
        if not getattr(conn, "open", True):
            return True
        returned = self._returned.get(id(conn))
        if returned is not None and time.monotonic() - returned < self.PING_AFTER:
            return False
        return bool(super()._is_closed(conn))

    def _can_reuse(self, conn: Any) -> bool:
        # peewee rolls back on every check-in when the driver can't report a transaction (one
        # round trip each time); PyMySQL can, through the server status flags.
        if getattr(conn, "server_status", 1) & SERVER_STATUS_IN_TRANS:
            return bool(super()._can_reuse(conn))
        return True

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        if close_conn:
            self._returned.pop(id(conn), None)
        else:
            self._returned[id(conn)] = time.monotonic()
        super()._close(conn, close_conn)


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
            connect_timeout=5,
            read_timeout=30,
            write_timeout=30,
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
