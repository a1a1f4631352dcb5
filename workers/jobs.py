"""Job records in Redis: QUEUED -> RUNNING -> SUCCEEDED | FAILED, with a blocking wait for the outcome.

job:{j:<id>}       HASH  id, type, status, user, created, started, finished, result (JSON), error (JSON), attempts
job:{j:<id>}:done  LIST  one element pushed when the job ends (BLPOP by `Prefer: wait=N` callers)
idem:<user>:<sha256(key)>  STRING  {jobId, body digest} of the first request with that Idempotency-Key
jobs:open          ZSET  id -> created (ms) of jobs not yet terminal (the sweeper fails forgotten ones)

A job's two keys share the hash tag `{j:<id>}` (one Redis Cluster slot), so each job script
touches one slot; `jobs:open` is a global index in its own slot, updated next to the scripts,
never inside them: a job leaves it only after its script made it terminal (a terminal job
still listed is harmless: the sweeper drops it). Script timestamps come from the Redis
server's clock (TIME), not from whichever host runs the caller.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from config.bootstrap import current
from models.errors import ConcurrentUpdate, DomainError, IdempotencyKeyReused, Unavailable, problem_of
from models.redis_support import ANY_REDIS_ERROR, NOW_MS_LUA, is_cluster, run_script
from workers import jobstats

log = logging.getLogger("workers.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
TERMINAL = (SUCCEEDED, FAILED)
OPEN_KEY = "jobs:open"
IDEMPOTENCY_TTL = 86_400  # an Idempotency-Key answers with its first job for 24 h (SPEC §3)


_START = (
    NOW_MS_LUA
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'MISSING' end
if st == 'QUEUED' or st == 'RUNNING' then
  redis.call('HSET', KEYS[1], 'status', 'RUNNING', 'started', now_ms())
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
end
return st
"""
)

# End a job (status, finished, result|error) unless it is missing or terminal; with ARGV[5] set,
# only if its status is still that one (the batch fails a job only if nobody started it).
# The done list's element is the whole final record ("v2" then field and value lines: no value
# holds a raw newline, result and error are json.dumps output), so a waiter needs no second read.
_FINISH = (
    NOW_MS_LUA
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 0 end
if st == 'SUCCEEDED' or st == 'FAILED' then return 0 end
if ARGV[5] ~= '' and st ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', now_ms(), ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local record = redis.call('HGETALL', KEYS[1])
redis.call('RPUSH', KEYS[2], 'v2\\n' .. table.concat(record, '\\n'))
redis.call('EXPIRE', KEYS[2], 120)
return 1
"""
)


# Replace an Idempotency-Key's binding only if it is still the one the caller read.
_REBIND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


JOB_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")  # new ids are 32 hex digits; never ':', '{' or '}'


def job_key(job_id: str) -> str:
    """The record of a job."""
    return f"job:{{j:{job_id}}}"


def legacy_job_key(job_id: str) -> str:
    """The record of a job in the single-node layout before {j:ID} (read, never written)."""
    return f"job:{job_id}"


def done_key(job_id: str) -> str:
    """The list a job's end is pushed to (same slot as its record)."""
    return f"job:{{j:{job_id}}}:done"


def idempotency_key(user_id: int, key: str) -> str:
    """The binding of a user's Idempotency-Key to its first job (the key itself only as a hash)."""
    return f"idem:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def _digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """A job record."""

    job_id: str
    type: str
    status: str
    user_id: int
    created_ms: int
    finished_ms: int | None
    result: Any
    error: dict[str, Any] | None
    attempts: int


@dataclass(frozen=True)
class NewRecord:
    """A QUEUED job's record as written: its key, fields and TTL, and its `jobs:open` score."""

    job_id: str
    key: str
    fields: dict[str, Any]
    ttl_s: int
    created_ms: int


def finished_job(*, job_id: str, job_type: str, user_id: int, result: Any, at: dt.datetime) -> Job:
    """A SUCCEEDED job rebuilt from what it made (its record has expired), to answer a replay with."""
    ms = int(at.replace(tzinfo=at.tzinfo or dt.UTC).timestamp() * 1000)
    return Job(job_id, job_type, SUCCEEDED, user_id, ms, ms, result, None, 1)


class JobStore:
    """Create, run and read job records."""

    def __init__(self, client: redis.Redis, *, ttl: int = 3600) -> None:
        self.r = client
        self.ttl = ttl
        self._start = client.register_script(_START)
        self._finish = client.register_script(_FINISH)
        self._rebind = client.register_script(_REBIND)

    def create(self, *, job_type: str, user_id: int, job_id: str | None = None, pipe: Any = None) -> Job:
        """Record a QUEUED job (before its message is sent).

        With `pipe`, the commands are only added to that pipeline, so the record and the message
        travel in one round trip. The pipeline is not a MULTI: the record and `jobs:open` live in
        different slots of a Redis Cluster. (`new` + workers.broker.send(job=...) writes the
        record inside the send's script instead.)
        """
        job, record = self.new(job_type=job_type, user_id=user_id, job_id=job_id)
        execute = pipe is None
        pipe = self.r.pipeline(transaction=False) if pipe is None else pipe
        pipe.hset(record.key, mapping=record.fields)
        pipe.expire(record.key, record.ttl_s)
        pipe.zadd(OPEN_KEY, {job.job_id: job.created_ms})
        if execute:
            pipe.execute()
        return job

    def new(self, *, job_type: str, user_id: int, job_id: str | None = None) -> tuple[Job, NewRecord]:
        """A QUEUED job and the record to write for it (by `create`, or inside workers.broker.send)."""
        job_id = job_id or uuid.uuid4().hex
        now = _ms()
        fields = {"id": job_id, "type": job_type, "status": QUEUED, "user": user_id, "created": now, "attempts": 0}
        record = NewRecord(job_id, job_key(job_id), fields, self.ttl * 24, now)
        return Job(job_id, job_type, QUEUED, user_id, now, None, None, None, 0), record

    def discard(self, job_id: str) -> None:
        """Forget a QUEUED job whose message was never sent (e.g. it lost an Idempotency-Key race)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(job_key(job_id))
        pipe.zrem(OPEN_KEY, job_id)
        pipe.execute()

    def start(self, job_id: str) -> str:
        """Mark RUNNING unless terminal; return the status it had ('MISSING' if the record is gone)."""
        return _text(self._start(keys=[job_key(job_id)]))

    def succeed(self, job_id: str, result: Any) -> bool:
        """Record SUCCEEDED with its result (no-op if already terminal)."""
        return self._end(job_id, SUCCEEDED, "result", json.dumps(result))

    def fail(self, job_id: str, error: dict[str, Any]) -> bool:
        """Record FAILED with its problem (models.errors.problem_of; no-op if already terminal)."""
        return self._end(job_id, FAILED, "error", json.dumps(error))

    def fail_if_queued(self, job_id: str, error: dict[str, Any], *, pipe: Any) -> None:
        """Add to `pipe`: record FAILED only if the job is still QUEUED (its reply: 1 if it did).

        The caller removes the failed jobs from `jobs:open` after the pipeline ran.
        """
        keys, args = [job_key(job_id), done_key(job_id)], [FAILED, "error", json.dumps(error), self.ttl, QUEUED]
        run_script(self._finish, keys=keys, args=args, client=pipe)

    def _end(self, job_id: str, status: str, field: str, value: str) -> bool:
        keys, args = [job_key(job_id), done_key(job_id)], [status, field, value, str(self.ttl), ""]
        if is_cluster(self.r):  # the index is on another node: only once the job is terminal
            ended = bool(int(self._finish(keys=keys, args=args)))
            self.r.zrem(OPEN_KEY, job_id)
            return ended
        pipe = self.r.pipeline(transaction=False)  # one Redis runs them in order: the same, one round trip
        run_script(self._finish, keys=keys, args=args, client=pipe)
        pipe.zrem(OPEN_KEY, job_id)
        return bool(int(pipe.execute()[0]))

    def claim_idempotency_key(self, *, user_id: int, key: str, request: dict[str, Any], job: Job) -> Job:
        """Bind (user, Idempotency-Key) to `job` for IDEMPOTENCY_TTL; the job to answer with.

        If the key is already bound to a job whose record still exists, `job` (not yet sent) is
        discarded and that first job returned; IdempotencyKeyReused when the first request had
        another body. A key whose first job record has expired (records live `ttl` after they end)
        is bound to `job` again: the caller has looked for the payment that key made first
        (web/payments.py), so that job changed nothing and this request runs afresh.
        """
        digest, rkey = _digest(request), idempotency_key(user_id, key)
        value = json.dumps({"jobId": job.job_id, "body": digest})
        for _ in range(3):
            if self.r.set(rkey, value, nx=True, ex=IDEMPOTENCY_TTL):
                return job
            raw = self.r.get(rkey)
            if raw is None:  # expired between the two commands: try to bind again
                continue
            first = json.loads(_text(raw))
            if first.get("body") != digest:
                self.discard(job.job_id)
                raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body")
            earlier = self.get(str(first.get("jobId", "")))
            if earlier is not None:
                self.discard(job.job_id)
                return earlier
            if int(self._rebind(keys=[rkey], args=[_text(raw), value, IDEMPOTENCY_TTL])):
                return job
        self.discard(job.job_id)
        raise ConcurrentUpdate("this Idempotency-Key is being used by another request right now; retry", retry_after=1)

    def idempotent_job(self, *, user_id: int, key: str, request: dict[str, Any]) -> Job | None:
        """The job (user, Idempotency-Key) is bound to while its record lives, without binding anything.

        None when the key is unbound or its job record has expired; IdempotencyKeyReused when the
        key was first sent with another body.
        """
        raw = self.r.get(idempotency_key(user_id, key))
        if raw is None:
            return None
        first = json.loads(_text(raw))
        if first.get("body") != _digest(request):
            raise IdempotencyKeyReused("this Idempotency-Key was already used with a different request body")
        return self.get(str(first.get("jobId", "")))

    def get(self, job_id: str) -> Job | None:
        """A job record, or None if unknown/expired (or not a job id: `<id>:done` names no job)."""
        if not JOB_ID.fullmatch(job_id):
            return None
        h = {_text(k): _text(v) for k, v in self.r.hgetall(job_key(job_id)).items()}  # type: ignore[union-attr]
        if not h and not is_cluster(self.r):
            # read-both for one release: a job recorded before the {j:ID} layout keeps answering
            # until its record expires (docs/ARCHITECTURE.md, "Moving a running single-node
            # deployment"); a cluster never had the old names. Drop with the next release.
            h = {_text(k): _text(v) for k, v in self.r.hgetall(legacy_job_key(job_id)).items()}  # type: ignore[union-attr]
        return _job_of(h)

    def wait(self, job_id: str, timeout: float, *, fresh: bool = False) -> Job | None:
        """Block (no polling) until the job ends or `timeout` seconds pass; return the record.

        `fresh=True` is for the creator of a job nobody else knows yet: the first read is skipped.
        The end of the job carries the final record, so a waiter that sees it reads nothing more:
        a fresh wait is one round trip (before: BLPOP, a push back and HGETALL, three).
        """
        if fresh and timeout > 0:
            return self._wait_done(job_id, timeout) or self.get(job_id)
        job = self.get(job_id)
        if job is None or job.status in TERMINAL or timeout <= 0:
            return job
        return self._wait_done(job_id, timeout) or self.get(job_id)

    def _wait_done(self, job_id: str, timeout: float) -> Job | None:
        """The record pushed when the job ended, or None (timed out, or an element without it).

        BRPOPLPUSH from the done list onto itself is an atomic rotation: the element stays for
        every other waiter of the job (same-key payments each wait on the first request's job),
        with no second round trip to push it back. (Not BLMOVE, its newer name: the embedded
        fakeredis does not block on it.)
        """
        key = done_key(job_id)
        element = self.r.brpoplpush(key, key, timeout)
        return None if element is None else _job_of_done(_text(element))

    def sweep(self, *, older_than_s: float, limit: int = 500) -> list[str]:
        """Fail jobs still open after `older_than_s` (their message was lost); return their ids."""
        cutoff = _ms() - int(older_than_s * 1000)
        stale = [_text(j) for j in self.r.zrangebyscore(OPEN_KEY, 0, cutoff, start=0, num=limit)]  # type: ignore[union-attr]
        failed = []
        for job_id in stale:
            if self.fail(job_id, problem_of(Unavailable("the job was not processed in time; send the request again"))):
                failed.append(job_id)
            else:
                self.r.zrem(OPEN_KEY, job_id)
        return failed


def _ms() -> int:
    return int(time.time() * 1000)


def _job_of(h: dict[str, str]) -> Job | None:
    """A job from its record's fields (None if it has no status: unknown or expired)."""
    if not h.get("status"):
        return None
    return Job(
        job_id=h["id"],
        type=h["type"],
        status=h["status"],
        user_id=int(h.get("user") or 0),
        created_ms=int(h["created"]),
        finished_ms=int(h["finished"]) if h.get("finished") else None,
        result=json.loads(h["result"]) if h.get("result") else None,
        error=json.loads(h["error"]) if h.get("error") else None,
        attempts=int(h.get("attempts") or 0),
    )


def _job_of_done(element: str) -> Job | None:
    """The final record a done-list element carries (_FINISH), or None for an older bare status."""
    if not element.startswith("v2\n"):
        return None
    lines = element.split("\n")[1:]
    return _job_of(dict(zip(lines[::2], lines[1::2], strict=False)))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def dropped(stale_after_s: float) -> Unavailable:
    """The answer to a job whose message waited longer than `stale_after_s` in the queue."""
    return Unavailable(f"the request waited more than {stale_after_s:g} s in the queue and was dropped; send it again")


def run_job(
    store: JobStore, job_id: str, *, enqueued_ms: int, stale_after_s: float, work: Any, job_type: str = "job"
) -> None:
    """The adapter every job actor uses: RUNNING, stale check, call the domain, SUCCEEDED/FAILED.

    Expected domain errors are results (FAILED with the problem), not retries. A job that is
    already terminal (a redelivered message, or one the sweeper failed) is left alone.
    `work(redelivered)` learns whether an earlier attempt of this job may have run (the record
    was already RUNNING): only then must the domain look for that attempt's effect first.
    Anything else propagates so the consumer can retry the message. Each outcome is one INFO
    line (with the request and job ids, config.logs) and a count in workers.jobstats.
    """
    previous = store.start(job_id)
    if previous in TERMINAL or previous == "MISSING":
        return
    if previous == QUEUED and _ms() - enqueued_ms > stale_after_s * 1000:
        error = dropped(stale_after_s)
        _finished(store, job_type, enqueued_ms, store.fail(job_id, problem_of(error)), error=error)
        return
    try:
        result = work(previous == RUNNING)
    except DomainError as exc:
        _finished(store, job_type, enqueued_ms, store.fail(job_id, problem_of(exc)), error=exc)
        return
    _finished(store, job_type, enqueued_ms, store.succeed(job_id, result), result=result)


_SUMMARY_FIELDS = ("reservationId", "paymentId", "seatId", "seatNumber", "status", "amount", "balance", "expiresAt")


def _finished(
    store: JobStore, job_type: str, enqueued_ms: int, recorded: bool, *, result: Any = None, error: Any = None
) -> None:
    """Log and count an outcome this call recorded (a redelivery that found it done stays silent)."""
    if not recorded:
        return
    seconds = max(0.0, (_ms() - enqueued_ms) / 1000)
    log_outcome(job_type, seconds, result=result, error=error)
    try:
        jobstats.record(store.r, [(job_type, "failed" if error is not None else "succeeded", seconds)])
    except ANY_REDIS_ERROR as exc:  # the outcome is recorded; only the metric is lost
        log.warning("could not count the outcome of a %s job: %s", job_type, exc)


def log_outcome(job_type: str, seconds: float, *, result: Any = None, error: Any = None) -> None:
    """The one INFO line of a job's outcome (inside config.logs.job_context: it carries the ids)."""
    if error is None:
        fields = result if isinstance(result, dict) else {}
        summary = " ".join(f"{k}={fields[k]}" for k in _SUMMARY_FIELDS if k in fields)
        log.info("%s succeeded in %.0f ms: %s", job_type, seconds * 1000, summary)
    else:
        log.info("%s failed in %.0f ms: %s %s", job_type, seconds * 1000, getattr(error, "code", "ERROR"), error)


def sweep_jobs() -> int:
    """Fail jobs whose message never finished (the scheduler's sweep; a lost message must not
    leave a job QUEUED forever); return how many."""
    services = current()
    return len(JobStore(services.redis).sweep(older_than_s=services.settings.job_sweep_after))
