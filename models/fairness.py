"""The fair start's arithmetic: a committed seed, entrant hashes and the drawn order (SPEC §3 "Fair start").

Pure functions, no I/O: the draw (models/prequeue.py), the public endpoint and the verify
command all use these, and anyone can rerun them from the published data:

    commitment = sha256(seed_bytes)                       (published when the concert is created)
    entrant    = sha256(decimal user id)                  (hex, lower case)
    order      = entrants sorted by sha256(seed_bytes || entrant_hex_ascii), ascending
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SEED_BYTES = 32
ALGORITHM = (
    "commitment = sha256(seed); entrant = sha256(decimal userId) as lower-case hex; "
    "order = entrants sorted ascending by sha256(seed || entrant hex as ASCII)"
)


def new_seed() -> bytes:
    """A fresh secret seed: 32 bytes from the OS CSPRNG."""
    return secrets.token_bytes(SEED_BYTES)


def commitment_of(seed: bytes) -> str:
    """The published SHA-256 of a seed, as hex."""
    return hashlib.sha256(seed).hexdigest()


def entrant_of(user_id: int) -> str:
    """A fan's public entrant hash: sha256 of the decimal user id, as hex (the id itself is never published)."""
    return hashlib.sha256(str(user_id).encode("ascii")).hexdigest()


def draw_key(seed: bytes, entrant: str) -> bytes:
    """The sort key of one entrant under a seed."""
    return hashlib.sha256(seed + entrant.encode("ascii")).digest()


def drawn_order(seed: bytes, entrants: Iterable[str]) -> list[str]:
    """The entrants in drawn order (duplicates removed)."""
    prefix = hashlib.sha256(seed)
    keyed = []
    for entrant in set(entrants):
        h = prefix.copy()
        h.update(entrant.encode("ascii"))
        keyed.append((h.digest(), entrant))
    keyed.sort()
    return [entrant for _, entrant in keyed]


@dataclass(frozen=True)
class Verdict:
    """What a recomputation of a published draw found."""

    ok: bool
    reasons: tuple[str, ...]


def verify(*, seed_hex: str | None, commitment: str, entrants: Sequence[str]) -> Verdict:
    """Recompute a published draw from its public data alone: the seed matches the commitment and
    the entrants are listed in the order the seed gives."""
    if seed_hex is None:
        return Verdict(False, ("the seed is not revealed yet: the draw has not happened",))
    try:
        seed = bytes.fromhex(seed_hex)
    except ValueError:
        return Verdict(False, ("the seed is not hex",))
    reasons = []
    if commitment_of(seed) != commitment.lower():
        reasons.append("sha256(seed) does not equal the published commitment")
    if len(set(entrants)) != len(entrants):
        reasons.append("an entrant is listed twice")
    expected = drawn_order(seed, entrants)
    if list(entrants) != expected:
        pairs = zip(entrants, expected, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(entrants), len(expected)))
        reasons.append(f"the order differs from the seed's order at position {first + 1}")
    return Verdict(not reasons, tuple(reasons))
