"""Index benchmark (issue 7 item 1): the seed's three repository queries at 1,000,000 seats and
500,000 reservations, without the secondary indexes they could use and with them, in one run.

    .venv/bin/python -m bench.index_bench [--quick] [--runs N] [--rounds R]

--quick: 200,000 seats / 100,000 reservations, 30 runs (about 30 s with loading). The seed's
ratios are for 1,000,000 seats: a 5x smaller table makes every full scan 5x cheaper, so quick
runs check that the benchmark works, not the targets.

The queries are the seed's Spring Data methods written as the SQL they generate:
  count_by_schedule_status     countByScheduleIdAndStatus         SELECT COUNT(*) ... schedule_id=? AND status=?
  seats_by_schedule_status_in  findByScheduleIdAndStatusIn        SELECT * ... schedule_id=? AND status IN (?, ?)
  expired_holds                findAllByStatusAndExpiresAtBefore  SELECT * ... status='HELD' AND expires_at < ?
plus, outside the seed's table, expired_holds_sweep: the query this project's sweeper runs
(models.reservations.find_expired: id, seat_id, ORDER BY expires_at LIMIT 500).
Each is timed client side (execute + fetch all rows through PyMySQL, as the seed timed its
repository calls) on one connection, one query after the other (see `measure`), over the same 10
schedules in turn; warm-up runs are not counted. Every 4th run is followed by ANALYZE FORMAT=JSON of the same
query: the server's own time, without sending and decoding rows ("server" in the JSON). The
indexed phase also times SELECT 1, the round trip every query pays ("round_trip_floor").

The runs are split over R rounds (default 3) so that load from other work on this shared
machine lands on every phase; each round, with EXPLAIN (tabular and FORMAT=JSON) of each query:
  indexed        the schema the migrations define (round 1: as they built it; later rounds:
                 re-created by the previous round);
  fk_index_only  only the seed's seats(schedule_id, status) index dropped: the seats queries can
                 still use the FK index on schedule_id and UNIQUE(schedule_id, number) (the seed
                 says its baseline had "only the FK index");
  no_index       every secondary index whose first column a query filters on is dropped (seats:
                 the three keys leading with schedule_id, after the foreign key on schedule_id
                 that needs one of them; reservations: (status, expires_at)), so only PRIMARY is
                 left; the run stops if EXPLAIN shows a possible key. The other keys of
                 reservations (UNIQUE live_seat_id, job_id, (user_id, schedule_id, hold_slot), the
                 seat_id FK index) cannot serve these queries and stay.
  then the keys are created again (timed; the foreign key after a check that no row breaks it,
  with foreign_key_checks=0 to avoid a table copy), ANALYZE TABLE, and SHOW CREATE TABLE must
  equal what it was before the round.
Speed-up = no_index p50 / indexed p50 over all rounds; the target is the seed's ratio
(150.9 -> 0.29 ms, 194.7 -> 40.2 ms, 75.6 -> 16.3 ms). The dropped keys' DDL is kept in the table
`bench_index_restore` until they exist again, so a run killed half-way is repaired at the start
of the next one; a finished run always leaves the schema as the migrations define it.

Data: the project's migrations and seed code (`models.seed.seed`, 1,000-seat schedules, the
most POST /admin/concerts allows), then reservations by INSERT ... SELECT on an evenly spread
half of the seats: CONFIRMED 55 %, EXPIRED 30 %, CANCELLED 10 %, HELD 5 %. A HELD hold was
created in the 6 minutes before the data's as-of instant and lasts 5 minutes, so 1/6 of the
holds are past expiry (a sweeper running a minute behind): 0.8 % of all reservations. Seats of
live reservations are HELD or RESERVED; each reservation is on its own seat, and live_seat_id,
hold_slot and job_id satisfy their UNIQUE keys; each CONFIRMED one has its payment and published
PaymentCompleted outbox row, so `python -m models check` passes on this data. `expires_at < ?`
gets the as-of instant (the concert's created_at), so reruns on reused data select the same
rows. Data is reused when its size matches the arguments (else dropped and loaded again).

Env: BENCH_DATABASE_URL (default mysql://root@127.0.0.1:3306/bench_index, created if missing).
Writes bench/results/index.json and bench/results/index_explain.txt.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pymysql
import pymysql.cursors

from bench.common import RESULTS, connect, create_database, machine, summary_ms, write
from models import schema, seed
from models.concerts import Concert
from models.db import init_database

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Index bench"  # the seed names the concert "Index bench 1"
RESTORE_TABLE = "bench_index_restore"
SAMPLE_SCHEDULES = 10
SERVER_EVERY = 4  # every 4th timed run is followed by an ANALYZE FORMAT=JSON of it (server-side time)
STATUS_IN = ("AVAILABLE", "HELD")  # seats not sold yet: the seat-map view of what can still be had
# Reservation mix in percent (cumulative bounds of CRC32(...) % 100).
MIX = (("HELD", 5), ("CONFIRMED", 60), ("EXPIRED", 90), ("CANCELLED", 100))
HOLD_SECONDS = 300
HELD_CREATED_WITHIN = 360  # HELD rows were created in the last 6 minutes: 60/360 of them are past expiry
USERS = 100_000

SEED = {
    "count_by_schedule_status": {"no_index_ms": 150.9, "indexed_ms": 0.29},
    "seats_by_schedule_status_in": {"no_index_ms": 194.7, "indexed_ms": 40.2},
    "expired_holds": {"no_index_ms": 75.6, "indexed_ms": 16.3},
}
SQL = {
    "count_by_schedule_status": "SELECT COUNT(*) FROM seats WHERE schedule_id = %s AND status = %s",
    "seats_by_schedule_status_in": "SELECT * FROM seats WHERE schedule_id = %s AND status IN (%s, %s)",
    "expired_holds": "SELECT * FROM reservations WHERE status = %s AND expires_at < %s",
    # Not a seed query: what this project's sweeper runs (models.reservations.find_expired).
    "expired_holds_sweep": "SELECT id, seat_id FROM reservations WHERE status = %s AND expires_at <= %s "
    "ORDER BY expires_at LIMIT 500",
    # The floor every query pays: one round trip through PyMySQL and the server, no table.
    "round_trip_floor": "SELECT 1",
}
# The columns each table's queries filter on: a secondary index leading with one of them is usable.
FILTERED = {"seats": ("schedule_id", "status"), "reservations": ("status", "expires_at")}
SEED_INDEX = ("seats", ("schedule_id", "status"))  # the index phase 1 drops alone

Conn = pymysql.connections.Connection  # type: ignore[type-arg]


# ---------------------------------------------------------------- data


def ensure_data(conn: Conn, seats: int, reservations: int, per_schedule: int) -> tuple[float | None, dict[str, Any]]:
    """(load seconds or None when reused, facts): reuse matching data, else drop, migrate, seed, add reservations."""
    schedules = seats // per_schedule
    with conn.cursor() as cur:
        try:
            cur.execute("SELECT id FROM concerts WHERE title = %s", (f"{TITLE} 1",))
            found = cur.fetchone()
            counts = []
            for sql in (
                "SELECT COUNT(*) FROM concert_schedules",
                "SELECT COUNT(*) FROM seats",
                "SELECT COUNT(*) FROM reservations",
                "SELECT COUNT(*) FROM payments",
            ):
                cur.execute(sql)
                counts.append(cur.fetchone()[0])
            loaded = found is not None and counts[:3] == [schedules, seats, reservations] and counts[3] > 0
        except pymysql.err.ProgrammingError:  # no schema yet
            loaded = False
    load_seconds = None
    if not loaded:
        started = time.perf_counter()
        schema.drop_all()
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {RESTORE_TABLE}")  # nothing left to restore in tables just dropped
        schema.migrate()
        result = seed.seed(concerts=1, schedules=schedules, seats=per_schedule, title=TITLE)
        print(f"seeded {result.seats:,} seats in {result.schedules:,} schedules in {result.seconds:.1f} s", flush=True)
        t0 = time.perf_counter()
        add_reservations(conn, seats, reservations)
        print(f"added {reservations:,} reservations in {time.perf_counter() - t0:.1f} s", flush=True)
        with conn.cursor() as cur:
            cur.execute("ANALYZE TABLE seats, reservations")
            cur.fetchall()
        load_seconds = round(time.perf_counter() - started, 1)
        settle(conn)
    as_of = Concert.get(Concert.title == f"{TITLE} 1").created_at
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM concert_schedules ORDER BY id")
        ids = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT status, COUNT(*) FROM reservations GROUP BY status ORDER BY status")
        mix = dict(cur.fetchall())
        cur.execute("SELECT status, COUNT(*) FROM seats GROUP BY status ORDER BY status")
        seat_mix = dict(cur.fetchall())
    step = max(1, len(ids) // SAMPLE_SCHEDULES)
    facts = {
        "as_of": as_of.isoformat(),
        "schedules": len(ids),
        "seats_per_schedule": per_schedule,
        "sample_schedule_ids": ids[::step][:SAMPLE_SCHEDULES],
        "reservation_status": mix,
        "seat_status": seat_mix,
    }
    return load_seconds, facts


def settle(conn: Conn, limit: float = 90.0) -> None:
    """After a load, wait (at most `limit` s) until InnoDB has purged the load's undo history."""
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        while time.perf_counter() - t0 < limit:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'")
            if int(cur.fetchone()[1]) < 1000:
                break
            time.sleep(1)
    print(f"waited {time.perf_counter() - t0:.1f} s for InnoDB to purge the load", flush=True)


def add_reservations(conn: Conn, seats: int, reservations: int) -> None:
    """INSERT ... SELECT one reservation on each of `reservations` seats spread over all schedules.

    Seat rank r (0..seats-1) is chosen when (r * P) mod seats < reservations, P coprime with seats
    and near seats/phi: a bijection, so exactly `reservations` seats, evenly spread. Status and
    times come from CRC32 of the seat id. Rows are inserted in created_at order, so ids grow with
    time as AUTO_INCREMENT gives them in production (the live HELD rows are the newest). The user
    is 1 + r mod USERS: two seats of one schedule are fewer than USERS ranks apart, so
    (user_id, schedule_id, hold_slot=1) is unique.
    """
    if reservations > seats:
        raise SystemExit("--reservations must not exceed --seats (one reservation per seat)")
    p = round(seats * 0.6180339887)
    while math.gcd(p, seats) != 1:
        p += 1
    status = "CASE " + " ".join(f"WHEN h < {bound} THEN '{name}'" for name, bound in MIX) + " END"
    as_of = Concert.get(Concert.title == f"{TITLE} 1").created_at
    with conn.cursor() as cur:
        cur.execute("SELECT MIN(id), MAX(id) FROM seats")
        lo, hi = cur.fetchone()
        assert hi - lo + 1 == seats, "seat ids must be contiguous (a fresh seed)"
        cur.execute("BEGIN")  # reservations and seat statuses together, or neither (a killed load is redone)
        cur.execute(
            f"""
            INSERT INTO reservations (user_id, seat_id, schedule_id, price, status, expires_at, version,
                                      live_seat_id, job_id, created_at, updated_at, hold_slot)
            SELECT 1 + MOD(r, {USERS}), id, schedule_id, price, status,
                   created + INTERVAL {HOLD_SECONDS} SECOND,
                   IF(status = 'HELD', 0, 1),
                   IF(status IN ('HELD', 'CONFIRMED'), id, NULL),
                   CONCAT('bench-', id), created,
                   CASE status WHEN 'HELD' THEN created
                               WHEN 'EXPIRED' THEN created + INTERVAL {HOLD_SECONDS} + MOD(id, 60) SECOND
                               ELSE created + INTERVAL 1 + MOD(id, {HOLD_SECONDS - 1}) SECOND END,
                   IF(status = 'HELD', 1, NULL)
            FROM (
                SELECT id, schedule_id, price, r, {status} AS status,
                       IF(h < {MIX[0][1]},
                          %(as_of)s - INTERVAL FLOOR(u * {HELD_CREATED_WITHIN * 1_000_000}) MICROSECOND,
                          %(as_of)s - INTERVAL 600 + FLOOR(u * 30 * 86400) SECOND) AS created
                FROM (
                    SELECT id, schedule_id, price, id - %(lo)s AS r,
                           MOD(CRC32(CONCAT('status:', id)), 100) AS h,
                           CRC32(CONCAT('time:', id)) / 4294967296 AS u
                    FROM seats
                    WHERE MOD((id - %(lo)s) * %(p)s, %(n)s) < %(k)s
                ) hashed
            ) picked
            ORDER BY created, id
            """,
            {"as_of": as_of, "lo": lo, "p": p, "n": seats, "k": reservations},
        )
        cur.execute(
            "UPDATE seats s JOIN reservations r ON r.live_seat_id = s.id "
            "SET s.status = IF(r.status = 'HELD', 'HELD', 'RESERVED'), s.version = s.version + 1"
        )
        add_payments(cur)
        cur.execute("COMMIT")


def add_payments(cur: Any) -> None:
    """A payment and its published PaymentCompleted outbox row per CONFIRMED reservation, as pay() writes them.

    With them the data passes `python -m models check` (invariants 2 and 4); wallets and the
    points ledger are left empty (no query here reads them; invariant 3 holds trivially).
    """
    cur.execute(
        "INSERT INTO payments (reservation_id, user_id, amount, job_id, created_at) "
        "SELECT id, user_id, price, CONCAT('bench-pay-', id), updated_at FROM reservations "
        "WHERE status = 'CONFIRMED' ORDER BY updated_at, id"
    )
    cur.execute(f"SELECT id FROM concerts WHERE title = '{TITLE} 1'")
    concert_id = int(cur.fetchone()[0])
    cur.execute(
        f"""
        INSERT INTO outbox_events (event_id, aggregate_type, aggregate_id, event_type, topic, message_key,
                                   payload, status, created_at, published_at)
        SELECT event_id, 'payment', id, 'PaymentCompleted', 'payment-completed', CAST(reservation_id AS CHAR),
               JSON_OBJECT('eventId', event_id, 'eventType', 'PaymentCompleted', 'paymentId', id,
                           'reservationId', reservation_id, 'userId', user_id, 'concertId', {concert_id},
                           'scheduleId', schedule_id, 'seatId', seat_id, 'amount', amount,
                           'paidAt', CONCAT(DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.'),
                                            LPAD(MICROSECOND(created_at) DIV 1000, 3, '0'), 'Z')),
               'PUBLISHED', created_at, created_at + INTERVAL 1 SECOND
        FROM (SELECT UUID() AS event_id, p.id, p.reservation_id, p.user_id, p.amount, p.created_at,
                     r.schedule_id, r.seat_id
              FROM payments p JOIN reservations r ON r.id = p.reservation_id) paid
        ORDER BY id
        """
    )


# ---------------------------------------------------------------- indexes


def _rows(conn: Conn, sql: str, args: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


def secondary_indexes(conn: Conn, table: str) -> dict[str, dict[str, Any]]:
    """name -> {unique, columns, ddl} of the table's secondary indexes, from information_schema."""
    rows = _rows(
        conn,
        "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND INDEX_NAME <> 'PRIMARY' "
        "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        (table,),
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        ix = out.setdefault(r["INDEX_NAME"], {"unique": not r["NON_UNIQUE"], "columns": [], "parts": []})
        ix["columns"].append(r["COLUMN_NAME"])
        ix["parts"].append(f"`{r['COLUMN_NAME']}`" + (f"({r['SUB_PART']})" if r["SUB_PART"] else ""))
    for name, ix in out.items():
        kind = "UNIQUE INDEX" if ix["unique"] else "INDEX"
        ix["ddl"] = f"ALTER TABLE `{table}` ADD {kind} `{name}` ({', '.join(ix.pop('parts'))})"
    return out


def foreign_keys(conn: Conn, table: str) -> dict[str, dict[str, Any]]:
    """name -> {columns, ddl} of the table's foreign keys."""
    rows = _rows(
        conn,
        "SELECT k.CONSTRAINT_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, "
        "r.UPDATE_RULE, r.DELETE_RULE FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "AND r.TABLE_NAME = k.TABLE_NAME "
        "WHERE k.TABLE_SCHEMA = DATABASE() AND k.TABLE_NAME = %s AND k.REFERENCED_TABLE_NAME IS NOT NULL "
        "ORDER BY k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        (table,),
    )
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        fk = out.setdefault(
            r["CONSTRAINT_NAME"],
            {"columns": [], "ref_columns": [], "ref": r["REFERENCED_TABLE_NAME"], "rules": r},
        )
        fk["columns"].append(r["COLUMN_NAME"])
        fk["ref_columns"].append(r["REFERENCED_COLUMN_NAME"])
    for name, fk in out.items():
        rules = fk.pop("rules")
        cols = ", ".join(f"`{c}`" for c in fk["columns"])
        refs = ", ".join(f"`{c}`" for c in fk.pop("ref_columns"))
        # RESTRICT is the default and what a key created without ON clauses reports; spelling it out
        # would make MariaDB record NO ACTION instead (same behaviour, different schema).
        on = "".join(
            f" ON {event} {rules[f'{event}_RULE']}"
            for event in ("DELETE", "UPDATE")
            if rules[f"{event}_RULE"] != "RESTRICT"
        )
        fk["ddl"] = (
            f"ALTER TABLE `{table}` ADD CONSTRAINT `{name}` FOREIGN KEY ({cols}) REFERENCES `{fk['ref']}` ({refs}){on}"
        )
    return out


def schema_keys(conn: Conn) -> dict[str, list[str]]:
    """SHOW CREATE TABLE of the two tables as sorted lines without AUTO_INCREMENT (key order may change)."""
    out = {}
    with conn.cursor() as cur:
        for t in FILTERED:
            cur.execute(f"SHOW CREATE TABLE `{t}`")
            lines = cur.fetchone()[1].splitlines()
            out[t] = sorted(re.sub(r" AUTO_INCREMENT=\d+", "", line).rstrip(",") for line in lines)
    return out


def _exists(conn: Conn, kind: str, table: str, name: str) -> bool:
    found = secondary_indexes(conn, table) if kind == "index" else foreign_keys(conn, table)
    return name in found


def drop(conn: Conn, kind: str, table: str, name: str, ddl: str, columns: list[str]) -> dict[str, Any]:
    """Record the key's re-create DDL, then drop it; indexes are restored before foreign keys."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT COALESCE(MAX(step), 0) FROM {RESTORE_TABLE}")
        last = cur.fetchone()[0]
        step = last + 1
        cur.execute(
            f"INSERT INTO {RESTORE_TABLE} (step, kind, table_name, name, ddl) VALUES (%s, %s, %s, %s, %s)",
            (step, kind, table, name, ddl),
        )
        if kind == "index":
            cur.execute(f"ALTER TABLE `{table}` DROP INDEX `{name}`")
        else:
            cur.execute(f"ALTER TABLE `{table}` DROP FOREIGN KEY `{name}`")
    return {"table": table, "name": name, "kind": kind, "columns": columns, "ddl": ddl}


def restore(conn: Conn) -> dict[str, float]:
    """Re-create every key recorded in the restore table (indexes first); name -> seconds."""
    with conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {RESTORE_TABLE} (step INT PRIMARY KEY, kind VARCHAR(16) NOT NULL, "
            "table_name VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL, ddl TEXT NOT NULL)"
        )
        cur.execute(
            f"SELECT step, kind, table_name, name, ddl FROM {RESTORE_TABLE} ORDER BY kind = 'foreign_key', step"
        )
        pending = cur.fetchall()
    seconds: dict[str, float] = {}
    for step, kind, table, name, ddl in pending:
        t0 = time.perf_counter()
        if not _exists(conn, kind, table, name):
            with conn.cursor() as cur:
                if kind == "foreign_key":
                    # The table was not written since the key was dropped; prove it has no orphan, then
                    # add the key without InnoDB's table copy (foreign_key_checks=1 forces ALGORITHM=COPY).
                    fk_check(conn, ddl)
                    cur.execute("SET SESSION foreign_key_checks = 0")
                    try:
                        cur.execute(ddl)
                    finally:
                        cur.execute("SET SESSION foreign_key_checks = 1")
                else:
                    cur.execute(ddl)
        seconds[name] = round(time.perf_counter() - t0, 2)
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {RESTORE_TABLE} WHERE step = %s", (step,))
    return seconds


def fk_check(conn: Conn, ddl: str) -> None:
    """Fail unless every row satisfies the foreign key the DDL adds (single-column keys)."""
    # ALTER TABLE `t` ADD CONSTRAINT `n` FOREIGN KEY (`c`) REFERENCES `rt` (`rc`) ...
    table = ddl.split("`")[1]
    col = ddl.split("FOREIGN KEY (`")[1].split("`")[0]
    ref_table = ddl.split("REFERENCES `")[1].split("`")[0]
    ref_col = ddl.split("REFERENCES `")[1].split("(`")[1].split("`")[0]
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT COUNT(*) FROM `{table}` t LEFT JOIN `{ref_table}` r ON r.`{ref_col}` = t.`{col}` "
            f"WHERE t.`{col}` IS NOT NULL AND r.`{ref_col}` IS NULL"
        )
        orphans = cur.fetchone()[0]
    if orphans:
        raise SystemExit(f"{orphans} rows of {table} violate {ddl}; not re-adding it unchecked")


def drop_seed_index(conn: Conn) -> list[dict[str, Any]]:
    """Phase 1: drop only the seed's seats(schedule_id, status) index."""
    table, cols = SEED_INDEX
    found = [(n, ix) for n, ix in secondary_indexes(conn, table).items() if tuple(ix["columns"]) == cols]
    if not found:
        raise SystemExit(f"{table}{cols} index not found: the migrations changed, adapt the benchmark")
    return [drop(conn, "index", table, n, ix["ddl"], ix["columns"]) for n, ix in found]


def drop_usable(conn: Conn) -> list[dict[str, Any]]:
    """Phase 2: drop every secondary index leading with a filtered column, and foreign keys that need them."""
    dropped = []
    for table, cols in FILTERED.items():
        usable = {n: ix for n, ix in secondary_indexes(conn, table).items() if ix["columns"][0] in cols}
        kept_leads = {ix["columns"][0] for n, ix in secondary_indexes(conn, table).items() if n not in usable}
        for name, fk in foreign_keys(conn, table).items():
            if fk["columns"][0] in cols and fk["columns"][0] not in kept_leads:
                dropped.append(drop(conn, "foreign_key", table, name, fk["ddl"], fk["columns"]))
        for name, ix in usable.items():
            dropped.append(drop(conn, "index", table, name, ix["ddl"], ix["columns"]))
    return dropped


# ---------------------------------------------------------------- queries


def query_args(facts: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Per query, the argument tuples the runs cycle through (the same sample schedules in every phase)."""
    ids = facts["sample_schedule_ids"]
    as_of = dt.datetime.fromisoformat(facts["as_of"])
    return {
        "count_by_schedule_status": [(sid, "AVAILABLE") for sid in ids],
        "seats_by_schedule_status_in": [(sid, *STATUS_IN) for sid in ids],
        "expired_holds": [("HELD", as_of)],
        "expired_holds_sweep": [("HELD", as_of)],
        "round_trip_floor": [()],
    }


def explain(conn: Conn, key: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """EXPLAIN (tabular rows) and EXPLAIN FORMAT=JSON of one query."""
    rows = _rows(conn, "EXPLAIN " + SQL[key], args)
    with conn.cursor() as cur:
        cur.execute("EXPLAIN FORMAT=JSON " + SQL[key], args)
        doc = json.loads(cur.fetchone()[0])
    plan = [
        {
            "table": r["table"],
            "type": r["type"],
            "possible_keys": r["possible_keys"],
            "key": r["key"],
            "rows": r["rows"],
            "extra": r["Extra"],
        }
        for r in rows
    ]
    return {"plan": plan, "json": doc}


Samples = dict[str, dict[str, list[float]]]  # query -> {"seconds": [...], "rows": [...]}


def server_seconds(cur: Any, key: str, args: tuple[Any, ...]) -> float:
    """The server's own time for one execution (ANALYZE FORMAT=JSON: optimization + execution, no row transfer)."""
    cur.execute("ANALYZE FORMAT=JSON " + SQL[key], args or None)
    doc = json.loads(cur.fetchone()[0])
    block = doc["query_block"].get("r_total_time_ms", 0.0)  # absent for SELECT 1 (no table)
    return float(doc["query_optimization"]["r_total_time_ms"] + block) / 1000


def measure(conn: Conn, keys: list[str], args: dict[str, list[tuple[Any, ...]]], runs: int, warmup: int) -> Samples:
    """Per query, one after another: warm-up then `runs` timed executions (execute + fetch all rows).

    One query at a time, as the seed timed each repository method: interleaved with the SELECT *
    queries, whose row decoding keeps this process busy for 50+ ms, a light query measured about
    twice its own time on this shared machine (SELECT 1: 0.15 ms instead of 0.03 ms). Run i uses
    argument tuple i mod len: the sample schedules in turn. Rows are those returned (the COUNT
    query: the count). Every SERVER_EVERY-th run is followed by an ANALYZE of the same query for
    the server-side time.
    """
    out: Samples = {k: {"seconds": [], "rows": [], "server_seconds": []} for k in keys}
    with conn.cursor() as cur:
        for k in keys:
            for i in range(warmup + runs):
                a = args[k][i % len(args[k])]
                t0 = time.perf_counter()
                cur.execute(SQL[k], a or None)
                fetched = cur.fetchall()
                elapsed = time.perf_counter() - t0
                if i >= warmup:
                    out[k]["seconds"].append(elapsed)
                    out[k]["rows"].append(fetched[0][0] if k == "count_by_schedule_status" else len(fetched))
                    if (i - warmup) % SERVER_EVERY == 0:
                        out[k]["server_seconds"].append(server_seconds(cur, k, a))
    return out


def phase(
    conn: Conn,
    name: str,
    keys: list[str],
    args: dict[str, list[tuple[Any, ...]]],
    runs: int,
    warmup: int,
    into: dict[str, Any],
) -> None:
    """EXPLAIN and time the given queries in the current schema; append to `into[name]`.

    The full EXPLAIN is kept from the first round; the key the optimizer chose, from every round
    (statistics of re-created indexes can change the choice).
    """
    empty: Samples = {k: {"seconds": [], "rows": [], "server_seconds": []} for k in keys}
    slot = into.setdefault(name, {"explain": {}, "samples": empty})
    explains = {k: explain(conn, k, args[k][0]) for k in keys}
    if name == "no_index":
        used = {
            k: [p["key"] or p["possible_keys"] for p in e["plan"] if p["key"] or p["possible_keys"]]
            for k, e in explains.items()
        }
        if any(used.values()):
            raise SystemExit(f"no_index phase still sees keys {used}: the drop list is incomplete")
    if not slot["explain"]:
        slot["explain"] = explains
    for k in keys:
        slot.setdefault("keys", {}).setdefault(k, []).append(explains[k]["plan"][0]["key"])
    t0 = time.perf_counter()
    got = measure(conn, keys, args, runs, warmup)
    for k in keys:
        for field in ("seconds", "rows", "server_seconds"):
            slot["samples"][k][field] += got[k][field]
    p50 = ", ".join(f"{k} {summary_ms(got[k]['seconds'])['p50_ms']} ms" for k in keys)
    print(f"  {name:<14} p50 {p50} ({time.perf_counter() - t0:.1f} s)", flush=True)


def summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    """summary_ms of the client times, the mean rows per execution, summary_ms of the server times."""
    return {
        **summary_ms(samples["seconds"]),
        "min_ms": round(min(samples["seconds"]) * 1000, 3),
        "rows_mean": round(sum(samples["rows"]) / len(samples["rows"]), 1),
        "server": summary_ms(samples["server_seconds"]),
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.index_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200,000 seats / 100,000 reservations, 30 runs")
    parser.add_argument("--seats", type=int, help="default 1,000,000 (200,000 with --quick)")
    parser.add_argument("--reservations", type=int, help="default 500,000 (100,000 with --quick)")
    parser.add_argument("--seats-per-schedule", type=int, default=1000)
    parser.add_argument("--runs", type=int, help="timed runs per query and phase (default 100, 30 with --quick)")
    parser.add_argument("--rounds", type=int, default=3, help="drop/create rounds the runs are split over")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per phase and round (no_index)")
    args = parser.parse_args(argv)
    seats = args.seats or (200_000 if args.quick else 1_000_000)
    reservations = args.reservations or (100_000 if args.quick else 500_000)
    runs = args.runs or (30 if args.quick else 100)
    if seats % args.seats_per_schedule or not 1 <= args.seats_per_schedule <= USERS:
        parser.error(f"--seats must be a multiple of --seats-per-schedule (1..{USERS})")
    db_url = os.environ.get("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/bench_index")
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()

    create_database(db_url)
    init_database(db_url)
    conn = connect(db_url, urlparse(db_url).path.lstrip("/"))
    repaired = restore(conn)  # a killed earlier run may have left keys dropped
    if repaired:
        print(f"re-created keys a previous run left dropped: {', '.join(repaired)}", flush=True)
    schema.migrate()
    load_seconds, facts = ensure_data(conn, seats, reservations, args.seats_per_schedule)
    print(
        f"data: {seats:,} seats in {facts['schedules']:,} schedules, {reservations:,} reservations "
        f"{facts['reservation_status']} ({f'loaded in {load_seconds:.1f} s' if load_seconds else 'reused'})",
        flush=True,
    )
    with conn.cursor() as cur:
        cur.execute("SELECT @@query_cache_type, @@innodb_buffer_pool_size, VERSION()")
        qc, pool, version = cur.fetchone()
        cur.execute("SET SESSION query_cache_type = OFF")  # no-op when the server has it off already
        cur.execute(
            "SELECT TABLE_NAME, DATA_LENGTH, INDEX_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN ('seats', 'reservations')"
        )
        sizes = {t: {"data_mib": round(d / 2**20, 1), "index_mib": round(i / 2**20, 1)} for t, d, i in cur.fetchall()}

    before = schema_keys(conn)
    qargs = query_args(facts)
    seat_keys = ["count_by_schedule_status", "seats_by_schedule_status_in"]
    all_keys = [*seat_keys, "expired_holds", "expired_holds_sweep"]
    # Rounds of indexed -> fk_index_only -> no_index -> re-create, so that a burst of load from other work on the
    # machine lands on every phase rather than on one; each phase gets runs/rounds timed runs a round.
    per_round = [runs // args.rounds + (1 if r < runs % args.rounds else 0) for r in range(args.rounds)]
    warm_idx = max(args.warmup, SAMPLE_SCHEDULES)  # touch every sample schedule's index pages first
    phases: dict[str, Any] = {}
    drop_seconds: list[float] = []
    create_seconds: list[dict[str, float]] = []
    dropped: list[dict[str, Any]] = []
    for rnd, n in enumerate(per_round, 1):
        print(f"round {rnd}/{args.rounds}", flush=True)
        # round 1: the schema the migrations built; the floor query is timed here only (no table, no index)
        phase(conn, "indexed", [*all_keys, "round_trip_floor"], qargs, n, warm_idx, phases)
        try:
            t0 = time.perf_counter()
            dropped = drop_seed_index(conn)
            spent = time.perf_counter() - t0
            phase(conn, "fk_index_only", seat_keys, qargs, n, warm_idx, phases)
            t0 = time.perf_counter()
            dropped += drop_usable(conn)
            drop_seconds.append(round(spent + time.perf_counter() - t0, 2))
            phase(conn, "no_index", all_keys, qargs, n, args.warmup, phases)
        finally:
            create_seconds.append(restore(conn))
        with conn.cursor() as cur:
            cur.execute("ANALYZE TABLE seats, reservations")
            cur.fetchall()
        if schema_keys(conn) != before:
            raise SystemExit(f"keys after round {rnd} differ from before:\n{before}\n{schema_keys(conn)}")
    conn.close()

    queries: dict[str, Any] = {}
    extra_queries: dict[str, Any] = {}
    for k in all_keys:
        q = query_result(k, phases, qargs)
        if k in SEED:
            seed_ratio = round(SEED[k]["no_index_ms"] / SEED[k]["indexed_ms"], 2)
            q["seed"] = {**SEED[k], "speedup": seed_ratio}
            q["target_met"] = q["speedup"] >= seed_ratio
            queries[k] = q
        else:
            extra_queries[k] = q

    data = {
        "machine": {
            **machine(),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            "mariadb": version,
            "innodb_buffer_pool_mib": round(pool / 2**20),
            "query_cache_type_server": qc,
        },
        "parameters": {
            "seats": seats,
            "reservations": reservations,
            "runs": runs,
            "quick": args.quick,
            "rounds": args.rounds,
            "warmup": {"no_index": args.warmup, "indexed": warm_idx, "fk_index_only": warm_idx},
            "seats_per_schedule": args.seats_per_schedule,
        },
        "load_seconds": load_seconds,
        "data": {**facts, "table_sizes": sizes},
        "dropped_indexes": dropped,
        "index_seconds": {"drop_per_round": drop_seconds, "create_per_round": create_seconds},
        "queries": queries,
        "extra_queries": extra_queries,
        "round_trip_floor": {
            "sql": SQL["round_trip_floor"],
            **summary(phases["indexed"]["samples"]["round_trip_floor"]),
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    path = write("index", data)
    explain_path = write_explain(data, phases, qargs)
    print_table(data)
    print(f"wrote {path.relative_to(ROOT)} and {explain_path.relative_to(ROOT)} in {data['total_seconds']} s")
    return 0


def query_result(k: str, phases: dict[str, Any], qargs: dict[str, list[tuple[Any, ...]]]) -> dict[str, Any]:
    """One query's entry of the result JSON (the agreed fields first, then the additions)."""
    fields = ("p50_ms", "p99_ms", "mean_ms", "n")
    no = summary(phases["no_index"]["samples"][k])
    ix = summary(phases["indexed"]["samples"][k])
    q: dict[str, Any] = {
        "sql": SQL[k],
        "no_index": {m: no[m] for m in fields},
        "indexed": {m: ix[m] for m in fields},
        "speedup": round(no["p50_ms"] / ix["p50_ms"], 2),
        "explain_no_index": phases["no_index"]["explain"][k]["json"],
        "explain_indexed": phases["indexed"]["explain"][k]["json"],
        # additions to the agreed shape
        "args_example": [str(a) for a in qargs[k][0]],
        "result_rows_mean": ix["rows_mean"],
        "speedup_mean": round(no["mean_ms"] / ix["mean_ms"], 2),
        # fastest no-index run / fastest indexed run: the least disturbed by other work on the machine
        "min_ms": {"no_index": no["min_ms"], "indexed": ix["min_ms"]},
        "speedup_min": round(no["min_ms"] / ix["min_ms"], 2),
        "server": {
            "no_index": no["server"],
            "indexed": ix["server"],
            "speedup": round(no["server"]["p50_ms"] / ix["server"]["p50_ms"], 2),
        },
        "plan_no_index": phases["no_index"]["explain"][k]["plan"],
        "plan_indexed": phases["indexed"]["explain"][k]["plan"],
        "key_by_round": {name: phases[name]["keys"][k] for name in phases if k in phases[name]["keys"]},
    }
    if k in phases["fk_index_only"]["samples"]:
        fk = summary(phases["fk_index_only"]["samples"][k])
        q["fk_index_only"] = {m: fk[m] for m in fields}
        q["server"]["fk_index_only"] = fk["server"]
        q["speedup_vs_fk_index_only"] = round(fk["p50_ms"] / ix["p50_ms"], 2)
        q["plan_fk_index_only"] = phases["fk_index_only"]["explain"][k]["plan"]
        q["explain_fk_index_only"] = phases["fk_index_only"]["explain"][k]["json"]
    return q


def write_explain(data: dict[str, Any], phases: dict[str, Any], qargs: dict[str, list[tuple[Any, ...]]]) -> Path:
    """bench/results/index_explain.txt: every query's plan in every phase, tabular and JSON."""
    p = data["parameters"]
    lines = [
        f"EXPLAIN output of python -m bench.index_bench{' --quick' if p['quick'] else ''} "
        f"({p['seats']:,} seats, {p['reservations']:,} reservations), {data['machine']['date_utc']} UTC, "
        f"{data['machine']['mariadb']}",
        "",
        "Dropped for the no_index phase (fk_index_only drops only the first):",
        *(f"  {d['kind']:<12} {d['table']}.{d['name']} ({', '.join(d['columns'])})" for d in data["dropped_indexes"]),
        "",
    ]
    for k in SQL:
        for name in ("fk_index_only", "no_index", "indexed"):
            if k not in phases[name]["explain"]:
                continue
            e = phases[name]["explain"][k]
            lines += [f"== {k} / {name}", f"   {SQL[k]}", f"   args {[str(a) for a in qargs[k][0]]}"]
            lines += [f"   key chosen in rounds 1..{len(phases[name]['keys'][k])}: {phases[name]['keys'][k]}"]
            lines += [f"   {row}" for row in e["plan"]]
            lines += ["   " + line for line in json.dumps(e["json"], indent=2).splitlines()]
            lines.append("")
    path = RESULTS / "index_explain.txt"
    path.write_text("\n".join(lines))
    return path


def print_table(data: dict[str, Any]) -> None:
    p = data["parameters"]
    print(
        f"\n{p['seats']:,} seats, {p['reservations']:,} reservations, {p['runs']} runs per query and phase "
        f"over {p['rounds']} drop/create rounds; times in ms (client: execute + fetch all rows)"
    )
    head = ("no-idx p50", "no-idx p99", "idx p50", "idx p99", "speed-up", "seed", "met", "min x", "server x", "FK p50")
    print(f"{'query':<29}{'rows':>7}" + "".join(f"{h:>12}" for h in head))
    rows = [*data["queries"].items(), *data["extra_queries"].items()]
    for k, q in rows:
        no, ix = q["no_index"], q["indexed"]
        seed = f"{q['seed']['speedup']:>11.1f}x{q['target_met']!s:>12}" if "seed" in q else f"{'-':>12}{'-':>12}"
        fk = f"{q['fk_index_only']['p50_ms']:>12.3f}" if "fk_index_only" in q else f"{'-':>12}"
        print(
            f"{k:<29}{q['result_rows_mean']:>7.0f}{no['p50_ms']:>12.3f}{no['p99_ms']:>12.3f}{ix['p50_ms']:>12.3f}"
            f"{ix['p99_ms']:>12.3f}{q['speedup']:>11.1f}x{seed}{q['speedup_min']:>11.1f}x{q['server']['speedup']:>11.1f}x{fk}"
        )
    print(
        "speed-up = no-index p50 / indexed p50 (target: >= the seed's); min x = fastest no-index run / fastest "
        "indexed run;\nserver x = the p50 ratio of the server's own time (ANALYZE); rows = rows returned (COUNT: the "
        "count);\nFK p50 = without the seed's (schedule_id, status) index, the FK index and "
        "UNIQUE(schedule_id, number) still there"
    )
    f = data["round_trip_floor"]
    print(
        f"round-trip floor (SELECT 1, no table): client p50 {f['p50_ms']:.3f} ms, p99 {f['p99_ms']:.3f} ms; "
        f"server {f['server']['p50_ms']:.3f} ms"
    )
    print("dropped for no-index: " + ", ".join(f"{d['table']}.{d['name']}" for d in data["dropped_indexes"]))


if __name__ == "__main__":
    sys.exit(main())
