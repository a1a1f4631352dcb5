"""bench/flash_sale/priority.py: the sale raises the local Redis's CPU priority and puts it back afterwards."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.flash_sale.priority import group_nice, raise_priority, redis_server_pids, restore


def _child() -> subprocess.Popen[bytes]:
    """A sleeping child in a session of its own (its own autogroup, as a service started apart)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="lowering a nice value needs root")
def test_a_process_and_its_session_get_the_nice_value_for_the_run_and_it_is_put_back() -> None:
    child = _child()
    try:
        before = (os.getpriority(os.PRIO_PROCESS, child.pid), group_nice(child.pid))
        raised = raise_priority(child.pid, -7)
        during = (os.getpriority(os.PRIO_PROCESS, child.pid), group_nice(child.pid))
        assert raised is not None
        restore(raised)
        after = (os.getpriority(os.PRIO_PROCESS, child.pid), group_nice(child.pid))
    finally:
        child.kill()
        child.wait()
    assert before[0] == after[0] == 0
    assert during[0] == -7
    if before[1] is not None:  # a kernel with autogroup scheduling: the session's weight is what counts
        assert (before[1], during[1], after[1]) == (0, -7, 0)


def test_without_the_right_to_lower_it_nothing_changes_and_the_run_knows() -> None:
    child = _child()
    try:
        code = (
            "import os, sys\n"
            "from bench.flash_sale.priority import raise_priority\n"
            "os.setuid(65534) if os.geteuid() == 0 else None\n"
            f"print(raise_priority({child.pid}, -7))\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "None"
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == 0
    finally:
        child.kill()
        child.wait()


def test_only_redis_servers_running_here_are_found() -> None:
    class Fake:
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def info(self, section: str) -> dict[str, int]:
            return {"process_id": self.pid}

    class FakeCluster:
        def get_nodes(self) -> list[object]:
            return [type("Node", (), {"redis_connection": Fake(p)})() for p in (os.getpid(), 2**22 + 7)]

    # this test process is not a redis-server, and the other pid does not run here
    assert redis_server_pids(Fake(os.getpid())) == []
    assert redis_server_pids(FakeCluster()) == []
