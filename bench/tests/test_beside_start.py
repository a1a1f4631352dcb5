"""bench/locustfile_flash.py: the floor beside a request starts at the same moment as the request, even when a
whole second's fans start at once (locust's -r starts each second's fans together).

Until 2026-12-04 21:50 UTC a floor's greenlet was only queued (gevent.spawn) while its fan went on to send its
own request: in a burst every fan's request started first, and the floors after all of them. In the full sale
(21:44 UTC trace) the bare route beside a join started 200-400 ms after it, so it waited through none of the
burst the join waited through, and read low.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FANS = 400

# Run in a child: importing locust patches the whole process with gevent.
CHILD = f"""
import json, os
from gevent import monkey
monkey.patch_all()
import gevent
from gevent.pywsgi import WSGIServer

def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]

server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
os.environ["FLASH_BARE_HOST"] = f"http://127.0.0.1:{{server.server_port}}"
os.environ["FLASH_BARE_EVERY"] = "1"
os.environ["AUTH_JWT_SECRET"] = "a-test-secret-of-thirty-two-bytes"

import locust
from locust.env import Environment
import bench.locustfile_flash as flash

starts = {{"request": [], "floor": []}}

@locust.events.request.add_listener
def on_request(name, start_time, **_):
    starts["floor" if name.startswith("/bare (beside") else "request"].append(start_time)

flash.Fan.host = f"http://127.0.0.1:{{server.server_port}}"
env = Environment(user_classes=[flash.Fan], events=locust.events)
fans = [flash.Fan(env) for _ in range({FANS})]

def journey(fan):  # what locust does with each fan of a burst: on_start, then its first request
    fan.on_start()
    fan._call("GET", "/api/v1/queue/tokens", "/queue/tokens", (200,))

gevent.joinall([gevent.spawn(journey, fan) for fan in fans])  # every fan at once, as locust starts a second's
print(json.dumps({{"starts": starts, "outcomes": dict(flash.outcomes)}}))
"""


def test_in_a_burst_each_floor_starts_beside_its_request_not_after_the_whole_burst() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASH_")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    requests, floors = sorted(result["starts"]["request"]), sorted(result["starts"]["floor"])
    assert len(requests) == len(floors) == FANS

    # the k-th request to start and the k-th floor to start are the same fan's pair, started together
    gaps_ms = sorted(abs(f - r) * 1000 for r, f in zip(requests, floors, strict=True))
    assert gaps_ms[len(gaps_ms) // 2] < 2, gaps_ms[len(gaps_ms) // 2]
    assert gaps_ms[-1] < 20, gaps_ms[-1]
    # the floors do not all start after the last request (the old order)
    assert floors[0] < requests[-1]
    # and the run counts it: every pair, and how far apart they started
    assert result["outcomes"]["beside_pairs"] == FANS
    assert result["outcomes"]["beside_lag_ms_max"] < 20
