"""Set up the database, Redis and the Dramatiq broker once per process, from Settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import dramatiq
import peewee as pw
import redis
from dramatiq.brokers.redis import RedisBroker
from redis.cluster import ClusterNode, RedisCluster

from config.settings import CLUSTER_SCHEME, EMBEDDED, Settings, cluster_nodes
from models.cache import CatalogueCache
from models.db import init_database
from models.waiting_room import WaitingRoom

if TYPE_CHECKING:
    import fakeredis

_lock = threading.Lock()
_services: Services | None = None
_embedded_server: fakeredis.FakeServer | None = None


# How long a Redis call may wait on a server that accepted the connection but does not answer
# (a frozen or partitioned server); a refused connection fails at once. Blocking commands
# (BLPOP for `Prefer: wait=N`, the idle partition consumer) wait their own timeout plus this.
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_READ_TIMEOUT = 5.0
_BLOCKING_TIMEOUT_LAST = frozenset({"BLPOP", "BRPOP", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX", "BLMOVE"})
_READ_TIMEOUT_OPTION = "_bounded_read_timeout"


class ScriptPipeline(redis.client.Pipeline):
    """A pipeline that asks SCRIPT EXISTS only for scripts its connection pool has not seen run.

    redis-py's pipeline sends SCRIPT EXISTS (its own round trip) before every execute that holds
    a script call: the batch's start, finish and ack pipelines each paid two round trips
    (bench/job_costs.py: about 10 % of a partition worker's time). Here a script that ran on
    the pool once is sent as EVALSHA directly. If the server has lost it since (a restart, a
    failover, SCRIPT FLUSH), those EVALSHAs fail with NOSCRIPT and did not run: the scripts are
    loaded and exactly those calls sent again, in their order, in one more round trip. Commands
    without a script ran once, as before; a MULTI pipeline keeps redis-py's way.
    """

    def _multi(self) -> bool:
        return bool(vars(self).get("transaction") or vars(self).get("explicit_transaction"))

    def load_scripts(self) -> None:
        known: set[str] = self.connection_pool.__dict__.setdefault("_scripts_seen", set())
        if self._multi() or not {s.sha for s in self.scripts} <= known:
            super().load_scripts()

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        if self._multi() or not self.scripts:
            return super().execute(raise_on_error)
        scripts = {s.sha: s for s in self.scripts}
        stack = [args for args, _ in self.command_stack]
        replies = super().execute(raise_on_error=False)  # resets the pipeline
        known: set[str] = self.connection_pool.__dict__.setdefault("_scripts_seen", set())
        missing = [i for i, r in enumerate(replies) if isinstance(r, redis.exceptions.NoScriptError)]
        if missing:
            known.clear()
            for sha in {str(stack[i][1]) for i in missing}:
                if sha in scripts:
                    self.immediate_execute_command("SCRIPT LOAD", scripts[sha].script)
            self.reset()
            for i in missing:
                self.execute_command(*stack[i])
            for i, reply in zip(missing, super().execute(raise_on_error=False), strict=True):
                replies[i] = reply
        known.update(scripts)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


class BoundedRedis(redis.Redis):
    """redis.Redis whose replies are awaited at most REDIS_READ_TIMEOUT, except blocking commands.

    One socket timeout cannot serve both: long enough for a 10 s BLPOP, it also lets every GET
    hang 10 s on a frozen server. A blocking command's reply is read with its own timeout plus
    the margin (0 = forever stays forever); everything else uses the socket timeout.
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if args and str(args[0]).upper() in _BLOCKING_TIMEOUT_LAST:
            try:
                wait = float(args[-1])
            except (TypeError, ValueError):
                wait = 0.0
            options[_READ_TIMEOUT_OPTION] = wait + REDIS_READ_TIMEOUT if wait > 0 else None
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        """A ScriptPipeline (no SCRIPT EXISTS round trip for scripts already run on this pool)."""
        return ScriptPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        if _READ_TIMEOUT_OPTION not in options:
            return super().parse_response(connection, command_name, **options)
        timeout = options.pop(_READ_TIMEOUT_OPTION)
        options.pop("keys", None)
        response = connection.read_response(timeout=timeout)
        if command_name in self.response_callbacks:
            return self.response_callbacks[command_name](response, **options)
        return response


class BoundedRedisCluster(RedisCluster):
    """RedisCluster with BoundedRedis's read timeouts: blocking commands wait their own timeout.

    The cluster client reads every reply through the node's client, so each node's client is
    made a BoundedRedis (it adds methods only, no state) and blocking commands carry the option.
    """

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if args and str(args[0]).upper() in _BLOCKING_TIMEOUT_LAST:
            try:
                wait = float(args[-1])
            except (TypeError, ValueError):
                wait = 0.0
            kwargs[_READ_TIMEOUT_OPTION] = wait + REDIS_READ_TIMEOUT if wait > 0 else None
        return super().execute_command(*args, **kwargs)

    def get_redis_connection(self, node: ClusterNode) -> redis.Redis:
        client = super().get_redis_connection(node)
        if type(client) is redis.Redis:
            client.__class__ = BoundedRedis
        return client


def make_cluster(url: str, *, decode_responses: bool = True) -> RedisCluster:
    """A Redis Cluster client for `redis+cluster://[user:pass@]h:p[,h:p...]` (the slot map is
    learnt from any reachable node and refreshed on MOVED and failovers)."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url.split(",", 1)[0])
    return BoundedRedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        decode_responses=decode_responses,
        socket_timeout=REDIS_READ_TIMEOUT,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        max_connections=256,
    )


@dataclass
class Services:
    """The process's connections: one of each, shared by every thread."""

    settings: Settings
    database: pw.Database
    redis: redis.Redis
    broker: dramatiq.Broker

    def waiting_room(self) -> WaitingRoom:
        """A waiting room over this process's Redis, sized by the settings."""
        return WaitingRoom.for_settings(self.redis, self.settings)

    def catalogue_cache(self) -> CatalogueCache:
        """A catalogue cache over this process's Redis, with the settings' TTLs and jitter."""
        s = self.settings
        return CatalogueCache(
            self.redis,
            schedule_ttl=s.cache_schedule_ttl,
            schedule_jitter=s.cache_schedule_jitter,
            seats_ttl=s.cache_seats_ttl,
            seats_jitter=s.cache_seats_jitter,
        )


class LeanBlockingPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool without its `@deprecated_args` wrapper on get_connection.

    Every command checks a connection out; the wrapper inspects that call's arguments on each one
    to warn about arguments no caller here passes (redis-py 8.1: 29.4-32.7 µs a checkout and release
    against 26.2-26.7 µs unwrapped, 20,000 each, 2026-12-02 21:10 UTC). The method underneath is
    redis-py's own, unchanged; a redis-py without the wrapper keeps its method as it is."""

    get_connection = getattr(  # type: ignore[assignment]
        redis.BlockingConnectionPool.get_connection, "__wrapped__", redis.BlockingConnectionPool.get_connection
    )


def make_redis(url: str) -> redis.Redis:
    """A Redis client for a URL; 'embedded' gives an in-process fakeredis shared by the process."""
    global _embedded_server
    if url == EMBEDDED:
        import fakeredis

        with _lock:
            if _embedded_server is None:
                _embedded_server = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=_embedded_server, decode_responses=True)
    if url.startswith(CLUSTER_SCHEME + "://"):
        # RedisCluster has redis.Redis's command API (every user here calls only commands,
        # scripts and pipelines), so the rest of the code types it as one.
        return cast(redis.Redis, make_cluster(url))
    # A blocking pool: past max_connections a caller waits for a free connection (up to 5 s)
    # instead of failing with "Too many connections" (redis-py's default pool of 100 does); a
    # caller still waiting then gets a ConnectionError, which the web answers as 503.
    pool = LeanBlockingPool.from_url(
        url,
        max_connections=256,
        timeout=5,
        decode_responses=True,
        socket_timeout=REDIS_READ_TIMEOUT,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        health_check_interval=15,
    )
    return BoundedRedis(connection_pool=pool)


def bootstrap(settings: Settings | None = None, *, force: bool = False) -> Services:
    """Initialise (once) and return this process's services."""
    global _services
    with _lock:
        if _services is not None and not force and (settings is None or settings == _services.settings):
            return _services
    settings = settings or Settings.from_env()
    database = init_database(
        settings.database_url,
        replica_url=settings.database_replica_url or None,
        replica_max_lag=settings.database_replica_max_lag,
    )
    client = make_redis(settings.redis_url)
    # heartbeat_timeout + a 10% maintenance chance: a killed worker's unacked messages are put
    # back on their queues ~10-15 s after its last heartbeat (the default is 60 s and 0.1%).
    broker = RedisBroker(
        client=make_raw_redis(settings.redis_url), heartbeat_timeout=10_000, maintenance_chance=100_000
    )
    dramatiq.set_broker(broker)
    services = Services(settings, database, client, broker)
    with _lock:
        _services = services
    return services


def make_raw_redis(url: str) -> redis.Redis:
    """A bytes-mode Redis client (Dramatiq's broker needs raw responses)."""
    if url == EMBEDDED:
        import fakeredis

        make_redis(url)
        return fakeredis.FakeRedis(server=_embedded_server)
    if url.startswith(CLUSTER_SCHEME + "://"):
        return cast(redis.Redis, make_cluster(url, decode_responses=False))
    # Blocking, as make_redis's: redis-py's default pool of 100 fails the 101st concurrent sender
    # with "Too many connections" (bench/contention_map.py at 256 in flight) instead of waiting.
    pool = LeanBlockingPool.from_url(
        url,
        max_connections=256,
        timeout=5,
        socket_timeout=REDIS_READ_TIMEOUT,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        health_check_interval=15,
    )
    return BoundedRedis(connection_pool=pool)


def current() -> Services:
    """The services bootstrap() set up; bootstraps from the environment if nobody did."""
    return _services or bootstrap()
