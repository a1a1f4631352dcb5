"""Waiting-room benchmark: rank lookup at 1,000,000 waiting tokens (Redis through the domain
function vs MySQL COUNT(*) on a 1M-row table), and token-issue throughput through the domain
function as a ratio of a raw redis-py ZADD loop with the same threads and connections.

    .venv/bin/python -m bench.queue_bench [--tokens 1000000] [--issues 20000] [--threads 8]

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_queue, created if missing),
BENCH_REDIS_URL (default redis://127.0.0.1:6379/8, flushed).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any
from urllib.parse import urlparse

import jwt
import pymysql
import redis

from bench.common import connect, create_database, machine, pct, run_threads, summary_ms, write
from config.settings import Settings
from models.waiting_room import Rate, WaitingRoom, _keys

CONCERT = 1


def _mysql(url: str) -> pymysql.Connection:  # type: ignore[type-arg]
    create_database(url)
    return connect(url, urlparse(url).path.lstrip("/"))


def load_mysql(conn: pymysql.Connection, n: int) -> None:  # type: ignore[type-arg]
    """The seed's design: a queue_tokens table, rank = COUNT(*) of WAITING rows with a smaller id."""
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS queue_tokens")
        cur.execute(
            "CREATE TABLE queue_tokens (id BIGINT AUTO_INCREMENT PRIMARY KEY, concert_id BIGINT NOT NULL, "
            "user_id BIGINT NOT NULL, token CHAR(36) NOT NULL, status VARCHAR(16) NOT NULL DEFAULT 'WAITING', "
            "created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), "
            "KEY idx_queue_tokens_status_id (status, id)) ENGINE=InnoDB"
        )
        batch = 10_000
        for start in range(0, n, batch):
            rows = [(CONCERT, i, f"{i:036d}") for i in range(start, min(n, start + batch))]
            cur.executemany("INSERT INTO queue_tokens (concert_id, user_id, token) VALUES (%s, %s, %s)", rows)
        cur.execute("ANALYZE TABLE queue_tokens")


def load_redis(room: WaitingRoom, r: redis.Redis, n: int, samples: int) -> list[str]:
    """n waiting tokens; every n/samples-th is issued through the domain function (a real token at that rank)."""
    k = _keys(CONCERT)
    every = max(1, n // samples)
    real: list[str] = []
    pipe = r.pipeline(transaction=False)
    for i in range(1, n + 1):
        if i % every == 0:
            pipe.set(k["seq"], i - 1)  # the issue script's INCR gives this token sequence i
            pipe.execute()
            real.append(room.issue(user_id=10_000_000 + i, concert_id=CONCERT).token)
            continue
        pipe.zadd(k["waiting"], {f"filler-{i}": i})
        if i % 10_000 == 0:
            pipe.execute()
    pipe.set(k["seq"], n)
    pipe.execute()
    return real


def rank_lookup(room: WaitingRoom, conn: pymysql.Connection, tokens: list[str], rounds: int) -> dict:  # type: ignore[type-arg]
    """Interleave the two lookups for the same positions."""
    redis_s: list[float] = []
    mysql_s: list[float] = []
    ranks: list[int] = []
    with conn.cursor() as cur:
        for _ in range(rounds):
            for token in tokens:
                t0 = time.perf_counter()
                info = room.status(token=token, touch=False)
                redis_s.append(time.perf_counter() - t0)
                ranks.append(info.rank)
                t0 = time.perf_counter()
                cur.execute("SELECT COUNT(*) FROM queue_tokens WHERE status = 'WAITING' AND id < %s", (info.rank,))
                cur.fetchone()
                mysql_s.append(time.perf_counter() - t0)
    r, m = summary_ms(redis_s), summary_ms(mysql_s)
    return {
        "redis_zrank_domain": r,
        "mysql_count": m,
        "median_rank": sorted(ranks)[len(ranks) // 2],
        "ratio_p50": round(m["p50_ms"] / r["p50_ms"], 1),
    }


BENCH_SECRET = "bench-jwt-secret-0123456789abcdef0123456789"


def _signed(user_id: int, key: Any, algorithm: str) -> str:
    return jwt.encode({"sub": str(user_id), "exp": int(time.time()) + 3600}, key, algorithm=algorithm)


def jwt_verification(samples: int) -> dict:
    """p50/p99 of verifying one bearer JWT as web/auth.py does (HS256 secret; ES256 P-256 PEM key)."""
    import tempfile

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from web.auth import Verifier

    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with tempfile.NamedTemporaryFile(suffix=".pem", delete=False) as f:
        f.write(pem)
    out: dict[str, Any] = {}
    for name, settings, key, alg in (
        ("HS256", Settings().with_(auth_jwt_secret=BENCH_SECRET), BENCH_SECRET, "HS256"),
        ("ES256", Settings().with_(auth_jwt_public_key_file=f.name), private, "ES256"),
    ):
        verifier = Verifier(settings)
        tokens = [_signed(1 + i, key, alg) for i in range(samples)]
        times = []
        for token in tokens:
            t0 = time.perf_counter()
            verifier.user_id(token)
            times.append((time.perf_counter() - t0) * 1e6)
        out[name] = {"p50_us": round(pct(times, 0.5), 1), "p99_us": round(pct(times, 0.99), 1), "samples": samples}
    os.unlink(f.name)
    return out


def _join_rates(user_id: int) -> tuple[Rate, ...]:
    """The route's join limits at their defaults (web/queue.py _join_rates), each fan from its own address."""
    address = f"10.{user_id >> 16 & 255}.{user_id >> 8 & 255}.{user_id & 255}"
    return (Rate(f"u:{user_id}", 30, 60_000), Rate(f"ip:{address}", 200, 1_000))


def issue_throughput(url: str, issues: int, n_threads: int, rounds: int = 7) -> dict:
    """Domain issue() vs raw ZADD, same thread and connection count, side by side in `rounds` rounds.

    The domain side is what POST /queue/tokens does past HTTP: verify the fan's bearer JWT (HS256,
    web/auth.py) for the user id, then issue_limited() with the route's two default join limits
    (RATE_LIMIT_ISSUE_USER 30/minute per user, RATE_LIMIT_ISSUE_IP 200/second per address; each fan
    from its own address, as at a real opening) counted inside the script, as web/queue.py does
    (tokens signed beforehand, as the identity provider would).
    A fourth loop is the raw ZADD preceded by the same verification (what the check costs on its own);
    a fifth sends the ZADD on a bare connection of the thread's own (`ratio_to_wire`): the floor of
    the wire, past redis-py's command path, which the join's script also skips since 2026-12-03
    (models.redis_support.DirectScripts), so that figure says what the join still costs beyond the
    wire. Each round runs the loops back to back, in an order that rotates from round to round, and
    gives one ratio per side (domain ÷ raw of the same round); the verdict is the median of those
    ratios. On this shared machine the load moves by the second, so a best-of-N taken separately
    per side (`ratio_best_of`, the first version of this figure) compared different moments.
    """
    import statistics

    from web.auth import Verifier

    per = issues // n_threads
    verifier = Verifier(Settings().with_(auth_jwt_secret=BENCH_SECRET))
    results: dict[str, list[float]] = {
        "domain": [],
        "raw_zadd": [],
        "domain_without_jwt": [],
        "raw_zadd_with_jwt": [],
        "raw_zadd_wire": [],
    }
    for round_no in range(rounds):
        concert = 1000 + round_no
        clients = [redis.Redis.from_url(url, decode_responses=True) for _ in range(n_threads)]
        rooms = [WaitingRoom(c, active_limit=1, active_ttl=600, waiting_ttl=300) for c in clients]
        first = 1 + round_no * per * n_threads  # new fans every round: every issue creates a token
        bearers = [_signed(first + n, BENCH_SECRET, "HS256") for n in range(per * n_threads)]
        # other fans for the ceiling loop (a token verified once is remembered: each loop needs new ones)
        others = [_signed(10**12 + first + n, BENCH_SECRET, "HS256") for n in range(per * n_threads)]

        def domain(
            i: int, concert: int = concert, rooms: list[WaitingRoom] = rooms, bearers: list[str] = bearers
        ) -> None:
            for j in range(per):
                user = verifier.user_id(bearers[i * per + j])
                rooms[i].issue_limited(user_id=user, concert_id=concert, rates=_join_rates(user))

        def raw(i: int, concert: int = concert, clients: list[redis.Redis] = clients) -> None:
            c = clients[i]
            key = f"raw:{{c:{concert}}}:waiting"
            for j in range(per):
                c.zadd(key, {f"u{i}-{j}": i * per + j})

        def bare(i: int, concert: int = concert + 100, rooms: list[WaitingRoom] = rooms) -> None:
            for j in range(per):
                user = 1 + i * per + j
                rooms[i].issue_limited(user_id=user, concert_id=concert, rates=_join_rates(user))

        def raw_jwt(
            i: int, concert: int = concert, clients: list[redis.Redis] = clients, others: list[str] = others
        ) -> None:
            # the ceiling: the raw loop with the same verification, i.e. a join that cost no more than a ZADD
            c = clients[i]
            key = f"raw:{{c:{concert}}}:jwt"
            for j in range(per):
                c.zadd(key, {f"u{verifier.user_id(others[i * per + j])}": i * per + j})

        def raw_wire(i: int, concert: int = concert, clients: list[redis.Redis] = clients) -> None:
            # the wire's floor: a ZADD sent and read on a bare connection of the thread's own, past
            # redis-py's command path, as the join now sends its script (models.redis_support.DirectScripts)
            pool = clients[i].connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            key = f"raw:{{c:{concert}}}:wire"
            for j in range(per):
                conn.send_command("ZADD", key, i * per + j, f"u{i}-{j}")
                conn.read_response()
            conn.disconnect()

        loops = [
            ("domain", domain),
            ("domain_without_jwt", bare),
            ("raw_zadd", raw),
            ("raw_zadd_with_jwt", raw_jwt),
            ("raw_zadd_wire", raw_wire),
        ]
        for name, work in loops[round_no % len(loops) :] + loops[: round_no % len(loops)]:
            results[name].append(per * n_threads / run_threads(n_threads, work))
        for c in clients:
            c.close()
    best = {k: max(v) for k, v in results.items()}
    raw_rounds = results["raw_zadd"]
    with_jwt = [d / r for d, r in zip(results["domain"], raw_rounds, strict=True)]
    without_jwt = [d / r for d, r in zip(results["domain_without_jwt"], raw_rounds, strict=True)]
    jwt_only = [d / r for d, r in zip(results["raw_zadd_with_jwt"], raw_rounds, strict=True)]
    to_wire = [d / r for d, r in zip(results["domain"], results["raw_zadd_wire"], strict=True)]
    return {
        "issues_per_s_domain": round(statistics.median(results["domain"])),
        "zadd_per_s_raw": round(statistics.median(raw_rounds)),
        "ratio": round(statistics.median(with_jwt), 2),
        "ratio_without_jwt": round(statistics.median(without_jwt), 2),
        "ratio_raw_with_jwt": round(statistics.median(jwt_only), 2),
        "ratio_to_wire": round(statistics.median(to_wire), 2),
        "zadd_per_s_wire": round(statistics.median(results["raw_zadd_wire"])),
        "ratio_per_round": [round(x, 2) for x in with_jwt],
        "ratio_best_of": round(best["domain"] / best["raw_zadd"], 2),
        "threads": n_threads,
        "ops_per_round": per * n_threads,
        "rounds": {k: [round(x) for x in v] for k, v in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--issues", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--issue-rounds", type=int, default=7, help="side-by-side rounds of the issue comparison")
    parser.add_argument("--jwt-samples", type=int, default=2000)
    args = parser.parse_args()
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_queue")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    room = WaitingRoom(r, active_limit=1, active_ttl=600, waiting_ttl=86_400)
    room.issue(user_id=1, concert_id=CONCERT)  # takes the single active slot: everyone else waits

    t0 = time.perf_counter()
    conn = _mysql(db_url)
    load_mysql(conn, args.tokens)
    mysql_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = load_redis(room, r, args.tokens, args.samples)
    redis_load = time.perf_counter() - t0
    print(f"loaded {args.tokens:,} tokens: MySQL {mysql_load:.1f} s, Redis {redis_load:.1f} s")

    ranks = rank_lookup(room, conn, tokens, args.rounds)
    throughput = issue_throughput(redis_url, args.issues, args.threads, args.issue_rounds)
    verification = jwt_verification(args.jwt_samples)
    load = [round(x, 2) for x in os.getloadavg()]  # the figures move with the machine's load: kept beside them
    path = write(
        "queue",
        {
            "machine": {**machine(), "loadavg_at_end": load},
            "tokens": args.tokens,
            "rank_lookup": ranks,
            "issue_throughput": throughput,
            "jwt_verification": verification,
        },
    )
    r.flushdb()
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS queue_tokens")
    conn.close()

    print(f"\nrank lookup at {args.tokens:,} waiting (median rank {ranks['median_rank']:,})")
    print(f"  {'':28}{'p50 ms':>10}{'p99 ms':>10}")
    for name in ("mysql_count", "redis_zrank_domain"):
        print(f"  {name:28}{ranks[name]['p50_ms']:>10.3f}{ranks[name]['p99_ms']:>10.3f}")
    print(f"  MySQL / Redis (p50): {ranks['ratio_p50']}x   (seed: ~150 ms vs ~0.1 ms)")
    print(
        f"\ntoken issue, {throughput['threads']} threads: domain {throughput['issues_per_s_domain']:,}/s, "
        f"raw ZADD {throughput['zadd_per_s_raw']:,}/s (medians), ratio {throughput['ratio']} (target >= 0.5; "
        "the domain side verifies each fan's JWT)"
    )
    print(f"  without the JWT check: ratio {throughput['ratio_without_jwt']}")
    print(f"  the raw ZADD loop with the same JWT check: ratio {throughput['ratio_raw_with_jwt']}")
    print(
        f"  against a ZADD sent on a bare connection (the wire's floor, {throughput['zadd_per_s_wire']:,}/s): "
        f"ratio {throughput['ratio_to_wire']}"
    )
    print(
        f"  per round (domain ÷ raw of that round; the verdict is their median): {throughput['ratio_per_round']}; "
        f"best of each side taken apart: {throughput['ratio_best_of']}"
    )
    for name, figures in verification.items():
        print(f"JWT verification {name}: p50 {figures['p50_us']} us, p99 {figures['p99_us']} us")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
