"""bench/server_overhead.py measures the worker class the web really runs, beside the one it replaced."""

from __future__ import annotations

from pathlib import Path

from bench.server_overhead import COMPARED, CONFIG_CLASS

ROOT = Path(__file__).resolve().parents[2]


def test_the_measured_class_is_config_gunicorns_and_the_embedded_servers() -> None:
    assert f'worker_class = "{CONFIG_CLASS}"' in (ROOT / "config" / "gunicorn.py").read_text()
    assert f'"worker_class", "{CONFIG_CLASS}"' in (ROOT / "config" / "embedded.py").read_text()
    assert CONFIG_CLASS not in COMPARED


def test_a_process_groups_cpu_and_blocking_are_read_from_proc() -> None:
    """A child in its own group spins 0.4 s, then blocks in 5 sleeps: its CPU and its voluntary switches show."""
    import subprocess
    import sys
    import time

    from bench.server_overhead import group_cpu, group_switches

    code = "import time\nt = time.time()\nwhile time.time() - t < 0.4: pass\nfor _ in range(5): time.sleep(0.02)\n"
    child = subprocess.Popen([sys.executable, "-c", code + "time.sleep(1)"], start_new_session=True)
    try:
        time.sleep(0.8)
        cpu, switches = group_cpu(child.pid), group_switches(child.pid)
    finally:
        child.kill()
        child.wait()
    assert 0.3 <= cpu <= 0.8
    assert switches >= 5
