"""Request and response schemas of liveness and readiness (web/health.py)."""

from __future__ import annotations

from typing import Literal

from web.schemas import Out


class HealthOut(Out):
    """Liveness."""

    status: Literal["ok"]


class ReadyOut(Out):
    """Readiness of each dependency: 'ok' or the error."""

    status: Literal["ok", "unavailable"]
    checks: dict[str, str]
