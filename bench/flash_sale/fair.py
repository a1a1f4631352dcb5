"""The fair-start variant (`--fair-start`): fans join the pre-queue over HTTP, the scheduler leader
draws at the opening, admission follows the drawn order, and anyone can verify the draw.

The concert is created with `saleOpensAt` = now + the join window (enough for every fan to arrive
at the spawn rate), so every fan joins as PREQUEUED. An `AdmissionWatch` reads the concert's
active set every 50 ms from the opening on: each token's score there is its admission time +
ACTIVE_TTL, so admission times are exact to the millisecond, and the token's `entrant` says who it
is. Afterwards the public record (`GET /concerts/{id}/fairness`) is verified twice, by the
standalone docs/verify_fairness.py and by `python -m models fairness verify ID`, and the admission
order is checked against it: sorted by drawn position, admission times never go backwards, and
nobody drawn ahead of an admitted fan was passed over. The draw's own timing comes from the
scheduler's log line (models/draws.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from bench.flash_sale import ROOT

DRAW_LINE = re.compile(
    r"fair-start draw of concert (\d+): (\d+) entrants, admission open after ([\d.]+) s, published after ([\d.]+) s"
)


def join_window_s(users: int, rate: float) -> float:
    """Seconds from the concert's creation to its opening: every fan arrives first, with room to spare."""
    return round(users / rate * 1.5 + 20, 1)


class AdmissionWatch(threading.Thread):
    """Records every token of the concert's active set: admission time (ms) and entrant hash."""

    def __init__(self, client: redis.Redis, concert_id: int, active_ttl_s: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="admission-watch")
        self.r, self.interval, self.ttl_ms = client, interval, active_ttl_s * 1000
        self.tag = f"wr:{{c:{concert_id}}}"  # models/waiting_room.py's key family, read only
        self.done = threading.Event()
        self.admitted: dict[str, tuple[int, str]] = {}  # token -> (admitted at ms, entrant)
        self.errors = 0

    def run(self) -> None:
        while not self.done.is_set():
            try:
                seen = self.r.zrange(f"{self.tag}:active", 0, -1, withscores=True)
                new = [(t.decode() if isinstance(t, bytes) else str(t), int(s)) for t, s in seen]
                new = [(t, s) for t, s in new if t not in self.admitted]
                if new:
                    pipe = self.r.pipeline(transaction=False)
                    for token, _ in new:
                        pipe.hget(f"{self.tag}:t:{token}", "entrant")
                    for (token, score), entrant in zip(new, pipe.execute(), strict=True):
                        text = entrant.decode() if isinstance(entrant, bytes) else str(entrant or "")
                        self.admitted[token] = (score - self.ttl_ms, text)
            except redis.RedisError:
                self.errors += 1
            self.done.wait(self.interval)


def order_check(published: list[str], admitted: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """Admission against the published order: times never go backwards along the drawn order, and
    every entrant drawn ahead of the last admitted one was admitted too (none passed over)."""
    position = {e: i for i, e in enumerate(published)}
    drawn = sorted((position[e], at) for at, e in admitted.values() if e in position)
    not_drawn = sum(1 for _, e in admitted.values() if e not in position)
    inversions = sum(1 for (_, a), (_, b) in itertools.pairwise(drawn) if b < a)
    last = drawn[-1][0] if drawn else -1
    passed_over = (last + 1) - len(drawn)
    return {
        "admitted_watched": len(admitted),
        "admitted_drawn": len(drawn),
        "admitted_not_in_draw": not_drawn,
        "last_admitted_drawn_position": last + 1,
        "order_inversions": inversions,
        "passed_over": passed_over,
        "admission_passes": len({at for _, at in drawn}),
        "in_drawn_order": inversions == 0 and passed_over == 0 and not_drawn == 0 and len(drawn) > 0,
    }


def verify(base: str, concert_id: int, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """The public record, checked by the standalone script and by the CLI."""
    url = f"{base}/concerts/{concert_id}/fairness"
    with urllib.request.urlopen(url, timeout=30) as answer:
        record = json.load(answer)
    saved = workdir / "fairness.json"
    saved.write_text(json.dumps(record))
    script = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "verify_fairness.py"), url, "--entrant", "1"],
        capture_output=True,
        text=True,
    )
    cli = subprocess.run(
        [sys.executable, "-m", "models", "fairness", "verify", str(concert_id)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return {
        "record": record,
        "entrants_published": len(record.get("entrants") or []),
        "seed_revealed": record.get("seed") is not None,
        "verify_script_exit": script.returncode,
        "verify_script_output": script.stdout.strip().splitlines()[-3:],
        "verify_cli_exit": cli.returncode,
        "verify_cli_output": (cli.stdout + cli.stderr).strip().splitlines()[-3:],
    }


def draw_line(honcho_log: Path, concert_id: int) -> dict[str, Any] | None:
    """The scheduler's log line of this concert's draw: entrants, admission open and published (s)."""
    text = honcho_log.read_text(errors="replace") if honcho_log.exists() else ""
    for m in DRAW_LINE.finditer(text):
        if int(m.group(1)) == concert_id:
            return {
                "entrants": int(m.group(2)),
                "admission_open_s": float(m.group(3)),
                "published_s": float(m.group(4)),
            }
    return None


def fair_result(
    *,
    opens_at: dt.datetime,
    users: int,
    outcomes: dict[str, int],
    watch: AdmissionWatch,
    verified: dict[str, Any],
    draw: dict[str, Any] | None,
) -> dict[str, Any]:
    """The fair-start figures: the draw's timing, the admission order and both verdicts."""
    record = verified.pop("record")
    order = order_check(record.get("entrants") or [], watch.admitted)
    first_ms = min((at for at, _ in watch.admitted.values()), default=None)
    opens_ms = opens_at.timestamp() * 1000
    return {
        "sale_opens_at": opens_at.isoformat(),
        "fans": users,
        "joined_prequeued": outcomes.get("prequeued_on_join", 0),
        "joined_after_opening": outcomes.get("joined", 0) - outcomes.get("prequeued_on_join", 0),
        "draw": draw,
        "first_admission_after_opening_s": round((first_ms - opens_ms) / 1000, 2) if first_ms else None,
        "admission": order,
        "watch_errors": watch.errors,
        **verified,
        "ok": bool(
            order["in_drawn_order"]
            and verified["verify_script_exit"] == 0
            and verified["verify_cli_exit"] == 0
            and draw is not None
            and draw["entrants"] == verified["entrants_published"] == outcomes.get("prequeued_on_join", -1)
        ),
    }


def print_fair(fair: dict[str, Any]) -> None:
    """The fair-start figures as a few lines."""
    d, a = fair["draw"] or {}, fair["admission"]
    print(
        f"fair start: {fair['joined_prequeued']} of {fair['fans']} fans pre-queued over HTTP; draw of "
        f"{d.get('entrants')} entrants: admission open after {d.get('admission_open_s')} s, published after "
        f"{d.get('published_s')} s (scheduler log); first admission {fair['first_admission_after_opening_s']} s "
        f"after saleOpensAt"
    )
    print(
        f"admission: {a['admitted_drawn']} admitted in {a['admission_passes']} passes, in drawn order: "
        f"{a['in_drawn_order']} (inversions {a['order_inversions']}, passed over {a['passed_over']}, "
        f"not in the draw {a['admitted_not_in_draw']})"
    )
    print(f"verify_fairness.py (exit {fair['verify_script_exit']}): {' / '.join(fair['verify_script_output'])}")
    print(f"python -m models fairness verify (exit {fair['verify_cli_exit']}): {' / '.join(fair['verify_cli_output'])}")
    print(f"fair start: {'OK' if fair['ok'] else 'FAILED'}")


def now_plus(seconds: float) -> dt.datetime:
    """UTC now + seconds, whole seconds (what the admin API keeps)."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).replace(microsecond=0)


def wait_until(moment: dt.datetime) -> None:
    """Sleep until a UTC moment."""
    while (left := (moment - dt.datetime.now(dt.UTC)).total_seconds()) > 0:
        time.sleep(min(left, 0.5))
