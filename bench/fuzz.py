"""A schemathesis campaign against a running service: every operation of /openapi.json.

    .venv/bin/python -m bench.fuzz --base http://127.0.0.1:8383 --admin-token fuzz-admin --max-examples 200

The service can be the embedded one, e.g.
    PORT=8383 DATABASE_URL=sqlite:////tmp/fuzz/concert.db ADMIN_TOKEN=fuzz-admin RATE_LIMIT_ENABLED=false \\
        .venv/bin/python -m config.embedded
(rate limits off, or the fuzzer mostly meets 429s), or gunicorn over MariaDB and Redis.

The fuzz user signs in with a JWT signed with `--jwt-secret` (default: $AUTH_JWT_SECRET, the
service's secret), or through the dev login when none is given (`make run`, AUTH_DEV_LOGIN=true).
Before fuzzing, the script joins the queue of `--concert` as `--user` and waits until the token is
ACTIVE, so the token-gated routes are reached past the gate. Three passes (one `Authorization`
header per pass: the operator routes take the admin token, every other route the user's JWT):
1. every operation except /admin/* and DELETE /queue/token, with the user's bearer JWT and the
   queue token (`-c all`: no 5xx, status codes, content types, headers and bodies as documented,
   schema-valid requests accepted, schema-invalid ones rejected, unsupported methods 405, ...);
2. the /admin/* operations with the admin bearer token;
3. DELETE /queue/token alone, without the queue token (run last, it would give the token up).
Phases: coverage, fuzzing and stateful (the OpenAPI links chain created ids into reads).
Prints schemathesis's summary of each pass and one line per pass; exit 1 if any pass failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = str(Path(__file__).with_name("fuzz.toml"))
LEAVE = "DELETE /api/v1/queue/token"
ONLY_ADMIN = ["--include-path-regex", "^/api/v1/admin"]  # the operator routes keep ADMIN_TOKEN
NOT_ADMIN = ["--exclude-path-regex", "^/api/v1/admin"]


def _call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def sign_in(api: str, user_id: int, secret: str) -> str:
    """The user's bearer JWT: signed with the service's secret, else from the dev login."""
    if secret:
        import jwt

        claims = {"sub": str(user_id), "exp": int(time.time()) + 6 * 3600}
        return str(jwt.encode(claims, secret, algorithm="HS256"))
    return str(_call("POST", f"{api}/dev/login", {"userId": user_id})["accessToken"])


def active_token(api: str, me: dict[str, str], concert_id: int, timeout: float = 30) -> str:
    """Join the queue as the signed-in user and poll until the token is ACTIVE."""
    token = _call("POST", f"{api}/queue/tokens", {"concertId": concert_id}, headers=me)["token"]
    deadline = time.monotonic() + timeout
    while _call("GET", f"{api}/queue/token", headers={"X-Queue-Token": token, **me})["status"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise SystemExit(f"the fuzz user's token was not admitted within {timeout} s")
        time.sleep(0.5)
    return token


def run_pass(name: str, args: list[str]) -> dict[str, Any]:
    """Run schemathesis (in a temp dir, so its cache stays out of the repo); return its totals."""
    with tempfile.TemporaryDirectory() as workdir:
        done = subprocess.run(
            [SCHEMATHESIS, "--config-file", CONFIG, "run", *args], cwd=workdir, capture_output=True, text=True
        )
    out = done.stdout + done.stderr
    summary = out[out.find("=== SUMMARY") :] if "=== SUMMARY" in out else out[-3000:]
    print(f"--- pass {name} ---\n{summary}")
    failures_block = out[out.find("=== FAILURES") : out.find("=== SUMMARY")] if "=== FAILURES" in out else ""
    if failures_block:
        print(failures_block[:20000])
    tested = re.search(r"Tested:\s+(\d+)", out)
    generated = re.search(r"(\d+) generated", out)
    unique = re.search(r"(\d+) unique failures?", out)
    return {
        "pass": name,
        "exit": done.returncode,
        "operations": int(tested.group(1)) if tested else 0,
        "cases": int(generated.group(1)) if generated else 0,
        "failures": int(unique.group(1)) if unique else (0 if done.returncode == 0 else -1),
    }


def admin_pass(common: list[str], admin_token: str) -> dict[str, Any]:
    """The /admin/* operations with the admin token (coverage and fuzzing)."""
    args = [*common, "--header", f"Authorization: Bearer {admin_token}", *ONLY_ADMIN]
    return run_pass("admin", [*args, "--phases", "coverage,fuzzing"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="http://127.0.0.1:8383")
    parser.add_argument("--admin-token", default="fuzz-admin")
    parser.add_argument("--jwt-secret", default=os.environ.get("AUTH_JWT_SECRET", ""), help="the service's secret")
    parser.add_argument("--user", type=int, default=900_001)
    parser.add_argument("--concert", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=200)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--seed", type=int, default=None)
    opts = parser.parse_args()

    api = opts.base.rstrip("/") + "/api/v1"
    me = {"Authorization": f"Bearer {sign_in(api, opts.user, opts.jwt_secret)}"}
    token = active_token(api, me, opts.concert)
    common = [
        f"{api}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "coverage,fuzzing,stateful",
        "--max-examples",
        str(opts.max_examples),
        "--workers",
        opts.workers,
        "--no-color",
    ] + (["--seed", str(opts.seed)] if opts.seed is not None else [])
    user = [*common, "--header", f"Authorization: {me['Authorization']}"]
    started = time.monotonic()
    results = [
        run_pass("gated", [*user, "--header", f"X-Queue-Token: {token}", "--exclude-name", LEAVE, *NOT_ADMIN]),
        # the admin links lead to user routes, which this pass leaves out: no stateful phase
        admin_pass(common, opts.admin_token),
        # one operation, nothing to chain: no stateful phase
        run_pass("leave", [*user, "--include-name", LEAVE, "--phases", "coverage,fuzzing"]),
    ]
    elapsed = time.monotonic() - started
    for r in results:
        print(f"pass {r['pass']}: {r['operations']} operations, {r['cases']} cases, {r['failures']} failures")
    total_ops = sum(r["operations"] for r in results)
    total_cases = sum(r["cases"] for r in results)
    total_failures = sum(r["failures"] for r in results)
    print(f"total: {total_ops} operations, {total_cases} cases, {total_failures} failures in {elapsed:.0f} s")
    raise SystemExit(0 if all(r["exit"] == 0 for r in results) else 1)


if __name__ == "__main__":
    main()
