"""The real payment-completed handler wrapped so a test can see, from any process, how often each
event was handed over, how often it changed something, make one fail, or crash the process.

Redis keys (the test's own database): `probe:calls` and `probe:effects` (HASH eventId -> count),
`probe:faults` (SET of eventIds whose handling raises), `probe:crash-after` (an eventId: the
process SIGKILLs itself right after handling it, before the poll's offsets are committed).

`python -m tests.support.consumer_probe` runs `consume()` with it, in the environment's settings
(REDIS_URL, KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL), retry interval PROBE_RETRY_INTERVAL seconds.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

CALLS, EFFECTS, FAULTS, CRASH_AFTER = "probe:calls", "probe:effects", "probe:faults", "probe:crash-after"


def probe_handler(redis: Any) -> Callable[[bytes], object]:
    """handle_event, counted per event id, failing for the ids in `probe:faults`."""
    from workers.events.consumer import handle_event

    def handle(value: bytes) -> object:
        event_id = str(json.loads(value)["eventId"])
        redis.hincrby(CALLS, event_id, 1)
        if redis.sismember(FAULTS, event_id):
            raise RuntimeError(f"downstream fault for {event_id}")
        did = handle_event(value)
        if did:
            redis.hincrby(EFFECTS, event_id, 1)
        crash_after = redis.get(CRASH_AFTER)
        if crash_after is not None and crash_after.decode() == event_id:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash mid-batch: nothing after this runs
        return did

    return handle


def counts(redis: Any, key: str) -> dict[str, int]:
    """A probe counter as {eventId: count}."""
    return {k.decode(): int(v) for k, v in redis.hgetall(key).items()}


def main() -> None:
    """Consume with the probe handler until SIGTERM (or until the probe kills the process)."""
    import redis

    from config.bootstrap import bootstrap
    from config.settings import Settings
    from workers.events.consumer import consume

    settings = Settings.from_env()
    bootstrap(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    consume(
        stop,
        bootstrap_servers=settings.kafka_bootstrap_servers or "",
        handler=probe_handler(redis.Redis.from_url(settings.redis_url)),
        interval=float(os.environ.get("PROBE_RETRY_INTERVAL", "1.0")),
    )


if __name__ == "__main__":
    main()
