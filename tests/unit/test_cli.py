"""The command lines: --help everywhere, honest errors against the embedded store, one-line connection errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.procs import ROOT


def _main(module: str) -> Callable[[list[str]], int]:
    if module == "models":
        from models.__main__ import main
    elif module == "workers":
        from workers.__main__ import main
    else:
        from scheduler.__main__ import main
    return main


SUBCOMMANDS = [
    ("models", []),
    ("models", ["migrate"]),
    ("models", ["init-db"]),
    ("models", ["seed"]),
    ("models", ["demo"]),
    ("models", ["check"]),
    ("models", ["fairness"]),
    ("models", ["fairness", "verify"]),
    ("models", ["redis-migrate"]),
    ("workers", []),
    ("workers", ["run"]),
    ("workers", ["consume"]),
    ("workers", ["broker"]),
    ("workers", ["outbox"]),
    ("workers", ["dlt"]),
    ("workers", ["jobs"]),
    ("scheduler", []),
]


@pytest.mark.parametrize(("module", "words"), SUBCOMMANDS, ids=[" ".join([m, *w]) for m, w in SUBCOMMANDS])
def test_every_subcommand_help_exits_0_with_usage(module: str, words: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as done:
        _main(module)([*words, "--help"])

    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module}"), out
    assert len(out.splitlines()) >= 3


@pytest.mark.parametrize("module", ["models", "workers"])
def test_the_help_test_names_every_subcommand(module: str, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        _main(module)(["--help"])
    listed = re.search(r"\{([a-z-]+(?:,[a-z-]+)+)\}", capsys.readouterr().out)

    assert listed is not None
    assert set(listed.group(1).split(",")) == {w[0] for m, w in SUBCOMMANDS if m == module and w}


def _cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=timeout
    )


def test_scheduler_help_does_not_start_a_scheduler() -> None:
    started = time.monotonic()
    done = _cli("scheduler", "--help", timeout=30)

    assert done.returncode == 0 and done.stdout.startswith("usage: python -m scheduler")
    assert "leader lease" in done.stdout
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "args",
    [("workers", "jobs", "0123456789abcdef"), ("workers", "run"), ("scheduler",)],
    ids=["jobs", "run", "scheduler"],
)
def test_against_the_embedded_store_a_command_says_where_the_data_lives(args: tuple[str, ...], tmp_path: Path) -> None:
    done = _cli(*args, REDIS_URL="embedded", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")

    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: the embedded Redis lives inside the `make run` process; set REDIS_URL")
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (("models", "check"), {"DATABASE_URL": "mysql://root:@127.0.0.1:1/nope"}, "cannot reach the database"),
        (("workers", "jobs", "abc"), {"REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot reach Redis (REDIS_URL)"),
    ],
    ids=["mysql-refused", "redis-refused"],
)
def test_an_unreachable_store_is_one_line(args: tuple[str, ...], env: dict[str, str], says: str) -> None:
    done = _cli(*args, **env)

    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), done.stderr
    assert "Traceback" not in done.stderr


def test_a_database_without_a_schema_says_to_migrate(tmp_path: Path) -> None:
    done = _cli("workers", "outbox", DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")

    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: the database has no schema yet (no such table: outbox_events); run `python -m models migrate`"
    )


def test_the_consumer_without_a_broker_explains_and_waits_for_a_signal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    log = tmp_path / "consumer.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers", "consume"],
        cwd=ROOT,
        env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while "Waiting for a signal" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with pytest.raises(subprocess.TimeoutExpired):  # still there: honcho keeps the other processes running
            proc.wait(timeout=0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in log.read_text()
    assert "make broker" in log.read_text()


def test_a_seed_reports_its_progress_batch_by_batch(app) -> None:  # type: ignore[no-untyped-def]
    from models import seed

    steps: list[int] = []
    result = seed.seed(concerts=1, schedules=2, seats=seed.BATCH + 5, progress=steps.append)

    assert result.seats == 2 * (seed.BATCH + 5)
    assert steps == [seed.BATCH, 5, seed.BATCH, 5]


def test_seed_help_names_each_option_and_its_default(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit):
        _main("models")(["seed", "--help"])
    out = capsys.readouterr().out

    flat = " ".join(out.split())
    for option, default in (("--concerts", "1"), ("--schedules", "2"), ("--seats", "50"), ("--price", "50000")):
        entry = flat.split(f" {option} ", 1)[1].split(" --", 1)[0]
        assert entry.endswith(f"(default: {default})"), (option, entry)
