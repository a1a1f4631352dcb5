"""Worker CLI: python -m workers {run,jobs} (consume/outbox/dlt arrive with the payments issue)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from types import FrameType

from config.bootstrap import bootstrap
from config.settings import Settings, SettingsError


def _run(settings: Settings) -> int:
    from workers.dispatch import handle
    from workers.partitions import PartitionWorker

    services = bootstrap(settings)
    worker = PartitionWorker(services.redis, services.broker, handle, partitions=settings.partitions)

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


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command."""
    parser = argparse.ArgumentParser(prog="python -m workers", description="Pipeline processes and tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume the seat partitions this process owns (leases in Redis)")
    p_jobs = sub.add_parser("jobs", help="show a job record")
    p_jobs.add_argument("job_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        return _run(settings)
    return _jobs(settings, args.job_id)


if __name__ == "__main__":
    sys.exit(main())
