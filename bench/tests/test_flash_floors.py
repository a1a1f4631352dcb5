"""The flash sale's join timeline and its first-request floor (bench/flash_sale)."""

from __future__ import annotations

import os
from pathlib import Path

from bench.flash_sale.load import timeline
from bench.flash_sale.report import ratios

HEADER = "Timestamp,User Count,Type,Name,Requests/s,Total Request Count\n"


def test_the_join_timeline_counts_from_the_runs_first_second(tmp_path: Path) -> None:
    """Seconds run from locust's first history row (before any join was answered), one row a second:
    when the fans arrived and when their joins came back."""
    (tmp_path / "sale_stats_history.csv").write_text(
        HEADER
        + "100,50,,Aggregated,0,0\n"
        + "101,300,POST,/queue/tokens,40,40\n101,300,,Aggregated,40,40\n"
        + "103,900,POST,/queue/tokens,90,250\n103,900,POST,/queue/tokens,90,260\n"
    )

    assert timeline(tmp_path / "sale", "/queue/tokens") == [(1, 300, 40), (3, 900, 250)]
    assert timeline(tmp_path / "missing", "/queue/tokens") == []


def test_a_join_is_also_compared_with_the_bare_first_request() -> None:
    """The join (every fan's first request) gets a second ratio against the bare route's first
    request at the same arrival rate, beside the closed-loop floor's; other endpoints keep one."""
    endpoints = {"/queue/tokens": {"p50_ms": 900.0, "rps": 100.0}, "/queue/token": {"p50_ms": 300.0, "rps": 50.0}}
    out = ratios(
        {}, {"rps": 150.0}, {"p50_ms": 600.0, "rps": 1000.0}, {"p50_ms": 450.0}, None, 1.0, 1.0, endpoints, None
    )

    assert out["p50_over_bare_p50[/queue/tokens]"] == 1.5
    assert out["p50_over_bare_first_request_p50[/queue/tokens]"] == 2.0
    assert "p50_over_bare_first_request_p50[/queue/token]" not in out


def test_each_endpoint_is_compared_with_the_bare_route_beside_it_in_the_same_run() -> None:
    """Sampled fans GET /bare right after each of their requests (`/bare (beside <endpoint>)`): each
    endpoint's p50 over that bare p50 is the same-run ratio; an endpoint with no sample gets none."""
    endpoints = {
        "/queue/tokens": {"p50_ms": 900.0, "rps": 100.0},
        "/queue/token": {"p50_ms": 300.0, "rps": 50.0},
        "/payments": {"p50_ms": 80.0, "rps": 1.0},
        "/bare (beside /queue/tokens)": {"p50_ms": 600.0, "rps": 10.0},
        "/bare (beside /queue/token)": {"p50_ms": 250.0, "rps": 5.0},
    }
    out = ratios({}, {"rps": 150.0}, {"p50_ms": 100.0, "rps": 1000.0}, None, None, 1.0, 1.0, endpoints, None)

    assert out["p50_over_same_run_bare_p50[/queue/tokens]"] == 1.5
    assert out["p50_over_same_run_bare_p50[/queue/token]"] == 1.2
    assert "p50_over_same_run_bare_p50[/payments]" not in out
    assert out["p50_over_bare_p50[/queue/tokens]"] == 9.0  # the closed-loop floor after the sale, as before


def test_the_same_run_ratio_reads_the_traces_exact_p50s_not_locusts_whole_ms() -> None:
    """Locust's table rounds times under 100 ms to whole ms: 1.4 ms against 1.3 ms read 1 against 1 (or 2
    against 1). Where the trace has both p50s, the ratio is theirs."""
    endpoints = {
        "/queue/token": {"p50_ms": 2.0, "rps": 50.0},
        "/bare (beside /queue/token)": {"p50_ms": 1.0, "rps": 5.0},
        "/queue/token [DELETE]": {"p50_ms": 2.0, "rps": 50.0},
        "/bare (beside /queue/token [DELETE])": {"p50_ms": 1.0, "rps": 5.0},
    }
    exact = {"/queue/token": 1.56, "/bare (beside /queue/token)": 1.3}  # the leave's are not in the trace
    out = ratios({}, {"rps": 150.0}, {"p50_ms": 100.0, "rps": 1000.0}, None, None, 1.0, 1.0, endpoints, None, exact)

    assert out["p50_over_same_run_bare_p50[/queue/token]"] == 1.2
    assert out["p50_over_same_run_bare_p50[/queue/token [DELETE]]"] == 2.0  # locust's, for lack of a trace


def test_the_in_app_median_is_the_bucket_that_holds_the_middle_request() -> None:
    """From prometheus' cumulative buckets: 10 requests, 4 under 1 ms, 7 under 2.5 ms: the 5th is in (1, 2.5]."""
    from bench.flash_sale.checks import in_app_p50_ms

    buckets = {"0.001": 4.0, "0.0025": 7.0, "0.005": 10.0, "+Inf": 10.0}

    assert in_app_p50_ms(buckets) == 2.5
    assert in_app_p50_ms({"0.001": 0.0, "+Inf": 0.0}) is None
    assert in_app_p50_ms({}) is None


def test_the_web_cpu_per_request_counts_what_the_service_answered() -> None:
    """The service's requests are the queue endpoints and the same-server floor's, not the bare gunicorn's."""
    from bench.flash_sale.report import web_cpu_per_request

    endpoints = {
        "/queue/tokens": {"requests": 600},
        "/queue/token": {"requests": 300},
        "/floor/bare (same server, beside /queue/tokens)": {"requests": 100},
        "/bare (beside /queue/tokens)": {"requests": 100},
        "Aggregated": {"requests": 1100},
    }

    assert web_cpu_per_request(1.5, endpoints) == {"cpu_s": 1.5, "requests": 1000, "ms_per_request": 1.5}
    assert web_cpu_per_request(None, endpoints) is None


def test_the_cpu_watch_averages_the_arrival_seconds_only() -> None:
    from bench.flash_sale.load import CpuWatch

    watch = CpuWatch()
    watch.busy = [0.9, 1.0, 0.95, 0.2, 0.1]

    assert watch.during(3) == 0.95
    assert CpuWatch().during(10) is None


def test_the_bare_gunicorns_cpu_is_counted_over_its_own_requests_only() -> None:
    """CPU ms a request of the bare gunicorn beside: its `/bare (beside ...)` rows, not the service's nor the
    same-server floor's."""
    from bench.flash_sale.report import bare_cpu_per_request

    endpoints = {
        "/queue/tokens": {"requests": 5000},
        "/bare (beside /queue/tokens)": {"requests": 3000},
        "/bare (beside /queue/token)": {"requests": 1000},
        "/floor/bare (same server, beside /queue/tokens)": {"requests": 700},
    }
    assert bare_cpu_per_request(2.6, endpoints) == {"cpu_s": 2.6, "requests": 4000, "ms_per_request": 0.65}
    assert bare_cpu_per_request(None, endpoints) is None


def test_the_time_waited_for_a_cpu_is_counted_over_each_gunicorns_own_requests() -> None:
    from bench.flash_sale.report import run_delay_per_request

    endpoints = {
        "/queue/tokens": {"requests": 5000},
        "/floor/bare (same server, beside /queue/tokens)": {"requests": 1000},
        "/bare (beside /queue/tokens)": {"requests": 4000},
    }
    assert run_delay_per_request(12.0, endpoints, bare=False) == {
        "waited_s": 12.0,
        "requests": 6000,
        "ms_per_request": 2.0,
    }
    assert run_delay_per_request(6.0, endpoints, bare=True) == {
        "waited_s": 6.0,
        "requests": 4000,
        "ms_per_request": 1.5,
    }


def test_the_time_a_processs_threads_waited_for_a_cpu_is_read_by_its_command_line() -> None:
    """Three children that name a marker spin at once on this machine's CPUs plus one more, so that some of
    them wait for a CPU: their run_delay shows under their marker, and none under another."""
    import subprocess
    import sys

    from bench.flash_sale.service import web_run_delay_seconds

    marker = "run-delay-marker-7d1f"
    spin = (
        f"import os, time  # {marker}\nwhile time.process_time() < 0.3: pass\nprint('done', flush=True)\ntime.sleep(30)"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
        for _ in range((os.cpu_count() or 2) + 1)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline().strip() == "done"
        waited, other = web_run_delay_seconds(marker), web_run_delay_seconds("run-delay-marker-none")
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert waited > 0.01
    assert other == 0.0
