"""PNG plots of the latest bench/results/*.json for docs/BENCHMARKS.md (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def _save(fig: Any, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # keeps legends placed outside the axes
    plt.close(fig)
    return path


def _stamp(ax: Any, d: dict[str, Any], script: str) -> None:
    m = d.get("machine", {})
    ax.annotate(
        f"{script} · {m.get('cpus', '?')} CPUs, {m.get('memory_gib', '?')} GiB · {m.get('date_utc', '?')} UTC",
        xy=(0, 0),
        xycoords="figure fraction",
        xytext=(4, 3),
        textcoords="offset points",
        fontsize=7,
        color="gray",
    )


def contention(d: dict[str, Any]) -> Path:
    labels = {"a_pipeline": "(a) pipeline", "a1_pipeline_unbatched": "(a1) unbatched", "b_redis_lock": "(b) Redis lock"}
    labels["b2_redis_lock_edge"] = "(b') lock + edge"
    labels["c_for_update"] = "(c) FOR UPDATE"
    labels["d_optimistic"] = "(d) optimistic"
    keys = [k for k in labels if k in d["strategies"]]
    st = [d["strategies"][k] for k in keys]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    x = range(len(keys))
    left.bar(list(x), [s["holds_per_second"] for s in st], color="#4477aa")
    left.set_ylabel("hold attempts / s")
    left.set_title("throughput (higher is better)")
    right.bar([i - 0.2 for i in x], [s["latency"]["p50_ms"] for s in st], width=0.4, label="p50")
    right.bar([i + 0.2 for i in x], [s["latency"]["p99_ms"] for s in st], width=0.4, label="p99")
    right.set_ylabel("ms per attempt")
    right.set_title("latency (lower is better)")
    right.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    for ax in (left, right):
        ax.set_xticks(list(x), [labels[k] for k in keys], rotation=30, ha="right", fontsize=8)
    _stamp(left, d, "bench/contention_bench.py")
    return _save(fig, "bench-contention.png")


def contention_map(d: dict[str, Any]) -> Path:
    """Attempts/s and p99 against attempts in flight (closed loop) and against the offered rate
    (open loop), one line per strategy (bench/contention_map.py)."""
    labels = {"a_pipeline": "(a) pipeline + edge", "b2_redis_edge": "(b') Redis lock + edge"}
    labels["c_for_update"] = "(c) FOR UPDATE, 64-conn pool"
    labels["c2_unpooled"] = "(c) FOR UPDATE, a connection per client (≤ 90)"
    offered = d.get("open_loop") or {}
    rows = 2 if offered else 1
    fig, axes = plt.subplots(rows, 2, figsize=(10, 4.2 * rows), squeeze=False)
    levels = sorted(d["levels"], key=int)
    (left, right) = axes[0]
    for key, label in labels.items():
        runs = [(int(lv), d["levels"][lv][key]) for lv in levels if key in d["levels"][lv]]
        if not runs:
            continue
        left.plot([x for x, _ in runs], [r["holds_per_second"] for _, r in runs], marker="o", label=label)
        right.plot([x for x, _ in runs], [r["latency"]["p99_ms"] for _, r in runs], marker="o", label=label)
    left.set_ylabel("hold attempts / s")
    left.set_title("closed loop: attempts/s (higher is better)", fontsize=9)
    right.set_ylabel("p99 ms per attempt")
    right.set_title("closed loop: p99 (lower is better)", fontsize=9)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("attempts in flight (closed-loop clients)")
    right.set_yscale("log")
    right.legend(loc="upper left", fontsize=7)
    if offered:
        (left2, right2) = axes[1]
        rates = sorted(offered, key=float)
        for key, label in labels.items():
            runs = [(float(rt), offered[rt][key]) for rt in rates if key in offered[rt]]
            if not runs:
                continue
            left2.plot([x for x, _ in runs], [r["holds_per_second"] for _, r in runs], marker="o", label=label)
            right2.plot([x for x, _ in runs], [r["latency"]["p99_ms"] for _, r in runs], marker="o", label=label)
        left2.set_ylabel("hold attempts / s completed")
        left2.set_title("open loop: attempts/s completed", fontsize=9)
        right2.set_ylabel("p99 ms from the scheduled arrival")
        right2.set_title("open loop: p99 from the scheduled arrival", fontsize=9)
        right2.set_yscale("log")
        for ax in (left2, right2):
            ax.set_xlabel("offered attempts / s")
    _stamp(axes[-1][0], d, "bench/contention_map.py")  # the lowest axes: tight_layout keeps the rows together
    return _save(fig, "bench-contention-map.png")


def index(d: dict[str, Any]) -> Path:
    q = d["queries"]
    keys = list(q)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = range(len(keys))
    ax.bar([i - 0.3 for i in x], [q[k]["no_index"]["p50_ms"] for k in keys], width=0.2, label="no index (this run)")
    ax.bar([i - 0.1 for i in x], [q[k]["indexed"]["p50_ms"] for k in keys], width=0.2, label="indexed (this run)")
    ax.bar([i + 0.1 for i in x], [q[k]["seed"]["no_index_ms"] for k in keys], width=0.2, label="no index (seed)")
    ax.bar([i + 0.3 for i in x], [q[k]["seed"]["indexed_ms"] for k in keys], width=0.2, label="indexed (seed)")
    ax.set_yscale("log")
    ax.set_xticks(list(x), keys, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("p50 ms (log)")
    prm = d["parameters"]
    ax.set_title(f"seed queries at {prm['seats']:,} seats / {prm['reservations']:,} reservations")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _stamp(ax, d, "bench/index_bench.py")
    return _save(fig, "bench-index.png")


def pipeline(d: dict[str, Any]) -> Path:
    p, raw, prm = d["pipeline"], d["raw_database"], d["parameters"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = ["partitioned\npipeline", "raw transaction\nloop"]
    left.bar(names, [p["jobs_per_second"], raw["transactions_per_second"]], color=["#4477aa", "#999999"])
    left.set_ylabel("hold attempts / s")
    left.set_title(f"{prm['requests']:,} holds on {prm['seats']} seats (higher is better)", fontsize=9)
    marks = ["latency_ms_p50", "latency_ms_p99", "latency_ms_max"]
    right.bar(["p50", "p99", "max"], [p[m] for m in marks], color="#4477aa")
    right.set_ylabel("ms, enqueue → job finished")
    right.set_title(f"pipeline latency ({prm['concurrency']} client threads)", fontsize=9)
    _stamp(left, d, "bench/pipeline_bench.py")
    return _save(fig, "bench-pipeline.png")


def queue(d: dict[str, Any]) -> Path:
    r = d["rank_lookup"]
    fig, ax = plt.subplots(figsize=(6, 3))
    names = ["MySQL COUNT(*)", "Redis ZRANK"]
    ax.bar(names, [r["mysql_count"]["p50_ms"], r["redis_zrank_domain"]["p50_ms"]], color=["#cc6677", "#117733"])
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title(f"rank of a waiting token among {d['tokens']:,}")
    _stamp(ax, d, "bench/queue_bench.py")
    return _save(fig, "bench-queue.png")


def cache(d: dict[str, Any]) -> Path:
    lat = d["latency"]["service"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["miss (DB)", "hit (Redis)"], [lat["miss"]["p50_ms"], lat["hit"]["p50_ms"]], color=["#cc6677", "#117733"])
    ax.set_yscale("log")
    ax.set_ylabel("p50 ms (log)")
    ax.set_title(f"schedules + available seats at {d['data']['seats']:,} seats")
    _stamp(ax, d, "bench/cache_bench.py")
    return _save(fig, "bench-cache.png")


def flash_sale(d: dict[str, Any]) -> Path:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    timeline = d.get("sale_timeline") or []
    if timeline and isinstance(timeline[0], dict):
        xs = [p.get("t_s", p.get("t", 0)) for p in timeline]
        for key in [k for k in timeline[0] if k not in ("t_s", "t")]:
            left.plot(xs, [p.get(key, 0) for p in timeline], label=key)
        left.legend(fontsize=7)
    elif timeline:  # [t_s, seats held or reserved, seats reserved]
        left.plot([p[0] for p in timeline], [p[1] for p in timeline], label="held or reserved")
        if len(timeline[0]) > 2:
            left.plot([p[0] for p in timeline], [p[2] for p in timeline], label="reserved (paid)")
        left.legend(fontsize=7)
    left.set_xlabel("seconds since the sale opened")
    left.set_ylabel("seats")
    left.set_title(f"{d['seats_sold']}/{d['seats_total']} sold")
    eps = {k: v for k, v in d["endpoints"].items() if k != "Aggregated"}
    x = range(len(eps))
    for off, q in ((-0.25, "p50_ms"), (0.0, "p95_ms"), (0.25, "p99_ms")):
        right.bar([i + off for i in x], [e[q] for e in eps.values()], width=0.25, label=q.replace("_ms", ""))
    right.set_xticks(list(x), list(eps), rotation=30, ha="right", fontsize=7)
    right.set_ylabel("ms")
    right.set_title(f"{d['parameters']['users']:,} fans: latency per endpoint")
    right.legend(fontsize=7)
    _stamp(left, d, "bench/flash_sale/")
    return _save(fig, "bench-flash-sale.png")


def draw_all(data: dict[str, dict[str, Any] | None]) -> list[Path]:
    """Every plot whose results exist; returns the files written."""
    drawers = {
        "contention": contention,
        "contention_map": contention_map,
        "index": index,
        "pipeline": pipeline,
        "queue": queue,
        "cache": cache,
        "flash_sale": flash_sale,
    }
    return [drawers[name](d) for name, d in data.items() if d and name in drawers]


def main() -> None:
    """`python -m bench.plots [name ...]`: draw these results (default: every one that has a plot)."""
    import json
    import sys

    results = Path(__file__).resolve().parent / "results"
    names = sys.argv[1:] or ["contention", "contention_map", "index", "pipeline", "queue", "cache", "flash_sale"]
    loaded = {n: json.loads((results / f"{n}.json").read_text()) for n in names if (results / f"{n}.json").exists()}
    for path in draw_all(loaded):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
