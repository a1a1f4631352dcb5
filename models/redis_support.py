"""What every Redis user needs to run unchanged on one Redis server and on a Redis Cluster.

* `REDIS_ERRORS`: the errors that mean "Redis cannot answer now". redis-py's cluster client
  raises some that are not `redis.RedisError` (`RedisClusterException`, `SlotNotCoveredError`),
  and during a failover `ClusterDownError`, `TryAgainError` or a `MovedError` the client could
  not follow; each is an outage like a refused connection (503, cache falls back to the DB).
* `is_cluster(client)`: the client (or pipeline) talks to a Redis Cluster.
* `run_script(script, keys, args, client)`: a registered Lua script on a client or pipeline.
  A cluster pipeline does not load missing scripts (EVALSHA answers NOSCRIPT on a node that
  never saw it, e.g. a freshly promoted replica), so there the script goes as EVAL with its body.

Every script declares all its keys, and all of them share one hash tag (CONVENTIONS habit 14).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.exceptions as rex
from redis.cluster import ClusterPipeline, RedisCluster

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
