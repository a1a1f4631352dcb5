"""Faults on a Redis Cluster started by tests/support/redis_cluster.sh: which master serves a key,
kill it, bring it back; start and stop a whole cluster of one's own. Shared by the failover test
and the chaos run (`python -m bench.chaos --redis-cluster`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("redis_cluster.sh")
DIR = Path(os.environ.get("REDIS_CLUSTER_DIR", "/tmp/concert-redis-cluster"))


def master_port_of(client: Any, key: str) -> int:
    """The port of the master that serves `key`'s slot now."""
    return int(client.get_node_from_key(key).port)


def start_cluster(ports: list[int], directory: Path, *, host: str = "127.0.0.1", bus_offset: int = 10000) -> str:
    """Six (or len(ports)) fresh nodes joined as masters + replicas by the harness script, data in
    `directory`; returns the `redis+cluster://` URL naming every node. Whatever still answers on
    those ports (a run that died before its cleanup) is shut down first, never reused."""
    directory.mkdir(parents=True, exist_ok=True)
    env = _env(directory, ports, host, bus_offset)
    subprocess.run([str(SCRIPT), "stop"], check=False, capture_output=True, env=env)
    done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        logs = "".join(f"\n--- {p} ---\n" + _tail(directory / str(p) / "redis.log") for p in ports)
        raise RuntimeError(f"the Redis Cluster on {ports} did not start: {done.stdout}{done.stderr}{logs}")
    return "redis+cluster://" + ",".join(f"{host}:{p}" for p in ports)


def stop_cluster(ports: list[int], directory: Path, *, host: str = "127.0.0.1") -> None:
    """Stop the nodes `start_cluster` started (their data stays in `directory`)."""
    subprocess.run([str(SCRIPT), "stop"], check=False, capture_output=True, env=_env(directory, ports, host, 10000))


def kill_node(port: int, host: str = "127.0.0.1", *, directory: Path | None = None) -> None:
    """SIGKILL the node on `port` (started by the harness: its pid file), and wait until it is gone."""
    import redis

    pid = int(((directory or DIR) / str(port) / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(host=host, port=port, socket_connect_timeout=0.2).ping()
        except redis.ConnectionError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the node on {port} still answers after SIGKILL")


def restart_node(
    port: int, *, timeout: float = 30.0, directory: Path | None = None, bus_offset: int | None = None
) -> None:
    """Start a killed node again on its data dir (and bus port); it rejoins as a replica. Waits
    until the cluster sees all its nodes connected and every slot served."""
    env = dict(os.environ)
    if directory is not None:
        env["REDIS_CLUSTER_DIR"] = str(directory)
    if bus_offset is not None:
        env["REDIS_CLUSTER_BUS_OFFSET"] = str(bus_offset)
    subprocess.run([str(SCRIPT), "restart-node", str(port)], check=True, capture_output=True, env=env)
    wait_until_healthy(port, timeout=timeout)


def role_of(port: int, host: str = "127.0.0.1") -> str:
    """'master' or 'slave' (ROLE of the node on `port`)."""
    import redis

    role = redis.Redis(host=host, port=port, socket_connect_timeout=0.5).execute_command("ROLE")
    return role[0].decode() if isinstance(role[0], bytes) else str(role[0])


def wait_until_healthy(port: int = 7000, *, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    """Until CLUSTER INFO says ok and CLUSTER NODES shows no node failing or disconnected."""
    import redis

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            node = redis.Redis(host=host, port=port, socket_connect_timeout=0.5, decode_responses=True)
            state = node.execute_command("CLUSTER INFO")["cluster_state"]
            nodes = node.execute_command("CLUSTER NODES")  # redis-py parses it: {"host:port": {...}}
            last = f"cluster_state:{state} {nodes}"
            if state == "ok" and all(n["connected"] and "fail" not in n["flags"] for n in nodes.values()):
                return
        except redis.RedisError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise AssertionError(f"the cluster did not heal within {timeout} s: {last}")


def _env(directory: Path, ports: list[int], host: str, bus_offset: int) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_CLUSTER_DIR": str(directory),
        "REDIS_CLUSTER_PORTS": " ".join(map(str, ports)),
        "REDIS_CLUSTER_HOST": host,
        "REDIS_CLUSTER_BUS_OFFSET": str(bus_offset),
    }


def _tail(path: Path, chars: int = 600) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
