// Flash-sale load test over HTTP: per VU iteration one new user joins the queue, polls until
// ACTIVE, charges points, reads the seat map, tries to hold a random free seat and pays for it.
// Parity with the seed's k6/load-test.js; the project itself runs locust (bench/). See k6/README.md.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 k6/load-test.js
//
// Env: BASE_URL (http://127.0.0.1:8080), CONCERT_ID (1), VUS (50: peak of the ramp),
//      DURATION (60s: ramp up 1/4, hold 1/2, ramp down 1/4), MAX_WAIT_S (60: queue deadline),
//      POLL_INTERVAL_S (1), CHARGE (100000), USER_BASE (0: added to user ids, change it to
//      re-run against the same database), AUTH_JWT_SECRET (sign the users' bearer tokens here;
//      else each user signs in through the dev login, see k6/auth.js).
// 201 (held/paid), 202 (job still running after Prefer: wait) and 409 (lost the race / seat
// gone) are all expected outcomes of POST /reservations and POST /payments.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { signIn } from './auth.js';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const API = `${BASE_URL}/api/v1`;
const CONCERT_ID = parseInt(__ENV.CONCERT_ID || '1', 10);
const VUS = parseInt(__ENV.VUS || '50', 10);
const DURATION_S = parseDuration(__ENV.DURATION || '60s');
const MAX_WAIT_S = parseFloat(__ENV.MAX_WAIT_S || '60');
const POLL_INTERVAL_S = parseFloat(__ENV.POLL_INTERVAL_S || '1');
const CHARGE = parseInt(__ENV.CHARGE || '100000', 10);
const USER_BASE = parseInt(__ENV.USER_BASE || '0', 10);

function parseDuration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim());
  if (!m) throw new Error(`bad DURATION: ${text}`);
  const n = parseFloat(m[1]);
  return { ms: n / 1000, s: n, m: n * 60, h: n * 3600 }[m[2] || 's'];
}

const ramp = Math.max(1, Math.round(DURATION_S / 4));
const hold = Math.max(1, Math.round(DURATION_S - 2 * ramp));

const admitted = new Counter('flash_admitted_users');
const held = new Counter('flash_seats_held');
const lost = new Counter('flash_hold_conflicts');
const paid = new Counter('flash_seats_paid');
const soldOut = new Counter('flash_sold_out_views');
const unexpected = new Counter('flash_unexpected_outcomes'); // not 201/409 after following a 202 job
const timeToAdmission = new Trend('flash_time_to_admission', true);

// 201/202/409 are normal answers of the hold and payment calls (409 = lost the race).
const HOLD_OUTCOMES = http.expectedStatuses(201, 202, 409);

export const options = {
  scenarios: {
    flash_sale: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: `${ramp}s`, target: VUS },
        { duration: `${hold}s`, target: VUS },
        { duration: `${ramp}s`, target: 0 },
      ],
      gracefulRampDown: `${Math.ceil(MAX_WAIT_S) + 15}s`,
      gracefulStop: `${Math.ceil(MAX_WAIT_S) + 15}s`,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:queue_issue}': ['p(95)<200'],
    'http_req_duration{name:queue_poll}': ['p(95)<300'],
    'http_req_duration{name:points_charge}': ['p(95)<300'],
    'http_req_duration{name:seat_map}': ['p(95)<300'],
    // Prefer: wait=5 keeps the request open until the job finishes (at most ~5 s)
    'http_req_duration{name:reservation_hold}': ['p(95)<2000'],
    'http_req_duration{name:payment}': ['p(95)<2000'],
    checks: ['rate>0.99'],
    'checks{final:yes}': ['rate==1'],
  },
};

function body(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

export function setup() {
  const res = http.get(`${API}/concerts/${CONCERT_ID}/schedules`, { tags: { name: 'schedules' } });
  check(res, { 'setup: schedules 200': (r) => r.status === 200 });
  const b = body(res);
  const scheduleIds = b && b.schedules ? b.schedules.map((s) => s.scheduleId) : [];
  if (scheduleIds.length === 0) throw new Error(`concert ${CONCERT_ID} has no schedules (${res.status})`);
  return { scheduleIds };
}

// After Prefer: wait a 202 means the job is still running: follow its statusUrl for a while.
function awaitJob(res, headers) {
  let b = body(res);
  for (let i = 0; res.status === 202 && b && b.jobId && i < 20; i++) {
    sleep(0.5);
    const job = http.get(`${API}/jobs/${b.jobId}`, { headers, tags: { name: 'job_status' } });
    const j = body(job);
    if (j && j.status === 'SUCCEEDED') return { status: 201, result: j.result };
    if (j && j.status === 'FAILED') return { status: (j.error && j.error.status) || 409, result: j.error };
  }
  return { status: res.status, result: b };
}

export default function (data) {
  const userId = USER_BASE + __VU * 100000 + __ITER;
  // 0. sign in: every user-scoped route needs the user's bearer JWT
  const me = signIn(API, userId);
  if (!check(me, { 'sign in': (m) => m !== null })) {
    sleep(POLL_INTERVAL_S);
    return;
  }
  const started = Date.now();

  // 1. join the queue (the user is the identity's)
  const issue = http.post(`${API}/queue/tokens`, JSON.stringify({ concertId: CONCERT_ID }), {
    headers: Object.assign({ 'Content-Type': 'application/json' }, me),
    tags: { name: 'queue_issue' },
  });
  const token = body(issue);
  if (!check(issue, {
    'issue: 201/200': (r) => r.status === 201 || r.status === 200,
    'issue: token present': () => !!(token && token.token),
  })) {
    sleep(POLL_INTERVAL_S);
    return;
  }
  const auth = Object.assign({ 'X-Queue-Token': token.token }, me);

  // 2. poll until ACTIVE (or give up at the deadline), as often as the server's pollAfterMs says
  let status = token.status;
  let after = token.pollAfterMs;
  while (status !== 'ACTIVE' && Date.now() < started + MAX_WAIT_S * 1000) {
    sleep(after / 1000);
    const poll = http.get(`${API}/queue/token`, { headers: auth, tags: { name: 'queue_poll' } });
    const p = body(poll);
    check(poll, {
      'poll: 200': (r) => r.status === 200,
      'poll: rank > 0 while WAITING': () => !!p && (p.status !== 'WAITING' || p.rank > 0),
    });
    if (!p) break;
    status = p.status;
    after = p.pollAfterMs;
  }
  if (status !== 'ACTIVE') return;
  admitted.add(1);
  timeToAdmission.add(Date.now() - started);

  buyOneSeat(data, me, auth);
  // give the ACTIVE slot back so the next users are admitted
  http.del(`${API}/queue/token`, null, { headers: auth, tags: { name: 'queue_leave' } });
}

// Steps 3-6 for one admitted user; returns early on a lost race or a sold-out schedule.
function buyOneSeat(data, me, auth) {
  // 3. charge points (a client retries 503/429 after Retry-After, at most 3 tries; every
  // refused try still counts in http_req_failed)
  let charge;
  const chargeKey = `k6-charge-${__VU}-${__ITER}-${Date.now()}`; // a retry never charges twice
  for (let attempt = 1; attempt <= 3; attempt++) {
    charge = http.post(`${API}/me/points/charge`, JSON.stringify({ amount: CHARGE }), {
      headers: Object.assign({ 'Content-Type': 'application/json', 'Idempotency-Key': chargeKey }, me),
      tags: { name: 'points_charge' },
    });
    if (charge.status !== 503 && charge.status !== 429) break;
    if (__ENV.DEBUG) console.warn(`charge ${charge.status} (try ${attempt}): ${charge.body}`);
    sleep(Math.min(parseFloat(charge.headers['Retry-After'] || '0.2') || 0.2, 2));
  }
  if (!check(charge, { 'charge: 200': (r) => r.status === 200 })) {
    unexpected.add(1, { step: 'charge' });
    return; // do not hold a seat we could not pay for
  }

  // 4. seat map of a random schedule, free seats only
  const scheduleId = data.scheduleIds[Math.floor(Math.random() * data.scheduleIds.length)];
  const map = http.get(`${API}/schedules/${scheduleId}/seats?status=AVAILABLE`, {
    headers: auth,
    tags: { name: 'seat_map' },
  });
  const m = body(map);
  check(map, { 'seat map: 200': (r) => r.status === 200 && !!m && Array.isArray(m.seats) });
  const seats = m && Array.isArray(m.seats) ? m.seats.filter((s) => s.status === 'AVAILABLE') : [];
  if (seats.length === 0) {
    soldOut.add(1);
    return;
  }
  const seat = seats[Math.floor(Math.random() * seats.length)];

  // 5. try to hold it (201 held, 409 somebody was faster)
  const holdRes = http.post(`${API}/reservations`, JSON.stringify({ scheduleId, seatId: seat.seatId }), {
    headers: Object.assign({ 'Content-Type': 'application/json', Prefer: 'wait=5' }, auth),
    tags: { name: 'reservation_hold' },
    responseCallback: HOLD_OUTCOMES,
  });
  check(holdRes, { 'hold: 201/202/409': (r) => r.status === 201 || r.status === 202 || r.status === 409 });
  const outcome = awaitJob(holdRes, auth);
  if (outcome.status === 409) {
    lost.add(1);
    return;
  }
  if (outcome.status !== 201 || !outcome.result || !outcome.result.reservationId) {
    unexpected.add(1, { step: 'hold' });
    if (__ENV.DEBUG) console.warn(`hold outcome ${outcome.status}: ${JSON.stringify(outcome.result)}`);
    return;
  }
  held.add(1);
  const reservationId = outcome.result.reservationId;

  // 6. pay, idempotently
  const pay = http.post(`${API}/payments`, JSON.stringify({ reservationId }), {
    headers: Object.assign(
      { 'Content-Type': 'application/json', Prefer: 'wait=5', 'Idempotency-Key': `k6-pay-${reservationId}` },
      auth,
    ),
    tags: { name: 'payment' },
    responseCallback: HOLD_OUTCOMES,
  });
  const payOutcome = awaitJob(pay, auth);
  check(payOutcome, {
    'payment: 201 with paymentId': (o) => o.status === 201 && !!o.result && !!o.result.paymentId,
  });
  if (payOutcome.status === 201) {
    paid.add(1);
  } else {
    unexpected.add(1, { step: 'payment' });
    if (__ENV.DEBUG) console.warn(`payment outcome ${payOutcome.status}: ${JSON.stringify(payOutcome.result)}`);
  }
}

export function teardown(data) {
  const ready = http.get(`${API}/readyz`, { tags: { name: 'final_readyz' } });
  check(ready, { 'final: readyz 200': (r) => r.status === 200 }, { final: 'yes' });
  const res = http.get(`${API}/concerts/${CONCERT_ID}/schedules`, { tags: { name: 'final_schedules' } });
  const b = body(res);
  check(res, {
    'final: schedules 200': (r) => r.status === 200,
    'final: availableSeats never negative': () =>
      !!b && Array.isArray(b.schedules) && b.schedules.every((s) => s.availableSeats >= 0 && s.availableSeats <= s.totalSeats),
  }, { final: 'yes' });
  if (b && b.schedules) {
    console.log(`final schedules: ${JSON.stringify(b.schedules.map((s) => ({ id: s.scheduleId, available: s.availableSeats, total: s.totalSeats })))}`);
  }
}
