"""docs/CAPACITY.md from the measured unit costs, checked by a simulation of a whole sale.

The simulation steps one second at a time over numpy arrays, one slot per fan (1M fans fit):
fans arrive uniformly within the first minute in index order (= queue order); every second the
admission pass fills the free active slots FIFO; an admitted fan is a buyer with probability
1 − NO_SHOW (views the seat map VIEWS times, holds after BROWSE_S, pays PAY_S later and leaves)
or a no-show (holds nothing, the slot frees at ACTIVE_TTL). A waiting fan polls when its
pollAfter is due: paced (a quarter of rank ÷ measured admission rate, 1..30 s) or fixed 1 s / 5 s.
Once every seat is sold, every waiter leaves at its next poll (soldOut). The web and Redis costs
of each request type come from bench/results/unit_costs.json (bench/unit_costs.py).

    .venv/bin/python -m bench.capacity        # writes docs/CAPACITY.md and docs/img/capacity_*.png
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.poll_memo import reach as memo_reach

ROOT = Path(__file__).resolve().parent.parent
COSTS = ROOT / "bench" / "results" / "unit_costs.json"
DOC = ROOT / "docs" / "CAPACITY.md"
IMG = ROOT / "docs" / "img"

ARRIVAL_S = 60  # every fan arrives within the first minute (SPEC §9)
NO_SHOW = 0.2  # admitted fans who never hold
BROWSE_S, PAY_S = 20, 20  # seat map → hold, hold → payment
VIEWS = 3  # seat-map reads per buyer
ACTIVE_TTL = 600
CORE_BUSY = 0.6  # plan cores at 60 % busy
ADMIT_INTERVAL = 1.0  # s: the default; the poll memo's reach depends on it
HOLD_DB_MS, PAY_DB_MS = 1000 / 2354, 2 * 1000 / 2354  # bench/results/pipeline.json raw database tx/s


@dataclass(frozen=True)
class Sale:
    fans: int
    seats: int
    active_limit: int


def poll_interval(mode: str, rank: np.ndarray, rate: float) -> np.ndarray:
    """Seconds to the next poll of fans at these ranks."""
    if mode == "fixed1":
        return np.ones_like(rank, dtype=float)
    if mode == "fixed5":
        return np.full(rank.shape, 5.0)
    return np.clip(rank / max(rate, 1e-9) / 4, 1.0, 30.0)


def simulate(sale: Sale, mode: str, horizon: int = 4 * 3600) -> dict[str, Any]:
    """One sale; per-second series and per-fan outcomes."""
    f = sale.fans
    arrive = np.arange(f) * (ARRIVAL_S / f)
    rng = np.random.default_rng(7)
    buyer = rng.random(f) >= NO_SHOW
    next_poll = arrive.copy()  # the join answers first
    admitted_at = np.full(f, np.inf)
    learned_at = np.full(f, np.inf)
    gone = np.zeros(f, dtype=bool)
    polls = np.zeros(f, dtype=np.int32)
    head, sold, active_until = 0, 0, []  # FIFO head; slot release times
    admissions: list[tuple[int, int]] = []
    keys = ("t", "polls", "memo_polls", "joins", "seat_maps", "holds", "payments", "sold", "waiting")
    series: dict[str, list[int]] = {k: [] for k in keys}
    pay_due: dict[int, int] = {}
    sold_out_at = None
    for t in range(horizon):
        active_until = [u for u in active_until if u > t]
        joined = int(np.searchsorted(arrive, t + 1) - np.searchsorted(arrive, t))
        free = sale.active_limit - len(active_until) if sold_out_at is None else 0
        arrived = int(np.searchsorted(arrive, t + 1))
        take = max(0, min(free, arrived - head))
        idx = np.arange(head, head + take)
        idx = idx[~gone[idx]] if take else idx
        admitted_at[idx] = t
        active_until += [t + (BROWSE_S + PAY_S if buyer[i] else ACTIVE_TTL) for i in idx]
        buyers = int(buyer[idx].sum())
        if buyers:
            pay_due[t + BROWSE_S + PAY_S] = pay_due.get(t + BROWSE_S + PAY_S, 0) + buyers
        head += take
        admissions.append((t, len(idx)))
        window = [n for s, n in admissions[-60:]]
        rate = sum(window) / max(1, min(60, t + 1))
        paid = min(pay_due.pop(t, 0), sale.seats - sold)
        sold += paid
        if sold >= sale.seats and sold_out_at is None:
            sold_out_at = t
        due = (next_poll <= t + 1) & ~gone & np.isinf(learned_at) & (arrive <= t + 1)
        who = np.nonzero(due)[0]
        polls[who] += 1
        newly = who[admitted_at[who] <= t]
        learned_at[newly] = t
        waiting = who[admitted_at[who] > t]
        # the web process's poll memo answers a fan beyond the active limit + 1,000, or any at a sell-out
        if sold_out_at is not None:
            gone[waiting] = True
            memo = len(waiting)
        else:
            rank = (waiting - head + 1).astype(float)
            next_poll[waiting] = t + poll_interval(mode, rank, rate or sale.active_limit / ACTIVE_TTL)
            memo = int((rank > memo_reach(sale.active_limit, ADMIT_INTERVAL)).sum())
        holds = int(buyer[(admitted_at == t - BROWSE_S)].sum()) if t >= BROWSE_S else 0
        series["t"].append(t)
        series["polls"].append(len(who))
        series["memo_polls"].append(memo)
        series["joins"].append(joined)
        series["seat_maps"].append(VIEWS * holds)
        series["holds"].append(holds)
        series["payments"].append(paid)
        series["sold"].append(sold)
        series["waiting"].append(int(arrived - head - gone[head:arrived].sum()))
        if (sold_out_at is not None and t > sold_out_at + 31) or (head >= f and not pay_due):
            break
    got_in = np.isfinite(admitted_at)
    wait = admitted_at[got_in] - arrive[got_in]
    order = np.nonzero(got_in)[0]
    return {
        "mode": mode,
        "series": series,
        "sold_out_s": sold_out_at,
        "admitted": int(got_in.sum()),
        "polls_total": int(polls.sum()),
        "polls_per_admitted": float(polls[got_in].mean()) if got_in.any() else 0.0,
        "wait_p50_s": float(np.percentile(wait, 50)) if wait.size else 0.0,
        "wait_p95_s": float(np.percentile(wait, 95)) if wait.size else 0.0,
        "learn_delay_p95_s": _p95(learned_at, admitted_at, got_in & np.isfinite(learned_at)),
        "fifo_kept": bool(np.all(np.diff(admitted_at[order]) >= 0)),
    }


def _p95(later: np.ndarray, earlier: np.ndarray, mask: np.ndarray) -> float:
    return float(np.percentile(later[mask] - earlier[mask], 95)) if mask.any() else 0.0


OVERHEAD = ROOT / "bench" / "results" / "server_overhead.json"


def server_overhead() -> dict[str, float]:
    """gunicorn's own CPU µs a request around the app (bench/server_overhead.py): kept alive, new connection.
    Zero when the file is missing (the model then counts the app's in-process cost only)."""
    if not OVERHEAD.exists():
        return {"kept_alive": 0.0, "new_connection": 0.0}
    found = json.loads(OVERHEAD.read_text())
    return {"kept_alive": found["overhead_kept_alive_us"], "new_connection": found["overhead_new_connection_us"]}


def capacity(sale: Sale, run: dict[str, Any], costs: dict[str, Any]) -> dict[str, Any]:
    """Peak request rates of the run turned into cores, shards and partitions: a request's web CPU is
    the app's in-process cost plus gunicorn's (a join on the fan's new connection, the rest kept alive)."""
    s = {k: np.array(v, dtype=float) for k, v in run["series"].items()}
    served = server_overhead()
    web_us = {"poll": costs["poll"]["web_cpu_us"] + served["kept_alive"]}
    web_us["issue"] = costs["issue"]["web_cpu_us"] + served["new_connection"]
    redis_us = {k: costs[k]["redis_server_us"] for k in ("poll", "issue")}
    web_us["seat_map"] = costs["seat_map_fan"]["web_cpu_us"] + served["kept_alive"]  # its token checked in Redis
    redis_us["seat_map"] = costs["seat_map_fan"]["redis_server_us"]
    # polls the memo answers (no round trip; its keep-alive flush in Redis µs); none measured: all Redis's
    memo_cost = costs.get("memo_poll")
    memo = s["memo_polls"] if memo_cost else np.zeros_like(s["polls"])
    web_us["memo_poll"] = memo_cost["web_cpu_us"] + served["kept_alive"] if memo_cost else 0.0
    redis_us["memo_poll"] = memo_cost["redis_server_us"] if memo_cost else 0.0
    redis_polls = s["polls"] - memo
    web = redis_polls * web_us["poll"] + memo * web_us["memo_poll"]
    web += s["joins"] * web_us["issue"] + s["seat_maps"] * web_us["seat_map"]
    red = redis_polls * redis_us["poll"] + memo * redis_us["memo_poll"]
    red += s["joins"] * redis_us["issue"] + s["seat_maps"] * redis_us["seat_map"]
    tx = s["holds"] + s["payments"]
    peak_rps = float((s["polls"] + s["joins"] + s["seat_maps"] + s["holds"] + s["payments"]).max())
    return {
        "fans": sale.fans,
        "seats": sale.seats,
        "active_limit": sale.active_limit,
        "peak_rps": peak_rps,
        "web_cores": math.ceil(float(web.max()) / 1e6 / CORE_BUSY),
        "redis_shards": max(1, math.ceil(float(red.max()) / 1e6 / CORE_BUSY)),
        "mysql_tx_s": float(tx.max()),
        "mysql_busy_ms_s": float((s["holds"] * HOLD_DB_MS + s["payments"] * PAY_DB_MS).max()),
        "partitions": max(16, 2 ** math.ceil(math.log2(max(1.0, float(tx.max()) / 100)))),
        "kafka_partitions": max(6, math.ceil(float(s["payments"].max()) / 1000)),
        "sell_out_s": run["sold_out_s"],
        "polls_per_admitted": run["polls_per_admitted"],
        "memo_share": float(memo.sum() / max(1.0, float(s["polls"].sum()))),
        "wait_p50_s": run["wait_p50_s"],
        "wait_p95_s": run["wait_p95_s"],
    }


def plot(runs: dict[str, dict[str, Any]], name: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, run in runs.items():
        s = run["series"]
        a.plot(s["t"], s["polls"], label=f"polls/s, {mode}")
        b.plot(s["t"], s["sold"], label=mode)
    a.set_yscale("log")
    a.set_xlabel("s since the opening")
    a.set_title("poll requests per second")
    a.legend()
    b.set_xlabel("s since the opening")
    b.set_title("seats sold")
    b.legend()
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / f"capacity_{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return f"img/{path.name}"


ROWS = (Sale(100_000, 1_000, 500), Sale(300_000, 30_000, 5_000), Sale(1_000_000, 50_000, 10_000))


def fan_seat_map(costs: dict[str, Any]) -> dict[str, Any]:
    """The cost of a fan's seat-map read, for the model.

    unit_costs' seat_map repeats one fan's token, which a process answers from its 0.5 s copies
    (no Redis); a buyer's three reads are seconds apart, so each checks its token in Redis: one
    round trip running the poll script (its server µs), and the web CPU request_profile measures
    for many fans in turn (seat_fans), when that file exists.
    """
    found = dict(costs["seat_map"])
    profile = COSTS.parent / "request_profile.json"
    if profile.exists():
        found["web_cpu_us"] = max(
            found["web_cpu_us"], json.loads(profile.read_text())["after"]["seat_fans"]["web_cpu_us"]
        )
    found["redis_round_trips"] = max(found["redis_round_trips"], 1.0)
    found["redis_server_us"] = max(found["redis_server_us"], costs["poll"]["redis_server_us"])
    return found


RPS_LABELS = (
    ("healthz", "healthz"),
    ("seat_map", "cached seat map (one fan)"),
    ("seat_map_fans", "cached seat map ({fans:,} fans in turn)"),
    ("poll", "waiting poll"),
    ("join", "join"),
)


def _rps_sentence(lead: str, rps: dict[str, Any]) -> str:
    """One rps_bench result as a sentence: its date and load, and each ratio it measured to the bare route
    (with the middle half of its rounds' ratios when the run has them)."""
    loads = rps.get("loadavg_each_round") or [[0.0]]
    parts = []
    for name, label in RPS_LABELS:
        if f"{name}_ratio" not in rps:
            continue
        ratio = f"{rps[f'{name}_ratio']:.2f}"
        iqr = rps.get(f"{name}_ratio_iqr")
        spread = (
            f" (middle half of {len(rps['ratios_each_pair'][name])} rounds {iqr[0]:.2f}–{iqr[1]:.2f})" if iqr else ""
        )
        parts.append(f"{label.format(fans=rps.get('active_fans', 0))} {ratio}{spread}")
    return (
        f"{lead}, {rps['machine']['date_utc']} UTC, load average {loads[0][0]}–{max(x[0] for x in loads)}): "
        f"{', '.join(parts)} of the bare route's requests/s."
    )


def main() -> None:
    measured = json.loads(COSTS.read_text())
    costs = measured["after"]
    costs["seat_map_fan"] = fan_seat_map(costs)
    rows, big = [], {}
    for sale in ROWS:
        if sale.fans == 1_000_000:
            big = {mode: simulate(sale, mode) for mode in ("paced", "fixed1", "fixed5")}
            run = big["paced"]
        else:
            run = simulate(sale, "paced")
        rows.append(capacity(sale, run, costs))
        print(rows[-1])
    figure = plot(big, "1m")
    DOC.write_text(render(rows, big, figure, measured))
    print(f"written {DOC.relative_to(ROOT)}")


SALE = ROOT / "bench" / "results" / "flash_sale.json"


def _sale_check(rows: list[dict[str, Any]]) -> list[str]:
    """The model's web cores beside what the flash sale's web process spent a request (bench/flash_sale)."""
    if not SALE.exists():
        return []
    sale = json.loads(SALE.read_text())
    web = sale.get("web_cpu") or {}
    if not web.get("ms_per_request"):
        return []
    big = rows[-1]
    cores = math.ceil(big["peak_rps"] * web["ms_per_request"] / 1000 / CORE_BUSY)
    return [
        "",
        f"A check against the service served over HTTP: in the flash sale (`bench/flash_sale`, "
        f"{sale['machine']['date_utc']} UTC, 5,000 fans on 2 CPUs shared with the load generator) the web "
        f"process used {web['ms_per_request']:g} ms of CPU for each of the {web['requests']:,} requests it "
        f"answered (holds, payments and the floor's bare requests among them). At that cost the "
        f"{big['fans']:,}-fan row's peak of {big['peak_rps']:,.0f} requests/s would need **{cores} web cores** "
        f"where the model says {big['web_cores']}: plan between the two.",
    ]


def _overhead_lines() -> list[str]:
    if not OVERHEAD.exists():
        return ["(not measured: run `python -m bench.server_overhead`; the web cores below count the app only):"]
    o = json.loads(OVERHEAD.read_text())
    m = o["machine"]
    return [
        f"(`bench/server_overhead.py`, {m['date_utc']} UTC: the bare Flask route served by gunicorn with",
        f"`config/gunicorn.py` under wrk took {o['overhead_kept_alive_us']:.0f} µs of server CPU more than in-process",
        f"on a kept-alive connection and {o['overhead_new_connection_us']:.0f} µs on a new one; a join is charged the",
        "second, every other request the first. wrk sends back to back, as a loaded server's requests come;"
        + (
            f" under a paced load ({o['parameters']['paced_connections']:,} connections, a request every "
            f"{o['parameters']['paced_period_s']:g} s each, `bench/paced_client.py`) the overhead was "
            f"{o['overhead_paced_us']:.0f} µs, each request paying its own wake-ups: the flash-sale check below"
            " is that regime):"
            if "overhead_paced_us" in o
            else ")"
        ),
    ]


def render(rows: list[dict[str, Any]], big: dict[str, dict[str, Any]], figure: str, measured: dict[str, Any]) -> str:
    c = measured["after"]
    m = measured["machine"]
    out = [
        "# Capacity: what a sale of F fans and S seats needs",
        "",
        "<!-- Generated by `.venv/bin/python -m bench.capacity` from bench/results/unit_costs.json; do not edit. -->",
        "",
        f"Unit costs measured by `bench/unit_costs.py` on {m['cpus']} CPUs, {m['date_utc']} UTC (a machine shared",
        "with other work: the absolute µs are high, the ratios beside the bare route are the stable part;",
        "`seat_map` is one fan refreshing (a process's 0.5 s copies, no Redis), `seat_map_fan` a fan's read",
        "seconds after its last (token checked in Redis; web CPU from `bench/request_profile.py` seat_fans),",
        "which the model charges). The model adds what gunicorn itself costs a request around the app",
        *_overhead_lines(),
        "",
        "| request | web CPU µs | Redis server µs | Redis round trips |",
        "|---|---|---|---|",
    ]
    for op in ("poll", "early_poll", "memo_poll", "issue", "seat_map", "seat_map_fan", "healthz", "bare"):
        if op not in c:
            continue
        x = c[op]
        out.append(f"| {op} | {x['web_cpu_us']:.0f} | {x['redis_server_us']:.1f} | {x['redis_round_trips']:.1f} |")
    if measured.get("before"):
        from bench.unit_costs import table

        out += [
            "",
            "Before → after, both measured in that run (`--before`: "
            f"{measured.get('before_name') or 'an older checkout'}; {measured.get('n', 0):,} requests each,",
            f"in-process; load average at the end {measured.get('loadavg', ['?'])[0]}):",
            "",
            table(c, measured["before"]),
            "",
            "A waiting poll is one round trip (the poll script); the 0.05 above it is the process's control",
            "read (`HGETALL ctl:`), once per 0.5 s per process whatever the poll rate: 1 in 20 here, where",
            "MONITOR slows the 20 counted polls. Target: 1 round trip, ≤ 600 µs of web CPU per poll.",
            "A far-back fan's poll answered by the web process's poll memo (`memo_poll`, `models/poll_memo.py`)",
            "has no round trip of its own: its 0.1 are the control read and the memo's read of the concert",
            "(once per 0.25 s per process), and its Redis µs and web CPU include its share of the",
            "keep-alive flush that writes its poll time a second later.",
        ]
    trip = measured.get("journey")
    if trip:
        p = trip["per_phase"]
        out += [
            "",
            f"A whole fan journey (join, P polls, admission, seat map, hold and payment with `Prefer: wait=5`, "
            f"let go after payment; {trip['n']} journeys on MariaDB, the jobs on an in-process partition worker) "
            f"costs **{trip['fixed']:g} + {trip['per_poll']:g}·P Redis round trips**: join {p['join']:g}, "
            f"poll {p['poll']:g} each, admission {p['admission']:g} per admitted fan, seat map {p['seat_map']:g}, "
            f"hold {p['hold']:g} and payment {p['pay']:g} from the web, the two jobs {trip['worker_jobs']:g} on the "
            f"worker (its idle loop, {trip['worker_idle_per_s']:g}/s, subtracted), let go {p['let_go']:g}. "
            "Kafka and the outbox relay are not counted.",
        ]
    database = measured.get("database")
    if database:
        hold, pay = database["hold"], database["payment"]
        out += [
            "",
            f"On MariaDB a hold is {hold['statements']:g} SQL statements ({hold['ms_p50']} ms p50) and a payment "
            f"{pay['statements']:g} ({pay['ms_p50']} ms p50), COMMIT included (`bench/unit_costs.py`, "
            f"{database['n']} of each as the actors run them).",
        ]
    for name, lead in (
        (
            "rps.json",
            "Requests/s under gunicorn beside a bare Flask route, same machine and run (`bench/rps_bench.py`",
        ),
        ("rps_quiet.json", "Rerun with the machine otherwise idle (`bench/results/rps_quiet.json`"),
    ):
        path = COSTS.parent / name
        if path.exists():
            out += ["", _rps_sentence(lead, json.loads(path.read_text()))]
    out += [
        "",
        "## The model",
        "",
        f"Fans arrive within {ARRIVAL_S} s; {NO_SHOW:.0%} of admitted fans never hold (their slot frees at",
        f"ACTIVE_TTL, {ACTIVE_TTL} s); a buyer reads the seat map {VIEWS} times, holds after {BROWSE_S} s and pays",
        f"{PAY_S} s later. Polls are paced (pollAfterMs = a quarter of the estimated wait, 1–30 s). Cores are",
        f"planned at {CORE_BUSY:.0%} busy: web cores = peak Σ(rate × web CPU µs); Redis shards = peak",
        "Σ(rate × Redis server µs) per single-threaded shard (one replica each for failover; a poll writes",
        "its `p` field, so polls go to the primary). A fan further back than two admission passes can reach",
        "(2 × (active limit + 1,000)), and",
        "every waiting fan once the seats are sold, is answered by the web process's poll memo",
        "(`models/poll_memo.py`): no round trip, its keep-alive written by a flush once a second (the",
        "`memo_poll` row above: its Redis µs are that flush's); the model assumes each fan's polls reach",
        "the process that last asked Redis for it (a kept-alive connection). MySQL transactions/s = peak",
        "holds + payments (each a",
        "short transaction; the raw database did 2,354 tx/s on this machine, bench/results/pipeline.json).",
        "Partitions keep ≤ 100 seat jobs/s each; Kafka partitions ≤ 1,000 payments/s each (minimum 6).",
        "",
        "| fans | seats | active limit | peak req/s | web cores | Redis shards (+1 replica each) | MySQL tx/s"
        " (busy ms/s) | seat partitions | Kafka partitions | sell-out | polls per admitted fan | polls the memo answers"
        " | wait p50 / p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sell = f"{r['sell_out_s'] / 60:.0f} min" if r["sell_out_s"] is not None else "not within 4 h"
        out.append(
            f"| {r['fans']:,} | {r['seats']:,} | {r['active_limit']:,} | {r['peak_rps']:,.0f} | {r['web_cores']} "
            f"| {r['redis_shards']} | {r['mysql_tx_s']:,.0f} ({r['mysql_busy_ms_s']:,.0f}) | {r['partitions']} "
            f"| {r['kafka_partitions']} | {sell} "
            f"| {r['polls_per_admitted']:.1f} | {r['memo_share']:.0%} "
            f"| {r['wait_p50_s']:.0f} s / {r['wait_p95_s']:.0f} s |"
        )
    out += _sale_check(rows)
    out += [
        "",
        "## The simulation at 1M fans: paced against fixed 1 s and 5 s polling",
        "",
        "| polling | polls in total | polls per admitted fan | peak polls/s | wait p50 / p95 | admission seen"
        " (p95 delay) | FIFO kept | sell-out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, run in big.items():
        sell = f"{run['sold_out_s'] / 60:.0f} min" if run["sold_out_s"] is not None else "—"
        out.append(
            f"| {mode} | {run['polls_total']:,} | {run['polls_per_admitted']:.1f} | {max(run['series']['polls']):,} "
            f"| {run['wait_p50_s']:.0f} s / {run['wait_p95_s']:.0f} s | {run['learn_delay_p95_s']:.0f} s "
            f"| {run['fifo_kept']} | {sell} |"
        )
    out += [
        "",
        "Admission does not depend on how fans poll, so waits, order and sell-out are the same in the",
        "three runs; what changes is the poll load and how late a fan sees its admission (the",
        "simulation steps 1 s, so fixed 1 s shows 0). Peaks of holds and payments come in waves: a",
        "whole active limit admitted at once holds 20 s later (the operator's `admitPerSecond` spreads",
        "them); the MySQL column gives the busiest second, in transactions and in ms of transaction",
        "time at this machine's measured rate (more than 1,000 ms/s needs that many cores' worth of",
        "database, or a lower admission rate).",
        "",
        f"![polls per second and seats sold over time, 1M fans]({figure})",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
