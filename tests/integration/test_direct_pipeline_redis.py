"""The partition worker's pipelines on the thread's kept connection (models.redis_support.DirectPipeline),
on a real Redis and on the Redis Cluster: the same effects and replies as redis-py's pipeline, no pool
checkout on one server, and nothing lost or run twice that must not be when the server forgot its
scripts, a reply is an error or the connection is killed mid-way."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.exceptions as rex

from config.bootstrap import make_redis
from models.redis_support import DirectPipeline, is_cluster
from workers.jobs import FAILED, RUNNING, SUCCEEDED, JobStore, job_key

pytestmark = pytest.mark.integration

TAG = "{dp:730779}"  # no other test uses these keys; one slot for the plain commands


@pytest.fixture
def redis_url(redis_any: str) -> str:
    return redis_any


def _client(url: str) -> Iterator[redis.Redis]:
    c = make_redis(url)
    c.delete(*(f"{TAG}:{k}" for k in ("s", "h", "z", "gone")))
    yield c
    c.delete(*(f"{TAG}:{k}" for k in ("s", "h", "z", "gone")))
    c.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    yield from _client(redis_url)


@pytest.fixture
def single_client(redis_single_url: str) -> Iterator[redis.Redis]:
    yield from _client(redis_single_url)


def checkouts_of(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the pool checkouts of a plain client (a cluster's nodes have pools of their own)."""
    pool: Any = getattr(client, "connection_pool", None)
    taken: list[int] = []
    if pool is not None:
        real = pool.get_connection
        monkeypatch.setattr(pool, "get_connection", lambda *a, **k: taken.append(1) or real(*a, **k))
    return taken


def fill(pipe: Any, store: JobStore, jobs: list[str]) -> None:
    """A group's finish in miniature: counters, a mark, a delete, the open index and job scripts."""
    pipe.set(f"{TAG}:s", "seat 1 is held", px=60_000)
    pipe.hincrby(f"{TAG}:h", "hold|succeeded", 2)
    pipe.hincrbyfloat(f"{TAG}:h", "hold|sum", 0.25)
    pipe.delete(f"{TAG}:gone")
    pipe.zrem(f"{TAG}:z", "a")
    for job_id in jobs:
        store.fail_if_queued(job_id, {"code": "SEAT_NOT_AVAILABLE"}, pipe=pipe)


def test_a_pipeline_on_the_kept_connection_does_what_redis_pys_does_with_no_checkout(client, monkeypatch):
    store = JobStore(client)
    jobs = [store.create(job_type="RESERVATION", user_id=u).job_id for u in (1, 2)]
    client.zadd(f"{TAG}:z", {"a": 1, "b": 2})
    client.set(f"{TAG}:gone", 1)
    client.script_load(store._finish.script)
    taken = checkouts_of(client, monkeypatch)

    pipe = DirectPipeline(client)
    fill(pipe, store, jobs)
    replies = pipe.execute()
    through_pool = len(taken)

    assert len(pipe) == 0 and len(replies) == 7
    assert [int(r) for r in replies[1:2] + replies[3:]] == [2, 1, 1, 1, 1]
    assert float(replies[2]) == 0.25
    assert client.get(f"{TAG}:s") == "seat 1 is held" and 0 < client.pttl(f"{TAG}:s") <= 60_000
    assert client.hgetall(f"{TAG}:h") == {"hold|succeeded": "2", "hold|sum": "0.25"}
    assert client.exists(f"{TAG}:gone") == 0 and client.zrange(f"{TAG}:z", 0, -1) == ["b"]
    assert [store.get(j).status for j in jobs] == [FAILED, FAILED]  # type: ignore[union-attr]
    if not is_cluster(client):
        assert through_pool == 0  # none of it through the pool
    for job_id in jobs:
        client.delete(job_key(job_id))


def test_scripts_the_server_forgot_are_loaded_and_only_they_sent_again(single_client):
    # one server only: a cluster pipeline sends scripts as EVAL (models.redis_support.run_script)
    client = single_client
    store = JobStore(client)
    jobs = [store.create(job_type="RESERVATION", user_id=u).job_id for u in (3, 4)]
    client.script_flush()

    pipe = DirectPipeline(client)
    fill(pipe, store, jobs)
    replies = pipe.execute()

    assert [int(r) for r in replies[-2:]] == [1, 1]
    assert client.hget(f"{TAG}:h", "hold|succeeded") == "2"  # counted once, not again with the scripts
    assert [store.get(j).status for j in jobs] == [FAILED, FAILED]  # type: ignore[union-attr]
    for job_id in jobs:
        client.delete(job_key(job_id))


def test_an_error_reply_is_read_whole_in_its_place_and_the_connection_stays_in_step(client):
    client.set(f"{TAG}:s", "not a hash")
    pipe = DirectPipeline(client)
    pipe.hincrby(f"{TAG}:s", "f", 1)  # WRONGTYPE
    pipe.hincrby(f"{TAG}:h", "f", 1)

    replies = pipe.execute(raise_on_error=False)

    assert isinstance(replies[0], rex.ResponseError) and int(replies[1]) == 1
    pipe.hincrby(f"{TAG}:s", "f", 1)
    with pytest.raises(rex.ResponseError):
        pipe.execute()
    pipe.hincrby(f"{TAG}:h", "f", 5)
    assert [int(r) for r in pipe.execute()] == [6]  # its own reply, not a leftover


def test_a_killed_connection_sends_the_pipeline_again_through_the_pool(single_client, redis_single_url):
    # one server only: a cluster keeps no connection (its own pipeline, with its own retries)
    client, redis_url = single_client, redis_single_url
    store = JobStore(client)
    job_id = store.create(job_type="RESERVATION", user_id=5).job_id
    warm = DirectPipeline(client)
    warm.hincrby(f"{TAG}:h", "warm", 1)
    warm.execute()  # the thread's connection exists now
    admin = redis.Redis.from_url(redis_url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1

    pipe = DirectPipeline(client)
    pipe.execute_command("HSET", job_key(job_id), "status", RUNNING)
    store.fail_if_queued(job_id, {"code": "X"}, pipe=pipe)  # not QUEUED any more: 0
    replies = pipe.execute()

    assert int(replies[-1]) == 0 and store.get(job_id).status == RUNNING  # type: ignore[union-attr]
    admin.close()
    client.delete(job_key(job_id))


def test_a_group_starts_and_finishes_its_jobs_on_the_kept_connection(client, monkeypatch):
    """The group's round trips (workers/group.py) on a real server: its start marks every QUEUED job
    RUNNING and leaves the others to the serial path; on one Redis with no pool checkout (redis-py's
    pipeline took one per round trip, and its command path cost ~40 % of the group's worker CPU)."""
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from workers.group import HoldGroup

    store = JobStore(client)
    jobs = [store.create(job_type="RESERVATION", user_id=u).job_id for u in (6, 7, 8)]
    client.hset(job_key(jobs[2]), "status", SUCCEEDED)  # a redelivery of a job that already ended
    for script in (store._start, store._finish):
        client.script_load(script.script)  # a server that lost them loads them once (another test)
    serial: list[str] = []
    group = HoldGroup(store, lambda m: serial.append(m.kwargs["job_id"]), stale_after_s=30, hold_ttl=300, max_holds=4)
    messages = [
        MessageProxy(Message(queue_name="q", actor_name="hold_seat", args=(), kwargs={"job_id": j}, options={}))
        for j in jobs
    ]
    taken = checkouts_of(client, monkeypatch)

    mine = group._start(messages)
    through_pool = len(taken)

    assert [m.kwargs["job_id"] for m in mine] == jobs[:2] and serial == []
    assert [store.get(j).status for j in jobs] == [RUNNING, RUNNING, SUCCEEDED]  # type: ignore[union-attr]
    if not is_cluster(client):
        assert through_pool == 0
    for job_id in jobs:
        client.delete(job_key(job_id))
