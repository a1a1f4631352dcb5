"""The spectree instance (OpenAPI from the route schemas) and small request helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Request, Response, current_app, jsonify, request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from spectree import SecurityScheme, SpecTree
from spectree.models import InType, SecureType, SecuritySchemeData
from werkzeug.datastructures import Headers

from config.bootstrap import Services
from config.settings import Settings
from models.db import MAX_ID
from models.errors import ValidationError
from web.schemas import Problem

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def _message(error: dict[str, Any]) -> str:
    """pydantic's message, except for the one pattern (NOT_BLANK), whose regex tells a user nothing."""
    if error.get("type") == "string_pattern_mismatch":
        return "must contain a character other than white space"
    return str(error.get("msg", "invalid"))


def _reject_invalid(req: Request, resp: Any, error: Any, instance: Any, *_: Any) -> None:
    """spectree hook: turn a request validation failure into our ValidationError (problem+json)."""
    if error is None:
        return
    if req.mimetype == "application/json" and req.get_data() and req.get_json(silent=True) is None:
        raise ValidationError("the request body is not valid JSON")
    fields = [
        {"field": ".".join(str(p) for p in e.get("loc", ())) or "body", "message": _message(e)}
        for e in getattr(error, "errors", lambda: [])()
    ]
    raise ValidationError("the request does not match the schema", errors=fields)


spec = SpecTree(
    "flask",
    title="Concert reservation API",
    version="1.0.0",
    path="api/v1/spectree",
    mode="strict",
    annotations=True,
    before=_reject_invalid,
    validation_error_status=400,
    validation_error_model=Problem,
    security_schemes=[
        SecurityScheme(
            name="queueToken",
            data=SecuritySchemeData(type=SecureType.API_KEY, name="X-Queue-Token", field_in=InType.HEADER),
        ),
        SecurityScheme(name="adminToken", data=SecuritySchemeData(type=SecureType.HTTP, scheme="bearer")),
        SecurityScheme(
            name="bearerAuth",
            data=SecuritySchemeData(
                type=SecureType.HTTP,
                scheme="bearer",
                bearer_format="JWT",
                description="The signed-in user's JWT (sub = user id), from the identity provider or, in "
                "development, POST /api/v1/dev/login.",
            ),
        ),
    ],
)


def described(**validate_args: Any) -> Callable[[F], F]:
    """Document a route in the OpenAPI document exactly as `spec.validate(...)` would, without
    spectree's per-request wrapper (~60 µs a request on this machine, a fifth of /healthz).

    For the hot routes that have no body or query for spectree to validate (or validate their
    few query parameters themselves): spectree keeps what its decorator declared per function,
    so the plain view is given the wrapper's entry, and Flask calls the view directly.
    """

    def decorate(view: F) -> F:
        wrapped = spec.validate(skip_validation=True, **validate_args)(view)
        metadata = spec.get_function_metadata(wrapped)
        assert metadata is not None
        spec._function_metadata[view] = metadata
        return view

    return decorate


def json_body(model: type[M]) -> M:
    """The request's JSON body validated as `model`, exactly as `spec.validate(json=model)` would
    (the same body, the same 400 problem+json), for a route documented with `described(json=model)`.

    spectree's wrapper costs more than the join it wraps (~0.4 ms a request: it copies every header
    and cookie for validators the route has none of, then parses and validates the response again,
    bench/request_profile.py): the flash sale's first request of every fan is the join.
    """
    req = request._get_current_object()  # type: ignore[attr-defined]
    data = req.get_json(silent=True) if req.method not in ("GET", "DELETE") else None
    try:
        return model.model_validate(data or {})  # spectree's: no or unparseable body -> {}
    except PydanticValidationError as error:
        _reject_invalid(req, None, error, None)
        raise


_PATH_ID = re.compile(r"([0-9]{1,19})(?:\.0+)?")


def parse_id(value: str, name: str) -> int:
    """A path id: a positive 64-bit integer in ASCII digits, else 400.

    A whole number written with a zero fraction ("7.0") is that integer, as in JSON bodies: the
    document declares path ids `integer`, which JSON Schema says 7.0 is (found by bench/fuzz.py).
    """
    if value.isascii() and value.isdigit() and len(value) < 19 and value[0] != "0":  # the usual id: 1..10^18-1
        return int(value)
    match = _PATH_ID.fullmatch(value)
    if match is None or not 1 <= int(match.group(1)) <= MAX_ID:
        raise ValidationError(
            f"{name} must be a positive 64-bit integer", errors=[{"field": name, "message": "invalid id"}]
        )
    return int(match.group(1))


def respond(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response from a response model."""
    response = jsonify(model.model_dump(mode="json"))
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


JSON = "application/json"


_ADJUSTED = frozenset({"location", "content-location"})  # headers werkzeug rewrites on the way out


class ReadyResponse(Response):
    """A 200 whose headers need no adjusting on the way out: werkzeug's get_wsgi_headers copies
    them (checking each header again) only to fix a Location or a missing length, which a ready
    response never has. Any other status takes werkzeug's way."""

    def get_wsgi_headers(self, environ: Any) -> Headers:
        if self.status_code != 200:
            return super().get_wsgi_headers(environ)
        for name, _ in self.headers._list:  # (Headers.get raises and catches a KeyError when absent)
            if name.lower() in _ADJUSTED:
                return super().get_wsgi_headers(environ)
        return self.headers


def ready_json(body: bytes, headers: tuple[tuple[str, str], ...] = (), status: int = 200) -> Response:
    """A response of ready JSON bytes whose header values are this app's own constants or
    hashes (never request input), for the hot routes (healthz, the cached seat map).

    werkzeug checks every header value for line breaks and looks each name up on the way in
    (`Response(body, mimetype=..., headers=...)`: ~600 Python opcodes for a seat map's four,
    ~400 more than this) and again on the way out: a `Headers` holding the finished list and
    ReadyResponse skip both.
    """
    ready = Headers()
    ready._list = [("Content-Type", JSON), ("Content-Length", str(len(body))), *headers]
    response = ReadyResponse(None, status=status, headers=ready)  # no body yet: set_data would set the length again
    response.response = [body]
    return response


def settings() -> Settings:
    """The Settings of the running app."""
    return current_app.config["SETTINGS"]  # type: ignore[no-any-return]


def services() -> Services:
    """The process services (database, Redis, broker) of the running app."""
    return current_app.extensions["services"]  # type: ignore[no-any-return]


# what /openapi.json declares for the header: 1-128 printable ASCII characters, no space at either end
IDEMPOTENCY_KEY = re.compile(r"[!-~](?:[ -~]{0,126}[!-~])?")


def idempotency_key_header() -> str | None:
    """The request's Idempotency-Key (payments, points charges), None when absent; 400 when malformed."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationError(
            "Idempotency-Key must be 1-128 printable ASCII characters",
            errors=[{"field": "Idempotency-Key", "message": "invalid key"}],
        )
    return key
