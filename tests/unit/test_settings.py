"""Settings.from_env: the documented defaults, and a bad value fails at start naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import EMBEDDED, Settings, SettingsError, cluster_nodes

REPO = Path(__file__).resolve().parents[2]


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    s = Settings.from_env({})

    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.database_url == "sqlite:///var/concert.db"
    assert s.redis_url == EMBEDDED
    assert s.kafka_bootstrap_servers == ""
    assert s.admin_token == ""
    assert s.active_limit == 100
    assert s.admit_interval == 1.0
    assert (s.active_ttl, s.waiting_ttl, s.hold_ttl) == (600, 300, 300)
    assert s.max_holds_per_user == 4
    assert s.partitions == 16
    assert s.outbox_interval == 1.0
    assert (s.cache_schedule_ttl, s.cache_seats_ttl) == (300, 30)
    assert (s.max_charge, s.max_balance) == (1_000_000, 100_000_000)
    assert s.max_body_bytes == 16_384
    assert s.poll_memo is True
    assert s.is_mysql is False


def test_empty_strings_fall_back_to_the_defaults() -> None:
    s = Settings.from_env({"PORT": "", "ACTIVE_LIMIT": "", "DATABASE_URL": "", "REDIS_URL": ""})

    assert (s.port, s.active_limit) == (8080, 100)
    assert (s.database_url, s.redis_url) == ("sqlite:///var/concert.db", EMBEDDED)


def test_good_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "HOST": "0.0.0.0",
            "PORT": " 9000 ",
            "DATABASE_URL": "mysql://app:secret@db:3306/concert",
            "REDIS_URL": "redis://cache:6379/2",
            "KAFKA_BOOTSTRAP_SERVERS": " kafka:9092 ",
            "ADMIN_TOKEN": "s3cret",
            "ACTIVE_LIMIT": "250",
            "ADMIT_INTERVAL": "0.5",
            "MAX_CHARGE": "5000",
            "MAX_BALANCE": "20000",
            "POLL_MEMO": "off",
        }
    )

    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.database_url == "mysql://app:secret@db:3306/concert"
    assert s.is_mysql is True
    assert s.redis_url == "redis://cache:6379/2"
    assert s.kafka_bootstrap_servers == "kafka:9092"
    assert s.admin_token == "s3cret"
    assert (s.active_limit, s.admit_interval) == (250, 0.5)
    assert (s.max_charge, s.max_balance) == (5000, 20000)
    assert s.poll_memo is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "0"),
        ("PORT", "65536"),
        ("ACTIVE_LIMIT", "-1"),
        ("DATABASE_URL", "postgres://x"),
        ("DATABASE_URL", "mysql:///nohost"),
        ("REDIS_URL", "http://x"),
        ("REDIS_URL", "redis+cluster://"),
        ("REDIS_URL", "redis+cluster://a:1,b"),
        ("REDIS_URL", "redis+cluster://a:70000"),
        ("ADMIT_INTERVAL", "fast"),
        ("ADMIT_MODE", "greedy"),
        ("POLL_MAX_INTERVAL", "0"),
        ("POLL_MEMO", "sometimes"),
        ("MAX_BODY_BYTES", "10"),
        ("DATABASE_REPLICA_URL", "mysql:///nohost"),
        ("DATABASE_REPLICA_URL", "sqlite:///replica.db"),
        ("DATABASE_REPLICA_URL", "mysql://replica:3306/concert"),  # beside the default SQLite primary
        ("DATABASE_REPLICA_MAX_LAG", "-1"),
    ],
)
def test_a_bad_value_raises_settings_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({name: value})

    message = str(excinfo.value)
    assert name in message
    assert "\n" not in message


def test_a_replica_url_beside_a_mysql_primary_is_kept_and_unset_means_none() -> None:
    primary = {"DATABASE_URL": "mysql://app:secret@db:3306/concert"}
    replica = "mysql://app:secret@db-replica:3306/concert"
    assert Settings.from_env({**primary, "DATABASE_REPLICA_URL": replica}).database_replica_url == replica
    assert Settings.from_env({**primary, "DATABASE_REPLICA_URL": " "}).database_replica_url == ""
    assert Settings.from_env(primary).database_replica_url == ""


def test_from_env_reads_the_process_environment_when_given_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8181")
    assert Settings.from_env().port == 8181

    monkeypatch.setenv("PORT", "abc")
    with pytest.raises(SettingsError, match="PORT"):
        Settings.from_env()


def test_settings_are_frozen_and_with_returns_a_changed_copy() -> None:
    s = Settings()

    changed = s.with_(port=9999)

    assert (s.port, changed.port) == (8080, 9999)
    with pytest.raises(AttributeError):
        s.port = 1  # type: ignore[misc]


def test_the_cli_fails_at_start_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    # Given a bad PORT and a SQLite file that does not exist yet
    db_file = tmp_path / "x.db"
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "DATABASE_URL")}
    env.update(PORT="abc", DATABASE_URL=f"sqlite:///{db_file}")

    # When the database CLI starts
    result = subprocess.run(
        [sys.executable, "-m", "models", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Then it exits 2 with exactly one line on stderr naming PORT, before touching the database
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0]
    assert result.stdout == ""
    assert not db_file.exists()


def test_the_embedded_banner_never_prints_a_database_password() -> None:
    from config.embedded import redacted

    assert redacted("mysql://app:s3cret@db.internal:3306/tickets") == "mysql://app:***@db.internal:3306/tickets"
    assert redacted("redis://:hunter2@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redacted("sqlite:///var/reservations.db") == "sqlite:///var/reservations.db"


def test_a_redis_cluster_url_names_its_startup_nodes() -> None:
    s = Settings.from_env({"REDIS_URL": "redis+cluster://user:pw@r1:7000,r2:7001, r3:7002"})

    assert s.is_redis_cluster is True
    assert cluster_nodes(s.redis_url) == [("r1", 7000), ("r2", 7001), ("r3", 7002)]
    assert Settings.from_env({"REDIS_URL": "redis://r1:6379/0"}).is_redis_cluster is False
