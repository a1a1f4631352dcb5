"""The run's result: its figures, the same-run ratios and the printed table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.flash_sale import ENDPOINTS, SEATS_TOTAL
from bench.flash_sale.checks import in_app_p50_ms, service_problems
from bench.flash_sale.load import locust_cpu_warning, peak_rps, read_failures, timeline
from bench.flash_sale.trace import arrivals, by_second, exact_p50s
from bench.flash_sale.trace import read as read_trace

BESIDE = "/bare (beside "  # the same-run floor's rows: `/bare (beside <endpoint>)` (bench/locustfile_flash.py)
SAME_SERVER = "/floor/bare (same server, beside "  # the bare route served by the service's own gunicorn


def sale_result(
    tmp: Path, sold: dict[str, Any], after: dict[str, Any], bare: dict[str, Any], floors: dict[str, Any]
) -> dict[str, Any]:
    """The figures of one run: per endpoint, the sale and sell-out, the checks, the floors and the ratios."""
    endpoints, outcomes, watch = sold["endpoints"], sold["outcomes"], sold["watch"]
    first = watch.first_hold
    hold_window = (watch.all_taken or time.time()) - first if first else None
    holds_per_s = outcomes.get("held", 0) / hold_window if hold_window else None
    result = {
        # Aggregated is locust's: it counts the same-run bare requests too
        "endpoints": {name: endpoints[name] for name in (*ENDPOINTS, "Aggregated") if name in endpoints},
        "same_run_bare": {name: row for name, row in endpoints.items() if name.startswith(BESIDE)},
        "same_server_bare": {name: row for name, row in endpoints.items() if name.startswith(SAME_SERVER)},
        "failures": read_failures(tmp / "sale"),
        "outcomes": dict(sorted(outcomes.items())),
        **_sale_figures(tmp, sold),
        "seat_map_cache_events": after["seat_cache"],
        "poll_answers": after["polls"],  # waiting polls by who answered: the web process's memo or Redis
        # each queue route's p50 inside the app (its WSGI callable), beside locust's p50 of the same route
        "in_app_p50_ms": in_app(after.get("latency") or {}),
        "seats_sold": after["facts"]["seats_by_status"].get("RESERVED", 0),
        "seats_total": SEATS_TOTAL,
        "sale_timeline": watch.timeline[:400],
        # [second, fans spawned, joins answered]: how fast locust brought the fans and the joins came back
        "join_timeline": timeline(tmp / "sale", "/queue/tokens")[:120],
        "check": _check(after),
        "floors": _floors(tmp, bare, floors),
        "holds_per_s": round(holds_per_s, 1) if holds_per_s else None,
    }
    result["ratios"] = ratios(
        endpoints.get("/schedules/[id]/seats", {}),
        endpoints.get("Aggregated", {}),
        bare["row"],
        (bare.get("first_request") or {}).get("row"),
        holds_per_s,
        floors["db_rate"],
        floors["redis_rate"],
        endpoints,
        result["peak_rps"],
        result["trace_p50_ms"],
    )
    return result


IN_APP = {
    "/queue/tokens": "POST /api/v1/queue/tokens",
    "/queue/token": "GET /api/v1/queue/token",
    "/queue/token [DELETE]": "DELETE /api/v1/queue/token",
    "/schedules/[id]/seats": "GET /api/v1/schedules/<schedule_id>/seats",
}


def in_app(latency: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """locust's name -> the route's p50 inside the app, ms (the upper bound of its histogram bucket)."""
    return {name: in_app_p50_ms(latency.get(route, {})) for name, route in IN_APP.items()}


def _served(endpoints: dict[str, dict[str, Any]], *, bare: bool) -> int:
    """The requests the service's gunicorn answered (the queue endpoints and the same-server floor's), or
    with `bare` the bare gunicorn beside (every `/bare (beside ...)` row)."""
    if bare:
        return sum(row["requests"] for name, row in endpoints.items() if name.startswith("/bare (beside "))
    return sum(row["requests"] for name, row in endpoints.items() if name in ENDPOINTS or name.startswith(SAME_SERVER))


def _per_request(seconds: float | None, served: int, key: str) -> dict[str, Any] | None:
    if seconds is None:
        return None
    return {
        key: round(seconds, 2),
        "requests": served,
        "ms_per_request": round(seconds / served * 1000, 3) if served else None,
    }


def web_cpu_per_request(cpu_s: float | None, endpoints: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The web process's CPU seconds over the sale, the requests it answered (the queue endpoints and
    the same-server floor's; not the bare gunicorn's) and the CPU ms a request."""
    return _per_request(cpu_s, _served(endpoints, bare=False), "cpu_s")


def bare_cpu_per_request(cpu_s: float | None, endpoints: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The bare gunicorn beside's CPU seconds over the sale, the requests it answered (every `/bare (beside ...)`
    row) and the CPU ms a request: with --bare-every 1 it takes the service's requests, so the two compare."""
    return _per_request(cpu_s, _served(endpoints, bare=True), "cpu_s")


def run_delay_per_request(
    waited_s: float | None, endpoints: dict[str, dict[str, Any]], *, bare: bool
) -> dict[str, Any] | None:
    """Seconds a gunicorn's threads waited, runnable, for a CPU over the sale (run_delay), over the requests
    it answered: the service's, or with `bare` the bare gunicorn beside's."""
    return _per_request(waited_s, _served(endpoints, bare=bare), "waited_s")


def stats_complete(endpoints: dict[str, dict[str, Any]], outcomes: dict[str, int]) -> bool:
    """Whether locust's table holds every join, poll and leave the fans counted (its CSV is a snapshot
    taken once a second: a run that quit before the next one lost its last requests)."""
    counted = {"/queue/tokens": "joined", "/queue/token": "polls", "/queue/token [DELETE]": "left"}
    return all((endpoints.get(name) or {}).get("requests", 0) >= outcomes.get(key, 0) for name, key in counted.items())


def beside_lag(outcomes: dict[str, int]) -> dict[str, Any] | None:
    """Mean and largest ms between a request's start and the start of a floor beside it (None: no floor)."""
    pairs = outcomes.get("beside_pairs", 0)
    if not pairs:
        return None
    return {"pairs": pairs, "mean": round(outcomes.get("beside_lag_ms_total", 0) / pairs, 1),
            "max": outcomes.get("beside_lag_ms_max", 0)}  # fmt: skip


def _sale_figures(tmp: Path, sold: dict[str, Any]) -> dict[str, Any]:
    """How long the sale and the sell-out took, locust's own load, admission wait against the estimate."""
    outcomes, watch, seconds = sold["outcomes"], sold["watch"], sold["seconds"]
    cpus = sold.get("cpu_busy")
    first, last = watch.first_hold, watch.sold_out
    trace = read_trace(tmp / "trace")
    waiting, admitted = outcomes.get("waiting_on_join", 0), outcomes.get("admitted", 0)
    return {
        "sale_seconds": round(seconds, 1),
        "locust_stats_complete": stats_complete(sold["endpoints"], outcomes),
        # how each second's fans reached the service (locust starts a second's fans at once) and, second by
        # second, each queue endpoint's p50 beside its floors' (the locustfile's trace of every request)
        "arrivals": arrivals(trace),
        # how far from its endpoint's start each floor beside it started its GET (the locustfile's counts)
        "beside_lag_ms": beside_lag(outcomes),
        "by_second": by_second(trace),
        # each queue endpoint's p50 and its floors' to 0.01 ms (locust's table rounds to whole ms): the ratios'
        "trace_p50_ms": exact_p50s(trace),
        "peak_rps": peak_rps(tmp / "sale"),
        "locust_cpu_saturated": locust_cpu_warning(tmp / "locust-sale.log"),
        "locust_cpu_share": round(sold["cpu"] / seconds, 2),
        # the service's web process (gunicorn master and workers) over the sale: CPU per request it served
        "web_cpu": web_cpu_per_request(sold.get("web_cpu"), sold["endpoints"]),
        # the bare gunicorn beside over the same seconds (its app costs ~50 µs in-process): gunicorn's own share
        "bare_web_cpu": bare_cpu_per_request(sold.get("bare_cpu"), sold["endpoints"]),
        # how long each one's threads waited, runnable, for a CPU (the kernel's run_delay), a request
        "web_run_delay": run_delay_per_request(sold.get("web_run_delay"), sold["endpoints"], bare=False),
        "bare_run_delay": run_delay_per_request(sold.get("bare_run_delay"), sold["endpoints"], bare=True),
        # the machine's CPUs (all processes, locust included) while the fans arrive, and each second of the sale
        "cpu_busy_during_arrivals": cpus.during(sold["users"] / sold["rate"]) if cpus else None,
        "cpu_busy_each_s": cpus.busy[:300] if cpus else [],
        "mean_estimate_on_join_s": round(outcomes.get("estimate_on_join_s_total", 0) / waiting, 1) if waiting else None,
        "mean_admission_wait_s": round(outcomes.get("admitted_after_s_total_ms", 0) / 1000 / admitted, 2)
        if admitted
        else None,
        "polls_per_admitted_fan": round(outcomes.get("polls_by_admitted", 0) / admitted, 2) if admitted else None,
        "fixed_1s_polls_per_admitted_fan": round(outcomes.get("fixed_1s_polls_for_admitted", 0) / admitted, 2)
        if admitted
        else None,
        "locust_exit_code": sold["rc"],
        "first_hold_after_start_s": round(first - sold["started"], 2) if first else None,
        "sell_out_seconds": round(last - first, 2) if first and last else None,
        "all_seats_taken_seconds": round(watch.all_taken - first, 2) if first and watch.all_taken else None,
    }


def _check(after: dict[str, Any]) -> dict[str, Any]:
    """Invariants and counts after the sale; ok only when all of them hold."""
    facts = after["facts"]
    extra = service_problems(facts, after["server_5xx"])
    keys = ("oversold", "double_payments", "outbox_unpublished", "events_consumed", "events_handled",
            "dead_lettered", "payments", "payment_events", "open_jobs", "payer_tokens_left", "settle_seconds",
            "seats_by_status", "reservations_by_status")  # fmt: skip
    return {
        "ok": after["ok"] and not extra,
        "violations": after["violations"] + extra,
        **{k: facts[k] for k in keys},
        "server_5xx": after["server_5xx"],
        "procfile_clean_stop": after["procfile_clean_stop"],
    }


def _floors(tmp: Path, bare: dict[str, Any], floors: dict[str, Any]) -> dict[str, Any]:
    """The bare-Flask and physical floors measured in the same run."""
    row = bare["row"]
    return {
        "bare_flask": {
            **{k: row[k] for k in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")},
            "peak_rps": peak_rps(tmp / "bare"),
            "run_seconds": round(bare["seconds"], 1),
            "locust_cpu_saturated": locust_cpu_warning(tmp / "locust-bare.log"),
            "locust_cpu_share": round(bare["cpu"] / bare["seconds"], 2),
        },
        **(
            {
                "bare_first_request": {
                    **{k: once["row"][k] for k in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms")},
                    "run_seconds": round(once["seconds"], 1),
                    "locust_cpu_share": round(once["cpu"] / once["seconds"], 2),
                }
            }
            if (once := bare.get("first_request"))
            else {}
        ),
        "raw_redis_ops_per_s": round(floors["redis_rate"]),
        "raw_db_commits_per_s": round(floors["db_rate"]),
        "db": floors["db_facts"],
    }


def ratios(
    seat_map: dict[str, Any],
    agg: dict[str, Any],
    bare: dict[str, Any],
    bare_first: dict[str, Any] | None,
    holds_per_s: float | None,
    db_rate: float,
    redis_rate: float,
    endpoints: dict[str, dict[str, Any]],
    peak: float | None,
    exact: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's ratios. A queue endpoint's p50 over its floor's is taken from `exact` (the trace's p50s, to
    0.01 ms) where both are there, else from locust's table (whole ms under 100 ms)."""

    def div(a: Any, b: Any, digits: int = 3) -> float | None:
        return round(a / b, digits) if a is not None and b else None

    out: dict[str, Any] = {
        "seat_map_rps_over_bare_rps": div(seat_map.get("rps"), bare["rps"]),
        "all_requests_rps_over_bare_rps": div(agg.get("rps"), bare["rps"]),
        "peak_rps_over_bare_rps": div(peak, bare["rps"]),
        "seat_map_p50_over_bare_p50": div(seat_map.get("p50_ms"), bare["p50_ms"], 2),
        "holds_per_s_over_raw_db_commits_per_s": div(holds_per_s, db_rate, 4),
        "all_requests_rps_over_raw_redis_ops_per_s": div(agg.get("rps"), redis_rate, 4),
    }
    for name in ENDPOINTS:
        if name in endpoints:
            out[f"p50_over_bare_p50[{name}]"] = div(endpoints[name]["p50_ms"], bare["p50_ms"], 2)
    if bare_first and "/queue/tokens" in endpoints:  # a join is each fan's first request: its own floor too
        out["p50_over_bare_first_request_p50[/queue/tokens]"] = div(
            endpoints["/queue/tokens"]["p50_ms"], bare_first["p50_ms"], 2
        )
    exact = exact or {}

    def p50(name: str) -> Any:
        return exact.get(name, (endpoints.get(name) or {}).get("p50_ms"))

    for name in ENDPOINTS:  # the bare route at the same moments, same load, same run (sampled fans)
        beside = f"{BESIDE}{name})"
        if name in endpoints and beside in endpoints:
            out[f"p50_over_same_run_bare_p50[{name}]"] = div(p50(name), p50(beside), 2)
    for name in ENDPOINTS:  # the bare route in the service's own workers, same moments (other sampled fans)
        same = f"{SAME_SERVER}{name})"
        if name in endpoints and same in endpoints:
            out[f"p50_over_same_server_bare_p50[{name}]"] = div(p50(name), p50(same), 2)
    return out


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{'endpoint':<24}{'requests':>9}{'fail':>6}{'RPS':>8}{'p50':>8}{'p95':>8}{'p99':>8}")
    for name, e in result["endpoints"].items():
        print(
            f"{name:<24}{e['requests']:>9}{e['failures']:>6}{e['rps']:>8.1f}"
            f"{e['p50_ms'] or 0:>8.0f}{e['p95_ms'] or 0:>8.0f}{e['p99_ms'] or 0:>8.0f}"
        )
    for name, e in {**(result.get("same_run_bare") or {}), **(result.get("same_server_bare") or {})}.items():
        print(
            f"{name[:60]:<60}{e['requests']:>9}{e['failures']:>6}{e['rps']:>8.1f}"
            f"{e['p50_ms'] or 0:>8.0f}{e['p95_ms'] or 0:>8.0f}{e['p99_ms'] or 0:>8.0f}"
        )
    exact = result.get("trace_p50_ms") or {}
    for name in ("/queue/tokens", "/queue/token", "/queue/token [DELETE]"):
        if name in exact and f"{BESIDE}{name})" in exact:
            ratio = result["ratios"].get(f"p50_over_same_run_bare_p50[{name}]")
            floor = exact[f"{BESIDE}{name})"]
            print(f"p50 from the trace: {name} {exact[name]} ms, the bare route beside it {floor} ms: {ratio}x")
    inside = ", ".join(f"{k} ≤{v:g}" for k, v in (result.get("in_app_p50_ms") or {}).items() if v is not None)
    print(f"p50 inside the app (ms, its histogram bucket; no accept, gunicorn queue or network): {inside}")
    polls = result.get("poll_answers") or {}
    if polls:
        said = ", ".join(f"{k} {int(v):,}" for k, v in sorted(polls.items()))
        print(f"waiting polls answered by: {said} (memo: the web process itself, no Redis)")
    web = result.get("web_cpu")
    if web:
        print(
            f"web process: {web['cpu_s']} CPU s for {web['requests']:,} requests: {web['ms_per_request']} ms a request"
        )
    bare = result.get("bare_web_cpu")
    if bare and bare["ms_per_request"]:
        print(
            f"bare gunicorn beside: {bare['cpu_s']} CPU s for {bare['requests']:,} requests: "
            f"{bare['ms_per_request']} ms a request"
        )
    delay, bare_delay = result.get("web_run_delay"), result.get("bare_run_delay")
    if delay and bare_delay and delay["ms_per_request"] and bare_delay["ms_per_request"]:
        print(
            f"waiting for a CPU (run_delay), a request: web {delay['ms_per_request']} ms "
            f"({delay['waited_s']} s), bare gunicorn {bare_delay['ms_per_request']} ms ({bare_delay['waited_s']} s)"
        )
    if result.get("locust_stats_complete") is False:
        print("WARNING: locust's table lacks requests the fans counted (its last CSV snapshot came too early)")
    spread = result.get("arrivals") or {}
    if spread:
        print(
            f"arrivals: {spread['joins_a_second']} joins a second, 90% of each second's within "
            f"{spread['ms_for_90pct_of_a_seconds_joins']} ms (median of {spread['seconds']} seconds)"
        )
    lag = result.get("beside_lag_ms")
    if lag:
        print(
            f"floors beside a request started {lag['mean']} ms from it on average "
            f"(largest {lag['max']} ms, {lag['pairs']:,} pairs)"
        )
    if result.get("cpu_busy_during_arrivals") is not None:
        print(f"machine CPUs busy while the fans arrived: {result['cpu_busy_during_arrivals']:.0%}")
    f = result["floors"]
    b = f["bare_flask"]
    print(
        f"{'bare Flask floor':<24}{b['requests']:>9}{b['failures']:>6}{b['rps']:>8.1f}"
        f"{b['p50_ms'] or 0:>8.0f}{b['p95_ms'] or 0:>8.0f}{b['p99_ms'] or 0:>8.0f}"
    )
    if "bare_first_request" in f:
        o = f["bare_first_request"]
        print(
            f"{'bare, first request':<24}{o['requests']:>9}{o['failures']:>6}{o['rps']:>8.1f}"
            f"{o['p50_ms'] or 0:>8.0f}{o['p95_ms'] or 0:>8.0f}{o['p99_ms'] or 0:>8.0f}"
        )
    print(f"raw Redis {f['raw_redis_ops_per_s']:,} INCR/s · raw DB {f['raw_db_commits_per_s']:,} commits/s")
    c = result["check"]
    print(
        f"sold {result['seats_sold']}/{result['seats_total']} · sell-out {result['sell_out_seconds']} s "
        f"(all held {result['all_seats_taken_seconds']} s) · holds/s {result['holds_per_s']}"
    )
    print(
        f"check ok={c['ok']} violations={len(c['violations'])} oversold={c['oversold']} "
        f"double_payments={c['double_payments']} payments={c['payments']} unpublished={c['outbox_unpublished']} "
        f"consumed={c['events_consumed']} open_jobs={c['open_jobs']} server 5xx={c['server_5xx']}"
    )
    print(
        f"sale {result['sale_seconds']} s, peak {result['peak_rps']} RPS, locust CPU {result['locust_cpu_share']:.0%} "
        f"(bare run {b['locust_cpu_share']:.0%}); {result['outcomes'].get('max_fans_in_journey')} fans in their "
        f"journey at once; mean wait for admission {result['mean_admission_wait_s']} s vs mean estimate on join "
        f"{result['mean_estimate_on_join_s']} s"
    )
    print("ratios: " + ", ".join(f"{k}={v}" for k, v in result["ratios"].items()))


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    """One run of a single/cluster pair: what the comparison needs."""
    c, e = result["check"], result["endpoints"]
    sold, took = result["seats_sold"], result["sell_out_seconds"]
    return {
        "redis": result["parameters"]["redis"],
        "seats_sold": sold,
        "seats_total": result["seats_total"],
        "sell_out_seconds": took,
        "sell_out_seats_per_s": round(sold / took, 2) if took else None,
        "holds_per_s": result["holds_per_s"],
        "all_requests_rps": e.get("Aggregated", {}).get("rps"),
        "p50_ms": {name: e[name]["p50_ms"] for name in ("/queue/tokens", "/reservations", "/payments") if name in e},
        "p99_ms": {name: e[name]["p99_ms"] for name in ("/queue/tokens", "/reservations", "/payments") if name in e},
        "bare_flask_rps": result["floors"]["bare_flask"]["rps"],
        "raw_redis_ops_per_s": result["floors"]["raw_redis_ops_per_s"],
        "checker_clean": bool(c["ok"]),
        "oversold": c["oversold"],
        "double_payments": c["double_payments"],
        "server_5xx": c["server_5xx"],
        "open_jobs": c["open_jobs"],
        "loadavg_at_start": result["machine_load"]["loadavg_at_start"],
        **({"replica_selects": result["replica_selects"]} if "replica_selects" in result else {}),
    }


def compare_redis(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Single-server and cluster runs in pairs (as run, in order): cluster / single ratios per pair, medians."""
    import statistics

    def div(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    pairs = []
    for first, second in zip(results[0::2], results[1::2], strict=True):
        runs = {r["parameters"]["redis"]: _brief(r) for r in (first, second)}
        single, cluster = runs["single server"], runs["cluster 3+3"]
        pairs.append({
            "first": first["parameters"]["redis"],
            "single": single,
            "cluster": cluster,
            "cluster_over_single": {
                "sell_out_seats_per_s": div(cluster["sell_out_seats_per_s"], single["sell_out_seats_per_s"]),
                "holds_per_s": div(cluster["holds_per_s"], single["holds_per_s"]),
                "all_requests_rps": div(cluster["all_requests_rps"], single["all_requests_rps"]),
                "bare_flask_rps (the machine, not Redis)": div(cluster["bare_flask_rps"], single["bare_flask_rps"]),
            },
        })  # fmt: skip
    ratios = [p["cluster_over_single"]["sell_out_seats_per_s"] for p in pairs]
    known = [r for r in ratios if r is not None]
    every = [r for p in pairs for r in (p["single"], p["cluster"])]
    return {
        "parameters": {**results[0]["parameters"], "redis": "pairs: single server and cluster 3+3, back to back"},
        "pairs": pairs,
        "sell_out_ratio_cluster_over_single": ratios,
        "sell_out_ratio_median": round(statistics.median(known), 3) if known else None,
        "all_clean": all(
            r["checker_clean"]
            and r["seats_sold"] == r["seats_total"]
            and r["oversold"] == 0
            and r["double_payments"] == 0
            and r["server_5xx"] == 0
            for r in every
        ),
    }


def print_comparison(comparison: dict[str, Any]) -> None:
    """The pairs as a table: each run's sell-out and checks, then the cluster / single ratio."""
    print(f"\n{'pair':<5}{'redis':<15}{'sold':>8}{'sell-out s':>11}{'seats/s':>9}{'holds/s':>9}{'RPS':>8}"
          f"{'bare RPS':>9}  checks (clean, oversold, double, 5xx)")  # fmt: skip
    for n, p in enumerate(comparison["pairs"], 1):
        for r in (p["single"], p["cluster"]):
            print(
                f"{n:<5}{r['redis']:<15}{r['seats_sold']:>4}/{r['seats_total']:<3}{r['sell_out_seconds'] or 0:>11}"
                f"{r['sell_out_seats_per_s'] or 0:>9}{r['holds_per_s'] or 0:>9}{r['all_requests_rps'] or 0:>8}"
                f"{r['bare_flask_rps'] or 0:>9}  {r['checker_clean']}, {r['oversold']}, {r['double_payments']}, "
                f"{r['server_5xx']}"
            )
        print(f"     cluster / single: {p['cluster_over_single']} ({p['first']} ran first)")
    print(
        f"sell-out rate cluster / single: {comparison['sell_out_ratio_cluster_over_single']}, median "
        f"{comparison['sell_out_ratio_median']}; every run clean: {comparison['all_clean']}"
    )
