"""docker-compose.cluster.yml: valid Compose, and the topology of SPEC §2 "Beyond one machine".

Validated like docker-compose.yml (tests/unit/test_compose.py): parsed with PyYAML, checked
against the vendored Compose Specification schema; no Docker engine needed.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from config.settings import Settings, cluster_nodes

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.cluster.yml").read_text(encoding="utf-8"))
SCHEMA = json.loads((Path(__file__).resolve().parent / "data" / "compose-spec.json").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
REDIS_NODES = [f"redis-{i}" for i in range(6)]
KAFKA = ["kafka-1", "kafka-2", "kafka-3"]
APP_REPLICAS = {"web": 2, "worker": 3, "scheduler": 2, "consumer": 2}


def _words(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def _env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[name].get("environment") or {}).items()}


def test_the_cluster_compose_file_matches_the_compose_specification() -> None:
    validator = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
    errors = sorted(validator.iter_errors(COMPOSE), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_six_redis_cluster_nodes_with_aof_and_noeviction_joined_by_a_one_shot_create() -> None:
    for name in REDIS_NODES:
        words = _words(SERVICES[name]["command"])
        assert words[0] == "redis-server"
        for flag, value in (
            ("--cluster-enabled", "yes"),
            ("--appendonly", "yes"),
            ("--maxmemory-policy", "noeviction"),
        ):
            assert words[words.index(flag) + 1] == value, (name, flag)
    init = SERVICES["redis-cluster-init"]
    script = " ".join(_words(init["command"]))
    assert "--cluster create" in script and "--cluster-replicas 1" in script and "--cluster-yes" in script
    assert init["restart"] == "no" and set(init["depends_on"]) == set(REDIS_NODES)


def test_three_kafka_brokers_in_kraft_mode_with_replicated_internal_topics() -> None:
    ids = set()
    for name in KAFKA:
        env = _env(name)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        ids.add(env["KAFKA_NODE_ID"])
    assert ids == {"1", "2", "3"}


def test_a_mysql_primary_and_a_read_only_replica_joined_by_gtid_replication() -> None:
    primary, replica = (_words(SERVICES[n]["command"]) for n in ("mysql-primary", "mysql-replica"))
    assert "--server-id=1" in primary and "--log-bin=mysql-bin" in primary and "--gtid-mode=ON" in primary
    assert "--server-id=2" in replica and "--read-only=ON" in replica and "--super-read-only=ON" in replica
    setup = " ".join(_words(SERVICES["mysql-replication"]["command"]))
    assert "SOURCE_HOST='mysql-primary'" in setup and "SOURCE_AUTO_POSITION=1" in setup and "START REPLICA" in setup
    # both servers' init create the app's database and user: replaying the primary's must not stop
    # replication; configured once; the app user may read the replica's lag
    assert "--replica-skip-errors=1007,1396" in replica
    assert "SHOW REPLICA STATUS" in setup and "GRANT REPLICATION CLIENT ON *.* TO 'concert'@'%'" in setup


def test_app_processes_are_scaled_out_and_configured_for_the_cluster_with_valid_settings() -> None:
    for name, replicas in APP_REPLICAS.items():
        service = SERVICES[name]
        assert service["deploy"]["replicas"] == replicas, name
        assert service["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
        env = _env(name)
        settings = Settings.from_env(env)  # what each process would read: valid, or it would not start
        assert settings.is_redis_cluster and {h for h, _ in cluster_nodes(settings.redis_url)} <= set(REDIS_NODES)
        assert settings.kafka_bootstrap_servers.split(",") == [f"{k}:9092" for k in KAFKA]
        assert (settings.kafka_replication_factor, settings.kafka_partitions) == (3, 6)
        assert "mysql-primary" in settings.database_url
        assert "@mysql-replica:3306/concert" in settings.database_replica_url and settings.database_replica_max_lag > 0


def test_every_redis_node_gets_a_larger_cpu_weight_than_the_app_containers() -> None:
    """A poll waits for its node's reply: on a busy shared host the nodes get a CPU before the app containers."""
    for node in REDIS_NODES:
        weight = int(SERVICES[node].get("cpu_shares", 1024))
        for app in ("web", "worker", "scheduler", "consumer"):
            assert weight >= 4 * int(SERVICES[app].get("cpu_shares", 1024)), (node, app)
