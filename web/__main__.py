"""`python -m web token USER_ID [--ttl S]`: print a bearer token signed with AUTH_JWT_SECRET."""

from __future__ import annotations

import argparse
import sys

from config.settings import Settings, SettingsError
from web.auth import MAX_USER_ID, sign


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and print the token (exit 2 on a configuration error)."""
    parser = argparse.ArgumentParser(prog="python -m web", description="Web process helpers.")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="print a bearer token for USER_ID (signed with AUTH_JWT_SECRET)")
    token.add_argument("user_id", type=int, metavar="USER_ID")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    args = parser.parse_args(argv)
    if not 1 <= args.user_id <= MAX_USER_ID or args.ttl < 1:
        parser.error("USER_ID must be a positive 64-bit integer and --ttl at least 1")
    try:
        print(sign(Settings.from_env(), args.user_id, args.ttl))
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
