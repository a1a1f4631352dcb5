"""The fair start's draw at scale: open the queue to N pre-queued fans in drawn order, in-process against Redis.

    python -m bench.draw_bench                       # 5,000 and 1,000,000 entrants
    python -m bench.draw_bench --entrants 5000 200000

For each size it loads N pre-queued tokens the way `PreQueue.join` writes them (pipelined, so the
set-up takes seconds, not N script calls), then times what the leader does at the opening
(models/draws.py): the snapshot of the drawn order (slices of `SNAPSHOT_SLICE` members, one
script each) and opening the gate, and, separately, copying the snapshot into MariaDB (the
publication). It reports the time until admission is open, the longest single script (how long
the shard is blocked at a time: target <= 50 ms), the copy time, and the verdict of recomputing
the published order from the seed (models.fairness.verify).

Env: BENCH_REDIS_URL (default redis://127.0.0.1:6379/5, flushed), BENCH_DATABASE_URL (default
mysql://root@127.0.0.1:3306/bench_draw, recreated). Results: bench/results/draw.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import redis

from bench.common import create_database, write
from models import fairness
from models.prequeue import SNAPSHOT_SLICE, PreQueue
from models.waiting_room import WaitingRoom


def load(r: redis.Redis, concert_id: int, n: int, seed: bytes) -> None:
    """N pre-queued tokens of one concert, as the join script writes them."""
    tag = f"wr:{{c:{concert_id}}}"
    opens = int(time.time() * 1000)
    pipe = r.pipeline(transaction=False)
    for user in range(1, n + 1):
        token = f"{concert_id}.bench{user:017d}"
        entrant = fairness.entrant_of(user)
        member = f"{fairness.draw_key(seed, entrant).hex()}:{token}"
        pipe.hset(
            f"{tag}:t:{token}",
            mapping={
                "user": user,
                "concert": concert_id,
                "status": "PREQUEUED",
                "p": f"{opens}:0",
                "entrant": entrant,
                "member": member,
            },
        )
        pipe.hset(f"{tag}:entrants", token, entrant)
        pipe.set(f"{tag}:u:{user}", token)
        pipe.zadd(f"{tag}:pre", {member: 0})
        if user % 5_000 == 0:
            pipe.execute()
    pipe.execute()


def release(pq: PreQueue, concert_id: int) -> tuple[float, float, int]:
    """(seconds, longest slice in seconds, released): the snapshot and the gate's opening, as
    models.draws.draw does them, with each snapshot slice timed."""
    longest = 0.0
    script = pq._snapshot

    def timed(*args: object, **kwargs: object) -> object:
        nonlocal longest
        t0 = time.perf_counter()
        try:
            return script(*args, **kwargs)
        finally:
            longest = max(longest, time.perf_counter() - t0)

    pq._snapshot = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    released = pq.snapshot(concert_id=concert_id)
    pq.open_gate(concert_id=concert_id)
    return time.perf_counter() - started, longest, released


def one_size(r: redis.Redis, n: int, db_url: str) -> dict[str, object]:
    """Load, release, verify and store one draw of n entrants."""
    from models import draws
    from models.db import init_database

    r.flushdb(asynchronous=True)
    seed = fairness.new_seed()
    t0 = time.perf_counter()
    load(r, 1, n, seed)
    load_s = time.perf_counter() - t0
    pq = PreQueue(r, waiting_ttl=300)
    r.config_resetstat()
    seconds, longest, released = release(pq, 1)
    evalsha = r.info("commandstats").get("cmdstat_evalsha", {})
    server_s = float(evalsha.get("usec", 0)) / 1e6
    drawn = pq.drawn_entrants(concert_id=1, start=0, count=n)
    verify_t0 = time.perf_counter()
    verdict = fairness.verify(
        seed_hex=seed.hex(),
        commitment=fairness.commitment_of(seed),
        entrants=drawn,
    )
    verify_s = time.perf_counter() - verify_t0
    room = WaitingRoom(r, active_limit=1, active_ttl=600, waiting_ttl=300)
    waiting = room.counts(concert_id=1)[0]
    init_database(db_url)
    t0 = time.perf_counter()
    draws._store(pq, 1, released)
    store_s = time.perf_counter() - t0
    result = {
        "entrants": n,
        "load_s": round(load_s, 2),
        "release_s": round(seconds, 3),
        "release_redis_server_s": round(server_s, 3),
        "longest_slice_ms": round(longest * 1000, 1),
        "slices": -(-n // SNAPSHOT_SLICE),
        "released": released,
        "waiting_after": waiting,
        "store_to_db_s": round(store_s, 2),
        "verify_s": round(verify_s, 2),
        "verdict": "OK" if verdict.ok else "; ".join(verdict.reasons),
    }
    print(
        f"{n:>9,} entrants: admission open after {seconds:.2f} s ({server_s:.2f} s of Redis time; "
        f"longest script {longest * 1000:.1f} ms), "
        f"store {store_s:.1f} s, verify {verify_s:.1f} s: {result['verdict']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entrants", type=int, nargs="+", default=[5_000, 1_000_000])
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_draw")
    create_database(db_url)
    from models import schema
    from models.db import init_database

    init_database(db_url)
    schema.drop_all()
    schema.migrate()
    r = redis.Redis.from_url(redis_url)
    results = [one_size(r, n, db_url) for n in args.entrants]
    r.flushdb(asynchronous=True)
    path = write("draw", {"date": dt.datetime.now(dt.UTC).isoformat(), "sizes": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
