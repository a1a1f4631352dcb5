"""The fair start's draw at scale: open the queue to N pre-queued fans in drawn order, in-process against Redis.

    python -m bench.draw_bench                       # 5,000 and 1,000,000 entrants
    python -m bench.draw_bench --entrants 5000 200000

For each size it loads N pre-queued tokens the way `PreQueue.join` writes them (pipelined, so the
set-up takes seconds, not N script calls), then times what the leader does at the opening
(models/draws.py): the opening script (the gate opens, the entrants are frozen: admission in
drawn order starts here), an admission pass right after it (the first 100 admitted must be the
first 100 of the drawn order), then the publication: the drawn order computed from the frozen
entrants and the seed (HSCAN slices of `SCAN_SLICE`) and stored in MariaDB. It reports the time
until admission is open, the longest single Redis call of the whole draw (how long the shard is
blocked at a time: target <= 50 ms), the publication's time, and the verdict of recomputing the
published order from the seed (models.fairness.verify).

Env: BENCH_REDIS_URL (default redis://127.0.0.1:6379/5, flushed), BENCH_DATABASE_URL (default
mysql://root@127.0.0.1:3306/bench_draw, recreated). Results: bench/results/draw.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time

import redis

from bench.common import create_database, machine, write
from models import fairness
from models.prequeue import PreQueue
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


class Timed:
    """Every Redis command of the draw timed from the client: the longest is how long the shard was held."""

    def __init__(self, r: redis.Redis) -> None:
        self.longest = 0.0
        self.calls = 0
        real = r.execute_command

        def timed(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.calls += 1
                self.longest = max(self.longest, time.perf_counter() - t0)

        r.execute_command = timed  # type: ignore[method-assign]


def one_size(n: int, redis_url: str, db_url: str) -> dict[str, object]:
    """Load, open, admit, publish and verify one draw of n entrants."""
    from models import draws
    from models.db import init_database

    loader = redis.Redis.from_url(redis_url)
    loader.flushdb()
    seed = fairness.new_seed()
    t0 = time.perf_counter()
    load(loader, 1, n, seed)
    load_s = time.perf_counter() - t0
    r = redis.Redis.from_url(redis_url)  # the leader's client, every command timed
    timer = Timed(r)
    pq = PreQueue(r, waiting_ttl=300)
    room = WaitingRoom(r, active_limit=100, active_ttl=600, waiting_ttl=300)
    r.ping()
    loader.config_resetstat()
    started = time.perf_counter()
    released = pq.open_gate(concert_id=1)
    open_s = time.perf_counter() - started
    admitted = room.admit(concert_id=1).admitted
    first_admitted_s = time.perf_counter() - started
    commandstats = loader.info("commandstats")
    open_server_us = float(commandstats.get("cmdstat_evalsha", {}).get("usec", 0))
    active = [t.decode() for t in loader.zrange("wr:{c:1}:active", 0, -1)]
    t1 = time.perf_counter()
    drawn = pq.drawn_order(concert_id=1, seed=seed)
    order_s = time.perf_counter() - t1
    init_database(db_url)
    t2 = time.perf_counter()
    draws._store(1, drawn)
    store_s = time.perf_counter() - t2
    pq.finish(concert_id=1)
    published_s = time.perf_counter() - started
    # admission followed the drawn order: the admitted are exactly the first `admitted` entrants drawn
    token_of = {fairness.entrant_of(u): f"1.bench{u:017d}" for u in range(1, n + 1)}
    in_order = set(active) == {token_of[e] for e in drawn[:admitted]}
    verify_t0 = time.perf_counter()
    verdict = fairness.verify(seed_hex=seed.hex(), commitment=fairness.commitment_of(seed), entrants=drawn)
    verify_s = time.perf_counter() - verify_t0
    waiting = room.counts(concert_id=1)[0]
    result = {
        "entrants": n,
        "load_s": round(load_s, 2),
        "admission_open_s": round(open_s, 4),
        "open_and_first_pass_redis_ms": round(open_server_us / 1000, 2),
        "first_admission_pass_done_s": round(first_admitted_s, 4),
        "admitted_first_pass": admitted,
        "admitted_in_drawn_order": in_order,
        "longest_redis_call_ms": round(timer.longest * 1000, 1),
        "redis_calls": timer.calls,
        "drawn_order_s": round(order_s, 2),
        "store_to_db_s": round(store_s, 2),
        "published_s": round(published_s, 2),
        "released": released,
        "waiting_after": waiting,
        "verify_s": round(verify_s, 2),
        "verdict": "OK" if verdict.ok else "; ".join(verdict.reasons),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"{n:>9,} entrants: admission open after {open_s * 1000:.1f} ms (one script; with the first admission "
        f"pass {open_server_us / 1000:.2f} ms of Redis time), first pass admitted {admitted} in drawn order: "
        f"{in_order}; longest Redis call {timer.longest * 1000:.1f} ms; "
        f"publication: order {order_s:.2f} s + store {store_s:.1f} s = "
        f"{published_s:.1f} s after the opening; verify {verify_s:.1f} s: {result['verdict']} "
        f"(load avg {os.getloadavg()[0]:.2f})",
        flush=True,
    )
    r.close()
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
    results = [one_size(n, redis_url, db_url) for n in args.entrants]
    redis.Redis.from_url(redis_url).flushdb(asynchronous=True)
    path = write("draw", {"date": dt.datetime.now(dt.UTC).isoformat(), "machine": machine(), "sizes": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
