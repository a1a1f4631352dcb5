"""Operator controls of a concert's queue (pause, active limit, admission rate, notice) and their audit log.

Kept in Redis, so every process sees a change at its next read and it survives a restart of
the app (Redis persists it). Keys (the concert's hash tag `{c:<id>}`, the waiting room's slot):

  ctl:{c:N}        HASH  paused ("1"/"0"), activeLimit, admitPerSecond, notice (absent = default)
  ctl:{c:N}:audit  LIST  JSON {"concertId","who","at","field","before","after"}, newest first,
                         the last AUDIT_KEEP changes

A change and its audit entries are written in one WATCH/MULTI transaction on that slot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import redis

from models.errors import ValidationError

FIELDS = ("paused", "activeLimit", "admitPerSecond", "notice")
AUDIT_KEEP = 1000
MAX_NOTICE = 280
MAX_LIMIT = 1_000_000
READ_TTL_S = 0.5  # hot-path reads (every join and poll) are cached this long per process


@dataclass(frozen=True)
class Controls:
    """A concert's controls; None means "the default" (ACTIVE_LIMIT, no rate cap, no notice)."""

    paused: bool = False
    active_limit: int | None = None
    admit_per_second: int | None = None
    notice: str | None = None

    def limit(self, default: int) -> int:
        """The active-slot limit in force."""
        return default if self.active_limit is None else self.active_limit

    def join_limit(self, default: int) -> int:
        """The limit for admission on join: none while paused or paced (the pass then admits)."""
        return 0 if self.paused or self.admit_per_second is not None else self.limit(default)

    def per_pass(self, interval_s: float) -> int | None:
        """At most this many admissions per pass (None = only the free slots bound it)."""
        if self.paused:
            return 0
        if self.admit_per_second is None:
            return None
        return max(1, math.ceil(self.admit_per_second * interval_s))

    def as_fields(self) -> dict[str, Any]:
        """The controls by their API field names."""
        return {
            "paused": self.paused,
            "activeLimit": self.active_limit,
            "admitPerSecond": self.admit_per_second,
            "notice": self.notice,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One changed field: who (the admin token's fingerprint), when, before, after."""

    concert_id: int
    who: str
    at: dt.datetime
    field: str
    before: Any
    after: Any


def controls_key(concert_id: int) -> str:
    """The controls hash of a concert."""
    return f"ctl:{{c:{concert_id}}}"


def audit_key(concert_id: int) -> str:
    """The audit list of a concert (same slot as its controls)."""
    return f"{controls_key(concert_id)}:audit"


def fingerprint(secret: str) -> str:
    """Who made a change, without the secret: the first 12 hex digits of its SHA-256."""
    return "admin:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def validate(changes: dict[str, Any]) -> dict[str, Any]:
    """Check a PATCH: known fields with values in range; an empty notice clears it."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in FIELDS:
            raise ValidationError(f"{name} is not a queue control")
        if name == "paused" and value is None:  # null restores the default, as for every control
            value = False
        if name == "paused" and not isinstance(value, bool):
            raise ValidationError("paused must be true, false or null")
        if name in ("activeLimit", "admitPerSecond") and value is not None:
            low = 0 if name == "activeLimit" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_LIMIT:
                raise ValidationError(f"{name} must be an integer {low}..{MAX_LIMIT} or null")
        if name == "notice" and value is not None:
            if not isinstance(value, str) or len(value) > MAX_NOTICE:
                raise ValidationError(f"notice must be text of at most {MAX_NOTICE} characters or null")
            value = value.strip() or None
        out[name] = value
    return out


def _decode(raw: dict[Any, Any]) -> Controls:
    h = {_text(k): _text(v) for k, v in raw.items()}
    return Controls(
        paused=h.get("paused") == "1",
        active_limit=int(h["activeLimit"]) if "activeLimit" in h else None,
        admit_per_second=int(h["admitPerSecond"]) if "admitPerSecond" in h else None,
        notice=h.get("notice"),
    )


def _encode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class QueueControls:
    """Read and change the controls of every concert over one Redis client."""

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self._cache: dict[int, tuple[float, Controls]] = {}

    def get(self, *, concert_id: int) -> Controls:
        """The controls as stored now (the admission pass reads these every pass)."""
        return _decode(self.r.hgetall(controls_key(concert_id)))  # type: ignore[arg-type]

    def current(self, *, concert_id: int) -> Controls:
        """The controls for a hot path: at most READ_TTL_S old in this process."""
        now = time.monotonic()
        cached = self._cache.get(concert_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        controls = self.get(concert_id=concert_id)
        self._cache[concert_id] = (now + READ_TTL_S, controls)
        return controls

    def change(self, *, concert_id: int, who: str, changes: dict[str, Any]) -> Controls:
        """Apply a validated PATCH and audit every field that changed, in one transaction."""
        wanted = validate(changes)
        key, log = controls_key(concert_id), audit_key(concert_id)
        result: list[Controls] = []

        def apply(pipe: Any) -> None:
            before = _decode(pipe.hgetall(key))
            after = replace(before, **{_ATTR[f]: v for f, v in wanted.items()})
            at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            pipe.multi()
            for name, value in wanted.items():
                old = before.as_fields()[name]
                if old == value:
                    continue
                encoded = _encode(value)
                if encoded is None:
                    pipe.hdel(key, name)
                else:
                    pipe.hset(key, name, encoded)
                entry = {"concertId": concert_id, "who": who, "at": at, "field": name, "before": old, "after": value}
                pipe.lpush(log, json.dumps(entry))
            pipe.ltrim(log, 0, AUDIT_KEEP - 1)
            result.append(after)

        self.r.transaction(apply, key)
        self._cache.pop(concert_id, None)
        return result[-1]

    def audit(self, *, concert_ids: Iterable[int], limit: int = 100) -> list[AuditEntry]:
        """The newest `limit` changes over the given concerts, newest first."""
        entries: list[AuditEntry] = []
        for concert_id in concert_ids:
            for raw in self.r.lrange(audit_key(concert_id), 0, limit - 1):  # type: ignore[union-attr]
                e = json.loads(raw)
                at = dt.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
                entries.append(AuditEntry(e["concertId"], e["who"], at, e["field"], e["before"], e["after"]))
        entries.sort(key=lambda e: e.at, reverse=True)
        return entries[:limit]


_ATTR = {"paused": "paused", "activeLimit": "active_limit", "admitPerSecond": "admit_per_second", "notice": "notice"}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
