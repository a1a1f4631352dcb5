"""The join's script on a connection of the calling thread's own (models.redis_support.evalsha_direct),
on a real Redis server: same answers as the pool's path, and no answer lost or mixed up when the
connection breaks, the server forgets its scripts or a reply comes too late."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.exceptions as rex

from config.bootstrap import make_redis
from models.redis_support import _THREAD
from models.waiting_room import ACTIVE, WAITING, WaitingRoom, _keys

pytestmark = pytest.mark.integration

CONCERT = 730_451  # no other test uses this concert id


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = make_redis(redis_url)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def room_on(client: redis.Redis) -> WaitingRoom:
    return WaitingRoom(client, active_limit=1, active_ttl=600, waiting_ttl=300)


def test_joins_take_the_direct_path_on_one_redis_and_get_the_queue_right(client: redis.Redis) -> None:
    room = room_on(client)
    for script in (room._issue, room._poll):
        client.script_load(script.script)  # a server that lost them reloads them (another test)
    pool: Any = client.connection_pool
    checkouts: list[int] = []
    real = pool.get_connection
    pool.get_connection = lambda *a, **k: checkouts.append(1) or real(*a, **k)

    first = room.issue(user_id=1, concert_id=CONCERT)
    second = room.issue(user_id=2, concert_id=CONCERT)
    again = room.issue(user_id=2, concert_id=CONCERT)

    assert (first.status, second.status, second.rank) == (ACTIVE, WAITING, 1)
    assert again.token == second.token and not again.created
    assert isinstance(second.token, str)  # decoded as the pool's client decodes
    assert room.status(token=second.token, touch=False).rank == 1
    assert checkouts == []  # none of it went through the pool (redis-py's command path)


def test_a_killed_connection_is_replaced_and_the_join_answered(client: redis.Redis) -> None:
    room = room_on(client)
    room.issue(user_id=1, concert_id=CONCERT)
    admin = redis.Redis.from_url(_url(client))
    killed = admin.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the thread's own connection went with the others

    token = room.issue(user_id=2, concert_id=CONCERT)

    assert token.status == WAITING and token.rank == 1
    admin.close()


def test_a_server_that_forgot_the_script_gets_it_again(client: redis.Redis) -> None:
    room = room_on(client)
    room.issue(user_id=1, concert_id=CONCERT)
    client.script_flush()

    token = room.issue(user_id=2, concert_id=CONCERT)

    assert token.rank == 1 and client.script_exists(room._issue.sha) == [True]


def test_a_late_reply_is_never_read_as_the_answer_to_the_next_join(redis_url: str) -> None:
    """A join that timed out leaves its reply on the wire: the next join must not read it as its own."""
    client = redis.Redis(
        connection_pool=redis.ConnectionPool.from_url(redis_url, decode_responses=True, socket_timeout=0.3)
    )
    client.flushdb()
    room = room_on(client)
    room.issue(user_id=1, concert_id=CONCERT)
    admin = redis.Redis.from_url(redis_url)
    admin.client_pause(800, all=True)  # every other client's commands wait 0.8 s
    with pytest.raises(rex.TimeoutError):
        room.issue(user_id=2, concert_id=CONCERT)
    time.sleep(0.9)

    third = room.issue(user_id=3, concert_id=CONCERT)

    assert third.user_id == 3  # not user 2's late answer
    assert room.issue(user_id=2, concert_id=CONCERT).user_id == 2
    client.flushdb()
    client.close()
    admin.close()


def test_each_thread_joins_on_its_own_connection(client: redis.Redis) -> None:
    room = room_on(client)
    room.issue(user_id=1, concert_id=CONCERT)
    conns: list[object] = []  # kept alive, so no two can share an id
    lock = threading.Lock()
    start = threading.Barrier(8)

    def fan(k: int) -> None:
        start.wait()
        for n in range(25):
            room.issue(user_id=1000 + k * 100 + n, concert_id=CONCERT)
        with lock:
            conns.append(_THREAD.by_pool[client.connection_pool])

    threads = [threading.Thread(target=fan, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len({id(c) for c in conns}) == 8
    ranks = sorted(room.status(token=t, touch=False).rank for t in client.zrange(_keys(CONCERT)["waiting"], 0, -1))
    assert ranks == list(range(1, 201))  # 200 joins, 200 distinct places, none lost


def test_a_pool_dropped_never_lends_its_connection_to_a_new_pool(redis_url: str) -> None:
    """A thread keeps a connection per pool; a new client (here: another database) made after
    the old one was dropped must get its own, even where the new pool takes the old one's id."""
    for db in (3, 4, 5) * 3:
        c = redis.Redis(connection_pool=redis.ConnectionPool.from_url(_db(redis_url, db), decode_responses=True))
        c.flushdb()
        room_on(c).issue(user_id=db, concert_id=CONCERT)
        assert c.get(f"wr:{{c:{CONCERT}}}:u:{db}")  # the join landed in this client's database
        c.flushdb()
        c.close()
        del c
        gc.collect()


def _db(url: str, db: int) -> str:
    return url.rsplit("/", 1)[0] + f"/{db}"


def _url(client: redis.Redis) -> str:
    kw = client.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def test_scripts_sent_together_go_on_the_kept_connection_and_stay_in_step(client: redis.Redis) -> None:
    """The gate's poll + seat-map read (scripts_in_one_round_trip) on the thread's own connection:
    no pool checkout; a server that forgot a script gets it again; an error reply in the middle is
    read whole, so the next call reads its own replies, not the rest of the last one's."""
    from models.redis_support import scripts_in_one_round_trip

    echo = client.register_script("return ARGV[1]")
    fail = client.register_script("return redis.error_reply('BOOM ' .. ARGV[1])")
    client.script_load(echo.script)
    pool: Any = client.connection_pool
    checkouts: list[int] = []
    real = pool.get_connection
    pool.get_connection = lambda *a, **k: checkouts.append(1) or real(*a, **k)
    try:
        assert scripts_in_one_round_trip(client, [(echo, ["{k}"], ["a"]), (echo, ["{k}"], ["b"])]) == ["a", "b"]
        assert checkouts == []
    finally:
        pool.get_connection = real
    client.script_flush()
    assert scripts_in_one_round_trip(client, [(echo, ["{k}"], ["c"]), (echo, ["{k}"], ["d"])]) == ["c", "d"]

    with pytest.raises(rex.ResponseError, match="BOOM 1"):
        scripts_in_one_round_trip(client, [(fail, ["{k}"], ["1"]), (echo, ["{k}"], ["e"]), (fail, ["{k}"], ["2"])])

    assert scripts_in_one_round_trip(client, [(echo, ["{k}"], ["f"]), (echo, ["{k}"], ["g"])]) == ["f", "g"]
    assert room_on(client).issue(user_id=5, concert_id=CONCERT).user_id == 5


def test_a_job_is_sent_on_the_kept_connection_record_message_and_wake_up_in_one_call(client: redis.Redis) -> None:
    """POST /reservations' send (workers.broker.enqueue_job) on the thread's own connection: redis-py's
    command path was ~2/3 of a send's CPU (bench: 284 -> 182 us a send, 2026-12-03). Hidden ways it
    fails: the send through the pool, or the record, the message or the wake-up missing."""
    from dramatiq.brokers.redis import RedisBroker

    from workers.broker import enqueue_job, partition_of, queue_key, wake_key
    from workers.jobs import OPEN_KEY, QUEUED, JobStore
    from workers.reservations import hold_seat

    broker = RedisBroker(client=client, middleware=[])
    store = JobStore(client)
    seat = 730_452
    enqueue_job(
        broker, store, hold_seat, partitions=16, job_type="RESERVATION", user_id=1, route_seat=seat, job_id="warm"
    )
    pool: Any = client.connection_pool
    checkouts: list[int] = []
    real = pool.get_connection
    pool.get_connection = lambda *a, **k: checkouts.append(1) or real(*a, **k)
    try:
        job = enqueue_job(
            broker, store, hold_seat, partitions=16, job_type="RESERVATION", user_id=2, route_seat=seat, job_id="sent"
        )
    finally:
        pool.get_connection = real

    assert checkouts == []
    partition = partition_of(seat, 16)
    assert store.get("sent").status == QUEUED == job.status  # type: ignore[union-attr]
    assert client.zscore(OPEN_KEY, "sent") is not None
    assert client.llen(queue_key(partition)) == 2 and client.llen(wake_key(partition)) == 1


def test_a_thread_can_open_its_kept_connection_before_it_starts_work(client: redis.Redis) -> None:
    """open_kept_connection: the connection evalsha_direct then uses is open already (the bench's
    clients open theirs before the common start, as the other strategies warm their pools)."""
    from models.redis_support import _kept_connection, open_kept_connection

    def opened() -> bool:
        return open_kept_connection(client)

    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.extend([opened(), _kept_connection(client)._sock is not None]))
    thread.start()
    thread.join()

    assert result == [True, True]
