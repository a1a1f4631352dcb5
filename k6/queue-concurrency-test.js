// Waiting-room concurrency test: many users join one concert's queue at once and poll until
// admitted. Parity with the seed's k6/queue-concurrency-test.js; the project itself runs
// locust (bench/). See k6/README.md.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e VUS=200 -e DURATION=30s k6/queue-concurrency-test.js
//
// Env: BASE_URL (http://127.0.0.1:8080), CONCERT_ID (1), VUS (200), DURATION (30s),
//      MAX_WAIT_S (60: give up polling after this), POLL_INTERVAL_S (1),
//      USER_BASE (0: added to user ids, change it to re-run against the same database),
//      ISSUE_P95_MS (200), AUTH_JWT_SECRET (sign the users' bearer tokens here; else the dev login).
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { signIn } from './auth.js';

const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const API = `${BASE_URL}/api/v1`;
const CONCERT_ID = parseInt(__ENV.CONCERT_ID || '1', 10);
const VUS = parseInt(__ENV.VUS || '200', 10);
const DURATION = __ENV.DURATION || '30s';
const MAX_WAIT_S = parseFloat(__ENV.MAX_WAIT_S || '60');
const POLL_INTERVAL_S = parseFloat(__ENV.POLL_INTERVAL_S || '1');
const USER_BASE = parseInt(__ENV.USER_BASE || '0', 10);
const ISSUE_P95_MS = parseInt(__ENV.ISSUE_P95_MS || '200', 10);

const admitted = new Counter('queue_admitted_users');
const notAdmitted = new Counter('queue_not_admitted_users');
const timeToAdmission = new Trend('queue_time_to_admission', true);

export const options = {
  scenarios: {
    queue: {
      executor: 'constant-vus',
      vus: VUS,
      duration: DURATION,
      gracefulStop: `${Math.ceil(MAX_WAIT_S) + 5}s`,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:queue_issue}': [`p(95)<${ISSUE_P95_MS}`],
    'http_req_duration{name:queue_poll}': ['p(95)<500'],
    checks: ['rate>0.99'],
    'checks{final:yes}': ['rate==1'],
  },
};

const JSON_HEADERS = { 'Content-Type': 'application/json' };

function body(res) {
  try {
    return res.json();
  } catch (e) {
    return null;
  }
}

function checkToken(res, expected, label) {
  const b = body(res);
  return check(res, {
    [`${label}: status ${expected.join('/')}`]: (r) => expected.indexOf(r.status) >= 0,
    [`${label}: token present`]: () => !!(b && typeof b.token === 'string' && b.token.length > 0),
    [`${label}: rank > 0 while WAITING, 0 when ACTIVE`]: () =>
      !!b && ((b.status === 'WAITING' && b.rank > 0) || (b.status === 'ACTIVE' && b.rank === 0)),
  });
}

export default function () {
  const userId = USER_BASE + __VU * 100000 + __ITER;
  const me = signIn(API, userId);
  if (!check(me, { 'sign in': (m) => m !== null })) {
    sleep(POLL_INTERVAL_S);
    return;
  }
  const started = Date.now();
  const res = http.post(`${API}/queue/tokens`, JSON.stringify({ concertId: CONCERT_ID }), {
    headers: Object.assign({}, JSON_HEADERS, me),
    tags: { name: 'queue_issue' },
  });
  checkToken(res, [201, 200], 'issue');
  const issued = body(res);
  if (!issued || !issued.token) {
    sleep(POLL_INTERVAL_S);
    return;
  }
  const headers = Object.assign({ 'X-Queue-Token': issued.token }, me);
  let status = issued.status;
  let after = issued.pollAfterMs; // paced polling: the server says when to come back
  const deadline = started + MAX_WAIT_S * 1000;
  while (status !== 'ACTIVE' && Date.now() < deadline) {
    sleep(after / 1000);
    const poll = http.get(`${API}/queue/token`, { headers, tags: { name: 'queue_poll' } });
    checkToken(poll, [200], 'poll');
    const b = body(poll);
    if (!b) break;
    status = b.status;
    after = b.pollAfterMs;
  }
  if (status === 'ACTIVE') {
    admitted.add(1);
    timeToAdmission.add(Date.now() - started);
  } else {
    notAdmitted.add(1);
  }
  // Give the slot back so the next waiting users are admitted (ACTIVE_LIMIT per concert).
  const left = http.del(`${API}/queue/token`, null, { headers, tags: { name: 'queue_leave' } });
  check(left, { 'leave: status 204': (r) => r.status === 204 });
}

export function teardown() {
  const ready = http.get(`${API}/readyz`, { tags: { name: 'final_readyz' } });
  check(ready, { 'final: readyz 200': (r) => r.status === 200 }, { final: 'yes' });
}
