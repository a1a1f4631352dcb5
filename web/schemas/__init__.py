"""Request and response schemas (pydantic); spectree turns them into the OpenAPI document.

This package holds what every resource shares (field types, the Body/Out bases, Problem); each
resource's bodies are in the module of its name (web/schemas/points.py for web/points.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictInt,
)

from models.db import MAX_ID, iso


def _iso(value: dt.datetime) -> str:
    return iso(value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value) or ""


UtcDateTime = Annotated[dt.datetime, PlainSerializer(_iso, return_type=str, when_used="json")]


def whole_number(value: Any) -> Any:
    """JSON Schema's `integer` admits 1.0: a float with no fractional part is that integer."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Integer fields of request bodies: JSON integers and whole floats (1.0); no strings, no booleans.
# The bounds come before the validator so that they stay `minimum`/`maximum` in the JSON Schema.
RequestId = Annotated[StrictInt, Field(ge=1, le=MAX_ID), BeforeValidator(whole_number)]
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_ID), BeforeValidator(whole_number)]
SeatCount = Annotated[StrictInt, Field(ge=1, le=1000), BeforeValidator(whole_number)]
Price = Annotated[StrictInt, Field(ge=0, le=1_000_000_000), BeforeValidator(whole_number)]


class Body(BaseModel):
    """Base of request bodies: unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(extra="forbid")


# --- problem+json -------------------------------------------------------------------------
class FieldError(Out):
    """One invalid field of a request."""

    field: str
    message: str


class Problem(Out):
    """RFC 9457 problem details with a machine-readable code."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[FieldError] | None = None
    jobId: str | None = None
