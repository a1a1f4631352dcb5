"""Redis Cluster errors are outages (503, cache falls back to the database), never 500s."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions as rex
from flask.testing import FlaskClient

from models.cache import CatalogueCache
from models.seed import seed_demo
from models.waiting_room import WaitingRoom
from tests.support.helpers import problem_of
from web import health

CLUSTER_OUTAGES = [
    rex.ClusterDownError("CLUSTERDOWN The cluster is down"),
    rex.MasterDownError("MASTERDOWN Link with MASTER is down"),
    rex.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    rex.MovedError("3999 127.0.0.1:6381"),
    rex.SlotNotCoveredError("Slot 3999 not covered by the cluster"),
    rex.RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
]


@pytest.mark.parametrize("error", CLUSTER_OUTAGES, ids=lambda e: type(e).__name__)
def test_every_cluster_error_maps_to_unavailable(error: Exception) -> None:
    mapped = health.unavailable_error(error)

    assert mapped is not None and mapped.code == "UNAVAILABLE"


@pytest.mark.parametrize("error", CLUSTER_OUTAGES, ids=lambda e: type(e).__name__)
def test_joining_the_queue_during_a_cluster_outage_is_503_not_500(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def down(self: WaitingRoom, **_: Any) -> None:
        raise error

    seed_demo()
    monkeypatch.setattr(WaitingRoom, "issue_limited", down)  # what the join route calls

    response = client.post("/api/v1/queue/tokens", json={"userId": 1, "concertId": 1})

    assert response.status_code == 503, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "UNAVAILABLE"
    assert int(response.headers["Retry-After"]) >= 1


class _ClusterWithoutSlots:
    """A client whose every command fails as a cluster with an uncovered slot does."""

    def register_script(self, _: str) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        def fail(*_: Any, **__: Any) -> None:
            raise rex.SlotNotCoveredError("Slot 42 not covered by the cluster")

        return fail


def test_the_catalogue_falls_back_to_the_database_when_a_slot_is_not_covered(client: FlaskClient) -> None:
    seed_demo()
    cache = CatalogueCache(_ClusterWithoutSlots())  # type: ignore[arg-type]

    schedules = cache.schedules(concert_id=1)
    seats = cache.seat_map(schedule_id=schedules[0].schedule_id)

    assert [s.available_seats for s in schedules] == [50, 50]
    assert len(seats) == 50


def test_readiness_on_a_cluster_requires_cluster_state_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    class Cluster:
        state = "fail"

        def ping(self) -> bool:
            return True

        def cluster_info(self) -> dict[str, str]:
            return {"cluster_state": self.state}

    monkeypatch.setattr(health.redis_support, "is_cluster", lambda client: isinstance(client, Cluster))
    cluster = Cluster()

    with pytest.raises(RuntimeError, match="cluster_state is fail"):
        health.redis_ready(cluster)
    cluster.state = "ok"
    health.redis_ready(cluster)


def test_a_pipeline_asks_script_exists_once_per_pool_and_survives_a_flushed_script_cache() -> None:
    """Every batch start, finish and ack pipeline of a partition holds script calls; redis-py
    asked SCRIPT EXISTS (its own round trip) before each. ScriptPipeline asks only until the
    pool has seen the scripts run, and after the server lost them (restart, failover, SCRIPT
    FLUSH) it loads them and re-sends exactly the failed calls.

    Hidden ways it fails: SCRIPT EXISTS on every execute, a NOSCRIPT error raised to the caller,
    a command without a script run twice on the retry, or replies out of order."""
    import fakeredis

    from config.bootstrap import BoundedRedis, ScriptPipeline

    client = BoundedRedis(connection_pool=fakeredis.FakeRedis(decode_responses=True).connection_pool)
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    asked: list[str] = []
    original = ScriptPipeline.immediate_execute_command

    def noting(self, *args, **options):  # type: ignore[no-untyped-def]
        asked.append(str(args[0]))
        return original(self, *args, **options)

    def run() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        script(keys=["s"], args=[1], client=pipe)
        pipe.incr("plain")
        script(keys=["s"], args=[10], client=pipe)
        return list(pipe.execute())

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ScriptPipeline, "immediate_execute_command", noting)
        assert run() == [1, 1, 11]
        assert run() == [12, 2, 22]
        assert asked.count("SCRIPT EXISTS") == 1
        client.script_flush()
        assert run() == [23, 3, 33]  # NOSCRIPT: loaded and the two calls sent again, INCR once
        assert "SCRIPT LOAD" in asked and asked.count("SCRIPT EXISTS") == 1
        assert run() == [34, 4, 44]


def test_a_command_checks_its_connection_out_without_redis_pys_deprecation_wrapper() -> None:
    """redis-py wraps BlockingConnectionPool.get_connection in `@deprecated_args`, which inspects the
    arguments of every checkout (every command) to warn about ones nobody here passes: ~3-6 µs a
    command. The pools of make_redis and make_raw_redis run redis-py's method without the wrapper.
    Hidden way to fail: a pool made some other way (from_url on the stock class) keeps the wrapper."""
    import redis

    from config.bootstrap import LeanBlockingPool, make_raw_redis, make_redis

    stock = redis.BlockingConnectionPool.get_connection
    assert hasattr(stock, "__wrapped__")  # the wrapper this avoids (redis-py 8.1)
    for client in (make_redis("redis://127.0.0.1:1/0"), make_raw_redis("redis://127.0.0.1:1/0")):
        pool = client.connection_pool
        assert isinstance(pool, LeanBlockingPool) and pool.max_connections == 256
        assert type(pool).get_connection is stock.__wrapped__  # redis-py's own body, unwrapped
