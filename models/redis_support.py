"""What every Redis user needs to run unchanged on one Redis server and on a Redis Cluster.

* `REDIS_ERRORS`: the errors that mean "Redis cannot answer now". redis-py's cluster client
  raises some that are not `redis.RedisError` (`RedisClusterException`, `SlotNotCoveredError`),
  and during a failover `ClusterDownError`, `TryAgainError` or a `MovedError` the client could
  not follow; each is an outage like a refused connection (503, cache falls back to the DB).
* `is_cluster(client)`: the client (or pipeline) talks to a Redis Cluster.
* `wait_replicated(client, key)`: on a cluster, block (briefly) until a replica of the master
  serving `key` has every write made to it so far, so an answer given after it survives that
  master's death (Redis replicates asynchronously; a failover otherwise loses the last writes).
* `NOW_MS_LUA`: a Lua `now_ms()` on the Redis server's clock (`TIME`), for every script that
  needs "now": one clock per concert's slot instead of each caller host's (Redis 7 replicates a
  script's effects, so `TIME` is allowed in a script that writes).
* `run_script(script, keys, args, client)`: a registered Lua script on a client or pipeline.
  A cluster pipeline does not load missing scripts (EVALSHA answers NOSCRIPT on a node that
  never saw it, e.g. a freshly promoted replica), so there the script goes as EVAL with its body.

Every script declares all its keys, and all of them share one hash tag (CONVENTIONS habit 14).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
import redis.exceptions as rex
from redis.cluster import ClusterPipeline, RedisCluster

# The Redis server's clock in ms, for scripts (never a caller's clock: hosts drift, Redis is one clock per slot).
NOW_MS_LUA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    rex.ReadOnlyError,
    rex.ClusterError,
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.AskError,
    rex.RedisClusterException,
)
# Any error a Redis call can raise (what `except redis.RedisError` meant before clusters).
ANY_REDIS_ERROR: tuple[type[Exception], ...] = (redis.RedisError, rex.RedisClusterException)


def is_cluster(client: Any) -> bool:
    """True when `client` (a client or a pipeline) talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def run_script(script: Any, *, keys: Sequence[Any], args: Sequence[Any], client: Any = None) -> Any:
    """Call a registered script on its client, or queue it on `client` (a pipeline)."""
    if isinstance(client, ClusterPipeline):
        return client.execute_command("EVAL", script.script, len(keys), *keys, *args)
    return script(keys=list(keys), args=list(args), client=client)


def evalsha(client: Any, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """A registered script's reply, called on its client: one EVALSHA, the body loaded on NOSCRIPT.

    What redis-py's Script.__call__ does, less its per-call pipeline check and argument copies
    (a few µs: the issue path, bench/queue_bench.py). Not for pipelines (run_script).
    """
    try:
        return client.evalsha(script.sha, len(keys), *keys, *args)
    except rex.NoScriptError:
        script.sha = client.script_load(script.script)
        return client.evalsha(script.sha, len(keys), *keys, *args)


_pack: Any
try:
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - hiredis is pinned in requirements.txt
    _pack = None


class _ThreadConnections(threading.local):
    """This thread's own connection to each connection pool's server (evalsha_direct)."""

    def __init__(self) -> None:
        # pool -> this thread's connection, forgotten with the pool (a new pool, even one at the
        # dropped pool's address, never gets its connection: another server or database)
        self.by_pool: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.pid = os.getpid()


_THREAD = _ThreadConnections()


def _kept_connection(client: Any) -> Any:
    """This thread's own connection to the server of `client`'s pool (made on first use), or None
    for anything but one plain Redis server (a Cluster, fakeredis, a client-side cache)."""
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(pool, "cache", None) is not None or type(client).__module__.startswith("fakeredis"):
        return None
    local = _THREAD
    if local.pid != os.getpid():  # forked: the parent's sockets are not this process's
        local.by_pool, local.pid = weakref.WeakKeyDictionary(), os.getpid()
    conn = local.by_pool.get(pool)
    if conn is None:
        conn = local.by_pool[pool] = pool.connection_class(**pool.connection_kwargs)
    return conn


def _scripts_direct(conn: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]]) -> list[Any] | None:
    """Several EVALSHAs sent together on a kept connection and every reply read (an error reply as
    its exception, in its place): the connection stays in step. None when the connection failed
    (it is closed; the caller goes through the pool)."""
    commands = [_pack(("EVALSHA", script.sha, len(keys), *keys, *args)) for script, keys, args in calls]
    try:
        conn.send_packed_command(commands)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except rex.ResponseError as exc:  # read whole: the next reply follows it
                replies.append(exc)
        return replies
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        conn.disconnect()
        return None
    except BaseException:
        conn.disconnect()  # interrupted mid-call: replies may still be on their way
        raise


def evalsha_direct(client: Any, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """evalsha() on a connection this thread keeps to itself: the same EVALSHA, the same reply.

    For the hottest calls (a fan's join, poll, leave). redis-py checks a connection out of the pool
    and back for every command, and around it times and records the call (its observability
    hooks) and wraps it in its retry: ~50 of a poll's ~90 µs of client CPU (2026-12-03 07:41 UTC,
    bench/unit_costs.py's machine), the checkout alone ~25 µs (a LifoQueue under a lock and a
    `poll()` of the socket). One connection per thread needs none of that: nobody else writes
    on it, and whatever fails mid-call (a timeout, a closed socket, a reply half read) closes
    it, so a later call never reads a stale reply; that call is then made through the pool
    (redis-py's retries, a fresh connection). A server that lost the script loads it again.
    Anything but one plain Redis server (a Cluster, fakeredis, a pipeline) takes evalsha().
    """
    conn = _kept_connection(client)
    if conn is None:
        return evalsha(client, script, keys, args)
    try:
        if _pack is None:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        else:  # hiredis packs str and int as redis-py does, less its per-argument checks (3-8 µs)
            conn.send_packed_command([_pack(("EVALSHA", script.sha, len(keys), *keys, *args))])
        return conn.read_response()
    except rex.NoScriptError:  # read whole: the connection is clean
        script.sha = client.script_load(script.script)
        return evalsha(client, script, keys, args)
    except rex.ResponseError:  # an error reply, read whole: the connection is clean
        raise
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        conn.disconnect()
        return evalsha(client, script, keys, args)  # through the pool and its retries
    except BaseException:
        conn.disconnect()  # interrupted mid-call: a reply may still be on its way
        raise


def scripts_in_one_round_trip(client: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]]) -> list[Any]:
    """Run several registered scripts (script, keys, args) in one pipelined round trip; their replies.

    EVALSHA directly (redis-py's pipeline would first ask SCRIPT EXISTS: a second round trip on
    every call); scripts a server does not know yet are loaded and the batch is sent once more.
    On a Redis Cluster the scripts go as EVAL (see run_script), one round trip per node.
    """
    if len(calls) <= 1:  # no pipeline for one script (cheaper on the client: the seat map's common case)
        if is_cluster(client):
            return [run_script(script, keys=keys, args=args) for script, keys, args in calls]
        return [evalsha_direct(client, script, keys, args) for script, keys, args in calls]
    conn = None if _pack is None or is_cluster(client) else _kept_connection(client)
    if conn is not None:  # the thread's own connection: none of redis-py's pipeline machinery
        for attempt in (1, 2):
            direct = _scripts_direct(conn, calls)
            if direct is None:
                break  # the connection failed: through the pool and its retries below
            if attempt == 1 and any(isinstance(r, rex.NoScriptError) for r in direct):
                for script, _, _ in calls:
                    script.sha = client.script_load(script.script)
                continue
            for reply in direct:
                if isinstance(reply, Exception):
                    raise reply
            return direct
    for attempt in (1, 2):
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            if is_cluster(client):
                pipe.execute_command("EVAL", script.script, len(keys), *keys, *args)
            else:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies = pipe.execute(raise_on_error=False)
        if attempt == 1 and any(isinstance(r, rex.NoScriptError) for r in replies):
            for script, _, _ in calls:
                client.script_load(script.script)
            continue
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return list(replies)
    raise AssertionError("unreachable")


REPLICATION_WAIT_MS = 100


def wait_replicated(client: Any, key: str, *, timeout_ms: int = REPLICATION_WAIT_MS) -> int:
    """On a cluster: WAIT until one replica of `key`'s master acknowledged the writes made to it
    before this call (at most `timeout_ms`); the number of replicas that did. 0 on one server.

    WAIT counts the writes of its own connection, so a marker write in `key`'s slot goes first on
    the node's connection: a master replicates in order, so a replica that has the marker has
    every earlier write of every connection.
    """
    if not is_cluster(client):
        return 0
    start, end = key.find("{"), key.find("}")
    tag = key[start : end + 1] if 0 <= start < end else key
    node = client.get_redis_connection(client.get_node_from_key(key))
    pipe = node.pipeline(transaction=False)
    pipe.set(f"replicated:{tag}", 1, px=60_000)
    pipe.execute_command("WAIT", 1, timeout_ms)
    return int(pipe.execute()[-1])
