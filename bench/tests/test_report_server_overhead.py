"""docs/BENCHMARKS.md prints gunicorn's cost a request for each worker class server_overhead measured."""

from __future__ import annotations

from bench.report import server_overhead_section


def _class(kept: float, new: float, paced: float, switches: float) -> dict[str, object]:
    return {
        "served_kept_alive_us": [kept, kept + 10, kept - 10],
        "served_new_connection_us": [new],
        "paced_cpu_us_median": paced,
        "paced_switches_median": switches,
    }


def test_each_measured_class_gets_a_row_with_its_medians() -> None:
    d = {
        "machine": {"cpus": 2, "date_utc": "2026-12-04 19:38"},
        "parameters": {
            "rounds": 3,
            "connections": 16,
            "seconds": 6,
            "paced_connections": 1000,
            "paced_period_s": 2.0,
            "worker_class": "config.gthread.SharedPollWorker",
        },
        "loadavg_start_end": [[4.1, 0, 0], [7.1, 0, 0]],
        "in_process_us": [49.0, 50.0, 48.0],
        "by_worker_class": {
            "config.gthread.SharedPollWorker": _class(277, 335, 587, 2.72),
            "config.gthread.ReadableThreadWorker": _class(339, 390, 674, 6.44),
        },
    }
    text = "\n".join(server_overhead_section(d))
    assert "| `config.gthread.SharedPollWorker` | 277 | 335 | 587 | 2.72 |" in text
    assert "| `config.gthread.ReadableThreadWorker` | 339 | 390 | 674 | 6.44 |" in text
    assert "2026-12-04 19:38 UTC" in text and "serves with `config.gthread.SharedPollWorker`" in text


def test_no_result_says_how_to_make_one() -> None:
    assert "run `python -m bench.server_overhead`" in "\n".join(server_overhead_section(None))
