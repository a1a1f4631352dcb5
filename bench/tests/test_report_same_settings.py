"""bench/report.py: a flash sale's ratios are shown beside every stored run made with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import same_settings_runs

SETTINGS = {"mode": "full", "users": 5000, "bare_every": 1, "redis_nice": -10, "web_threads": 8,
            "web_concurrency": 2, "arrivals": "burst", "redis": "single server", "poll_memo": True}  # fmt: skip


def _store(path: Path, parameters: dict[str, object], poll: float, traced: bool = True) -> None:
    run = {"parameters": parameters, "ratios": {"p50_over_same_run_bare_p50[/queue/token]": poll}}
    if traced:
        run["trace_p50_ms"] = {"/queue/token": 2.0}
    path.write_text(json.dumps(run))


def test_only_runs_with_the_same_settings_and_exact_p50s_count(tmp_path: Path) -> None:
    _store(tmp_path / "20261204_2218_a.json", SETTINGS, 1.36)
    _store(tmp_path / "20261204_2222_b.json", SETTINGS, 1.64)
    _store(tmp_path / "20261204_2201_other_threads.json", {**SETTINGS, "web_threads": 4}, 1.57)
    _store(tmp_path / "20261204_2159_no_priority.json", {**SETTINGS, "redis_nice": None}, 2.7)
    _store(tmp_path / "20261205_0409_no_poll_memo.json", {**SETTINGS, "poll_memo": False}, 1.22)
    _store(
        tmp_path / "20261204_2249_before_the_memo.json", {k: v for k, v in SETTINGS.items() if k != "poll_memo"}, 1.68
    )
    _store(tmp_path / "20261204_1936_rounded.json", SETTINGS, 47.0, traced=False)
    (tmp_path / "broken.json").write_text("{")

    runs = same_settings_runs(SETTINGS, tmp_path)

    assert [r["file"] for r in runs] == ["20261204_2218_a.json", "20261204_2222_b.json"]
    assert [r["ratios"]["p50_over_same_run_bare_p50[/queue/token]"] for r in runs] == [1.36, 1.64]


def test_the_floors_spread_and_the_memo_share_are_read_from_the_stored_runs(tmp_path: Path) -> None:
    from bench.report import _floors_apart, _memo_share

    for name, own, same, memo, redis in (("a", 30.0, 60.0, 600, 400), ("b", 52.4, 20.0, 550, 450)):
        run = {
            "parameters": SETTINGS,
            "ratios": {},
            "trace_p50_ms": {
                "/bare (beside /queue/tokens)": own,
                "/floor/bare (same server, beside /queue/tokens)": same,
            },
            "poll_answers": {"memo": memo, "redis": redis},
        }
        (tmp_path / f"20261205_0400_{name}.json").write_text(json.dumps(run))

    runs = same_settings_runs(SETTINGS, tmp_path)

    assert "were 0.50–2.62× apart" in _floors_apart(runs)
    assert _memo_share(runs) == " The poll memo answered 55%–60% of the waiting polls."
    assert _floors_apart([]) == _memo_share([]) == ""
