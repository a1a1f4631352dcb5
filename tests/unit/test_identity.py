"""Identity (SPEC §3 "Identity (v2)"): only the signed-in user can act as that user.

Keys (HS256 secret, PEM RS256/ES256, JWKS by kid), claims (exp, sub, iss, aud, 30 s leeway),
the 401/403/404 answers, the dev login and the token CLI, and the OpenAPI declaration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings, SettingsError
from models.errors import AuthInvalid
from models.seed import seed_demo
from tests.support.helpers import API, make_app, problem_of, queue_headers, user_headers
from tests.support.identity import TEST_JWT_SECRET, bearer, sign

ALICE, BOB = 1001, 1002
NO_BEARER = {"Authorization": ""}


def answer(response: Any) -> tuple[int, str]:
    """(status, problem code) of a refused request."""
    return response.status_code, problem_of(response)["code"]


# --- a web process needs a key ------------------------------------------------------------------
def test_a_web_app_without_any_key_refuses_to_start_naming_the_variables(unit_settings: Settings) -> None:
    from web import create_app

    with pytest.raises(SettingsError) as refused:
        create_app(unit_settings.with_(auth_jwt_secret=""))

    for variable in ("AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_URL"):
        assert variable in str(refused.value)


def test_the_gunicorn_config_exits_with_one_line_naming_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    import runpy

    for name in ("AUTH_JWT_SECRET", "AUTH_JWT_PUBLIC_KEY_FILE", "AUTH_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)

    with pytest.raises(SystemExit) as exited:
        runpy.run_path("config/gunicorn.py")

    assert str(exited.value).startswith("configuration error: no key to verify user tokens: set AUTH_JWT_SECRET")


def test_a_public_key_file_that_is_missing_or_not_pem_is_refused_at_start(tmp_path: Path) -> None:
    from web.auth import Verifier

    not_pem = tmp_path / "key.pem"
    not_pem.write_text("hello")
    with pytest.raises(SettingsError, match="AUTH_JWT_PUBLIC_KEY_FILE"):
        Settings.from_env({"AUTH_JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")})
    with pytest.raises(SettingsError, match="AUTH_JWT_PUBLIC_KEY_FILE"):
        Verifier(Settings().with_(auth_jwt_public_key_file=str(not_pem)))


# --- HS256: what a valid identity is --------------------------------------------------------------
@pytest.fixture
def demo(client: FlaskClient) -> FlaskClient:
    seed_demo()
    return client


def balance(client: FlaskClient, headers: dict[str, str]) -> Any:
    return client.get(f"{API}/me/points", headers=headers)


def test_a_valid_token_is_its_subject(demo: FlaskClient) -> None:
    response = balance(demo, bearer(ALICE))

    assert response.status_code == 200
    assert response.get_json() == {"userId": ALICE, "balance": 0}


def test_no_bearer_is_401_auth_required_with_a_bearer_challenge(demo: FlaskClient) -> None:
    for headers in (NO_BEARER, {"Authorization": "   "}):
        response = balance(demo, headers)

        assert answer(response) == (401, "AUTH_REQUIRED")
        assert response.headers["WWW-Authenticate"] == "Bearer"


_RSA = rsa.generate_private_key(65537, 2048)
_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _by_hand(header: dict[str, Any]) -> str:
    """A token for ALICE signed with the test secret under a header PyJWT would not write."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": str(ALICE), "exp": int(time.time()) + 3600}
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return (
        signing_input + "." + b64(hmac.new(TEST_JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())
    )


def _tampered() -> str:
    header, _, signature = sign(ALICE).split(".")
    return ".".join((header, sign(BOB).split(".")[1], signature))


def _signature_with(character: str) -> str:
    token = sign(ALICE)
    return token[:-5] + character + token[-4:]


def _non_canonical_signature(token: str = "") -> str:
    """Alice's token with the two unused low bits of the signature's last character set: the
    same 32 bytes decode from it, so only PyJWT's canonical-encoding check refuses it."""
    token = token or sign(ALICE)
    last = _B64URL.index(token[-1])
    return token[:-1] + _B64URL[last | 1 if last & 1 == 0 else last & ~1]


@pytest.mark.parametrize(
    "token",
    [
        sign(ALICE, secret="another-secret-of-enough-length-0123456789"),  # bad signature
        sign(ALICE, ttl=-31),  # expired beyond the 30 s leeway
        sign("0"),
        sign("-5"),
        sign("abc"),
        sign(str(2**63)),  # past a 64-bit integer
        sign(" 7"),
        sign("0007"),
        sign("7.0"),
        jwt.encode({"sub": "7"}, TEST_JWT_SECRET, algorithm="HS256"),  # no exp
        jwt.encode({"exp": int(time.time()) + 60}, TEST_JWT_SECRET, algorithm="HS256"),  # no sub
        jwt.encode({"sub": 7, "exp": int(time.time()) + 60}, TEST_JWT_SECRET, algorithm="HS256"),  # sub a number
        jwt.encode({"sub": "7", "exp": int(time.time()) + 60}, None, algorithm="none"),  # unsigned
        jwt.encode({"sub": "7", "exp": int(time.time()) + 60}, TEST_JWT_SECRET, algorithm="HS512"),  # other alg
        "not-a-jwt",
        sign(ALICE, nbf=int(time.time()) + 3000),  # not valid yet (far beyond the leeway: signed at collection)
        sign(ALICE, iat=int(time.time()) + 3000),  # issued in the future, far beyond the leeway
        _tampered(),  # another user's claims under Alice's signature
        _signature_with("+"),  # '+' is base64, not base64url
        _signature_with("!"),
        sign(ALICE) + "===",  # three pad characters
        _non_canonical_signature(),  # decodes to the same bytes, but is not their encoding
        _by_hand({"alg": "HS256", "kid": 7}),  # kid a number
        _by_hand({"alg": "HS256", "crit": ["zip2"], "zip2": 1}),  # an unknown extension marked critical
        jwt.encode({"sub": "7", "exp": int(time.time()) + 60}, _RSA, algorithm="RS256"),  # no public key configured
    ],
    ids=[
        "bad-signature", "expired", "sub-0", "sub-negative", "sub-text", "sub-over-64-bit", "sub-space",
        "sub-leading-zeros", "sub-fraction", "no-exp", "no-sub", "sub-number", "alg-none", "alg-hs512", "garbage",
        "nbf-future", "iat-future", "tampered-claims", "segment-plus", "segment-bang", "three-pads",
        "non-canonical", "kid-number", "crit-unknown", "alg-rs256",
    ],
)  # fmt: skip
def test_an_invalid_token_is_401_auth_invalid(demo: FlaskClient, token: str) -> None:
    response = balance(demo, {"Authorization": f"Bearer {token}"})

    assert answer(response) == (401, "AUTH_INVALID")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expiry_within_the_30_s_leeway_is_accepted(demo: FlaskClient) -> None:
    assert balance(demo, bearer(ALICE, ttl=-20)).status_code == 200


def test_the_scheme_is_case_insensitive_but_required(demo: FlaskClient) -> None:
    token = sign(ALICE)

    assert balance(demo, {"Authorization": f"bearer {token}"}).status_code == 200
    assert answer(balance(demo, {"Authorization": token})) == (401, "AUTH_INVALID")
    assert answer(balance(demo, {"Authorization": f"Basic {token}"})) == (401, "AUTH_INVALID")


@pytest.fixture
def strict_app(unit_settings: Settings) -> Iterator[Flask]:
    yield make_app(unit_settings.with_(auth_jwt_issuer="https://id.example", auth_jwt_audience="concerts"))


def test_issuer_and_audience_are_checked_when_configured(strict_app: Flask) -> None:
    client = strict_app.test_client()
    good = {"iss": "https://id.example", "aud": "concerts"}

    assert balance(client, bearer(ALICE, **good)).status_code == 200
    for claims in ({**good, "iss": "https://evil.example"}, {**good, "aud": "other"}, {"aud": "concerts"}, {}):
        assert answer(balance(client, bearer(ALICE, **claims))) == (401, "AUTH_INVALID"), claims


# --- PEM public keys: RS256 and ES256 -------------------------------------------------------------
def _pem(private: Any) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256_by_hand(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWS built without PyJWT (which refuses to use a PEM key as an HMAC secret)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(
    ("private", "algorithm"),
    [(rsa.generate_private_key(65537, 2048), "RS256"), (ec.generate_private_key(ec.SECP256R1()), "ES256")],
    ids=["RS256", "ES256"],
)
def test_a_pem_public_key_verifies_its_algorithm_only(
    unit_settings: Settings, tmp_path: Path, private: Any, algorithm: str
) -> None:
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(_pem(private))
    client = make_app(unit_settings.with_(auth_jwt_secret="", auth_jwt_public_key_file=str(key_file))).test_client()
    claims = {"sub": str(ALICE), "exp": int(time.time()) + 60}

    signed = jwt.encode(claims, private, algorithm=algorithm)
    # algorithm confusion: the public key's bytes used as an HMAC secret must not verify
    confused = _hs256_by_hand(claims, _pem(private))
    other = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")

    assert balance(client, {"Authorization": f"Bearer {signed}"}).get_json() == {"userId": ALICE, "balance": 0}
    assert answer(balance(client, {"Authorization": f"Bearer {confused}"})) == (401, "AUTH_INVALID")
    if algorithm == "RS256":
        assert answer(balance(client, {"Authorization": f"Bearer {other}"})) == (401, "AUTH_INVALID")
    assert answer(balance(client, bearer(ALICE))) == (401, "AUTH_INVALID")  # no secret configured


# --- JWKS: keys fetched once, chosen by kid -------------------------------------------------------
class _Jwks(BaseHTTPRequestHandler):
    body = b""
    fetches = 0

    def do_GET(self) -> None:
        type(self).fetches += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    keys = {"k1": ec.generate_private_key(ec.SECP256R1()), "k2": rsa.generate_private_key(65537, 2048)}
    jwks = []
    for kid, private in keys.items():
        algorithm = jwt.algorithms.ECAlgorithm if kid == "k1" else jwt.algorithms.RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(private.public_key()))  # type: ignore[attr-defined]
        jwks.append({**jwk, "kid": kid, "use": "sig"})
    _Jwks.body, _Jwks.fetches = json.dumps({"keys": jwks}).encode(), 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/jwks.json", keys
    server.shutdown()
    thread.join()


def test_jwks_keys_are_chosen_by_kid_and_fetched_once(unit_settings: Settings, jwks_server: Any) -> None:
    url, keys = jwks_server
    client = make_app(unit_settings.with_(auth_jwt_secret="", auth_jwks_url=url)).test_client()
    claims = {"sub": str(BOB), "exp": int(time.time()) + 60}
    by_k1 = jwt.encode(claims, keys["k1"], algorithm="ES256", headers={"kid": "k1"})
    by_k2 = jwt.encode(claims, keys["k2"], algorithm="RS256", headers={"kid": "k2"})
    k1_claiming_k2 = jwt.encode(claims, keys["k1"], algorithm="ES256", headers={"kid": "k2"})
    unknown = jwt.encode(claims, keys["k1"], algorithm="ES256", headers={"kid": "k9"})

    for token in (by_k1, by_k2, by_k1, by_k2):
        assert balance(client, {"Authorization": f"Bearer {token}"}).get_json() == {"userId": BOB, "balance": 0}
    assert answer(balance(client, {"Authorization": f"Bearer {k1_claiming_k2}"})) == (401, "AUTH_INVALID")
    for _ in range(5):  # an unknown kid refetches at most once a minute: no amplification
        assert answer(balance(client, {"Authorization": f"Bearer {unknown}"})) == (401, "AUTH_INVALID")
    assert _Jwks.fetches == 2


def test_an_unreachable_jwks_endpoint_is_a_503_not_a_401(unit_settings: Settings) -> None:
    from tests.support.helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    client = make_app(unit_settings.with_(auth_jwt_secret="", auth_jwks_url=url)).test_client()
    token = jwt.encode(
        {"sub": "1", "exp": int(time.time()) + 60},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "k1"},
    )

    assert answer(balance(client, {"Authorization": f"Bearer {token}"})) == (503, "UNAVAILABLE")


# --- the identity is the user ---------------------------------------------------------------------
def test_joining_takes_the_user_from_the_identity(demo: FlaskClient) -> None:
    joined = demo.post(f"{API}/queue/tokens", json={"concertId": 1}, headers=bearer(ALICE))
    same = demo.post(f"{API}/queue/tokens", json={"concertId": 1, "userId": ALICE}, headers=bearer(ALICE))
    spoofed = demo.post(f"{API}/queue/tokens", json={"concertId": 1, "userId": BOB}, headers=bearer(ALICE))

    assert (joined.status_code, joined.get_json()["userId"]) == (201, ALICE)
    assert (same.status_code, same.get_json()["token"]) == (200, joined.get_json()["token"])
    assert answer(spoofed) == (403, "FORBIDDEN")
    assert demo.post(f"{API}/queue/tokens", json={"concertId": 1}, headers=bearer(BOB)).status_code == 201


def test_a_queue_token_used_with_another_users_identity_is_403(demo: FlaskClient) -> None:
    alices = queue_headers(demo, ALICE, 1)["X-Queue-Token"]
    as_bob = {**bearer(BOB), "X-Queue-Token": alices}

    refused = [
        demo.get(f"{API}/queue/token", headers=as_bob),
        demo.get(f"{API}/schedules/1/seats", headers=as_bob),
        demo.post(f"{API}/reservations", json={"scheduleId": 1, "seatId": 1}, headers=as_bob),
        demo.post(f"{API}/payments", json={"reservationId": 1}, headers=as_bob),
        demo.delete(f"{API}/reservations/1", headers=as_bob),
        demo.delete(f"{API}/queue/token", headers=as_bob),
    ]

    assert [answer(r) for r in refused] == [(403, "FORBIDDEN")] * len(refused)
    mine = demo.get(f"{API}/queue/token", headers={**bearer(ALICE), "X-Queue-Token": alices})
    assert mine.get_json()["status"] == "ACTIVE"  # Bob's attempts changed nothing


def test_a_wallet_is_used_by_its_own_user_only(demo: FlaskClient) -> None:
    charged = demo.post(f"{API}/me/points/charge", json={"amount": 500}, headers=bearer(ALICE))
    by_path = demo.get(f"{API}/users/{ALICE}/points", headers=bearer(ALICE))
    refused = [
        demo.get(f"{API}/users/{ALICE}/points", headers=bearer(BOB)),
        demo.post(f"{API}/users/{ALICE}/points/charge", json={"amount": 1}, headers=bearer(BOB)),
        demo.get(f"{API}/users/{ALICE}/points/history", headers=bearer(BOB)),
    ]

    assert charged.get_json() == {"userId": ALICE, "balance": 500}
    assert by_path.get_json() == {"userId": ALICE, "balance": 500}
    assert [answer(r) for r in refused] == [(403, "FORBIDDEN")] * 3
    history = demo.get(f"{API}/me/points/history", headers=bearer(ALICE)).get_json()
    assert [(e["type"], e["amount"]) for e in history["entries"]] == [("CHARGE", 500)]


def test_a_bad_path_user_id_is_still_a_400(demo: FlaskClient) -> None:
    assert answer(demo.get(f"{API}/users/abc/points", headers=bearer(ALICE))) == (400, "VALIDATION_ERROR")


# --- dev login and the token CLI ------------------------------------------------------------------
def test_the_dev_login_is_a_404_unless_enabled(demo: FlaskClient) -> None:
    assert answer(demo.post(f"{API}/dev/login", json={"userId": ALICE})) == (404, "NOT_FOUND")


def test_the_dev_login_signs_a_working_token(unit_settings: Settings) -> None:
    client = make_app(unit_settings.with_(auth_dev_login=True)).test_client()

    login = client.post(f"{API}/dev/login", json={"userId": ALICE})
    token = login.get_json()["accessToken"]

    assert login.status_code == 200
    assert login.get_json()["tokenType"] == "Bearer"
    assert 60 <= login.get_json()["expiresIn"] <= 86_400
    assert balance(client, {"Authorization": f"Bearer {token}"}).get_json()["userId"] == ALICE
    assert answer(client.post(f"{API}/dev/login", json={"userId": 0})) == (400, "VALIDATION_ERROR")


def test_python_m_web_token_prints_a_token_the_service_accepts(
    demo: FlaskClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from web.__main__ import main

    monkeypatch.setenv("AUTH_JWT_SECRET", TEST_JWT_SECRET)
    assert main(["token", str(BOB), "--ttl", "120"]) == 0
    token = capsys.readouterr().out.strip()

    assert balance(demo, {"Authorization": f"Bearer {token}"}).get_json()["userId"] == BOB
    assert 110 <= jwt.decode(token, TEST_JWT_SECRET, algorithms=["HS256"])["exp"] - time.time() <= 120
    monkeypatch.delenv("AUTH_JWT_SECRET")
    assert main(["token", "1"]) == 2


# --- every user-scoped operation of the document needs the bearer ---------------------------------
PUBLIC = {
    ("get", "/concerts"),
    ("get", "/concerts/{concert_id}/schedules"),
    ("get", "/concerts/{concert_id}/fairness"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("post", "/dev/login"),
}


def _document_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of /openapi.json of an app with every optional route (dev login) on."""
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="identity-doc-"))
    settings = Settings().with_(
        database_url=f"sqlite:///{workdir / 'doc.db'}",
        redis_url="embedded",
        admin_token="test-admin-token",
        auth_jwt_secret=TEST_JWT_SECRET,
        auth_dev_login=True,
    )
    document = make_app(settings).test_client().get(f"{API}/openapi.json").get_json()
    return [
        (method, path.removeprefix(API), operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


OPERATIONS = _document_operations()


def _is_public(method: str, path: str) -> bool:
    return (method, path) in PUBLIC or path.startswith(("/admin", "/docs", "/openapi"))


def test_the_document_declares_bearer_auth_on_exactly_the_user_scoped_operations() -> None:
    for method, path, operation in OPERATIONS:
        requirements = operation.get("security") or []
        needs_bearer = bool(requirements) and all("bearerAuth" in r for r in requirements)
        assert needs_bearer != _is_public(method, path), (method, path, requirements)
        if needs_bearer:
            assert "401" in operation["responses"], (method, path)


@pytest.mark.parametrize(
    ("method", "path"),
    [(m, p) for m, p, _ in OPERATIONS if not _is_public(m, p)],
    ids=[f"{m.upper()} {p}" for m, p, _ in OPERATIONS if not _is_public(m, p)],
)
def test_without_a_bearer_every_user_scoped_operation_is_401_auth_required(
    demo: FlaskClient, method: str, path: str
) -> None:
    concrete = path.replace("{job_id}", "0" * 32)
    for name in ("concert_id", "schedule_id", "reservation_id", "payment_id", "user_id"):
        concrete = concrete.replace(f"{{{name}}}", "1")
    queue_token = queue_headers(demo, ALICE, 1)["X-Queue-Token"]

    response = demo.open(
        f"{API}{concrete}",
        method=method.upper(),
        json={} if method in ("post", "put", "patch") else None,
        headers={**NO_BEARER, "X-Queue-Token": queue_token},
    )

    assert answer(response) == (401, "AUTH_REQUIRED")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_user_headers_carry_the_identity(demo: FlaskClient) -> None:
    assert balance(demo, user_headers(BOB)).get_json()["userId"] == BOB


# --- verified tokens are remembered, never past their exp ---------------------------------------
def test_a_verified_token_is_not_decoded_again_but_is_refused_once_its_exp_passes(
    demo: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hidden ways to fail: a remembered token outliving its `exp` (+ 30 s leeway) because the
    memory only counts its own 60 s; the memory keyed by user instead of token; a refusal
    remembered, so a token signed a moment later would still be refused."""
    import web.auth

    decodes = []
    real_decode = jwt.PyJWT.decode  # web/auth.py decodes with its own PyJWT instance
    monkeypatch.setattr(web.auth.jwt.PyJWT, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    token = sign(ALICE, ttl=-29)  # within the 30 s leeway for one more second

    assert [balance(demo, {"Authorization": f"Bearer {token}"}).status_code for _ in range(3)] == [200] * 3
    assert len(decodes) == 1  # verified once, then remembered

    # When: the clock passes exp + leeway (but not the 60 s the memory allows)
    time.sleep(1.2)
    assert answer(balance(demo, {"Authorization": f"Bearer {token}"})) == (401, "AUTH_INVALID")

    # And: a refusal is not remembered, and the memory is per token, not per user
    bad = sign(ALICE, secret="another-secret-of-enough-length-0123456789")
    assert answer(balance(demo, {"Authorization": f"Bearer {bad}"})) == (401, "AUTH_INVALID")
    assert answer(balance(demo, {"Authorization": f"Bearer {bad}"})) == (401, "AUTH_INVALID")
    assert balance(demo, bearer(BOB)).get_json()["userId"] == BOB  # keyed by token, not by user


def test_a_verified_token_is_believed_for_60_s_at_most(demo: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hidden way to fail: a token remembered until its exp (hours), so a key rotated out of a
    JWKS would keep admitting its tokens long after PyJWKClient's own cache let go."""
    import web.auth

    decodes = []
    real_decode = jwt.PyJWT.decode  # web/auth.py decodes with its own PyJWT instance
    monkeypatch.setattr(web.auth.jwt.PyJWT, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    token = {"Authorization": f"Bearer {sign(ALICE, ttl=3600)}"}
    now = time.time()
    for later in (0, 30, 59, 61):
        monkeypatch.setattr(web.auth.time, "time", lambda later=later: now + later)
        assert balance(demo, token).status_code == 200

    assert len(decodes) == 2  # at 0 and again at 61


# --- the verification's cost (bench/queue_bench.py) keeps every check -----------------------------
def test_a_token_built_by_hand_verifies_so_the_refusals_above_are_about_their_header() -> None:
    """The kid-number and crit-unknown cases are refused for their header, not for _by_hand; the
    non-canonical case carries Alice's very signature bytes, so only the encoding check refuses it."""
    import base64

    from web.auth import Verifier

    verifier = Verifier(Settings().with_(auth_jwt_secret=TEST_JWT_SECRET))
    assert verifier.user_id(_by_hand({"alg": "HS256", "typ": "JWT"})) == ALICE

    def raw(segment: str) -> bytes:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    token = sign(ALICE)
    bent = _non_canonical_signature(token)
    assert bent != token and raw(bent.rsplit(".", 1)[1]) == raw(token.rsplit(".", 1)[1])
    with pytest.raises(AuthInvalid):
        verifier.user_id(bent)


def _segments() -> list[bytes]:
    """Segments to check: a token's own, and the ways an attacker bends them."""
    import random

    rng = random.Random(4242)
    out: list[bytes] = [b"", b"=", b"==", b"A", b"AA", b"AAA", b"AAAA", b"AB==", b"AB=", b"ABC=", b"AAAAA=", b"!!!!"]
    for token in (sign(ALICE), sign(2**63 - 1, ttl=5), _by_hand({"alg": "HS256", "kid": "k1"})):
        for segment in token.encode().split(b"."):
            out.append(segment)
            out += [segment + b"=" * n for n in (1, 2, 3)]
            out += [segment[:-1], segment[:-2], segment[1:]]
            for character in (b"+", b"/", b"!", b" ", b"\n", b"\x00", b"=", "é".encode()):
                at = rng.randrange(len(segment))
                out.append(segment[:at] + character + segment[at + 1 :])
            last = _B64URL.index(chr(segment[-1]))
            out += [segment[:-1] + _B64URL[last ^ bit].encode() for bit in (1, 2, 3)]  # unused low bits
    alphabet = _B64URL.encode() + b"=+/! \n\x00"
    out += [bytes(rng.choice(alphabet) for _ in range(rng.randrange(13))) for _ in range(3000)]
    return out


def test_the_segment_check_accepts_and_refuses_exactly_what_pyjwts_own_does() -> None:
    """web/auth.py replaces PyJWT's per-byte segment check with one pattern: on every segment
    (valid, padded, truncated, with foreign characters, non-canonical, random) both give the
    same bytes or the same error. Fails if a PyJWT release changes or renames its check."""
    from jwt.api_jws import PyJWS

    from web.auth import _PyJWS

    def outcome(check: Any, segment: bytes) -> tuple[str, Any]:
        try:
            return "ok", check(segment, "crypto")
        except jwt.DecodeError as exc:
            return "refused", str(exc)

    segments = _segments()
    theirs = [outcome(PyJWS._decode_base64url_segment, s) for s in segments]
    ours = [outcome(_PyJWS._decode_base64url_segment, s) for s in segments]

    assert ours == theirs
    assert 50 < sum(kind == "ok" for kind, _ in theirs) < len(segments) - 50  # both kinds well covered


def test_a_reused_header_parse_loads_exactly_what_pyjwts_own_load_does() -> None:
    """web/auth.py reuses the parse of a header segment seen before (_PyJWS._load): on valid,
    bent and malformed tokens, first seen and seen again, it gives PyJWT's result or error.
    Fails if a PyJWT release changes how _load splits a token or what it returns."""
    import random

    from jwt.api_jws import PyJWS

    from web.auth import HEADERS_KEPT, _PyJWS

    rng = random.Random(4242)
    alice = sign(ALICE)
    header, payload, signature = alice.split(".")
    tokens: list[Any] = [alice, sign(BOB), _by_hand({"alg": "HS256", "kid": "k1"}), _non_canonical_signature(alice)]
    tokens += [_by_hand({"alg": "HS256", "b64": False, "crit": ["b64"]}), _by_hand({"alg": "HS256", "crit": ["x"]})]
    tokens += [f"{header}.{payload}", f"{header}.", f"{header}..", f"{header}.{payload}.{signature}.x", header, ""]
    tokens += [f"{header}.{payload}.", f"{header}..{signature}", f"{header}.a.b.{signature}", f"{header}.{payload}.!!"]
    tokens += [f"{header}={'=' * n}.{payload}.{signature}" for n in range(3)] + [alice.encode(), None, 7, "é.é.é"]
    for _ in range(300):  # one character of a valid token bent at random (mostly outside its header)
        at = rng.randrange(len(alice))
        tokens.append(alice[:at] + rng.choice(_B64URL + "=.!") + alice[at + 1 :])

    def outcome(jws: Any, token: Any) -> tuple[str, Any]:
        try:
            return "ok", jws._load(token)
        except (jwt.PyJWTError, ValueError) as exc:
            return type(exc).__name__, str(exc)

    ours = _PyJWS()
    theirs = [outcome(PyJWS(), t) for t in tokens]
    for _ in range(2):  # the first pass fills the header memory, the second reads from it
        assert [outcome(ours, t) for t in tokens] == theirs
    assert 0 < len(ours._headers) <= HEADERS_KEPT and alice.split(".")[0].encode() in ours._headers
    assert 50 < sum(kind == "ok" for kind, _ in theirs) < len(tokens) - 50


def test_the_secret_is_prepared_once_not_on_every_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyJWT re-checks an HMAC key's shape (PEM, SSH, DER, JWK) on every decode: the verifier
    does it once, at start. Fails if verification goes back to `jwt.decode(token, secret)`."""
    from jwt.algorithms import HMACAlgorithm

    from web.auth import Verifier

    verifier = Verifier(Settings().with_(auth_jwt_secret=TEST_JWT_SECRET))
    tokens = [sign(user) for user in (ALICE, BOB, 7)]  # signing prepares the key too: before counting
    forged = sign(ALICE, secret="another-secret-of-enough-length-0123456789")
    prepared = []
    real = HMACAlgorithm.prepare_key
    monkeypatch.setattr(HMACAlgorithm, "prepare_key", lambda self, key: prepared.append(1) or real(self, key))

    assert [verifier.user_id(token) for token in tokens] == [ALICE, BOB, 7]
    assert prepared == []
    with pytest.raises(AuthInvalid):  # another secret's signature is still refused
        verifier.user_id(forged)


def test_a_secret_shaped_like_a_public_key_or_a_jwk_is_refused_at_start() -> None:
    """PyJWT refuses such a secret (an algorithm-confusion guard): now at start, naming the
    variable, instead of a 401 for every token."""
    from web.auth import Verifier

    pem = _pem(ec.generate_private_key(ec.SECP256R1())).decode()
    for secret in (pem, json.dumps({"kty": "oct", "k": "c2VjcmV0"})):
        with pytest.raises(SettingsError, match="AUTH_JWT_SECRET"):
            Verifier(Settings().with_(auth_jwt_secret=secret))


def test_remembering_a_token_stays_cheap_once_the_memory_is_full() -> None:
    """Hidden way to fail: evicting the oldest of a plain dict with `next(iter(d))` scans the
    deleted slots at its front, so once VERIFIED_MAX tokens are kept every new token cost ~100 µs
    (more than verifying it). Compared with the same process's inserts before the memory filled."""
    from web.auth import VERIFIED_MAX, Verifier

    verifier = Verifier(Settings().with_(auth_jwt_secret=TEST_JWT_SECRET))
    batch = 2_000

    def best_batch(start: int, batches: int) -> float:
        times = []
        for b in range(batches):
            t0 = time.perf_counter()
            for i in range(start + b * batch, start + (b + 1) * batch):
                verifier._remember(f"t{i}", i, 1e12)
            times.append(time.perf_counter() - t0)
        return min(times)

    before_full = best_batch(0, VERIFIED_MAX // batch)
    assert len(verifier._verified) == VERIFIED_MAX - VERIFIED_MAX % batch
    best_batch(VERIFIED_MAX, 1)  # fills it
    once_full = best_batch(2 * VERIFIED_MAX, 10)  # every insert evicts

    assert len(verifier._verified) == VERIFIED_MAX
    assert "t0" not in verifier._verified and f"t{2 * VERIFIED_MAX + 10 * batch - 1}" in verifier._verified
    assert once_full < 10 * before_full, (once_full, before_full)
