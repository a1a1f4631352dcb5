"""Partitioned queues on Dramatiq's Redis broker, and the actor registry.

Every job about a seat (hold, cancel, expiry, payment) goes to the queue of the seat's
partition, `seats.p<N>` with N = seat_id % PARTITIONS (stable across processes, unlike
Python's salted hash()). One consumer thread owns a partition at a time (workers/partitions.py),
so the jobs of one seat run one after another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq import Message
from dramatiq.common import current_millis

ActorFn = Callable[..., Any]
ACTORS: dict[str, ActorFn] = {}


def actor(name: str) -> Callable[[ActorFn], ActorFn]:
    """Register a function as the handler of messages named `name` (no broker needed at import)."""

    def register(fn: ActorFn) -> ActorFn:
        ACTORS[name] = fn
        return fn

    return register


def partition_of(seat_id: int, partitions: int) -> int:
    """The partition of a seat: stable, evenly spread for sequential ids."""
    return seat_id % partitions


def queue_of(partition: int) -> str:
    """The Dramatiq queue name of a partition."""
    return f"seats.p{partition}"


def wake_key(partition: int) -> str:
    """The list an idle consumer of the partition blocks on (BLPOP) until a message is sent."""
    return f"wake:seats.p{partition}"


def send(
    broker: dramatiq.Broker,  # type: ignore[type-arg]
    *,
    actor_name: str,
    route_seat: int,
    partitions: int,
    before: Callable[[Any], None] | None = None,
    **kwargs: Any,
) -> Message:  # type: ignore[type-arg]
    """Enqueue a message for `actor_name` on the seat's partition, and wake its consumer.

    One round trip: `before(pipe)` (e.g. JobStore.create writing the job record) and the message
    go in one pipeline, in that order, so the record always exists before its message can run.
    The message is stored exactly as RedisBroker.enqueue stores it (Dramatiq's dispatch script);
    the broker's enqueue middleware hooks are not run (this project configures none).
    """
    if actor_name not in ACTORS:
        load_actors()
    partition = partition_of(route_seat, partitions)
    queue = queue_of(partition)
    broker.declare_queue(queue)
    message: Message[Any] = Message(queue_name=queue, actor_name=actor_name, args=(), kwargs=kwargs, options={})
    message = message.copy(options={"redis_message_id": str(uuid4())})
    pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
    if before is not None:
        before(pipe)
    dispatch(broker, "enqueue", queue, message.options["redis_message_id"], message.encode(), client=pipe)
    pipe.lpush(wake_key(partition), 1)
    pipe.ltrim(wake_key(partition), 0, 0)
    pipe.execute()
    return message


def dispatch(
    broker: dramatiq.Broker, command: str, queue: str, *args: Any, client: Any, maintenance: bool = False
) -> Any:  # type: ignore[type-arg]
    """Run Dramatiq's Redis dispatch script on `client` (a pipeline), as RedisBroker._dispatch does.

    `maintenance=True` forces the script's maintenance pass on `queue` (put the unacknowledged
    messages of dead consumers back on it) instead of leaving it to the broker's dice roll.

    Pinned to dramatiq 2.2.x's argument layout (tests/unit/test_batch.py and the pipeline tests
    exercise it against the broker's own consumer).
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
    return b.scripts["dispatch"](args=argv, keys=[b.namespace], client=client)


def ack_all(consumer: Any, messages: list[Any]) -> None:
    """Acknowledge a batch of one consumer's messages in one round trip (Consumer.ack, pipelined)."""
    if len(messages) == 1:
        consumer.ack(messages[0])
        return
    pipe = consumer.broker.client.pipeline(transaction=False)
    for message in messages:
        dispatch(consumer.broker, "ack", consumer.queue_name, message.options["redis_message_id"], client=pipe)
    try:
        pipe.execute()
    finally:
        for message in messages:
            consumer.queued_message_ids.discard(message.message_id)


def load_actors() -> None:
    """Import every actor module so ACTORS is complete."""
    import workers.payments
    import workers.reservations  # noqa: F401


def recover_dead_consumers(broker: dramatiq.Broker, queue: str) -> None:  # type: ignore[type-arg]
    """Put the messages a dead process had fetched from `queue` back on it, now (see partitions.py)."""
    dispatch(broker, "qsize", queue, client=broker.client, maintenance=True)  # type: ignore[attr-defined]
