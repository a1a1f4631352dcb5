#!/usr/bin/env python3
"""Recheck a concert's fair-start draw from its public record alone (standard library only).

    python3 docs/verify_fairness.py http://HOST/api/v1/concerts/1/fairness
    python3 docs/verify_fairness.py fairness.json          # a saved copy of that answer
    python3 docs/verify_fairness.py URL --entrant USER_ID  # also: where was this user drawn?

It checks that sha256(seed) is the commitment published when the concert was created, and that
the entrants are listed sorted by sha256(seed || entrant hex as ASCII). Exit 0 when both hold.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request


def load(source: str) -> dict:
    """The fairness record from a URL or a file."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as answer:
            return json.load(answer)
    with open(source, encoding="utf-8") as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="the fairness URL or a JSON file")
    parser.add_argument("--entrant", type=int, metavar="USER_ID", help="print this user's drawn position")
    args = parser.parse_args(argv)
    record = load(args.source)
    if record.get("seed") is None:
        print("the draw has not happened yet: the seed is not revealed")
        return 1
    seed = bytes.fromhex(record["seed"])
    entrants = record["entrants"]
    ok = True
    if hashlib.sha256(seed).hexdigest() != record["seedCommitment"]:
        print("MISMATCH: sha256(seed) is not the published commitment")
        ok = False
    expected = sorted(entrants, key=lambda e: hashlib.sha256(seed + e.encode("ascii")).digest())
    if expected != entrants or len(set(entrants)) != len(entrants):
        print("MISMATCH: the entrants are not in the seed's order (or one is listed twice)")
        ok = False
    if args.entrant is not None:
        mine = hashlib.sha256(str(args.entrant).encode("ascii")).hexdigest()
        where = entrants.index(mine) + 1 if mine in entrants else None
        print(
            f"user {args.entrant} (entrant {mine[:12]}…): " + (f"drawn at position {where}" if where else "not drawn")
        )
    if ok:
        print(f"OK: {len(entrants)} entrants, commitment and order verified")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
