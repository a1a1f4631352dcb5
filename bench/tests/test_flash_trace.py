"""bench/flash_sale/trace.py: how the fans arrived and each second's p50, from locust's trace of every request."""

from __future__ import annotations

import json
from pathlib import Path

from bench.flash_sale.trace import arrivals, by_second, exact_p50s, read


def test_joins_started_at_once_each_second_read_as_a_burst_and_spread_ones_do_not() -> None:
    burst = [(1000.0 + s + i * 0.0004, "/queue/tokens", 5.0) for s in range(3) for i in range(500)]  # 200 ms
    even = [(1000.0 + i * 0.002, "/queue/tokens", 5.0) for i in range(1500)]  # 500 a second, every 2 ms

    assert arrivals(burst) == {"seconds": 3, "joins_a_second": 500, "ms_for_90pct_of_a_seconds_joins": 180}
    assert 880 <= arrivals(even)["ms_for_90pct_of_a_seconds_joins"] <= 900  # 90% of 1,000 ms
    assert arrivals([]) == {}


def test_each_second_sets_an_endpoints_p50_beside_its_floors(tmp_path: Path) -> None:
    rows = [
        (100.0, "/queue/tokens", 80.0),
        (100.2, "/queue/tokens", 60.0),
        (100.3, "/queue/tokens", 70.0),
        (100.1, "/bare (beside /queue/tokens)", 20.0),
        (101.5, "/queue/token", 2.0),
        (101.6, "/seat map is not a queue endpoint", 9.0),
    ]
    (tmp_path / "trace.41").write_text(json.dumps(rows[:3]))
    (tmp_path / "trace.42").write_text(json.dumps(rows[3:]))

    table = by_second(read(tmp_path / "trace"))

    assert table == {
        "/bare (beside /queue/tokens)": [(0, 1, 20.0)],
        "/queue/token": [(1, 1, 2.0)],
        "/queue/tokens": [(0, 3, 70.0)],
    }


def test_a_locust_table_missing_the_last_waves_leaves_is_flagged() -> None:
    from bench.flash_sale.report import stats_complete

    outcomes = {"joined": 5000, "polls": 7657, "left": 4900}
    whole = {
        "/queue/tokens": {"requests": 5000},
        "/queue/token": {"requests": 7657},
        "/queue/token [DELETE]": {"requests": 4900},
    }
    cut = {**whole, "/queue/token [DELETE]": {"requests": 4427}}  # the 2026-12-04 17:31 run

    assert (stats_complete(whole, outcomes), stats_complete(cut, outcomes)) == (True, False)


def test_the_targets_table_marks_each_queue_endpoint_against_the_bare_route_beside_it() -> None:
    from bench.report import _queue_p50_rows

    ratios = {
        "p50_over_same_run_bare_p50[/queue/tokens]": 2.63,
        "p50_over_same_server_bare_p50[/queue/tokens]": 1.06,
        "p50_over_same_run_bare_p50[/queue/token]": 1.5,
        "p50_over_same_server_bare_p50[/queue/token]": 1.0,
    }

    rows = _queue_p50_rows(ratios, every=10)

    assert len(rows) == 2  # no leave figure, no row
    assert rows[0].endswith("| 2.63× (in the service's own gunicorn: 1.06×) | **no** |")
    assert rows[1].endswith("| yes |") and "one fan in 10" in rows[1]
    assert "taking the same requests" in _queue_p50_rows(ratios, every=1)[0]


def test_the_exact_p50s_keep_what_locusts_whole_ms_round_away() -> None:
    rows = [(100.0 + i, "/queue/token", ms) for i, ms in enumerate((1.21, 1.44, 1.47))]
    rows += [(100.0, "/bare (beside /queue/token)", 1.18), (101.0, "/bare (beside /queue/token)", 1.26)]
    rows += [(102.0, "/schedules/[id]/seats", 9.0)]  # not a queue endpoint

    assert exact_p50s(rows) == {"/bare (beside /queue/token)": 1.22, "/queue/token": 1.44}
