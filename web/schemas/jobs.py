"""Request and response schemas of job records (web/jobs.py)."""

from __future__ import annotations

from typing import Any, Literal

from web.schemas import Out, UtcDateTime


class JobAccepted(Out):
    """A job was queued; poll statusUrl."""

    jobId: str
    status: Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]
    statusUrl: str


class JobOut(Out):
    """A job record; `error` is a problem object when FAILED."""

    jobId: str
    type: str
    status: Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED"]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    createdAt: UtcDateTime
    finishedAt: UtcDateTime | None
