"""bench/server_overhead.py measures the worker class the web really runs, beside the one it replaced."""

from __future__ import annotations

from pathlib import Path

from bench.server_overhead import COMPARED, CONFIG_CLASS

ROOT = Path(__file__).resolve().parents[2]


def test_the_measured_class_is_config_gunicorns_and_the_embedded_servers() -> None:
    assert f'worker_class = "{CONFIG_CLASS}"' in (ROOT / "config" / "gunicorn.py").read_text()
    assert f'"worker_class", "{CONFIG_CLASS}"' in (ROOT / "config" / "embedded.py").read_text()
    assert CONFIG_CLASS not in COMPARED
