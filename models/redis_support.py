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
    if isinstance(client, DirectPipeline):
        return client.script(script, keys, args)
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


def open_kept_connection(client: Any) -> bool:
    """Open this thread's kept connection to `client`'s server now (evalsha_direct, DirectPipeline make it
    on first use); False where there is none (a Cluster, fakeredis). For a thread about to start
    work, as a pool is warmed before it (bench/contention_bench.py's clients)."""
    conn = _kept_connection(client)
    if conn is None:
        return False
    conn.connect()
    return True


def _scripts_direct(conn: Any, calls: Sequence[tuple[Any, Sequence[Any], Sequence[Any]]]) -> list[Any] | None:
    """Several EVALSHAs sent together on a kept connection (_send_direct): every reply read, an error
    reply as its exception in its place. None when the connection failed (it is closed; the caller
    goes through the pool)."""
    return _send_direct(conn, [("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in calls])


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


def _send_direct(conn: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any] | None:
    """Commands packed by hiredis and sent together on a kept connection, every reply read (an error
    reply as its exception, in its place). None when the connection failed (it is closed)."""
    try:
        conn.send_packed_command([_pack(command) for command in commands])
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


class DirectPipeline:
    """A pipeline (transaction=False) sent on this thread's kept connection: the partition worker's
    round trips (a group's start and finish, a batch's rejections and acknowledgement, the mark
    refresh), each up to a hundred commands and scripts.

    redis-py's pipeline checks a connection out of its pool and back, asks its observability hooks
    and argument checks about every command, packs each argument through a generator and runs each
    reply through a callback: on a group of 32 holds that was ~40 % of the worker's CPU for the
    group (bench/group_costs.py, 2026-12-03). Here the commands are packed by hiredis and the
    replies are the server's own (no callbacks: a SET answers "OK", an HINCRBYFLOAT its text).
    Scripts go as EVALSHA; the ones a server no longer knows (a restart, SCRIPT FLUSH) answered
    NOSCRIPT and did not run: they are loaded and exactly those calls sent again, in their order,
    as `config.bootstrap.ScriptPipeline` does. A connection that fails mid-call is closed and the
    whole pipeline sent again through the pool (redis-py's retries), as redis-py's own pipeline
    retries it: only for commands that may run twice, which every caller's are (compare-and-set
    scripts, SETs of one value, acknowledgements; a job counter may count twice). Anything but one
    plain Redis server (a Cluster, fakeredis) takes the client's own pipeline, with the same calls.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._calls: list[tuple[tuple[Any, ...], tuple[Any, Sequence[Any], Sequence[Any]] | None]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def execute_command(self, *args: Any) -> DirectPipeline:
        """Queue a command as its arguments (str, bytes, int or float)."""
        self._calls.append((args, None))
        return self

    def script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> DirectPipeline:
        """Queue a registered script (what run_script does with this pipeline)."""
        self._calls.append((("EVALSHA", script.sha, len(keys), *keys, *args), (script, keys, args)))
        return self

    def register_script(self, body: str) -> Any:
        """A script registered on the client (its sha is computed here, nothing is sent)."""
        return self.client.register_script(body)

    def hincrby(self, name: str, key: str, amount: int = 1) -> DirectPipeline:
        return self.execute_command("HINCRBY", name, key, int(amount))

    def hincrbyfloat(self, name: str, key: str, amount: float = 1.0) -> DirectPipeline:
        return self.execute_command("HINCRBYFLOAT", name, key, repr(float(amount)))

    def set(self, name: str, value: Any, px: int | None = None) -> DirectPipeline:
        return self.execute_command("SET", name, value, *(() if px is None else ("PX", int(px))))

    def delete(self, *names: str) -> DirectPipeline:
        return self.execute_command("DEL", *names)

    def zrem(self, name: str, *values: Any) -> DirectPipeline:
        return self.execute_command("ZREM", name, *values)

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send everything queued in one round trip (and empty the pipeline); the replies in order."""
        calls, self._calls = self._calls, []
        if not calls:
            return []
        conn = None if _pack is None else _kept_connection(self.client)
        replies = None if conn is None else _send_direct(conn, [command for command, _ in calls])
        if replies is not None:
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, rex.NoScriptError) and calls[i][1]]
            if missing:
                scripts = [call for _, call in (calls[i] for i in missing) if call is not None]
                for script in {id(s): s for s, _, _ in scripts}.values():
                    script.sha = self.client.script_load(script.script)
                again = [calls[i] for i in missing]
                retried = _scripts_direct(conn, scripts)
                if retried is None:
                    retried = self._through_pool(again)
                for i, reply in zip(missing, retried, strict=True):
                    replies[i] = reply
        else:
            replies = self._through_pool(calls)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    def _through_pool(self, calls: Sequence[tuple[tuple[Any, ...], Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for command, call in calls:
            if call is None:
                pipe.execute_command(*command)
            else:
                script, keys, args = call
                run_script(script, keys=keys, args=args, client=pipe)
        return list(pipe.execute(raise_on_error=False))


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
