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
    """A child in its own group spins 0.4 s of CPU, then blocks in 5 sleeps: its CPU and its voluntary switches show.

    The child spins on its own CPU clock and says when it is done, so a busy machine (CI runs the
    suite in parallel) slows the test down but cannot make the child's CPU come out short.
    """
    import subprocess
    import sys

    from bench.server_overhead import group_cpu, group_switches

    code = (
        "import sys, time\n"
        "while time.process_time() < 0.4: pass\n"
        "for _ in range(5): time.sleep(0.02)\n"
        "print('done', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
        cpu, switches = group_cpu(child.pid), group_switches(child.pid)
    finally:
        child.kill()
        child.wait()
    assert 0.35 <= cpu <= 1.0  # /proc counts whole ticks (1/HZ s), rounded down
    assert switches >= 5
