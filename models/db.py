"""The deferred peewee database, its initialisation from a URL, and shared field types."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, unquote, urlparse

import peewee as pw
from playhouse.pool import PooledMySQLDatabase
from prometheus_client import Counter
from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

from models.errors import NotFound

MAX_ID = 2**63 - 1  # the largest BIGINT: every id and amount the API accepts is at most this

log = logging.getLogger("models.db")
P = ParamSpec("P")
T = TypeVar("T")

REPLICA_READS = Counter(
    "database_replica_reads_total",
    "Lag-tolerant reads (DATABASE_REPLICA_URL set) by where they ran: replica, or primary (the replica "
    "failed, lags or rests, or the caller was in a transaction or on_primary())",
    ["served_by"],
)
PRIMARY, REPLICA, PINNED = "primary", "replica", "pinned"


class _Route(threading.local):
    """This thread's routing stack: the innermost on_replica()/on_primary() decides."""

    def __init__(self) -> None:
        self.stack: list[str] = []


class RoutingDatabase(pw.DatabaseProxy):
    """The deferred database every table is bound to: the primary, or, inside `on_replica()` on
    a thread with no open transaction, the replica (DATABASE_REPLICA_URL) when one is set.

    Routing is per thread and explicit: queries go to the primary unless a caller asked for the
    replica, so a forgotten annotation costs load, never correctness. `on_primary()` pins a
    block to the primary (a nested `on_replica()` stays there): the catalogue cache fills from
    the primary under it. A replica that fails to connect, or lags more than its max lag (checked
    at most every LAG_CHECK_S by one thread), rests for REPLICA_REST_S seconds, and lag-tolerant
    reads run on the primary meanwhile.
    """

    __slots__ = ("_lag_checked", "_lag_lock", "_max_lag", "_primary", "_replica", "_rest_until", "_route")
    REPLICA_REST_S = 5.0
    LAG_CHECK_S = 1.0

    def __init__(self) -> None:
        object.__setattr__(self, "_primary", None)
        object.__setattr__(self, "_replica", None)
        object.__setattr__(self, "_route", _Route())
        object.__setattr__(self, "_rest_until", 0.0)
        object.__setattr__(self, "_max_lag", 0.0)
        object.__setattr__(self, "_lag_checked", 0.0)
        object.__setattr__(self, "_lag_lock", threading.Lock())
        super().__init__()

    def __setattr__(self, attr: str, value: Any) -> None:
        object.__setattr__(self, attr, value)

    @property  # type: ignore[override]
    def obj(self) -> Any:  # pw.Database, None before init_database (typed as peewee's Proxy.obj)
        """The database this thread's queries go to now."""
        stack = self._route.stack
        if stack and stack[-1] == REPLICA and self._replica is not None:
            return self._replica  # type: ignore[no-any-return]
        return self._primary  # type: ignore[no-any-return]

    @obj.setter
    def obj(self, value: Any) -> None:
        object.__setattr__(self, "_primary", value)

    @property
    def primary(self) -> pw.Database | None:
        """The primary database (every write, decision and read-your-own-write)."""
        return self._primary  # type: ignore[no-any-return]

    @property
    def replica(self) -> pw.Database | None:
        """The replica database, or None when DATABASE_REPLICA_URL is unset."""
        return self._replica  # type: ignore[no-any-return]

    def set_replica(self, database: pw.Database | None, *, max_lag: float = 0.0) -> None:
        """Use `database` for lag-tolerant reads (None: everything on the primary) while it is at most
        `max_lag` seconds behind (0: any lag; only a MySQL/MariaDB replica reports its lag)."""
        object.__setattr__(self, "_replica", database)
        object.__setattr__(self, "_rest_until", 0.0)
        object.__setattr__(self, "_max_lag", max_lag)
        object.__setattr__(self, "_lag_checked", 0.0)

    def _check_lag(self) -> None:
        """Raise ReplicaBehind when the replica is more than max_lag behind or not replicating."""
        if self._max_lag <= 0 or not isinstance(self._replica, pw.MySQLDatabase):
            return
        if time.monotonic() - self._lag_checked < self.LAG_CHECK_S or not self._lag_lock.acquire(blocking=False):
            return  # checked a moment ago, or another thread is checking: its verdict stands
        try:
            object.__setattr__(self, "_lag_checked", time.monotonic())
            lag = replica_lag(self._replica)
        finally:
            self._lag_lock.release()
        if lag is None:
            raise ReplicaBehind("the replica is not replicating (its IO or SQL thread is stopped)")
        if lag > self._max_lag:
            raise ReplicaBehind(f"the replica is {lag:g} s behind (DATABASE_REPLICA_MAX_LAG={self._max_lag:g})")

    def replica_resting(self) -> bool:
        """True while a replica that failed recently is being left alone."""
        return time.monotonic() < self._rest_until

    def rest_replica(self, error: BaseException) -> None:
        """Leave the replica alone for REPLICA_REST_S (its reads run on the primary meanwhile)."""
        if not self.replica_resting():
            log.warning("replica unavailable, reading from the primary for %gs: %s", self.REPLICA_REST_S, error)
        object.__setattr__(self, "_rest_until", time.monotonic() + self.REPLICA_REST_S)

    @contextlib.contextmanager
    def on_primary(self) -> Iterator[None]:
        """Run the block on the primary, also where it calls code that asks for the replica."""
        stack = self._route.stack
        stack.append(PINNED)
        try:
            yield
        finally:
            stack.pop()

    @contextlib.contextmanager
    def on_replica(self) -> Iterator[bool]:
        """Run the block's reads on the replica when there is one (yields True), else on the primary.

        Stays on the primary inside `on_primary()`, inside an open transaction (its reads must see
        its own writes), with no replica configured, and while the replica rests after a failure.
        The replica connection is opened here and closed (returned to the pool) on exit; one that
        cannot be opened sends the block to the primary.
        """
        stack = self._route.stack
        route = self._choose()
        opened = False
        if route == REPLICA:
            try:
                opened = bool(self._replica.connect(reuse_if_open=True))
                self._check_lag()
            except Exception as exc:  # refused, timed out, pool exhausted, too far behind: the primary
                if opened:
                    self._replica.close()
                    opened = False
                self.rest_replica(exc)
                route = PRIMARY
        stack.append(route)
        try:
            yield route == REPLICA
        finally:
            stack.pop()
            if opened:
                self._replica.close()

    def _choose(self) -> str:
        stack = self._route.stack
        if stack and stack[-1] == PINNED:
            return PINNED
        if self._replica is None or self.replica_resting():
            return PRIMARY
        primary = self._primary
        if primary is not None and not primary.is_closed() and primary.in_transaction():
            return PRIMARY
        return REPLICA


class ReplicaBehind(Exception):
    """Raised when the replica lags more than DATABASE_REPLICA_MAX_LAG or does not replicate."""


def replica_lag(database: pw.Database) -> float | None:
    """Seconds the replica is behind its primary (Seconds_Behind_Master/Source); None when it does
    not replicate; 0 for a server that is no replica. Needs SLAVE MONITOR (MariaDB) or
    REPLICATION CLIENT (MySQL): without it the error says so and the replica is not used."""
    try:
        cursor = database.execute_sql("SHOW REPLICA STATUS")  # MariaDB 10.5+, MySQL 8.0.22+
    except pw.ProgrammingError:
        cursor = database.execute_sql("SHOW SLAVE STATUS")
    row = cursor.fetchone()
    if row is None:
        return 0.0
    names = [d[0] for d in cursor.description]
    column = "Seconds_Behind_Source" if "Seconds_Behind_Source" in names else "Seconds_Behind_Master"
    value = row[names.index(column)]
    return None if value is None else float(value)


db = RoutingDatabase()

# Errors after which a read that ran on the replica runs again on the primary: the replica went
# away or failed mid-query (any database error: a read cannot violate a constraint), and
# NotFound (a row committed on the primary a moment ago that the replica has not applied yet).
_RETRY_ON_PRIMARY: tuple[type[BaseException], ...] = (pw.DatabaseError, pw.InterfaceError, NotFound)


def on_replica() -> contextlib.AbstractContextManager[bool]:
    """Send the block's reads to the replica when one is configured (see RoutingDatabase.on_replica)."""
    return db.on_replica()


def on_primary() -> contextlib.AbstractContextManager[None]:
    """Pin the block to the primary (see RoutingDatabase.on_primary)."""
    return db.on_primary()


def replica_read(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a lag-tolerant read: it runs on the replica when there is one, and again on the
    primary if the replica fails (or says NotFound); never inside a transaction or on_primary()."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        on_replica_now = False
        try:
            with db.on_replica() as on_replica_now:
                result = fn(*args, **kwargs)
        except _RETRY_ON_PRIMARY as exc:
            if not on_replica_now:
                raise
            if not isinstance(exc, NotFound):
                db.rest_replica(exc)
            REPLICA_READS.labels(PRIMARY).inc()
            return fn(*args, **kwargs)
        if db.replica is not None:  # without a replica there is nothing to count
            REPLICA_READS.labels(REPLICA if on_replica_now else PRIMARY).inc()
        return result

    return wrapper


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


def make_database(url: str, *, max_connections: int = 32, read_timeout: float = 10.0) -> pw.Database:
    """Build (not connect) a peewee database for a sqlite:/// or mysql:// URL (`?read_timeout=N`
    overrides `read_timeout`, the seconds a query may wait for an answer)."""
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
            query_timeout=float(opts.get("read_timeout", read_timeout)),
        )
    raise ValueError(f"unsupported database URL {url!r}")


# A replica answers index lookups in milliseconds; one that has not answered in 2 s is frozen or
# overloaded and the primary is asked instead (the primary's queries may take 10 s).
REPLICA_READ_TIMEOUT = 2.0


def init_database(url: str, *, replica_url: str | None = None, replica_max_lag: float = 0.0) -> pw.Database:
    """Point the deferred `db` at a real database (and its replica, when given) and return the primary."""
    database = make_database(url)
    db.initialize(database)
    replica = make_database(replica_url, read_timeout=REPLICA_READ_TIMEOUT) if replica_url else None
    db.set_replica(replica, max_lag=replica_max_lag)
    return database


def is_mysql() -> bool:
    """True when the bound database is MySQL/MariaDB."""
    return isinstance(db.obj, pw.MySQLDatabase)
