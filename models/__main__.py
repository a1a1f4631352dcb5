"""Database CLI: python -m models {migrate,init-db,seed,demo,check,fairness,redis-migrate}."""

from __future__ import annotations

import argparse
import sys

from config.settings import one_line_errors, settings_or_exit
from models import check, schema, seed
from models.db import init_database


def _parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per database task."""
    parser = argparse.ArgumentParser(prog="python -m models", description="Database commands (uses DATABASE_URL).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending schema migrations")
    sub.add_parser("init-db", help="same as migrate: create or upgrade the schema")
    p_seed = sub.add_parser(
        "seed",
        help="bulk-load concerts x schedules x seats (seats per schedule)",
        description="Bulk-load C concerts, each with S schedules (one a day from tomorrow 19:00 UTC) of N seats "
        "numbered 1..N, all AVAILABLE at one price. A progress bar on stderr shows long seeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_seed.add_argument("--concerts", type=int, default=1, metavar="C", help="concerts to create")
    p_seed.add_argument("--schedules", type=int, default=2, metavar="S", help="schedules (dates) per concert")
    p_seed.add_argument("--seats", type=int, default=50, metavar="N", help="seats per schedule")
    p_seed.add_argument("--price", type=int, default=50_000, help="price of every seat, in points")
    p_seed.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when not a TTY)")
    sub.add_parser("demo", help="create the demo concert if the database has no concert")
    p_check = sub.add_parser("check", help="verify invariants 1-4 of SPEC §5; exit 1 on any violation")
    p_check.add_argument(
        "--max-pending-age", type=float, default=check.MAX_PENDING_AGE_S, help="seconds an outbox row may stay PENDING"
    )
    p_redis = sub.add_parser(
        "redis-migrate",
        help="report (or clean) keys of the single-node Redis layout left in REDIS_URL",
        description="List the keys of the Redis layout before the cluster-safe one, by family, and what must "
        "still drain (exit 1 while old seat queues hold messages or old jobs are unfinished). --clean deletes "
        "the families that are derived data (wake-up lists, catalogue cache); queues and job records never.",
    )
    p_redis.add_argument("--check", action="store_true", help="report only (the default)")
    p_redis.add_argument("--clean", action="store_true", help="delete the old wake-up lists and catalogue cache")
    p_fair = sub.add_parser("fairness", help="fair-start draws")
    fair_sub = p_fair.add_subparsers(dest="fairness_command", required=True)
    p_verify = fair_sub.add_parser(
        "verify", help="recompute a concert's published draw from its public record; exit 1 if it does not match"
    )
    p_verify.add_argument("concert_id", type=int, metavar="CONCERT_ID")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one command; return the exit code."""
    args = _parser().parse_args(argv)

    settings = settings_or_exit()
    if args.command == "redis-migrate":
        return one_line_errors(lambda: _redis_migrate(settings.redis_url, clean=args.clean))
    init_database(settings.database_url)
    return one_line_errors(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command on the initialised database."""
    if args.command in ("migrate", "init-db"):
        applied = schema.migrate()
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'schema up to date'}")
    elif args.command == "seed":
        try:
            result = _seed(args)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rate = result.seats / result.seconds if result.seconds else 0
        print(
            f"seeded {result.concerts} concert(s), {result.schedules} schedule(s), {result.seats} seat(s) "
            f"in {result.seconds:.1f} s ({rate:,.0f} seats/s)"
        )
    elif args.command == "demo":
        concert_id = seed.seed_demo()
        print(f"demo concert {concert_id} created" if concert_id else "a concert exists already; nothing seeded")
    elif args.command == "fairness":
        return _verify_draw(args.concert_id)
    elif args.command == "check":
        found = check.violations(max_pending_age_s=args.max_pending_age)
        for line in found:
            print(line)
        print(f"{len(found)} violation(s)")
        return 1 if found else 0
    return 0


def _redis_migrate(redis_url: str, *, clean: bool) -> int:
    """Print what is left of the old Redis layout (after deleting its derived data with --clean)."""
    import redis

    from models import redis_migration

    if not redis_url.startswith(("redis://", "rediss://", "unix://")):  # a cluster or the embedded fake
        print(f"{redis_url.split(':', 1)[0]}: the single-node layout never ran there; nothing to migrate")
        return 0
    client = redis.Redis.from_url(redis_url)
    if clean:
        print(f"deleted {redis_migration.clean(client)} old key(s) of derived data")
    report = redis_migration.check(client)
    for line in report.lines():
        print(line)
    return 1 if report.must_drain else 0


def _seed(args: argparse.Namespace) -> seed.SeedResult:
    """seed.seed with a tqdm progress bar over the seats (on stderr, only on a terminal)."""
    from tqdm import tqdm

    total = args.concerts * args.schedules * args.seats
    off = args.no_progress or not sys.stderr.isatty() or total < 1
    with tqdm(total=max(total, 0), unit=" seats", unit_scale=True, disable=off, file=sys.stderr) as bar:
        return seed.seed(
            concerts=args.concerts, schedules=args.schedules, seats=args.seats, price=args.price, progress=bar.update
        )


def _verify_draw(concert_id: int) -> int:
    """Print the verdict on a concert's published draw (the same data GET /concerts/{id}/fairness shows)."""
    from models import draws

    record = draws.published(concert_id=concert_id)
    verdict = draws.verify_published(concert_id=concert_id)
    print(f"concert {concert_id}: {len(record.entrants)} entrant(s), commitment {record.seed_commitment}")
    if verdict.ok:
        print("OK: sha256(seed) equals the commitment and the entrants are in the seed's order")
        return 0
    for reason in verdict.reasons:
        print(f"MISMATCH: {reason}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
