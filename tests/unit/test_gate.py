"""web/gate.py on its own: the queue-token checks every seat, reservation and payment route passes.

The gate runs inside a request context of the unit-tier app (SQLite + fakeredis); no route is
called, so each check is seen alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask, g

from models import errors as e
from models.concerts import NewSchedule, Schedule, Seat, create_concert
from models.db import utcnow
from models.queue_tokens import QueueToken
from models.waiting_room import ACTIVE, WAITING, WaitingRoom
from tests.support.helpers import hold_directly
from web.gate import HEADER, own_reservation, queue_gate, require_active


@dataclass
class Two:
    """Two concerts of one schedule each; user 1 holds an ACTIVE token for the first."""

    first: int
    second: int
    first_schedule: int
    second_schedule: int
    token: QueueToken


@pytest.fixture
def two(app: Flask) -> Two:
    day = utcnow() + dt.timedelta(days=3)
    first, [s1] = create_concert(title="A", venue="V", schedules=[NewSchedule(day, 4, 10)])
    second, [s2] = create_concert(title="B", venue="V", schedules=[NewSchedule(day, 4, 10)])
    token = room(app).issue(user_id=1, concert_id=first)
    assert token.status == ACTIVE
    return Two(first, second, s1.schedule_id, s2.schedule_id, token)


def room(app: Flask) -> WaitingRoom:
    return app.extensions["waiting_room"]  # type: ignore[no-any-return]


@pytest.fixture
def request_with(app: Flask) -> Iterator[object]:
    """Enter a request context with the given X-Queue-Token header, signed in as `user` (what
    web/auth.py's hook leaves in `g` for a verified bearer)."""
    contexts = []

    def enter(token: str | None, user: int = 1) -> None:
        ctx = app.test_request_context(headers={HEADER: token} if token is not None else {})
        ctx.push()
        g.identity = user
        contexts.append(ctx)

    yield enter
    for ctx in reversed(contexts):
        ctx.pop()


def test_an_active_token_passes_and_is_left_for_the_route(two: Two, request_with) -> None:
    request_with(f"  {two.token.token} ")  # surrounding blanks are not part of the token

    token = require_active(two.first, claimed_user_id=1)

    assert (token.token, token.user_id, token.status) == (two.token.token, 1, ACTIVE)
    assert g.queue_token == token


@pytest.mark.parametrize("header", [None, "", "   "])
def test_no_token_is_token_missing(two: Two, request_with, header: str | None) -> None:
    request_with(header)

    with pytest.raises(e.TokenMissing, match=HEADER):
        require_active(two.first)


def test_an_unknown_token_is_token_invalid(two: Two, request_with) -> None:
    request_with(two.token.token[:-4] + "0000")

    with pytest.raises(e.TokenInvalid):
        require_active(two.first)


def test_a_waiting_token_is_not_active_and_says_its_rank(app: Flask, two: Two, request_with) -> None:
    waiting = room(app).issue(user_id=2, concert_id=two.first, limit=0)
    assert waiting.status == WAITING
    request_with(waiting.token, user=2)

    with pytest.raises(e.TokenNotActive, match=f"rank {waiting.rank}"):
        require_active(two.first)


def test_another_users_token_is_forbidden(two: Two, request_with) -> None:
    request_with(two.token.token, user=2)

    with pytest.raises(e.Forbidden, match="another user"):
        require_active(two.first)


def test_a_token_of_another_concert_is_forbidden(two: Two, request_with) -> None:
    request_with(two.token.token)

    with pytest.raises(e.Forbidden, match="another concert"):
        require_active(two.second)


def test_a_body_user_id_other_than_the_tokens_is_forbidden(two: Two, request_with) -> None:
    request_with(two.token.token)

    with pytest.raises(e.Forbidden, match="userId"):
        require_active(two.first, claimed_user_id=2)


def test_queue_gate_checks_the_schedule_in_the_path_against_the_tokens_concert(two: Two, request_with) -> None:
    request_with(two.token.token)
    seen: list[str] = []

    @queue_gate
    def view(schedule_id: str) -> str:
        seen.append(schedule_id)
        return "ok"

    assert view(schedule_id=str(two.first_schedule)) == "ok"
    with pytest.raises(e.Forbidden):
        view(schedule_id=str(two.second_schedule))
    with pytest.raises(e.ValidationError):
        view(schedule_id="0")
    with pytest.raises(e.NotFound):
        view(schedule_id="999999")
    assert seen == [str(two.first_schedule)]  # the view ran only when the gate let it


def test_own_reservation_hides_other_users_and_refuses_other_concerts(app: Flask, two: Two, request_with) -> None:
    mine = hold_directly(Seat.get(Seat.schedule == two.first_schedule), 1)
    theirs = hold_directly(Seat.get(Seat.schedule == two.first_schedule, Seat.number == 2), 2)
    elsewhere = hold_directly(Seat.get(Seat.schedule == two.second_schedule), 1)
    assert Schedule.get_by_id(two.second_schedule).concert_id == two.second
    request_with(two.token.token)  # signed in as user 1

    assert own_reservation(two.token, mine.reservation_id).reservation_id == mine.reservation_id
    with pytest.raises(e.NotFound):  # exactly like a missing one: existence is not revealed
        own_reservation(two.token, theirs.reservation_id)
    with pytest.raises(e.Forbidden, match="another concert"):
        own_reservation(two.token, elsewhere.reservation_id)
