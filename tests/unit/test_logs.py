"""config/logs.py and web/requestlog.py: one logging setup, request ids in and out, job lines that name both."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from config import logs
from tests.support.helpers import worker_thread
from tests.unit.test_pipeline import Demo, active_token, demo, finished_job, hold  # noqa: F401

API = "/api/v1"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the project's loggers write, formatted as LOG_FORMAT=json formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logs.JsonFormatter())
    loggers = [logging.getLogger(name) for name in ("workers", "access", "scheduler")]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield stream
    for lg, (level, _) in zip(loggers, saved, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("env", "error"),
    [({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"), ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be text or json")],
)
def test_a_bad_log_setting_is_one_line_naming_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(logs.LoggingConfigError, match=error):
        logs.read_env(env)


def test_libraries_stay_at_warning_whatever_the_level() -> None:
    config = logs.dict_config("DEBUG", "text")

    assert config["root"]["level"] == "DEBUG"
    for name in ("apscheduler", "kafka", "urllib3"):
        assert config["loggers"][name]["level"] == "WARNING"


def test_a_request_id_is_echoed_or_made_up(client: FlaskClient) -> None:
    mine = client.get(f"{API}/healthz", headers={"X-Request-Id": "trace-42"})
    made_up = client.get(f"{API}/healthz")
    hostile = client.get(f"{API}/healthz", headers={"X-Request-Id": "a b INFO forged"})

    assert mine.headers["X-Request-Id"] == "trace-42"
    assert len(made_up.headers["X-Request-Id"]) == 16
    assert hostile.headers["X-Request-Id"] not in ("a b INFO forged", "")


def test_a_hold_and_a_payment_each_write_one_info_line_with_the_request_and_job_ids(
    client: FlaskClient,
    demo: Demo,  # noqa: F811
    json_lines: io.StringIO,
) -> None:
    token = active_token(client, 7, demo.concert_id)
    client.post(f"{API}/users/7/points/charge", json={"amount": 100_000})
    seat = demo.seats[3]

    with worker_thread():
        held = hold(client, token, seat, headers={"X-Request-Id": "hold-1"}).get_json()
        reservation = finished_job(client, held["jobId"])["result"]
        paid = client.post(
            f"{API}/payments",
            json={"reservationId": reservation["reservationId"]},
            headers={"X-Queue-Token": token, "X-Request-Id": "pay-1"},
        ).get_json()
        assert finished_job(client, paid["jobId"])["status"] == "SUCCEEDED"

    lines = parsed(json_lines)
    jobs = [line for line in lines if line["logger"] == "workers.jobs"]
    assert [(j["level"], j["requestId"], j["jobId"]) for j in jobs] == [
        ("INFO", "hold-1", held["jobId"]),
        ("INFO", "pay-1", paid["jobId"]),
    ]
    assert jobs[0]["msg"].startswith("hold succeeded") and f"seatId={seat.id}" in jobs[0]["msg"]  # type: ignore[union-attr]
    assert jobs[1]["msg"].startswith("pay succeeded") and "paymentId=" in jobs[1]["msg"]  # type: ignore[union-attr]


def test_the_access_log_is_one_compact_line_per_request_when_on(app, json_lines: io.StringIO) -> None:  # type: ignore[no-untyped-def]
    from web import requestlog

    app.before_request_funcs[None] = [f for f in app.before_request_funcs[None] if f.__module__ != requestlog.__name__]
    app.after_request_funcs[None] = [f for f in app.after_request_funcs[None] if f.__module__ != requestlog.__name__]
    requestlog.install(app, access_log=True)

    app.test_client().get(f"{API}/concerts?limit=5", headers={"X-Request-Id": "r-1"})

    (line,) = [line for line in parsed(json_lines) if line["logger"] == "access"]
    assert line["requestId"] == "r-1"
    assert str(line["msg"]).startswith("GET /api/v1/concerts?limit=5 200 ")
    assert str(line["msg"]).endswith("ms")


def test_setup_skips_what_no_format_writes_and_a_job_line_still_names_its_ids(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A worker writes an INFO line per job: the caller's frame, thread and process that every record
    gathered by default cost ~a third of a line's CPU, and neither format writes them.
    Hidden ways it fails: setup() leaving the defaults on, or a line that lost its text or ids."""
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored after the test
    monkeypatch.setattr(logging.config, "dictConfig", lambda config: None)  # the session's handlers stay

    logs.setup({"LOG_LEVEL": "INFO", "LOG_FORMAT": "text"})

    assert (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing) == (  # type: ignore[attr-defined]
        None,
        False,
        False,
        False,
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(logging.Formatter(logs.TEXT_FORMAT))
    logger = logging.getLogger("workers.lean-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with logs.job_context("job-1", "req-1"):
            logger.info("hold succeeded in %d ms", 12)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().rstrip().endswith("INFO workers.lean-test: hold succeeded in 12 ms [req=req-1 job=job-1]")
