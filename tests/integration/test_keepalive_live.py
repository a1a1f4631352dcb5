"""A fan's connection survives its longest paced wait: real gunicorn (config/gunicorn.py), one kept-alive
connection left idle past POLL_MAX_INTERVAL, then a POST on it must get an answer.

With gunicorn closing idle connections after 5 s while paced fans idle up to POLL_MAX_INTERVAL (30 s), a
hold or payment sent just as gunicorn closed the connection got no answer at all ("connection closed"),
and a client does not resend a POST: the 2026-12-02 flash sale lost 36 holds and 54 payments that way.
"""

from __future__ import annotations

import http.client
import time

import pytest

from tests.support.helpers import free_port, wait_for
from tests.support.procs import Cluster

pytestmark = pytest.mark.integration

POLL_MAX = 6  # POLL_MAX_INTERVAL of the server: the longest gap a paced fan leaves between two requests


def _request(conn: http.client.HTTPConnection, method: str) -> int:
    """One request on the kept-alive connection (http.client, like a fan's client, never resends): its status."""
    conn.request(method, "/bare", body=b"{}", headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _answers(port: int) -> bool:
    try:
        return _request(http.client.HTTPConnection("127.0.0.1", port, timeout=2), "GET") == 200
    except OSError:
        return False


def test_a_post_on_a_connection_idle_for_the_longest_paced_wait_gets_an_answer(mysql_url: str, redis_url: str) -> None:
    port = free_port()
    procs = Cluster(mysql_url, redis_url)
    web = procs.start("web", "gunicorn", "-c", "config/gunicorn.py", "bench.bare_app:app",
                      HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS="2",
                      POLL_MAX_INTERVAL=str(POLL_MAX))  # fmt: skip
    try:
        assert wait_for(lambda: _answers(port), timeout=30) is not None, web.output()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert _request(conn, "GET") == 200
        time.sleep(POLL_MAX + 1)  # the fan's longest paced wait, plus a second of client lag
        try:
            status = _request(conn, "POST")  # a hold or a payment: never resent by the client
        except (http.client.RemoteDisconnected, ConnectionError) as exc:
            pytest.fail(f"no answer on the kept-alive connection ({exc!r})\n{web.output()}")
        finally:
            conn.close()

        assert status == 405  # an answer (the bare app has no POST route)
    finally:
        procs.stop()
