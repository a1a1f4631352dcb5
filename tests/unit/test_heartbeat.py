"""config/heartbeat.py: the worker's loop beats, and the compose probe fails once the beat stops."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from config import heartbeat
from tests.support.helpers import wait_for, worker_thread


def test_the_probe_passes_on_a_fresh_beat_and_fails_on_a_stale_or_missing_one(tmp_path: Path) -> None:
    beat = tmp_path / "heartbeat"

    assert heartbeat.main([str(beat), "30"]) == 1  # never beaten
    beat.touch()
    assert heartbeat.main([str(beat), "30"]) == 0
    old = time.time() - 60
    os.utime(beat, (old, old))
    assert heartbeat.main([str(beat), "30"]) == 1


def test_a_partition_worker_beats_while_its_loop_runs(app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    beat = tmp_path / "heartbeat"
    monkeypatch.setenv(heartbeat.ENV, str(beat))

    with worker_thread(tick_interval=0.1):
        deadline = time.monotonic() + 10
        while not beat.exists():
            assert time.monotonic() < deadline, "the worker never beat"
            time.sleep(0.05)
        first = beat.stat().st_mtime
        assert wait_for(lambda: beat.stat().st_mtime > first, 10) is not None
