"""The pages in a real browser (Debian's Chromium, headless) against `make run`'s process.

A fan waits through an operator's pause and sees the notice, gets in, races a second fan for a
seat (exactly one wins, the other is told why), sees the hold's countdown, charges, pays and sees
the confirmation; the console shows the sale's numbers moving and the audit entries. The docs
explorer renders every operation and Try it out works with the bearer scheme.
Screenshots of every step land in the test's temp dir (listed on failure);
`UPDATE_SCREENSHOTS=1` also refreshes the README's images in docs/img/.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_client import ApiClient
from tests.support.env import need_service
from tests.support.helpers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "e2e-admin-token"
DEMO = 1  # the demo concert `make run` seeds: 2 schedules x 50 seats


@pytest.fixture(scope="module")
def browser_ready() -> str:
    """Chromium and chromium-driver as Debian installs them (skip, or fail with REQUIRE_SERVICES=1)."""
    for binary in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        if not os.access(binary, os.X_OK):
            need_service("chromium", FileNotFoundError(f"{binary} (apt-get install chromium chromium-driver)"))
    from tests.e2e.browser import versions

    return versions()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser_ready: str) -> Iterator[str]:
    """`python -m config.embedded` (what `make run` starts) on a free port with a fresh SQLite file."""
    tmp = tmp_path_factory.mktemp("pages-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env.update(PORT=str(port), DATABASE_URL=f"sqlite:///{tmp / 'pages.db'}", ADMIN_TOKEN=ADMIN_TOKEN)
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "config.embedded"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        ApiClient(f"{base}/api/v1").wait_ready()
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        assert "Traceback" not in (tmp / "server.log").read_text(), (tmp / "server.log").read_text()[-3000:]


@pytest.fixture
def shots(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The screenshot folder of one test; on failure its files are copied to test-artifacts/ and listed."""
    folder = tmp_path / "screenshots"
    yield folder
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and folder.exists():
        kept = ROOT / "test-artifacts" / request.node.name
        shutil.copytree(folder, kept, dirs_exist_ok=True)
        print(f"\nscreenshots of the failed steps: {kept}", *sorted(p.name for p in kept.iterdir()), sep="\n  ")


def _browsers(base: str, shots: Path, *specs: tuple[str, tuple[int, int]]) -> list[object]:
    """Start several Chromiums at once (each start costs ~2 s of CPU)."""
    from tests.e2e.browser import Browser

    started: dict[str, Browser] = {}

    def start(name: str, size: tuple[int, int]) -> None:
        started[name] = Browser(base, shots, name=name, size=size)

    threads = [threading.Thread(target=start, args=spec) for spec in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [name for name, _ in specs if name not in started]
    assert not missing, f"Chromium did not start for {missing}"
    return [started[name] for name, _ in specs]


def _script_errors(browser: object) -> list[str]:
    """Console errors that are not an expected HTTP status (a CSP violation or a script error would be)."""
    return [m for m in browser.console_errors() if "Failed to load resource" not in m]  # type: ignore[attr-defined]


def test_a_fan_waits_through_a_pause_races_for_a_seat_and_pays_while_the_console_follows(
    server: str, shots: Path, browser_ready: str
) -> None:
    from tests.e2e.browser import DESKTOP, PHONE, Browser

    print(browser_ready)
    admin, fan, rival = _browsers(server, shots, ("admin", DESKTOP), ("fan", PHONE), ("rival", PHONE))
    assert isinstance(admin, Browser) and isinstance(fan, Browser) and isinstance(rival, Browser)
    try:
        # Given the operator pauses admission of the demo concert with a notice
        admin.open("/admin")
        admin.fill("#admin-token", ADMIN_TOKEN)
        admin.find("#token-form button[type=submit]").click()
        panel = f'.concert-panel[data-concert="{DEMO}"]'
        admin.wait_visible(f"{panel} .toggle")
        admin.fill(f"#c{DEMO}-notice", "Doors open at 19:00")
        admin.find(f"{panel} button[type=submit]").click()
        admin.wait(lambda: "Doors open" in admin.text("#audit"), "the notice change in the audit log")
        admin.find(f"{panel} .toggle").click()
        admin.wait(lambda: "paused" in admin.text(f"{panel} .state"), "the panel to say paused")
        admin.shot("paused")

        # When a fan signs in and joins, the fan waits at position 1 and sees the notice
        _sign_in_and_join(fan, user_id="4242")
        fan.wait_visible("#step-wait")
        fan.wait(lambda: fan.text("#rank") == "1", "position 1")
        assert "Doors open at 19:00" in fan.text("#notice")
        assert fan.find("#progress").get_attribute("value") is not None
        admin.wait(lambda: admin.text(f'{panel} [data-stat="waiting"] .value') == "1", "the console to count 1 waiting")
        _two_polls_while_waiting(fan)
        fan.shot("waiting", readme="fan-waiting.png")

        # And the operator resumes: the fan is admitted by the next pass and sees the seat grid
        admin.find(f"{panel} .toggle").click()
        resumed = time.monotonic()
        fan.wait_visible("#seat-grid .seat.available", timeout=10)
        admitted_after = time.monotonic() - resumed
        print(f"admitted {admitted_after:.2f} s after resume")
        fan.shot("seats", readme="fan-seats.png")

        # When a second fan races the first for the same seat, exactly one holds it
        _sign_in_and_join(rival, user_id="4343")
        rival.wait_visible("#seat-grid .seat.available")
        seat_id = fan.find("#seat-grid .seat.available").get_attribute("data-seat")
        winner, loser = _race(fan, rival, seat_id)
        assert loser.text("#problem-title") == "Seat not available", loser.text("#problem")
        loser.shot("refused")

        # Then the winner sees a countdown that runs, charges points, pays and sees the payment id
        first = winner.text("#countdown")
        assert re.fullmatch(r"[45]:[0-5][0-9]", first), first
        winner.wait(lambda: winner.text("#countdown") != first, "the countdown to move")
        winner.shot("hold", readme="fan-hold.png")
        if winner.visible("#extend"):  # the API offers extensions (extensionsLeft > 0)

            def left() -> int:
                minutes, seconds = winner.text("#countdown").split(":")
                return int(minutes) * 60 + int(seconds)

            before = left()
            winner.find("#extend").click()
            winner.wait(lambda: left() > before, "the countdown to restart after extending")
        winner.fill("#charge-amount", "100000")
        winner.find("#charge-form button").click()
        winner.wait(lambda: winner.text("#balance") == "100000", "the balance after charging")
        winner.find("#pay").click()
        winner.wait_visible("#step-done")
        assert re.fullmatch(r"[0-9]+", winner.text("#payment-id")), winner.text("#payment-id")
        winner.shot("paid", readme="fan-paid.png")

        # And the console shows the sale: one sold, none held, the pause and resume in the audit log
        sold = f'{panel} [data-stat="sold"] .value'
        admin.wait(lambda: admin.text(sold) == "1", "the console to count 1 sold")
        assert admin.text(f'{panel} [data-stat="held"] .value') == "0"
        assert admin.text(f'{panel} [data-stat="available"] .value') == "99"
        rows = [r.text for r in admin.all("#audit tr")]
        assert any("paused" in r and "true" in r and "false" in r for r in rows), rows
        admin.shot("console", readme="console.png")
        for browser in (admin, fan, rival):
            assert _script_errors(browser) == [], browser.name
        assert admitted_after < 5
    finally:
        for browser in (admin, fan, rival):
            browser.close()


def _sign_in_and_join(browser: object, *, user_id: str) -> None:
    b = browser  # a tests.e2e.browser.Browser
    b.open("/")  # type: ignore[attr-defined]
    b.fill("#user-id", user_id)  # type: ignore[attr-defined]
    b.find("#login-form button").click()  # type: ignore[attr-defined]
    b.wait_visible("#concerts li button").click()  # type: ignore[attr-defined]


def _two_polls_while_waiting(fan: object) -> None:
    """The page polls at the server's pollAfterMs (1 s when absent), never early: sample three polls."""
    from tests.e2e.browser import Browser

    assert isinstance(fan, Browser)
    polls = "return performance.getEntriesByType('resource').filter(r => r.name.endsWith('/queue/token'))" \
        ".map(r => r.startTime)"  # fmt: skip
    fan.wait(lambda: len(fan.js(polls)) >= 3, "three polls", timeout=20)
    starts = fan.js(polls)
    expected = int(fan.find("#step-wait").get_attribute("data-poll-after-ms"))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(expected * 0.95 <= gap <= expected + 700 for gap in gaps), (expected, gaps)
    assert fan.find("#step-wait").is_displayed() and not fan.visible("#problem")


def _race(fan: object, rival: object, seat_id: str) -> tuple[object, object]:
    """Both fans click the same seat at once (two browsers, two threads); return (winner, loser)."""
    barrier = threading.Barrier(2)
    click = f"document.querySelector('#seat-grid [data-seat=\"{seat_id}\"]').click()"

    def go(browser: object) -> None:
        barrier.wait(timeout=10)
        browser.js(click)  # type: ignore[attr-defined]

    threads = [threading.Thread(target=go, args=(b,)) for b in (fan, rival)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in (fan, rival):
        b.wait(lambda b=b: b.visible("#step-hold") or b.visible("#problem"), "the hold or a refusal")  # type: ignore[attr-defined]
    held = [b for b in (fan, rival) if b.visible("#step-hold")]  # type: ignore[attr-defined]
    assert len(held) == 1, f"{len(held)} fans hold seat {seat_id}"
    winner = held[0]
    return winner, rival if winner is fan else fan


def _credentials(server: str) -> dict[str, str]:
    """A value for each security scheme the explorer offers: the admin token, a queue token of a
    fresh fan, and (where the server has dev login) that fan's access token for any other bearer."""
    api = ApiClient(f"{server}/api/v1")
    values = {"adminToken": ADMIN_TOKEN}
    status, _, login = api.post("/dev/login", {"userId": 5150})
    bearer = {"Authorization": f"Bearer {login['accessToken']}"} if status == 200 else {}
    status, _, joined = api.post("/queue/tokens", {"userId": 5150, "concertId": DEMO}, headers=bearer)
    assert status in (200, 201), joined
    values["queueToken"] = joined["token"]
    if bearer:
        values["*bearer"] = login["accessToken"]
    return values


def _try_it_out(docs: object, method: str, path: str) -> str:
    """Expand an operation, press Try it out and Execute; the response's status code."""
    block = next(
        b for b in docs.all(f".opblock-{method}")  # type: ignore[attr-defined]
        if b.find_element("css selector", ".opblock-summary-path").get_attribute("data-path") == path
    )  # fmt: skip
    block.find_element("css selector", ".opblock-summary").click()
    docs.wait(lambda: block.find_element("css selector", ".try-out__btn").is_displayed(), "Try it out")  # type: ignore[attr-defined]
    block.find_element("css selector", ".try-out__btn").click()
    block.find_element("css selector", ".execute").click()
    status = ".live-responses-table tbody .response-col_status"
    docs.wait(lambda: block.find_element("css selector", status).text.strip(), f"the response of {path}")  # type: ignore[attr-defined]
    return str(block.find_element("css selector", status).text.strip())


def test_the_docs_explorer_renders_every_operation_and_tries_them_with_each_scheme(server: str, shots: Path) -> None:
    from tests.e2e.browser import Browser

    document = ApiClient(f"{server}/api/v1").get("/openapi.json")[2]
    operations = sum(len(ops) for ops in document["paths"].values())
    credentials = _credentials(server)
    docs = Browser(server, shots, name="docs")
    try:
        docs.open("/api/v1/docs")
        docs.wait(lambda: len(docs.all(".opblock")) == operations, f"{operations} operations to render", timeout=20)
        assert "Unable to render" not in docs.text("body")
        docs.shot("explorer", readme="docs.png")

        # Authorize lists every security scheme and takes a value for each
        docs.find(".btn.authorize").click()
        docs.wait_visible(".modal-ux")
        dialog = docs.text(".modal-ux")
        schemes = document["components"]["securitySchemes"]
        for scheme in schemes:
            assert scheme in dialog, scheme
        for box in docs.all(".modal-ux .auth-container"):
            name = next(n for n in schemes if n in box.text)
            value = credentials.get(name) or credentials.get("*bearer")
            assert value, f"no credential for the {name} scheme"
            box.find_element("css selector", "input").send_keys(value)
            box.find_element("css selector", "button.authorize").click()
        docs.shot("authorized")
        docs.find(".modal-ux .btn-done").click()

        # Then Try it out sends them: the admin bearer and the queue token are accepted
        assert _try_it_out(docs, "get", "/api/v1/admin/audit") == "200"
        assert _try_it_out(docs, "get", "/api/v1/queue/token") == "200"
        docs.shot("tried")
        assert _script_errors(docs) == []
    finally:
        docs.close()


def test_the_fan_page_is_light_fast_and_keyboard_usable_on_a_phone(server: str, shots: Path) -> None:
    from tests.e2e.browser import PHONE, Browser

    fan = Browser(server, shots, name="first-load", size=PHONE)
    try:
        # A first load with an empty cache: the page, its CSS and JS
        fan.open("/")
        fan.wait_visible("#user-id")
        weight = fan.page_weight()
        total_kb = (weight["documentBytes"] + weight["assetBytes"]) / 1024
        print(f"fan page first load: {total_kb:.1f} KB in {1 + weight['assets']} transfers, "
              f"first contentful paint {weight['firstContentfulPaintMs']:.0f} ms")  # fmt: skip
        assert total_kb < 40 and 0 < weight["firstContentfulPaintMs"] < 3000, weight
        assert fan.js("return document.documentElement.scrollWidth") <= PHONE[0], "no sideways scrolling"

        # Every control is labelled, and the keyboard reaches the form in reading order
        unlabelled = "return [...document.querySelectorAll('input, select')].filter(e => !e.labels.length).length"
        assert fan.js(unlabelled) == 0
        order = []
        for _ in range(6):
            fan.driver.switch_to.active_element.send_keys("\ue004")  # Tab
            order.append(fan.js("const e = document.activeElement; return e.id || e.textContent.trim().slice(0, 40)"))
        assert order == ["Skip to content", "Tickets", "Operator", "API", "user-id", "Continue"], order
        fan.find("#user-id").send_keys("77\ue007")  # Enter submits
        fan.wait_visible("#concerts li")
        assert fan.js("return document.activeElement.id") == "concerts-h", "focus moves to the new step"
        fan.shot("concerts", readme="fan-concerts.png")

        # An expired or forged sign-in sends the fan back to sign in, saying why (servers with identity)
        if fan.js("return sessionStorage.getItem('accessToken')"):
            fan.js("sessionStorage.setItem('accessToken', 'not-a-jwt')")
            fan.find("#concerts li button").click()
            fan.wait_visible("#step-login")
            assert fan.visible("#problem") and fan.text("#problem-title"), "the refusal is shown"
            fan.shot("signed-out")
    finally:
        fan.close()


def _as_user(api: ApiClient, user_id: int) -> dict[str, str]:
    """The headers that say who the caller is: the dev-login bearer where the server has it, else none."""
    status, _, login = api.post("/dev/login", {"userId": user_id})
    return {"Authorization": f"Bearer {login['accessToken']}"} if status == 200 else {}


def test_a_waiting_fan_is_told_when_the_last_seat_sells(server: str, shots: Path) -> None:
    from tests.e2e.browser import PHONE, Browser

    # Given a one-seat concert: a buyer is admitted at once, then the operator pauses admission
    api = ApiClient(f"{server}/api/v1")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    schedule = {"startsAt": "2030-05-01T19:00:00Z", "seatCount": 1, "price": 10}
    body = {"title": "Tiny Room", "venue": "Attic", "schedules": [schedule]}
    concert = api.post("/admin/concerts", body, headers=admin)[2]
    buyer = _as_user(api, 6001)
    token = api.post("/queue/tokens", {"userId": 6001, "concertId": concert["concertId"]}, headers=buyer)[2]
    assert token["status"] == "ACTIVE", token
    api.call("PATCH", f"/admin/concerts/{concert['concertId']}/queue", {"paused": True}, headers=admin)
    fan = Browser(server, shots, name="sold-out", size=PHONE)
    try:
        fan.open("/")
        fan.fill("#user-id", "6002")
        fan.find("#login-form button").click()
        fan.wait_visible('#concerts button[aria-label="Join the queue for Tiny Room"]').click()
        fan.wait_visible("#step-wait")
        assert not fan.visible("#sold-out")

        # When the buyer holds and pays for the only seat
        queue = {**buyer, "X-Queue-Token": token["token"], "Prefer": "wait=5"}
        seat = concert["schedules"][0]["scheduleId"]
        seats = api.get(f"/schedules/{seat}/seats", headers=queue)[2]["seats"]
        held = api.post("/reservations", {"scheduleId": seat, "seatId": seats[0]["seatId"]}, headers=queue)
        assert held[0] == 201, held
        api.post("/users/6001/points/charge", {"amount": 10}, headers=buyer)
        paid = api.post("/payments", {"reservationId": held[2]["reservationId"]}, headers=queue)
        assert paid[0] == 201, paid

        # Then the waiting fan's page says the concert is sold out
        fan.wait_visible("#sold-out", timeout=15)
        assert "Sold out" in fan.text("#sold-out")
        fan.shot("sold-out")
        assert _script_errors(fan) == []
    finally:
        fan.close()
