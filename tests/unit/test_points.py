"""Points over HTTP on the unit tier: balance, charge, history, limits and every bad input."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from config.settings import Settings
from models import points
from models.errors import ConcurrentUpdate
from models.points import LedgerEntry, Wallet
from tests.support.helpers import make_app, problem_of
from tests.support.identity import bearer

USER = 7


def charge(client: FlaskClient, amount: Any, user: Any = USER) -> Any:
    return client.post(f"/api/v1/users/{user}/points/charge", json={"amount": amount})


def balance_of(client: FlaskClient, user: Any = USER) -> int:
    response = client.get(f"/api/v1/users/{user}/points")
    assert response.status_code == 200
    return int(response.get_json()["balance"])


def history_of(client: FlaskClient, user: Any = USER) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/users/{user}/points/history")
    assert response.status_code == 200
    return list(response.get_json()["entries"])


def rows() -> tuple[int, int]:
    """(wallets, ledger entries) in the database."""
    return Wallet.select().count(), LedgerEntry.select().count()


@pytest.fixture
def limited_client(unit_settings: Settings) -> Iterator[FlaskClient]:
    """An app whose limits are small: MAX_CHARGE 1,000 and MAX_BALANCE 1,500."""
    from models.db import db

    app = make_app(unit_settings.with_(max_charge=1000, max_balance=1500))
    yield app.test_client()
    db.close()


def test_a_user_who_never_charged_has_balance_zero_and_no_history(client: FlaskClient) -> None:
    response = client.get("/api/v1/users/42/points")

    assert response.status_code == 200
    assert response.get_json() == {"userId": 42, "balance": 0}
    assert client.get("/api/v1/users/42/points/history").get_json() == {"userId": 42, "entries": []}
    assert rows() == (0, 0)


def test_charges_create_the_wallet_and_history_lists_them_newest_first(client: FlaskClient) -> None:
    first = charge(client, 100)
    second = charge(client, 250)

    assert first.status_code == 200
    assert first.get_json() == {"userId": USER, "balance": 100}
    assert second.get_json() == {"userId": USER, "balance": 350}
    assert balance_of(client) == 350
    entries = history_of(client)
    assert [(e["type"], e["amount"], e["balanceAfter"]) for e in entries] == [
        ("CHARGE", 250, 350),
        ("CHARGE", 100, 100),
    ]
    for entry in entries:
        assert entry["createdAt"].endswith("Z")
        created = dt.datetime.fromisoformat(entry["createdAt"].removesuffix("Z"))
        assert abs(dt.datetime.now(dt.UTC).replace(tzinfo=None) - created) < dt.timedelta(minutes=1)
    assert Wallet.get_by_id(USER).balance == 350


def test_users_do_not_share_wallets(client: FlaskClient) -> None:
    charge(client, 100, user=1)
    charge(client, 5, user=2)

    assert (balance_of(client, 1), balance_of(client, 2)) == (100, 5)
    assert len(history_of(client, 1)) == len(history_of(client, 2)) == 1


def test_the_largest_user_id_is_accepted(client: FlaskClient) -> None:
    biggest = 2**63 - 1

    assert charge(client, 5, user=biggest).get_json() == {"userId": biggest, "balance": 5}
    assert balance_of(client, biggest) == 5


def test_default_max_charge_accepts_one_million_and_refuses_one_more(client: FlaskClient) -> None:
    assert charge(client, 1_000_000).status_code == 200

    response = charge(client, 1_000_001)

    assert response.status_code == 422
    assert problem_of(response)["code"] == "LIMIT_EXCEEDED"
    assert balance_of(client) == 1_000_000
    assert len(history_of(client)) == 1


def test_a_charge_above_max_charge_writes_nothing(limited_client: FlaskClient) -> None:
    response = charge(limited_client, 1001)

    assert response.status_code == 422
    assert problem_of(response)["code"] == "LIMIT_EXCEEDED"
    assert balance_of(limited_client) == 0
    assert history_of(limited_client) == []
    assert rows() == (0, 0)


def test_max_balance_is_reachable_exactly_but_not_exceeded(limited_client: FlaskClient) -> None:
    # Given a wallet filled up to MAX_BALANCE exactly
    assert charge(limited_client, 1000).status_code == 200
    assert charge(limited_client, 500).get_json()["balance"] == 1500

    # When one more point is charged
    response = charge(limited_client, 1)

    # Then it is refused and nothing is written
    assert response.status_code == 422
    assert problem_of(response)["code"] == "LIMIT_EXCEEDED"
    assert balance_of(limited_client) == 1500
    assert [e["amount"] for e in history_of(limited_client)] == [500, 1000]
    assert rows() == (1, 2)


def test_a_first_charge_above_max_balance_creates_no_wallet(unit_settings: Settings) -> None:
    from models.db import db

    client = make_app(unit_settings.with_(max_charge=5000, max_balance=1000)).test_client()
    try:
        response = charge(client, 1001)

        assert response.status_code == 422
        assert problem_of(response)["code"] == "LIMIT_EXCEEDED"
        assert rows() == (0, 0)
    finally:
        db.close()


BAD_AMOUNTS = [0, -5, 1.5, 5.25, "100", True, None, 10**30]


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=[repr(a) for a in BAD_AMOUNTS])
def test_a_bad_amount_is_a_400_and_writes_nothing(client: FlaskClient, amount: Any) -> None:
    charge(client, 100)

    response = charge(client, amount)

    assert response.status_code == 400
    assert problem_of(response)["code"] == "VALIDATION_ERROR"
    assert balance_of(client) == 100
    assert len(history_of(client)) == 1
    assert rows() == (1, 1)


BAD_BODIES: list[tuple[str, str, str]] = [
    ("missing amount", "{}", "application/json"),
    ("extra field", '{"amount": 5, "note": "x"}', "application/json"),
    ("JSON array", "[5]", "application/json"),
    ("malformed JSON", '{"amount": 5', "application/json"),
    ("empty body", "", "application/json"),
    ("text/plain", '{"amount": 5}', "text/plain"),
    ("form-urlencoded", "amount=5", "application/x-www-form-urlencoded"),
    ("multipart", "", "multipart/form-data; boundary=x"),
]


@pytest.mark.parametrize(("body", "content_type"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_a_bad_body_is_a_400_and_writes_nothing(client: FlaskClient, body: str, content_type: str) -> None:
    charge(client, 100)

    response = client.post(f"/api/v1/users/{USER}/points/charge", data=body, content_type=content_type)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert problem_of(response)["code"] == "VALIDATION_ERROR"
    assert balance_of(client) == 100
    assert rows() == (1, 1)


@pytest.mark.parametrize("user", ["0", "-1", "abc", str(2**63), "1.5"])
def test_a_bad_user_id_is_a_400_on_every_points_route(client: FlaskClient, user: str) -> None:
    responses = [
        charge(client, 5, user=user),
        client.get(f"/api/v1/users/{user}/points"),
        client.get(f"/api/v1/users/{user}/points/history"),
    ]

    for response in responses:
        assert response.status_code == 400
        assert problem_of(response)["code"] == "VALIDATION_ERROR"
    assert rows() == (0, 0)


def test_a_body_up_to_max_body_bytes_is_read_and_one_byte_more_is_413(client: FlaskClient) -> None:
    # Given two valid JSON bodies padded with spaces to 16 KiB and 16 KiB + 1
    base = json.dumps({"amount": 5})
    exact = base + " " * (16_384 - len(base))
    over = exact + " "

    ok = client.post(f"/api/v1/users/{USER}/points/charge", data=exact, content_type="application/json")
    too_big = client.post(f"/api/v1/users/{USER}/points/charge", data=over, content_type="application/json")

    assert ok.status_code == 200
    assert too_big.status_code == 413
    assert problem_of(too_big)["status"] == 413
    assert balance_of(client) == 5
    assert rows() == (1, 1)


def test_charge_gives_up_with_concurrent_update_when_the_compare_and_set_always_loses(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a wallet and a compare-and-set that always loses to another writer
    charge(client, 100)
    calls: list[int] = []

    def always_lose(wallet: Wallet, new_balance: int) -> bool:
        calls.append(new_balance)
        return False

    monkeypatch.setattr(points, "_compare_and_set", always_lose)

    # When charging directly
    with pytest.raises(ConcurrentUpdate) as excinfo:
        points.charge(user_id=USER, amount=50, max_charge=1000, max_balance=10_000)

    # Then it retried, gave up, and wrote nothing
    assert calls == [150] * points.CHARGE_ATTEMPTS
    assert excinfo.value.retry_after >= 1
    assert rows() == (1, 1)
    assert Wallet.get_by_id(USER).balance == 100


def test_a_lost_race_answers_409_concurrent_update_with_retry_after(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    charge(client, 100)
    monkeypatch.setattr(points, "_compare_and_set", lambda wallet, new_balance: False)

    response = charge(client, 50)

    assert response.status_code == 409
    assert problem_of(response)["code"] == "CONCURRENT_UPDATE"
    assert int(response.headers["Retry-After"]) >= 1
    assert balance_of(client) == 100
    assert len(history_of(client)) == 1


def test_balance_always_equals_the_ledger_sum(client: FlaskClient) -> None:
    for amount in (1, 20, 300, 4000):
        charge(client, amount)

    ledger_sum = sum(e.amount for e in LedgerEntry.select().where(LedgerEntry.user_id == USER))
    assert balance_of(client) == ledger_sum == 4321
    assert [e["balanceAfter"] for e in history_of(client)] == [4321, 321, 21, 1]


def test_concurrent_charges_on_the_embedded_sqlite_all_succeed_and_add_up(app) -> None:
    """BEGIN IMMEDIATE through the proxy: writers queue on busy_timeout instead of failing "database is locked"."""
    import threading

    from models import points
    from models.db import db

    errors: list[BaseException] = []

    def charge_many() -> None:
        try:
            with db.connection_context():
                for _ in range(25):
                    points.charge(user_id=77, amount=10, max_charge=1_000_000, max_balance=100_000_000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=charge_many) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    with db.connection_context():
        assert points.get_balance(user_id=77).balance == 16 * 25 * 10
        assert len(points.history(user_id=77, limit=1000)) == 400


def test_a_charge_sent_again_with_its_idempotency_key_answers_the_first_answer_and_charges_nothing(
    client: FlaskClient,
) -> None:
    """A retry after a lost answer (SPEC §3 v2). Hidden ways to fail: the header ignored (charged
    twice), the balance of now answered instead of the first one, another amount accepted."""
    key = {"Idempotency-Key": "top-up-1"}
    first = client.post(f"/api/v1/users/{USER}/points/charge", json={"amount": 100}, headers=key)
    charge(client, 5)  # the balance moves on between the two
    again = client.post("/api/v1/me/points/charge", json={"amount": 100}, headers={**key, **bearer(USER)})
    other = client.post(f"/api/v1/users/{USER}/points/charge", json={"amount": 101}, headers=key)
    case = client.post(
        f"/api/v1/users/{USER}/points/charge", json={"amount": 100}, headers={"Idempotency-Key": "TOP-UP-1"}
    )

    assert (first.status_code, first.get_json()) == (200, {"userId": USER, "balance": 100})
    assert (again.status_code, again.get_json()) == (200, {"userId": USER, "balance": 100})
    assert (other.status_code, problem_of(other)["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    assert case.get_json() == {"userId": USER, "balance": 205}  # keys compare exactly
    assert [e["amount"] for e in history_of(client)] == [100, 5, 100]
    assert balance_of(client) == 205
    # another user's same key is their own
    assert charge_as(client, 8, 100, key).get_json() == {"userId": 8, "balance": 100}


def charge_as(client: FlaskClient, user: int, amount: int, headers: dict[str, str]) -> Any:
    return client.post(f"/api/v1/users/{user}/points/charge", json={"amount": amount}, headers=headers)


@pytest.mark.parametrize("key", ["k" * 129, " lead", "caf\xe9"])
def test_a_malformed_charge_key_is_400_and_charges_nothing(client: FlaskClient, key: str) -> None:
    response = client.post(
        f"/api/v1/users/{USER}/points/charge", json={"amount": 100}, headers={"Idempotency-Key": key}
    )

    assert (response.status_code, problem_of(response)["code"]) == (400, "VALIDATION_ERROR")
    assert rows() == (0, 0)
