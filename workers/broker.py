"""Partitioned queues on Dramatiq's Redis broker: actors, routing, and the one Dramatiq adapter.

Every job about a seat (hold, cancel, expiry, payment) goes to the queue of the seat's
partition, `seats.p<N>` with N = seat_id % PARTITIONS (stable across processes, unlike
Python's salted hash()). One consumer thread owns a partition at a time (workers/partitions.py),
so the jobs of one seat run one after another.

Why our own `Actor` and not `dramatiq.actor`: a Dramatiq actor is bound at declaration to a
broker (declaring one without a broker creates a global one at import time) and to one fixed
queue, while a message here goes to the queue of its seat's partition, chosen per send. So an
actor is a named function (`@actor("pay")` names its messages "pay"); `send` takes the actor object and writes a
standard Dramatiq message, and `workers.dispatch` finds the actor by the message's name.

Each partition has its own RedisBroker namespace, `dramatiq:{dq:p<N>}` (`partition_broker`):
Dramatiq's dispatch script builds every key of a queue (the queue, its messages, acks, the
delay queue and the brokers' heartbeats) from the namespace inside the script, so with one
namespace per partition, holding the hash tag `{dq:p<N>}`, all of them live in one Redis
Cluster slot. The partition's wake-up list carries the same tag.

This module is the only place that touches Dramatiq internals (the Redis broker's dispatch
script and its arguments, the consumer's prefetched messages and ack set):
tests/unit/test_broker.py fails if a Dramatiq upgrade changes any of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from config.logs import REQUEST_ID
from models.redis_support import DirectPipeline, evalsha_direct, is_cluster, run_script, wait_replicated
from workers.jobs import OPEN_KEY, Job, JobStore, NewRecord, job_key

# Enqueue a message as Dramatiq's dispatch script does ("enqueue": HSET the message into the
# queue's .msgs hash, RPUSH its id on the queue) and wake the partition's consumer; with five
# keys, first write the job's QUEUED record and its jobs:open entry. One EVALSHA, one round trip.
# KEYS: queue .msgs, queue, wake[, job record, jobs:open]
# ARGV: message id, message data[, job id, created ms, record TTL s, field, value, ...]
_ENQUEUE = """
if #KEYS == 5 then
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('HSET', KEYS[4], unpack(fields))
  redis.call('EXPIRE', KEYS[4], ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[3])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], 0, 0)
return 1
"""


@dataclass(frozen=True)
class Actor:
    """A function that runs the messages named `name` (workers.dispatch finds it by that name)."""

    name: str
    fn: Callable[..., None]

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.fn(*args, **kwargs)


def actor(name: str) -> Callable[[Callable[..., None]], Actor]:
    """Declare a function as the actor of messages named `name` (no broker needed at import)."""

    def declare(fn: Callable[..., None]) -> Actor:
        return Actor(name, fn)

    return declare


def partition_of(seat_id: int, partitions: int) -> int:
    """The partition of a seat: stable, evenly spread for sequential ids."""
    return seat_id % partitions


def queue_of(partition: int) -> str:
    """The Dramatiq queue name of a partition."""
    return f"seats.p{partition}"


def namespace_of(partition: int) -> str:
    """The Dramatiq namespace of a partition: every key of its queue carries the tag {dq:p<N>}."""
    return f"dramatiq:{{dq:p{partition}}}"


def queue_key(partition: int) -> str:
    """The Redis list of a partition's waiting message ids (its length is the queue's length)."""
    return f"{namespace_of(partition)}:{queue_of(partition)}"


def wake_key(partition: int) -> str:
    """The list an idle consumer of the partition blocks on (BLPOP) until a message is sent."""
    return f"wake:{{dq:p{partition}}}"


def partition_broker(broker: dramatiq.Broker, partition: int) -> RedisBroker:  # type: ignore[type-arg]
    """The RedisBroker of one partition: `broker`'s client and settings, the partition's namespace.

    Built once per (process broker, partition) and kept on `broker`, so the web's sends and the
    partition's consumer in one process share it.
    """
    b: Any = broker
    brokers: dict[int, RedisBroker] = b.__dict__.setdefault("_partition_brokers", {})
    found = brokers.get(partition)
    if found is None:
        found = RedisBroker(
            client=b.client,
            namespace=namespace_of(partition),
            middleware=[],
            heartbeat_timeout=b.heartbeat_timeout,
            dead_message_ttl=b.dead_message_ttl,
            maintenance_chance=b.maintenance_chance,
        )
        found = brokers.setdefault(partition, found)
    return found


def send(
    broker: dramatiq.Broker,  # type: ignore[type-arg]
    actor: Actor,
    *,
    route_seat: int,
    partitions: int,
    before: Callable[[Any], None] | None = None,
    job: NewRecord | None = None,
    durable: Sequence[str] = (),
    **kwargs: Any,
) -> Message:  # type: ignore[type-arg]
    """Enqueue a message for `actor` on the seat's partition, and wake its consumer.

    One round trip, one script (`_ENQUEUE`) on one Redis, sent on the calling thread's own
    connection (`evalsha_direct`: under cProfile ~2/3 of a send's CPU was redis-py's command
    path, 2026-12-03): the job's QUEUED record (`job`, from
    JobStore.new) and its jobs:open entry, then the message, then the wake-up, in that order,
    so the record always exists before its message can run. `before(pipe)` (an older form of
    the same: commands added ahead of the script in one pipeline) is still accepted.
    On a Redis Cluster the record and the queue live in different slots, and a script touches
    one slot: there the record goes first, in its own round trip, then the script with the
    message and the wake-up (both in the partition's slot), and the call returns only once a
    replica has the message and the `durable` keys (the job record): a master killed right after
    the answer cannot take an accepted job with it.
    The message is stored exactly as Dramatiq's dispatch script stores it (tests/unit/test_broker.py
    consumes one with Dramatiq's consumer); the broker's enqueue middleware hooks are not run (this
    project configures none), nor its maintenance pass, which the partition's consumer runs.
    """
    partition = partition_of(route_seat, partitions)
    queue = queue_of(partition)
    pbroker = partition_broker(broker, partition)
    pbroker.declare_queue(queue)
    message: Message[Any] = Message(queue_name=queue, actor_name=actor.name, args=(), kwargs=kwargs, options={})
    options = {"redis_message_id": str(uuid4())}
    request_id = REQUEST_ID.get()
    if request_id:  # the worker's log lines about this message name the request that sent it
        options["request_id"] = request_id
    message = message.copy(options=options)
    client = pbroker.client
    cluster = is_cluster(client)
    keys = [f"{queue_key(partition)}.msgs", queue_key(partition), wake_key(partition)]
    args: list[Any] = [message.options["redis_message_id"], message.encode()]
    if before is not None or (job is not None and cluster):
        first = client.pipeline(transaction=False)
        if before is not None:
            before(first)
        if job is not None:
            first.hset(job.key, mapping=job.fields)  # type: ignore[arg-type]
            first.expire(job.key, job.ttl_s)
            first.zadd(OPEN_KEY, {job.job_id: job.created_ms})
        first.execute()
    elif job is not None:
        keys += [job.key, OPEN_KEY]
        args += [job.job_id, job.created_ms, job.ttl_s, *[x for kv in job.fields.items() for x in kv]]
    if cluster:
        run_script(_enqueue_script(pbroker), keys=keys, args=args, client=client)
    else:  # the thread's own connection, hiredis-packed: redis-py's command path was ~2/3 of a send's CPU
        evalsha_direct(client, _enqueue_script(pbroker), keys, args)
    if cluster:
        for key in (*durable, queue_key(partition)):
            wait_replicated(client, key)
    return message


def _enqueue_script(pbroker: Any) -> Any:
    """The registered `_ENQUEUE` of a partition broker's client (registered once, kept on it)."""
    script = pbroker.__dict__.get("_enqueue_script")
    if script is None:
        script = pbroker.__dict__.setdefault("_enqueue_script", pbroker.client.register_script(_ENQUEUE))
    return script


def dispatch(
    broker: dramatiq.Broker, command: str, queue: str, *args: Any, client: Any, maintenance: bool = False
) -> Any:  # type: ignore[type-arg]
    """Run Dramatiq's Redis dispatch script on `client` (a pipeline), as RedisBroker._dispatch does.

    `maintenance=True` forces the script's maintenance pass on `queue` (put the unacknowledged
    messages of dead consumers back on it) instead of leaving it to the broker's dice roll.

    Pinned to dramatiq 2.2.x's argument layout (tests/unit/test_broker.py fails if it changes).
    """
    b: Any = broker
    argv = [
        command,
        current_millis(),
        queue,
        b.broker_id,
        b.heartbeat_timeout,
        b.dead_message_ttl,
        1 if maintenance else b._should_do_maintenance(command),
        b._max_unpack_size(),
        *args,
    ]
    return run_script(b.scripts["dispatch"], keys=[b.namespace], args=argv, client=client)


def fetched_ahead(consumer: Any) -> bool:
    """True when the consumer's last fetch brought more messages that are already ours (unacked)."""
    return bool(consumer.message_cache)


def ack_all(consumer: Any, messages: list[Any]) -> None:
    """Acknowledge a batch of one consumer's messages in one round trip (Consumer.ack, pipelined)."""
    if len(messages) == 1:
        consumer.ack(messages[0])
        return
    pipe = DirectPipeline(consumer.broker.client)
    for message in messages:
        dispatch(consumer.broker, "ack", consumer.queue_name, message.options["redis_message_id"], client=pipe)
    try:
        pipe.execute()
    finally:
        for message in messages:
            consumer.queued_message_ids.discard(message.message_id)


def requeue_own_unacked(broker: dramatiq.Broker, queue: str) -> int:  # type: ignore[type-arg]
    """Put back on `queue` the messages this broker fetched and never acknowledged; how many.

    A fetch moves message ids to the broker's ack set inside Redis; if the connection drops
    before the reply arrives (a killed Cluster master whose replica took over, a restarted
    server), the consumer never saw them, and Dramatiq only recovers a *dead* broker's ack set.
    The partition's owner calls this before it (re)starts consuming, when it holds nothing.
    """
    b: Any = broker
    ids = b.client.smembers(f"{b.namespace}:__acks__.{b.broker_id}.{queue}")
    if ids:
        dispatch(broker, "requeue", queue, *ids, client=b.client)
    return len(ids)


def recover_dead_consumers(broker: dramatiq.Broker, queue: str) -> None:  # type: ignore[type-arg]
    """Put the messages a dead process had fetched from `queue` back on it, now (see partitions.py)."""
    dispatch(broker, "qsize", queue, client=broker.client, maintenance=True)  # type: ignore[attr-defined]


def enqueue_job(
    broker: dramatiq.Broker,  # type: ignore[type-arg]
    store: JobStore,
    actor: Actor,
    *,
    partitions: int,
    job_type: str,
    user_id: int,
    route_seat: int,
    job_id: str,
    **kwargs: Any,
) -> Job:
    """A new job's record and message in one script, one round trip (the record goes first): what
    every job route sends (web.jobs.create_and_enqueue adds its 503 answer) and what the benches
    send as the service does. The record is a durable key (on a Cluster, replicated with the message)."""
    job, record = store.new(job_type=job_type, user_id=user_id, job_id=job_id)
    send(
        broker,
        actor,
        route_seat=route_seat,
        partitions=partitions,
        job=record,
        durable=[job_key(job_id)],
        job_id=job_id,
        user_id=user_id,
        enqueued_ms=int(time.time() * 1000),
        **kwargs,
    )
    return job
