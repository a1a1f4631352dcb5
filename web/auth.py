"""Identity: the one place that verifies `Authorization: Bearer <JWT>` (SPEC §3 "Identity").

Every route needs the identity unless its view is marked `@public` or its blueprint is one of
PUBLIC_BLUEPRINTS. `install()` puts the check in a `before_request` hook registered before the
rate limiter's, so a request without credentials is refused before it is counted. The same
markers declare the `bearerAuth` security scheme in the OpenAPI document (web/docs.py).
"""

from __future__ import annotations

import binascii
import contextlib
import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, g, request
from jwt.algorithms import HMACAlgorithm

from config.settings import Settings, SettingsError
from models.errors import AuthInvalid, AuthRequired, Unavailable

F = TypeVar("F", bound=Callable[..., Any])
LEEWAY = 30  # seconds of clock skew tolerated on exp/nbf/iat
MAX_USER_ID = 2**63 - 1
_SUB = re.compile(r"[1-9][0-9]{0,18}")
_BEARER = re.compile(r"Bearer +([A-Za-z0-9_.+/=-]+)", re.IGNORECASE)
JWKS_REFRESH_AFTER = 60.0  # an unknown kid refetches the key set at most once a minute
VERIFIED_FOR = 60.0  # a verified token is believed again for at most this long (and never past its exp)
VERIFIED_MAX = 65_536  # tokens remembered per process
HEADERS_KEPT = 16  # distinct JWT header segments whose parse is reused (_PyJWS._load)
PUBLIC_BLUEPRINTS = frozenset({"health", "docs", "admin", "pages", "metrics"})
API_PREFIX = "/api/v1/"
ADMIN_PREFIX = "/api/v1/admin"


def public(view: F) -> F:
    """Mark a view as reachable without the identity."""
    view.public = True  # type: ignore[attr-defined]
    return view


def is_public(app: Flask, endpoint: str, rule: str) -> bool:
    """True when a route needs no identity: its view is @public, its blueprint is public, it is an
    operator route under /admin (those keep ADMIN_TOKEN), or it is outside the API (pages, /metrics)."""
    view = app.view_functions.get(endpoint)
    blueprint = endpoint.rpartition(".")[0]
    if view is None or endpoint == "static" or blueprint in PUBLIC_BLUEPRINTS or getattr(view, "public", False):
        return True
    return rule.startswith(ADMIN_PREFIX) or not rule.startswith(API_PREFIX)


def load_public_key(path: str) -> tuple[Any, str]:
    """The PEM public key of AUTH_JWT_PUBLIC_KEY_FILE and its algorithm (RS256 or ES256)."""
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SettingsError(f"AUTH_JWT_PUBLIC_KEY_FILE={path!r} is not a PEM public key: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise SettingsError(f"AUTH_JWT_PUBLIC_KEY_FILE={path!r} must hold an RSA or P-256 EC public key")


class _SecretHS256(HMACAlgorithm):
    """PyJWT's HS256, with AUTH_JWT_SECRET checked and prepared once, at start.

    PyJWT prepares the key again on every decode: for an HMAC secret it tries it as a PEM, an
    SSH key, a DER key and certificate and as JSON (the algorithm-confusion guards), about a
    quarter of a verification. The secret never changes in a process, so the guards run once
    here (a secret shaped like a public key or a JWK is refused at start); any other key goes
    through PyJWT's checks as before.
    """

    def __init__(self, secret: str) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._secret = secret
        try:
            self._prepared = super().prepare_key(secret)
        except jwt.InvalidKeyError as exc:
            raise SettingsError(f"AUTH_JWT_SECRET cannot be an HS256 secret: {exc}") from None
        self._length_verdict = super().check_key_length(self._prepared)

    def prepare_key(self, key: str | bytes) -> bytes:
        if isinstance(key, str) and key == self._secret:
            return self._prepared
        return super().prepare_key(key)

    def check_key_length(self, key: bytes) -> str | None:
        # the prepared secret's verdict (PyJWT's warning text or None), worked out once; PyJWT
        # builds two hash objects per call to find the digest size
        if key is self._prepared:
            return self._length_verdict
        return super().check_key_length(key)

    def sign(self, msg: bytes, key: bytes) -> bytes:
        # OpenSSL's one-shot HMAC: the bytes of PyJWT's hmac.new(key, msg, sha256).digest() in one
        # C call, without an HMAC object (verify() compares it with compare_digest, as before)
        return hmac.digest(key, msg, "sha256")


_BASE64URL = re.compile(rb"[A-Za-z0-9_-]*")
# The last character of a canonical segment of length 4n+2 / 4n+3 leaves its unused 4 / 2 low
# bits zero: exactly these characters (anything else decodes to the same bytes as one of them).
_CANONICAL_LAST = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


class _PyJWS(jwt.PyJWS):
    """PyJWT's PyJWS, with its check of a token's three segments done by one compiled pattern.

    PyJWT 2.15 tests every byte of a segment against the base64url alphabet in a Python
    generator (its fix of GHSA-hxm8-2xgr-2p9m) and proves the encoding canonical by encoding
    the decoded bytes again: together half of an HS256 verification. This is the same check
    with the same rules (at most two '=', padding only on a length that is a multiple of 4, no
    length of 4n+1, nothing outside the alphabet, the canonical encoding only: the unused low
    bits of the last character zero) and the same errors; tests/unit/test_identity.py compares
    the two on valid, tampered and random segments.
    """

    def __init__(self, algorithms: list[str] | None = None) -> None:
        super().__init__(algorithms=algorithms)
        self._headers: dict[bytes, dict[str, Any]] = {}  # header segment -> its parse (see _load)

    def _load(self, jwt: str | bytes) -> tuple[bytes, bytes, dict[str, Any], bytes]:
        """PyJWT's _load, with the parse of a header segment seen before reused.

        Every token of one issuer carries the same header segment (`{"alg":"HS256","typ":"JWT"}`
        encoded), and decoding it (base64, then the standard `json`) is a fifth of an HS256
        verification. The parse is a function of the segment's bytes only, so a segment PyJWT's own
        _load parsed once gives the same header again (a copy); the payload and the signature are
        decoded and checked every time, and the signature is verified after this as before. Only
        headers of the ordinary form are kept (no `b64`: false), at most HEADERS_KEPT, forgotten all
        at once when full (a flood of distinct headers costs the cache, never the checks).
        """
        token = jwt.encode("utf-8") if isinstance(jwt, str) else jwt
        if isinstance(token, bytes):
            header_segment, _, rest = token.partition(b".")
            known = self._headers.get(header_segment)
            if known is not None and b"." in rest:
                payload_segment, crypto_segment = rest.rsplit(b".", 1)
                return (
                    self._decode_base64url_segment(payload_segment, "payload"),
                    token[: len(header_segment) + 1 + len(payload_segment)],
                    dict(known),
                    self._decode_base64url_segment(crypto_segment, "crypto"),
                )
        payload, signing_input, header, signature = super()._load(token)
        if header.get("b64", True) is not False:
            if len(self._headers) >= HEADERS_KEPT:
                self._headers.clear()
            self._headers[signing_input.partition(b".")[0]] = dict(header)
        return payload, signing_input, header, signature

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        stripped = segment.rstrip(b"=")
        padding = len(segment) - len(stripped)
        rest = len(stripped) % 4
        if (
            padding > 2
            or (padding and len(segment) % 4 != 0)
            or rest == 1
            or _BASE64URL.fullmatch(stripped) is None
            or (rest != 0 and stripped[-1] not in _CANONICAL_LAST[rest])
        ):
            raise jwt.DecodeError(f"Invalid {name} padding")
        try:
            return binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-rest % 4))
        except binascii.Error as err:
            raise jwt.DecodeError(f"Invalid {name} padding") from err


class _PyJWT(jwt.PyJWT):
    """PyJWT's PyJWT, its claims parsed by orjson through the override point PyJWT documents for
    this (`_decode_payload`): a tenth of an HS256 verification with the standard `json`.

    The same checks: the payload must be a JSON object; orjson is stricter than `json` only in
    what a JWT may not hold anyway (RFC 7519: UTF-8 JSON): it refuses NaN/Infinity, other
    encodings and integers past 64 bits, each a DecodeError (401) like any malformed payload.
    """

    def _decode_payload(self, decoded: dict[str, Any]) -> dict[str, Any]:
        try:
            payload = orjson.loads(decoded["payload"])
        except orjson.JSONDecodeError as exc:
            raise jwt.DecodeError(f"Invalid payload string: {exc}") from exc
        if not isinstance(payload, dict):
            raise jwt.DecodeError("Invalid payload string: must be a json object")
        return payload


def _decoder(secret: str, *, verify_aud: bool) -> jwt.PyJWT:
    """A PyJWT decoder with the options of every verification fixed (none merged per call), the
    secret's HS256 prepared once (_SecretHS256), the segment check of _PyJWS and the claims read by
    orjson (_PyJWT). PyJWT still does
    every check of `jwt.decode`: the segments, the header, the signature, exp/nbf/iat with the
    leeway, the required claims, iss/aud; the caller passes the algorithm allow-list. An HS256
    handler exists only when a secret is configured."""
    decoder = _PyJWT(options={"require": ["exp", "sub"], "verify_aud": verify_aud})
    jws = _PyJWS(algorithms=["RS256", "ES256"])
    if secret:
        jws.register_algorithm("HS256", _SecretHS256(secret))
    # PyJWT builds its module-level decoder the same way (a PyJWT over the PyJWS `_jws`); a
    # release that renamed it fails tests/unit/test_identity.py, not a verification
    decoder._jws = jws
    return decoder


class Verifier:
    """Verifies a JWT against the configured keys and returns its user id."""

    def __init__(self, settings: Settings) -> None:
        settings.require_auth_key()
        self.secret = settings.auth_jwt_secret
        self.public_key: Any = None
        self.public_alg = ""
        if settings.auth_jwt_public_key_file:
            self.public_key, self.public_alg = load_public_key(settings.auth_jwt_public_key_file)
        self.jwks = jwt.PyJWKClient(settings.auth_jwks_url, lifespan=300, timeout=5) if settings.auth_jwks_url else None
        self.secret_only = bool(self.secret) and self.public_key is None and self.jwks is None
        self.issuer = settings.auth_jwt_issuer or None
        self.audience = settings.auth_jwt_audience or None
        self._decoder = _decoder(self.secret, verify_aud=self.audience is not None)
        self._refreshed_at = 0.0
        self._lock = threading.Lock()
        # token -> (user id, believed until), oldest first; an OrderedDict because evicting the
        # oldest of a plain dict (`next(iter(d))`) scans the deleted slots at its front: ~100 µs
        # per new token once VERIFIED_MAX are kept, more than the verification it saves
        self._verified: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def user_id(self, token: str) -> int:
        """The verified `sub` of a token as a user id, else AuthInvalid (Unavailable if JWKS is down).

        A token that verified is remembered for VERIFIED_FOR seconds, and never past its `exp`
        (+ LEEWAY): a fan's requests repeat the same token, and PyJWT's decode is ~40 µs, the
        largest cost of a seat-map read after its Redis round trip (bench/request_profile.py).
        The verdict cannot change in that time: the signature and `nbf`/`iat` stay as checked,
        the keys of a secret or PEM file never change in a process, and JWKS keys are cached
        longer (300 s) by PyJWKClient anyway. Refusals are never remembered.
        """
        now = time.time()
        known = self._verified.get(token)
        if known is not None and now < known[1]:
            return known[0]
        user_id, exp = self._verify(token)
        self._remember(token, user_id, min(now + VERIFIED_FOR, exp + LEEWAY))
        return user_id

    def _remember(self, token: str, user_id: int, until: float) -> None:
        """Keep a verified token, dropping the oldest once VERIFIED_MAX are kept (O(1))."""
        if len(self._verified) >= VERIFIED_MAX:
            with contextlib.suppress(KeyError):  # another thread emptied it first
                self._verified.popitem(last=False)
        self._verified[token] = (user_id, until)

    def _verify(self, token: str) -> tuple[int, float]:
        """The verified `sub` as a user id and the token's `exp`."""
        try:
            if self.secret_only:  # one key, one algorithm: the header need not be read twice (~10 µs)
                key, algorithm = self.secret, "HS256"
            else:
                key, algorithm = self._key(jwt.get_unverified_header(token))
            claims = self._decoder.decode(
                token, key, algorithms=[algorithm], leeway=LEEWAY, issuer=self.issuer, audience=self.audience
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise Unavailable(f"the identity provider's keys cannot be fetched: {exc}") from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a key of another type is a TypeError
            raise AuthInvalid(f"the bearer token is not valid: {exc}") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not _SUB.fullmatch(sub) or int(sub) > MAX_USER_ID:
            raise AuthInvalid("the bearer token's sub is not a positive 64-bit integer")
        return int(sub), float(claims["exp"])

    def _key(self, header: dict[str, Any]) -> tuple[Any, str]:
        alg = header.get("alg")
        if alg == "HS256" and self.secret:
            return self.secret, alg
        if alg in ("RS256", "ES256") and self.jwks is not None and (header.get("kid") or not self.public_key):
            return self._jwks_key(str(header.get("kid") or ""), str(alg)), str(alg)
        if alg == self.public_alg and self.public_key is not None:
            return self.public_key, alg
        raise AuthInvalid(f"tokens signed with {str(alg)[:10]!r} are not accepted")

    def _jwks_key(self, kid: str, alg: str) -> Any:
        """The key set's key for `kid` (cached), which must be a key of `alg`; an unknown kid
        refetches the set at most once a minute."""
        assert self.jwks is not None
        for refresh in (False, True):
            if refresh:
                with self._lock:
                    if time.monotonic() - self._refreshed_at < JWKS_REFRESH_AFTER:
                        break
                    self._refreshed_at = time.monotonic()
            for signing_key in self.jwks.get_signing_keys(refresh=refresh):
                if signing_key.key_id == kid:
                    if signing_key.algorithm_name != alg:
                        raise AuthInvalid(f"the key {kid[:40]!r} is not a {alg} key")
                    return signing_key.key
        raise AuthInvalid("the bearer token's kid names no key of the identity provider")


def sign(settings: Settings, user_id: int, ttl: int) -> str:
    """A token for `user_id` signed with AUTH_JWT_SECRET (the dev login and `python -m web token`)."""
    if not settings.auth_jwt_secret:
        raise SettingsError("AUTH_JWT_SECRET is not set: nothing to sign with")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": str(user_id), "iat": now, "exp": now + ttl}
    if settings.auth_jwt_issuer:
        claims["iss"] = settings.auth_jwt_issuer
    if settings.auth_jwt_audience:
        claims["aud"] = settings.auth_jwt_audience
    return jwt.encode(claims, settings.auth_jwt_secret, algorithm="HS256")


def bearer_token(environ: dict[str, Any] | None = None) -> str | None:
    """The bearer token of the request (None when no Authorization header); AuthInvalid if malformed."""
    header = (request.environ if environ is None else environ).get("HTTP_AUTHORIZATION")
    if header is None or not header.strip(" \t"):
        return None
    match = _BEARER.fullmatch(header.strip(" \t"))
    if match is None:
        raise AuthInvalid("send the identity as 'Authorization: Bearer <JWT>'")
    return match.group(1)


def identity(ctx: Any = None) -> int:
    """The verified user id of this request (the hook has set it for every non-public route);
    `ctx` is the request's `g` when the caller already looked it up."""
    user_id = (g if ctx is None else ctx).get("identity")
    if user_id is None:
        raise AuthRequired("send 'Authorization: Bearer <JWT>' of the signed-in user")
    return int(user_id)


def install(app: Flask, settings: Settings) -> None:
    """Verify the identity before every non-public route (register before the rate limiter)."""
    app.extensions["auth_verifier"] = verifier = Verifier(settings)
    public_routes: dict[tuple[str, str], bool] = {}  # is_public() once per route (they do not change)

    @app.before_request
    def _require_identity() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]  # one lookup, not one per attribute
        rule = req.url_rule
        if rule is None or rule.endpoint is None:
            return
        route = (rule.endpoint, rule.rule)
        exempt = public_routes.get(route)
        if exempt is None:
            exempt = public_routes[route] = is_public(app, *route)
        if exempt:
            return
        token = bearer_token(req.environ)
        if token is None:
            raise AuthRequired("send 'Authorization: Bearer <JWT>' of the signed-in user")
        g.identity = verifier.user_id(token)
