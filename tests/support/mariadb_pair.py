"""The MariaDB primary + replica pair of the replica tests (started by tests/support/mariadb_pair.sh).

Direct SQL to either server, bypassing the app, to stage what a test needs: replication
stopped (the replica lags by as much as the test writes meanwhile), a row only the replica has,
the replica shut down and started again, and a wait until the replica has caught up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql

SCRIPT = Path(__file__).with_name("mariadb_pair.sh")


def connect(url: str, *, database: bool = True) -> pymysql.Connection[Any]:
    """A PyMySQL connection (autocommit) to the server of a mysql:// URL."""
    u = urlparse(url)
    return pymysql.connect(
        host=u.hostname,
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=u.path.lstrip("/") if database else None,
        autocommit=True,
        connect_timeout=3,
    )


def sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on that server and return its rows."""
    conn = connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args or None)
            return list(cur.fetchall())
    finally:
        conn.close()


@dataclass(frozen=True)
class Pair:
    """A primary and a replica that follows it."""

    primary_url: str
    replica_url: str

    def replicating(self) -> bool:
        """The replica's IO and SQL threads both run."""
        conn = connect(self.replica_url, database=False)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SHOW SLAVE STATUS")
                row = cur.fetchone()
        finally:
            conn.close()
        return bool(row) and row["Slave_IO_Running"] == "Yes" and row["Slave_SQL_Running"] == "Yes"

    def stop_replication(self) -> None:
        """STOP SLAVE: from now on the replica lags by every write to the primary."""
        sql(self.replica_url, "STOP SLAVE")

    def start_replication(self) -> None:
        """START SLAVE and wait until the replica has applied everything the primary wrote."""
        sql(self.replica_url, "START SLAVE")
        self.wait_caught_up()

    def wait_caught_up(self, timeout: float = 10.0) -> None:
        """Block until the replica has applied the primary's binlog up to now (MASTER_GTID_WAIT)."""
        [(position,)] = sql(self.primary_url, "SELECT @@gtid_binlog_pos")
        [(waited,)] = sql(self.replica_url, "SELECT MASTER_GTID_WAIT(%s, %s)", position, timeout)
        assert waited == 0, f"the replica did not reach {position} within {timeout}s"

    def shutdown_replica(self) -> None:
        """SHUTDOWN the replica server (as a crash would take it away from the app)."""
        [(pid_file,)] = sql(self.replica_url, "SELECT @@pid_file")
        pid = int(Path(pid_file).read_text().strip())
        conn = connect(self.replica_url, database=False)
        try:
            with conn.cursor() as cur:
                cur.execute("SHUTDOWN")
        finally:
            conn.close()
        # SHUTDOWN answers before the server is gone: for a moment it still serves queries on open connections,
        # and a read then returns the replica's (stale) rows. Gone means: its process has exited.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the replica (pid {pid}) still runs 30 s after SHUTDOWN")

    def restart_replica(self) -> None:
        """Start the replica again on its datadir (it resumes from its GTID position) and wait until it caught up."""
        ports = f"{urlparse(self.primary_url).port or 3306} {urlparse(self.replica_url).port or 3306}"
        env = {**os.environ, "MARIADB_PAIR_PORTS": ports}
        subprocess.run([str(SCRIPT), "start-replica"], env=env, check=True, capture_output=True, timeout=60)

    @contextlib.contextmanager
    def frozen_replica(self) -> Iterator[None]:
        """SIGSTOP the replica's mariadbd for the block (it accepts TCP, never answers), then SIGCONT."""
        [(pid_file,)] = sql(self.replica_url, "SELECT @@pid_file")
        pid = int(Path(pid_file).read_text().strip())
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)
