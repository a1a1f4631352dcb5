"""docker-compose.yml: valid Compose, and the production topology that SPEC §2 asks for.

No Docker engine is needed: the file is parsed with PyYAML and validated against the
Compose Specification JSON schema vendored in tests/unit/data/ (see its README.md).
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

INFRA = ("mysql", "redis", "kafka")
APP = ("web", "worker", "scheduler", "consumer")
ONE_SHOT = ("migrate",)
LONG_RUNNING = INFRA + APP

Service = dict[str, Any]


@cache
def _compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)  # SafeLoader resolves anchors and `<<` merge keys
    assert isinstance(data, dict), f"{COMPOSE_FILE.name} is not a mapping"
    return data


def _services() -> dict[str, Service]:
    services = _compose().get("services")
    assert isinstance(services, dict) and services, "no services defined"
    return services


def _service(name: str) -> Service:
    services = _services()
    assert name in services, f"service {name!r} missing; have {sorted(services)}"
    return services[name]


def _words(value: str | list[str] | None) -> list[str]:
    """A command in either Compose form (string or list) as a list of words."""
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _environment(service: Service) -> dict[str, str]:
    """`environment:` in either Compose form (mapping or list of KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _flag_value(words: list[str], flag: str) -> str | None:
    """The value given to `flag` as `--flag value` or `--flag=value`, else None."""
    for i, word in enumerate(words):
        if word == flag and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


def _published(service: Service) -> set[tuple[str, str]]:
    """(published, target) port pairs, from short ("[ip:]host:container") or long syntax."""
    pairs = set()
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            pairs.add((str(port.get("published", "")), str(port["target"])))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            published = parts[-2] if len(parts) >= 2 else ""
            pairs.add((published, parts[-1]))
    return pairs


def test_compose_file_matches_the_compose_specification() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(_compose()), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors)


def test_every_required_service_is_defined() -> None:
    missing = set(LONG_RUNNING + ONE_SHOT) - set(_services())
    assert not missing, f"services missing: {sorted(missing)}"


def test_mysql_is_version_8_with_utf8mb4() -> None:
    mysql = _service("mysql")
    image = mysql.get("image", "")
    assert image.split(":", 1)[0] == "mysql", image
    assert image.partition(":")[2].split(".")[0] == "8", f"MySQL 8.x expected, got {image!r}"
    words = _words(mysql.get("command"))
    assert _flag_value(words, "--character-set-server") == "utf8mb4"
    assert _environment(mysql).get("MYSQL_DATABASE") == "concert"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--appendonly", "yes"),
        ("--appendfsync", "everysec"),
        ("--maxmemory-policy", "noeviction"),
    ],
)
def test_redis_persists_with_aof_and_never_evicts(flag: str, value: str) -> None:
    redis = _service("redis")
    assert redis.get("image", "").split(":")[0] == "redis"
    words = _words(redis.get("command"))
    assert _flag_value(words, flag) == value, f"redis command {words} lacks `{flag} {value}`"


def test_kafka_runs_in_kraft_mode_without_zookeeper() -> None:
    env = _environment(_service("kafka"))
    roles = {role.strip() for role in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert roles == {"broker", "controller"}, f"KAFKA_PROCESS_ROLES={roles}"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"), "no controller quorum voters"
    assert env.get("KAFKA_NODE_ID"), "KRaft needs KAFKA_NODE_ID"
    assert "KAFKA_ZOOKEEPER_CONNECT" not in env
    zookeepers = [
        name
        for name, service in _services().items()
        if "zookeeper" in name.lower() or "zookeeper" in str(service.get("image", "")).lower()
    ]
    assert not zookeepers, f"KRaft needs no ZooKeeper, found {zookeepers}"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_healthcheck_and_restarts(name: str) -> None:
    service = _service(name)
    check = service.get("healthcheck") or {}
    assert not check.get("disable"), f"{name}: healthcheck disabled"
    test = check.get("test")
    assert test and _words(test)[:1] != ["NONE"], f"{name}: no healthcheck test"
    assert service.get("restart") == "unless-stopped", f"{name}: restart={service.get('restart')}"


def test_depends_on_conditions_are_satisfiable() -> None:
    # service_healthy never fires without a healthcheck; service_completed_successfully
    # on a long-running service would block its dependants forever.
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            continue
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                check = services[target].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), (
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
                )
            if condition == "service_completed_successfully":
                assert target in ONE_SHOT, f"{name} waits for long-running {target} to exit"


@pytest.mark.parametrize("name", APP)
def test_app_service_starts_after_migration_and_servers(name: str) -> None:
    depends = _service(name).get("depends_on")
    assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
    assert depends.get("migrate", {}).get("condition") == "service_completed_successfully"
    for server in INFRA:
        assert depends.get(server, {}).get("condition") == "service_healthy", (name, server)


def test_migrate_runs_once_after_mysql_is_healthy() -> None:
    migrate = _service("migrate")
    assert _words(migrate.get("command")) == ["python", "-m", "models", "migrate"]
    assert migrate.get("restart", "no") == "no"
    assert migrate["depends_on"]["mysql"]["condition"] == "service_healthy"


def test_web_publishes_8080_and_listens_on_all_interfaces() -> None:
    web = _service("web")
    assert ("8080", "8080") in _published(web), f"web ports: {web.get('ports')}"
    env = _environment(web)
    assert env.get("HOST") == "0.0.0.0"
    assert env.get("PORT") == "8080"
    assert "readyz" in " ".join(_words(web["healthcheck"]["test"]))


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("web", ["gunicorn", "-c", "config/gunicorn.py", "web:create_app()"]),
        ("worker", ["python", "-m", "workers", "run"]),
        ("scheduler", ["python", "-m", "scheduler"]),
        ("consumer", ["python", "-m", "workers", "consume"]),
    ],
)
def test_app_service_runs_its_process(name: str, command: list[str]) -> None:
    assert _words(_service(name).get("command")) == command


@pytest.mark.parametrize("name", APP + ONE_SHOT)
def test_app_service_is_wired_to_the_compose_servers(name: str) -> None:
    service = _service(name)
    assert "build" in service, f"{name}: should run the image built from this repo"
    env = _environment(service)
    services = _services()

    database = urlsplit(env.get("DATABASE_URL", ""))
    assert database.scheme.startswith("mysql"), f"{name}: DATABASE_URL={database.geturl()!r}"
    assert database.hostname == "mysql" and database.path == "/concert", name

    redis = urlsplit(env.get("REDIS_URL", ""))
    assert redis.scheme == "redis" and redis.hostname == "redis", f"{name}: REDIS_URL"

    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "")
    hosts = {server.rsplit(":", 1)[0] for server in bootstrap.split(",") if server}
    assert hosts == {"kafka"}, f"{name}: KAFKA_BOOTSTRAP_SERVERS={bootstrap!r}"
    assert {database.hostname, redis.hostname} | hosts <= set(services)
    assert env.get("ADMIN_TOKEN"), f"{name}: ADMIN_TOKEN unset"


def test_mysql_credentials_match_database_url() -> None:
    mysql_env = _environment(_service("mysql"))
    url = urlsplit(_environment(_service("web"))["DATABASE_URL"])
    assert (url.username, url.password) == (mysql_env["MYSQL_USER"], mysql_env["MYSQL_PASSWORD"])
    assert url.path.lstrip("/") == mysql_env["MYSQL_DATABASE"]


def test_named_volumes_are_declared() -> None:
    declared = set(_compose().get("volumes") or {})
    for name, service in _services().items():
        for volume in service.get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name}: volume {source!r} not declared"


def test_there_is_no_default_admin_token_and_the_refusal_names_it() -> None:
    for name in APP + ONE_SHOT:
        token = _environment(_service(name)).get("ADMIN_TOKEN", "")
        assert token.startswith("${ADMIN_TOKEN:?") and "ADMIN_TOKEN" in token.split(":?", 1)[1], (name, token)
    assert "change-me" not in COMPOSE_FILE.read_text()


def test_the_database_port_is_not_published() -> None:
    assert not _service("mysql").get("ports"), "3306 is published"


def test_a_one_shot_demo_service_seeds_behind_a_profile() -> None:
    demo = _service("demo")
    assert _words(demo.get("command")) == ["python", "-m", "models", "demo"]
    assert demo.get("profiles") == ["demo"]
    assert demo.get("restart") == "no"
    assert demo["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("name", ["worker", "scheduler", "consumer"])
def test_the_non_http_processes_are_checked_by_their_heartbeat(name: str) -> None:
    service = _service(name)
    path = _environment(service)["HEARTBEAT_FILE"]
    assert _words(service["healthcheck"]["test"])[1:5] == ["python", "-m", "config.heartbeat", path]


def test_the_build_context_leaves_out_local_state() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip()}
    assert {".git", ".venv", "var", "tests", "bench"} <= ignored


def test_redis_gets_a_larger_cpu_weight_than_the_app_containers() -> None:
    """A poll waits for Redis's reply: on a busy shared host Redis must get a CPU before the app containers."""
    redis_weight = int(_service("redis").get("cpu_shares", 1024))
    for name in ("web", "worker", "scheduler", "consumer"):
        assert redis_weight >= 4 * int(_service(name).get("cpu_shares", 1024)), name
