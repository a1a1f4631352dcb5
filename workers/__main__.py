"""Worker CLI: python -m workers {run,consume,outbox,dlt,jobs}."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from types import FrameType

from config.bootstrap import bootstrap
from config.cli import start
from config.settings import Settings


def _run(settings: Settings) -> int:
    from workers.batch import partition_worker

    services = bootstrap(settings)
    worker = partition_worker(services)

    def stop(signum: int, frame: FrameType | None) -> None:
        logging.getLogger("workers").info("signal %s: finishing the messages in hand", signum)
        worker.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


def _jobs(settings: Settings, job_id: str) -> int:
    from workers.jobs import JobStore

    job = JobStore(bootstrap(settings).redis).get(job_id)
    if job is None:
        print(f"job {job_id} does not exist or has expired", file=sys.stderr)
        return 1
    print(json.dumps(job.__dict__, indent=2, default=str))
    return 0


def _consume(settings: Settings) -> int:
    import threading

    from workers.events.consumer import GROUP, consume
    from workers.events.topics import PAYMENT_TOPIC

    if not settings.kafka_bootstrap_servers:
        print(
            "KAFKA_BOOTSTRAP_SERVERS is not set: in embedded mode the outbox relay calls the handler directly",
            file=sys.stderr,
        )
        return 2
    bootstrap(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger("workers").info("consuming %s as group %s", PAYMENT_TOPIC, GROUP)
    consume(stop, bootstrap_servers=settings.kafka_bootstrap_servers)
    return 0


def _outbox(settings: Settings, retry: bool) -> int:
    from models import outbox
    from models.db import db

    bootstrap(settings)
    with db.connection_context():
        if retry:
            print(f"{outbox.retry_failed()} FAILED row(s) put back to PENDING")
        st = outbox.stats()
    print(
        f"pending={st.pending} published={st.published} failed={st.failed} "
        f"oldest_pending_age_s={st.oldest_pending_age_s:.1f}"
    )
    return 0


def _dlt(settings: Settings, action: str, offset: int | None) -> int:
    from workers.events.dead_letters import dead_letters, inprocess_letters, replay
    from workers.events.topics import PAYMENT_TOPIC

    if not settings.kafka_bootstrap_servers:
        bootstrap(settings)
        for raw in inprocess_letters():
            print(raw)
        return 0
    bootstrap(settings)
    servers = settings.kafka_bootstrap_servers
    if action == "list":
        letters = dead_letters(servers)
        for r in letters:
            print(json.dumps(r))
        print(f"{len(letters)} dead letter(s)")
    elif action == "show":
        found = [r for r in dead_letters(servers) if r["offset"] == offset]
        if not found:
            print(f"no dead letter at offset {offset}", file=sys.stderr)
            return 1
        print(json.dumps(found[0], indent=2))
    else:
        done = replay(servers, offset=offset)
        print(f"replayed {len(done)} dead letter(s) to {PAYMENT_TOPIC}: {done}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m workers", description="Pipeline processes and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume the seat partitions this process owns (leases in Redis)")
    sub.add_parser("consume", help="consume payment-completed (retry 3x, then the DLT)")
    p_outbox = sub.add_parser("outbox", help="outbox counts by status and oldest pending age")
    p_outbox.add_argument("--retry-failed", action="store_true", help="put FAILED rows back to PENDING")
    p_dlt = sub.add_parser("dlt", help="dead letters of payment-completed")
    p_dlt.add_argument("action", choices=["list", "show", "replay"])
    p_dlt.add_argument("--offset", type=int, help="one dead letter (show/replay); replay without it = all")
    p_jobs = sub.add_parser("jobs", help="show a job record")
    p_jobs.add_argument("job_id")
    args = parser.parse_args(argv)
    settings = start()
    if args.command == "run":
        return _run(settings)
    if args.command == "consume":
        return _consume(settings)
    if args.command == "outbox":
        return _outbox(settings, args.retry_failed)
    if args.command == "dlt":
        if args.action == "show" and args.offset is None:
            parser.error("dlt show needs --offset")
        return _dlt(settings, args.action, args.offset)
    return _jobs(settings, args.job_id)


if __name__ == "__main__":
    sys.exit(main())
