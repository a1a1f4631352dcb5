"""docs/CAPACITY.md's web cores count gunicorn's own cost a request, not only the app's in-process cost."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import capacity


def _costs(poll_us: float, issue_us: float) -> dict[str, dict[str, float]]:
    one = {"redis_server_us": 50.0, "redis_round_trips": 1.0}
    return {
        "poll": {"web_cpu_us": poll_us, **one},
        "issue": {"web_cpu_us": issue_us, **one},
        "seat_map_fan": {"web_cpu_us": 100.0, **one},
    }


def _run(polls: float, joins: float) -> dict[str, object]:
    series = {"polls": [polls], "joins": [joins], "seat_maps": [0.0], "holds": [0.0], "payments": [0.0]}
    return {"series": series, "sold_out_s": 1, "polls_per_admitted": 1.0, "wait_p50_s": 0.0, "wait_p95_s": 0.0}


def test_a_poll_is_charged_the_kept_alive_overhead_and_a_join_the_new_connection_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12,000 polls/s at 200 µs in-process + 400 µs served, 6,000 joins/s at 300 + 500 µs, planned at 60 % busy."""
    measured = tmp_path / "server_overhead.json"
    measured.write_text(json.dumps({"overhead_kept_alive_us": 400.0, "overhead_new_connection_us": 500.0}))
    monkeypatch.setattr(capacity, "OVERHEAD", measured)
    sale = capacity.Sale(100_000, 1_000, 500)

    cores = capacity.capacity(sale, _run(12_000, 6_000), _costs(200, 300))["web_cores"]

    assert cores == math.ceil((12_000 * 600 + 6_000 * 800) / 1e6 / 0.6) == 20


def test_without_the_measurement_the_model_counts_the_app_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "OVERHEAD", tmp_path / "missing.json")
    sale = capacity.Sale(100_000, 1_000, 500)

    cores = capacity.capacity(sale, _run(12_000, 6_000), _costs(200, 300))["web_cores"]

    assert cores == math.ceil((12_000 * 200 + 6_000 * 300) / 1e6 / 0.6) == 8
