"""Settings: read once from the environment into one frozen object, validated at start.

Hand-written on purpose (pydantic-settings was weighed, issue 12): its BaseSettings reads
os.environ whenever one is constructed, while `Settings()` here is the documented defaults and
nothing else (tests and the embedded runner build theirs with `Settings().with_(...)`), and
`from_env(env)` takes any mapping; bending BaseSettings to that leaves plain pydantic plus
custom sources. Each reader below is a few lines and gives the one-line error naming the variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlparse

EMBEDDED = "embedded"
CLUSTER_SCHEME = "redis+cluster"  # REDIS_URL=redis+cluster://h:p[,h:p...]: a Redis Cluster


class SettingsError(ValueError):
    """Raised when an environment variable has a bad value; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range {lo}..{hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range {lo}..{hi}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = (env.get(name) or "").strip().lower() or default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r} must be one of {', '.join(allowed)}")
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse_many

    raw = (env.get(name) or "").strip() or default
    try:
        parse_many(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a rate such as '10/second' or '30/minute'") from None
    return raw


def _database_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env.get(name) or default
    scheme = urlparse(url).scheme
    if scheme not in ("sqlite", "mysql", "mysql+pymysql"):
        raise SettingsError(f"{name}={url!r} must start with sqlite:/// or mysql://")
    if scheme.startswith("mysql") and not urlparse(url).hostname:
        raise SettingsError(f"{name}={url!r} names no host")
    return url


def _replica_url(env: Mapping[str, str], name: str, primary_url: str) -> str:
    """DATABASE_REPLICA_URL: empty (every read on the primary), or a mysql:// URL beside a MySQL primary."""
    if not (env.get(name) or "").strip():
        return ""
    url = _database_url(env, name, "")
    if not url.startswith("mysql") or not primary_url.startswith("mysql"):
        raise SettingsError(f"{name}={url!r}: a replica needs mysql:// here and in DATABASE_URL")
    return url


def _redis_url(env: Mapping[str, str], name: str, default: str) -> str:
    url = env.get(name) or default
    if url == EMBEDDED:
        return url
    scheme = urlparse(url).scheme
    if scheme == CLUSTER_SCHEME:
        try:
            cluster_nodes(url)
        except ValueError as exc:
            raise SettingsError(f"{name}={url!r}: {exc}") from None
        return url
    if scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(
            f"{name}={url!r} must be redis://host:port/db, {CLUSTER_SCHEME}://host:port[,host:port...] or '{EMBEDDED}'"
        )
    return url


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) startup nodes of a `redis+cluster://[user:pass@]h:p[,h:p...]` URL."""
    rest = url.split("://", 1)[1]
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    nodes = []
    for item in netloc.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def _readable_file(env: Mapping[str, str], name: str) -> str:
    path = (env.get(name) or "").strip()
    if path and not os.access(path, os.R_OK):
        raise SettingsError(f"{name}={path!r} is not a readable file")
    return path


def _http_url(env: Mapping[str, str], name: str) -> str:
    url = (env.get(name) or "").strip()
    if url and (urlparse(url).scheme not in ("http", "https") or not urlparse(url).hostname):
        raise SettingsError(f"{name}={url!r} must be an http(s):// URL")
    return url


AUTH_KEY_VARIABLES = "AUTH_JWT_SECRET, AUTH_JWT_PUBLIC_KEY_FILE or AUTH_JWKS_URL"


@dataclass(frozen=True)
class Settings:
    """Every tunable of the service; build it with Settings.from_env()."""

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///var/concert.db"
    database_replica_url: str = ""
    database_replica_max_lag: float = 10.0
    redis_url: str = EMBEDDED
    kafka_bootstrap_servers: str = ""
    kafka_replication_factor: int = 1
    kafka_partitions: int = 6
    outbox_relays: int = 1
    admin_token: str = ""
    active_limit: int = 100
    admit_interval: float = 1.0
    admit_mode: str = "fixed"
    admit_factor: float = 1.0
    active_ttl: int = 600
    waiting_ttl: int = 300
    poll_max_interval: float = 30.0
    poll_memo: bool = True
    hold_ttl: int = 300
    max_holds_per_user: int = 4
    prequeue_window: int = 3600
    hold_max_extensions: int = 2
    refund_cutoff: int = 86_400
    partitions: int = 16
    outbox_interval: float = 1.0
    cache_schedule_ttl: int = 300
    cache_schedule_jitter: int = 30
    cache_seats_ttl: int = 30
    cache_seats_jitter: int = 5
    max_charge: int = 1_000_000
    max_balance: int = 100_000_000
    max_body_bytes: int = 16_384
    outbox_max_attempts: int = 50
    job_stale_after: float = 30.0
    job_sweep_after: float = 120.0
    worker_batch: int = 32
    rate_limit_enabled: bool = True
    rate_issue_user: str = "30/minute"
    rate_issue_ip: str = "200/second"
    rate_jobs_user: str = "20/second"
    wait_slots: int = 4  # PREFER_WAIT_SLOTS: requests per web process that may block in a `Prefer: wait`
    auth_jwt_secret: str = ""
    auth_jwt_public_key_file: str = ""
    auth_jwks_url: str = ""
    auth_jwt_issuer: str = ""
    auth_jwt_audience: str = ""
    auth_dev_login: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every variable; raise SettingsError naming the first bad one."""
        e = os.environ if env is None else env
        host = e.get("HOST") or "127.0.0.1"
        database_url = _database_url(e, "DATABASE_URL", "sqlite:///var/concert.db")
        return cls(
            host=host,
            port=_int(e, "PORT", 8080, 1, 65535),
            database_url=database_url,
            database_replica_url=_replica_url(e, "DATABASE_REPLICA_URL", database_url),
            database_replica_max_lag=_float(e, "DATABASE_REPLICA_MAX_LAG", 10.0, 0.0, 86_400.0),
            redis_url=_redis_url(e, "REDIS_URL", EMBEDDED),
            kafka_bootstrap_servers=(e.get("KAFKA_BOOTSTRAP_SERVERS") or "").strip(),
            kafka_replication_factor=_int(e, "KAFKA_REPLICATION_FACTOR", 1, 1, 16),
            kafka_partitions=_int(e, "KAFKA_PARTITIONS", 6, 1, 10_000),
            outbox_relays=_int(e, "OUTBOX_RELAYS", 1, 1, 64),
            admin_token=e.get("ADMIN_TOKEN") or "",
            active_limit=_int(e, "ACTIVE_LIMIT", 100, 1, 1_000_000),
            admit_interval=_float(e, "ADMIT_INTERVAL", 1.0, 0.05, 60.0),
            admit_mode=_choice(e, "ADMIT_MODE", "fixed", ("fixed", "stock")),
            admit_factor=_float(e, "ADMIT_FACTOR", 1.0, 0.1, 100.0),
            active_ttl=_int(e, "ACTIVE_TTL", 600, 1, 86_400),
            waiting_ttl=_int(e, "WAITING_TTL", 300, 1, 86_400),
            poll_max_interval=_float(e, "POLL_MAX_INTERVAL", 30.0, 1.0, 3600.0),
            # a web process answers far-back waiting polls itself (models/poll_memo.py)
            poll_memo=_bool(e, "POLL_MEMO", True),
            hold_ttl=_int(e, "HOLD_TTL", 300, 1, 86_400),
            # at most this many of a web process's threads block in `Prefer: wait` at once (web/jobs.py):
            # by default half of WEB_THREADS, so joins, polls and leaves always find a thread
            wait_slots=_int(e, "PREFER_WAIT_SLOTS", max(1, _int(e, "WEB_THREADS", 8, 1, 4096) // 2), 0, 4096),
            max_holds_per_user=_int(e, "MAX_HOLDS_PER_USER", 4, 1, 1000),
            prequeue_window=_int(e, "PREQUEUE_WINDOW", 3600, 0, 7 * 86_400),
            hold_max_extensions=_int(e, "HOLD_MAX_EXTENSIONS", 2, 0, 100),
            refund_cutoff=_int(e, "REFUND_CUTOFF", 86_400, 0, 365 * 86_400),
            partitions=_int(e, "PARTITIONS", 16, 1, 1024),
            outbox_interval=_float(e, "OUTBOX_INTERVAL", 1.0, 0.05, 60.0),
            cache_schedule_ttl=_int(e, "CACHE_SCHEDULE_TTL", 300, 1, 86_400),
            cache_seats_ttl=_int(e, "CACHE_SEATS_TTL", 30, 1, 86_400),
            max_charge=_int(e, "MAX_CHARGE", 1_000_000, 1, 2**62),
            max_balance=_int(e, "MAX_BALANCE", 100_000_000, 1, 2**62),
            max_body_bytes=_int(e, "MAX_BODY_BYTES", 16_384, 256, 10_485_760),
            outbox_max_attempts=_int(e, "OUTBOX_MAX_ATTEMPTS", 50, 1, 1_000_000),
            job_stale_after=_float(e, "JOB_STALE_AFTER", 30.0, 1.0, 3600.0),
            job_sweep_after=_float(e, "JOB_SWEEP_AFTER", 120.0, 5.0, 86_400.0),
            worker_batch=_int(e, "WORKER_BATCH", 32, 1, 1000),
            rate_limit_enabled=_bool(e, "RATE_LIMIT_ENABLED", True),
            rate_issue_user=_rate(e, "RATE_LIMIT_ISSUE_USER", "30/minute"),
            rate_issue_ip=_rate(e, "RATE_LIMIT_ISSUE_IP", "200/second"),
            rate_jobs_user=_rate(e, "RATE_LIMIT_JOBS_USER", "20/second"),
            auth_jwt_secret=e.get("AUTH_JWT_SECRET") or "",
            auth_jwt_public_key_file=_readable_file(e, "AUTH_JWT_PUBLIC_KEY_FILE"),
            auth_jwks_url=_http_url(e, "AUTH_JWKS_URL"),
            auth_jwt_issuer=(e.get("AUTH_JWT_ISSUER") or "").strip(),
            auth_jwt_audience=(e.get("AUTH_JWT_AUDIENCE") or "").strip(),
            auth_dev_login=_bool(e, "AUTH_DEV_LOGIN", False),
        )

    def with_(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (tests and the embedded runner use it)."""
        return replace(self, **changes)

    def require_auth_key(self) -> None:
        """A process that serves user routes needs a key to verify identities: else SettingsError."""
        if not (self.auth_jwt_secret or self.auth_jwt_public_key_file or self.auth_jwks_url):
            raise SettingsError(f"no key to verify user tokens: set {AUTH_KEY_VARIABLES}")
        if self.auth_dev_login and not self.auth_jwt_secret:
            raise SettingsError("AUTH_DEV_LOGIN=true signs with AUTH_JWT_SECRET: set it too")

    @property
    def is_mysql(self) -> bool:
        """True when the database is MySQL/MariaDB."""
        return self.database_url.startswith("mysql")

    @property
    def is_redis_cluster(self) -> bool:
        """True when REDIS_URL names a Redis Cluster (redis+cluster://)."""
        return self.redis_url.startswith(CLUSTER_SCHEME + "://")


def settings_or_exit() -> Settings:
    """Settings from the environment for a command-line entry point; on a bad value, one line
    naming the variable (`configuration error: ...`) on stderr and exit status 2."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line_errors(command: Callable[[], int]) -> int:
    """Run a command; a database, Redis or broker that cannot be reached is one line on stderr, exit 1."""
    try:
        return command()
    except Exception as exc:
        what = unreachable(exc)
        if what is None:
            raise
        if "no such table" in str(exc) or "doesn't exist" in str(exc):
            print(f"error: the database has no schema yet ({exc}); run `python -m models migrate`", file=sys.stderr)
            return 1
        print(
            f"error: cannot reach {what}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 1


def unreachable(exc: BaseException) -> str | None:
    """Which dependency an exception says is unreachable (None: some other error)."""
    import peewee
    import pymysql
    import redis

    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "Redis (REDIS_URL)"
    if isinstance(exc, peewee.OperationalError | peewee.InterfaceError | pymysql.err.OperationalError):
        return "the database (DATABASE_URL)"
    if type(exc).__module__.startswith("kafka") and type(exc).__name__ in (
        "NoBrokersAvailable",
        "KafkaConnectionError",
        "KafkaTimeoutError",
    ):
        return "the event broker (KAFKA_BOOTSTRAP_SERVERS)"
    return None
