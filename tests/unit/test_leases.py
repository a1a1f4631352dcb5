"""models/leases.py on fakeredis (Lua included): one holder per key; only the holder renews or releases."""

from __future__ import annotations

import fakeredis

from models.leases import Leases, holder_id
from tests.support.helpers import wait_for


def test_one_holder_per_key_and_only_the_holder_renews_or_releases() -> None:
    server = fakeredis.FakeServer()
    a = Leases(fakeredis.FakeRedis(server=server), holder="a", ttl_ms=10_000)
    b = Leases(fakeredis.FakeRedis(server=server), holder="b", ttl_ms=10_000)

    assert a.take("k") is True
    assert b.take("k") is False
    assert b.renew("k") is False and b.release("k") is False
    assert a.r.get("k") == b"a"

    assert a.renew("k") is True
    assert a.release("k") is True
    assert b.take("k") is True
    assert a.renew("k") is False  # lost: the renewal does not steal it back


def test_a_lease_nobody_renews_lapses_after_its_ttl_and_a_standby_takes_it() -> None:
    server = fakeredis.FakeServer()
    a = Leases(fakeredis.FakeRedis(server=server), holder="a", ttl_ms=150)
    b = Leases(fakeredis.FakeRedis(server=server), holder="b", ttl_ms=150)
    assert a.take("k")
    assert not b.take("k")
    assert wait_for(lambda: b.take("k"), 10) is not None  # once the 150 ms lapsed


def test_holder_ids_are_distinct_per_call() -> None:
    assert holder_id() != holder_id()
