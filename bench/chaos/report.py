"""The run's result as JSON and as a plain-text table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.chaos import Plan, Record
from bench.common import pct

MUST_BE_ZERO = (
    "jobs_lost",
    "oversold",
    "double_charges",
    "wallets_off",
    "refunds_off",
    "events_unpublished",
    "events_unconsumed",
    "invariant_violations",
    "http_500",
    "client_errors",
)


def result_of(plan: Plan, rec: Record, *, mode: str, seed: int, workdir: Path, **seen: Any) -> dict[str, Any]:
    """The run's result: what the fans saw, what the faults did, what the stores say afterwards."""
    faults, states, events, checks = seen["faults"], seen["states"], seen["events"], seen["checks"]
    result: dict[str, Any] = {
        "mode": mode,
        "seed": seed,
        "plan": plan.__dict__,
        "faults_planned": list(faults.log.planned),
        "faults": faults.log.counts(),
        "fault_events": faults.log.events,
        "fault_errors": faults.errors,
        **_client_side(rec, states, seen),
        "invariant_violations": seen["violations"],
        "invariant_check_output": seen["check_output"].strip().splitlines()[-20:],
        "events": events,
        "events_unpublished": events["pending"]
        + events["failed"]
        + checks["payments_without_one_published_event"]
        + checks["refunds_without_one_published_event"],
        "events_unconsumed": events["unconsumed"],
        "settle_s": round(max(v if v is not None else plan.settle_timeout for v in seen["settled"].values()), 1),
        "settle_detail": seen["settled"],
        "load_s": round(seen["load_s"], 1),
        "client_threads_still_running": seen["still_running"],
        "processes_alive_at_end": seen["procs_alive"],
        "logs": str(workdir),
        **checks,
    }
    result["must_be_zero"] = {k: result[k] for k in MUST_BE_ZERO}
    result["ok"] = all(v == 0 for v in result["must_be_zero"].values()) and all(
        n >= plan.each_fault for n in result["faults"].values()
    )
    return result


def _client_side(rec: Record, states: Counter[str], seen: dict[str, Any]) -> dict[str, Any]:
    """Requests, jobs and stages as the fans saw them, with each job's final state."""
    return {
        "requests_sent": rec.requests,
        "responses_by_status": {str(k): v for k, v in sorted(rec.statuses.items())},
        "jobs_accepted": len(rec.accepted),
        "jobs_by_type": dict(Counter(rec.accepted.values())),
        "jobs_terminal": states["SUCCEEDED"] + states["FAILED"],
        "jobs_succeeded": states["SUCCEEDED"],
        "jobs_failed": states["FAILED"],
        "jobs_failed_by_code": seen["failed_codes"],
        "payments_per_10s": seen["timeline"],
        **seen["gaps"],
        "jobs_404_seen_by_clients": len(rec.job_404),
        "jobs_lost": states["QUEUED"] + states["RUNNING"] + states["MISSING"],
        "jobs_open_detail": {k: v for k, v in states.items() if k not in ("SUCCEEDED", "FAILED")},
        "answered_with_outcome": rec.answered_terminal,
        "users": rec.users,
        "holds": rec.holds,
        "cancels": rec.cancels,
        "gave_up": dict(rec.gave_up),
        "stage_seconds": {
            k: {"n": len(v), "p50": round(pct(v, 0.5), 2), "p99": round(pct(v, 0.99), 2), "max": round(max(v), 2)}
            for k, v in rec.stage_s.items()
        },
        "already_paid_answers": rec.already_paid_answers,
        "http_500": rec.statuses.get(500, 0),
        "http_500_samples": rec.errors_500[:10],
        "client_errors": rec.statuses.get(-1, 0),
    }


def failure_detail(result: dict[str, Any]) -> dict[str, Any]:
    """What to look at first when a run is not OK."""
    keys = (
        "must_be_zero",
        "jobs_open_detail",
        "wallets_off_detail",
        "refunds_off_detail",
        "http_500_samples",
        "events",
        "logs",
    )
    return {k: result[k] for k in keys}


MASTER_KILL_TIMES = (
    ("replica_promoted_after_s", "replica promoted"),
    ("concert_served_after_s", "concert's slot served"),
    ("readyz_ok_after_s", "/readyz 200"),
    ("killed_node_rejoined_after_s", "killed node back as a replica"),
)


def master_kill_rows(events: list[dict[str, Any]]) -> list[str]:
    """One row per Redis Cluster master kill: seconds from the kill to each step of the recovery."""
    kills = [e for e in events if e["fault"] == "redis_master_kill"]
    if not kills:
        return []
    head = " | ".join(words for _, words in MASTER_KILL_TIMES)
    lines = ["", f"{'master kill (s after kill -9)':<28}| {head} | probe 5xx", f"{'-' * 28}|{'-' * (len(head) + 12)}"]
    for e in kills:
        times = " | ".join(f"{e.get(key)}" for key, _ in MASTER_KILL_TIMES)
        where = f"at {e['at_s']} s, :{e['port']} -> :{e['new_master']}"
        lines.append(f"{where:<28}| {times} | {e['probe_5xx']}")
    return lines


def table(result: dict[str, Any]) -> str:
    """The run as a plain-text table."""
    m = result["machine"]
    lines = [
        f"chaos run ({result['mode']}), seed {result['seed']}, {m['date_utc']} UTC, "
        f"{m['cpus']} CPUs, {m['memory_gib']} GiB",
        "",
        f"{'fault':<28}| times injected",
        f"{'-' * 28}|---------------",
    ]
    lines += [f"{k:<28}| {v}" for k, v in result["faults"].items()]
    lines += master_kill_rows(result["fault_events"])
    rows = [
        ("requests sent / jobs accepted", f"{result['requests_sent']} / {result['jobs_accepted']}"),
        ("payments (db / client saw)", f"{result['payments']} / {result['client_payments']}"),
        (
            "refunds (asked / db / client saw)",
            f"{result['refunds_requested']} / {result['refunds']} / {result['client_refunds']}",
        ),
        ("refunds off (db/client,ledger,seat)", result["refunds_off"]),
        (
            "PaymentRefunded published/consumed",
            f"{result['events'].get('refunds_published', 0)} / {result['events'].get('refunds_consumed', 0)}",
        ),
        (
            "jobs accepted / terminal / lost",
            f"{result['jobs_accepted']} / {result['jobs_terminal']} / {result['jobs_lost']}",
        ),
        ("oversold seats", result["oversold"]),
        ("double charges", result["double_charges"]),
        ("wallets off", f"{result['wallets_off']} (of {result['wallets_checked']})"),
        ("events unpublished / unconsumed", f"{result['events_unpublished']} / {result['events_unconsumed']}"),
        ("invariant violations (models check)", result["invariant_violations"]),
        ("HTTP 500", result["http_500"]),
        ("settle after load (s)", result["settle_s"]),
        ("result", "OK" if result["ok"] else "FAILED"),
    ]
    lines += ["", f"{'figure':<36}| value", f"{'-' * 36}|------"]
    lines += [f"{k:<36}| {v}" for k, v in rows]
    return "\n".join(lines)
