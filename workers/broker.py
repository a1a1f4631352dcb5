"""Partitioned queues on Dramatiq's Redis broker, and the actor registry.

Every job about a seat (hold, cancel, expiry, payment) goes to the queue of the seat's
partition, `seats.p<N>` with N = seat_id % PARTITIONS (stable across processes, unlike
Python's salted hash()). One consumer thread owns a partition at a time (workers/partitions.py),
so the jobs of one seat run one after another.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq import Message

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


def send(broker: dramatiq.Broker, *, actor_name: str, route_seat: int, partitions: int, **kwargs: Any) -> Message:  # type: ignore[type-arg]
    """Enqueue a message for `actor_name` on the seat's partition (after the job record is written)."""
    if actor_name not in ACTORS:
        load_actors()
    partition = partition_of(route_seat, partitions)
    queue = queue_of(partition)
    broker.declare_queue(queue)
    message: Message[Any] = Message(queue_name=queue, actor_name=actor_name, args=(), kwargs=kwargs, options={})
    sent = broker.enqueue(message)
    pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
    pipe.lpush(wake_key(partition), 1)
    pipe.ltrim(wake_key(partition), 0, 0)
    pipe.execute()
    return sent


def load_actors() -> None:
    """Import every actor module so ACTORS is complete."""
    import workers.payments
    import workers.reservations  # noqa: F401
