"""Faults on the test Redis Cluster (tests/support/redis_cluster.sh): which master serves a key,
kill it, bring it back. Shared by the failover test and the chaos run."""

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


def kill_node(port: int, host: str = "127.0.0.1") -> None:
    """SIGKILL the node on `port` (started by the harness: its pid file), and wait until it is gone."""
    import redis

    pid = int((DIR / str(port) / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(host=host, port=port, socket_connect_timeout=0.2).ping()
        except redis.ConnectionError:
            return
        time.sleep(0.05)
    raise AssertionError(f"the node on {port} still answers after SIGKILL")


def restart_node(port: int, *, timeout: float = 30.0) -> None:
    """Start a killed node again on its data dir; it rejoins as a replica. Waits until the
    cluster sees all its nodes connected and every slot served."""
    subprocess.run([str(SCRIPT), "restart-node", str(port)], check=True, capture_output=True)
    wait_until_healthy(port, timeout=timeout)


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
