"""Worker CLI: python -m workers {run,consume,broker,outbox,dlt,jobs}."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from config.bootstrap import bootstrap
from config.cli import one_line_errors, require_shared_redis, setup_logging, start
from config.settings import Settings

log = logging.getLogger("workers")


def _run(settings: Settings) -> int:
    from workers.batch import partition_worker

    require_shared_redis(settings, what="consume their partitions")
    services = bootstrap(settings)
    worker = partition_worker(services)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: finishing the messages in hand", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


def _iso(ms: int | None) -> str | None:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds") if ms else None


def _jobs(settings: Settings, job_id: str) -> int:
    from workers.jobs import JobStore

    require_shared_redis(settings, what="read its job records")
    job = JobStore(bootstrap(settings).redis).get(job_id)
    if job is None:
        print(f"job {job_id} does not exist or has expired (job records last 1 h after they end)", file=sys.stderr)
        return 1
    out = {
        "jobId": job.job_id,
        "type": job.type,
        "status": job.status,
        "userId": job.user_id,
        "result": job.result,
        "error": job.error,
        "attempts": job.attempts,
        "createdAt": _iso(job.created_ms),
        "finishedAt": _iso(job.finished_ms),
    }
    print(json.dumps(out, indent=2))
    return 0


def _wait_for_signal() -> None:
    from config import heartbeat

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    heartbeat.beat()
    while not stop.wait(10):
        heartbeat.beat()


def _consume(settings: Settings) -> int:
    from workers.events.consumer import GROUP, consume
    from workers.events.topics import PAYMENT_TOPIC

    if not settings.kafka_bootstrap_servers:
        log.warning(
            "KAFKA_BOOTSTRAP_SERVERS is not set, so there is nothing to consume: without a broker the "
            "scheduler's outbox relay hands each PaymentCompleted to the handler in process. Start a broker "
            "(`make broker`) and set KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 to use Kafka. Waiting for a signal."
        )
        _wait_for_signal()
        return 0
    bootstrap(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("consuming %s as group %s", PAYMENT_TOPIC, GROUP)
    consume(stop, bootstrap_servers=settings.kafka_bootstrap_servers)
    return 0


def _outbox(settings: Settings, retry: bool, as_json: bool) -> int:
    from models import outbox
    from models.db import db

    bootstrap(settings)
    with db.connection_context():
        retried = outbox.retry_failed() if retry else None
        st = outbox.stats()
    if as_json:
        body = {"pending": st.pending, "published": st.published, "failed": st.failed}
        print(json.dumps({**body, "oldestPendingAgeSeconds": round(st.oldest_pending_age_s, 1), "retried": retried}))
        return 0
    if retried is not None:
        print(f"{retried} FAILED row(s) put back to PENDING")
    print(
        f"outbox: {st.pending} pending, {st.published} published, {st.failed} failed; "
        f"oldest pending {st.oldest_pending_age_s:.1f} s"
    )
    return 0


def _letter_line(letter: dict[str, Any], replayed: bool) -> str:
    headers = letter.get("headers", {})
    return (
        f"offset {letter['offset']}  attempts {headers.get('attempts', '?')}  "
        f"error {headers.get('error', '?')[:80]}{'  (replayed)' if replayed else ''}"
    )


def _dlt(settings: Settings, action: str, offset: int | None, as_json: bool) -> int:
    if not settings.kafka_bootstrap_servers:
        return _dlt_inprocess(settings, action, as_json)
    from workers.events.dead_letters import REPLAYED_KEY, dead_letters, replay
    from workers.events.topics import DLT_TOPIC, PAYMENT_TOPIC

    services = bootstrap(settings)
    servers = settings.kafka_bootstrap_servers
    if action == "replay":
        done = replay(servers, offset=offset)
        what = f"offset {offset}" if offset is not None else "every dead letter not replayed before"
        print(
            json.dumps({"replayed": done}) if as_json else f"replayed {len(done)} ({what}) to {PAYMENT_TOPIC}: {done}"
        )
        return 0
    letters = dead_letters(servers)
    if action == "show":
        found = [r for r in letters if r["offset"] == offset]
        if not found:
            print(f"no dead letter at offset {offset} ({len(letters)} in {DLT_TOPIC})", file=sys.stderr)
            return 1
        print(json.dumps(found[0], indent=2))
        return 0
    replayed = {int(x) for x in services.redis.smembers(REPLAYED_KEY)}  # type: ignore[union-attr]
    if as_json:
        print(json.dumps([{**r, "replayed": r["offset"] in replayed} for r in letters]))
        return 0
    print(f"{len(letters)} dead letter(s) in {DLT_TOPIC}")
    for r in letters:
        print("  " + _letter_line(r, r["offset"] in replayed))
    return 0


def _dlt_inprocess(settings: Settings, action: str, as_json: bool) -> int:
    from workers.events.dead_letters import inprocess_letters

    require_shared_redis(settings, what="read the in-process bus's dead letters")
    bootstrap(settings)
    letters = [json.loads(raw) for raw in inprocess_letters()]
    if action != "list":
        print(
            f"dlt {action} needs a broker (KAFKA_BOOTSTRAP_SERVERS); without one the in-process bus keeps "
            f"{len(letters)} dead letter(s), listed by `dlt list`",
            file=sys.stderr,
        )
        return 2
    if as_json:
        print(json.dumps(letters))
        return 0
    print(f"{len(letters)} dead letter(s) kept by the in-process bus (no KAFKA_BOOTSTRAP_SERVERS)")
    for i, letter in enumerate(letters):
        print(f"  #{i}  attempts {letter.get('attempts', '?')}  error {str(letter.get('error', '?'))[:80]}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m workers", description="Pipeline processes and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume the seat partitions this process owns (leases in Redis)")
    sub.add_parser("consume", help="consume payment-completed (retry 3x, then the DLT); waits if no broker is set")
    p_broker = sub.add_parser("broker", help="run a local Kafka-protocol broker (Tansu) in the foreground")
    p_broker.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    p_broker.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p_outbox = sub.add_parser("outbox", help="outbox counts by status and oldest pending age")
    p_outbox.add_argument("--retry-failed", action="store_true", help="put FAILED rows back to PENDING")
    p_outbox.add_argument("--json", action="store_true", help="print one JSON object")
    p_dlt = sub.add_parser("dlt", help="dead letters of payment-completed: list, show one, replay")
    p_dlt.add_argument("action", choices=["list", "show", "replay"])
    p_dlt.add_argument("--offset", type=int, help="one dead letter (show/replay); replay without it = all not replayed")
    p_dlt.add_argument("--json", action="store_true", help="print JSON")
    p_jobs = sub.add_parser("jobs", help="show a job record as GET /api/v1/jobs/{id} shows it")
    p_jobs.add_argument("job_id", metavar="JOB_ID")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "broker":
        from workers.localbroker import serve

        setup_logging()
        return serve(args.port, host=args.host)
    if args.command == "dlt" and args.action == "show" and args.offset is None:
        parser.error("dlt show needs --offset")
    settings = start()
    commands = {
        "run": lambda: _run(settings),
        "consume": lambda: _consume(settings),
        "outbox": lambda: _outbox(settings, args.retry_failed, args.json),
        "dlt": lambda: _dlt(settings, args.action, args.offset, args.json),
        "jobs": lambda: _jobs(settings, args.job_id),
    }
    return one_line_errors(commands[args.command])


if __name__ == "__main__":
    sys.exit(main())
