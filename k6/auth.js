// The identity every user-scoped route needs (SPEC §3 "Identity (v2)"): a bearer JWT per user.
//
// With AUTH_JWT_SECRET set (the secret the service verifies with, e.g. the one `make run` was
// started with), the token is signed here (HS256, `sub` = user id, 1 h): no extra request.
// Without it, the service's development login signs it (`POST /api/v1/dev/login`, on under
// `make run`; 404 elsewhere, then pass the secret).
import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';

const SECRET = __ENV.AUTH_JWT_SECRET || '';
const TTL_S = 3600;

function b64url(text) {
  return encoding.b64encode(text, 'rawurl');
}

function signed(userId) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64url(JSON.stringify({ sub: String(userId), iat: now, exp: now + TTL_S }));
  const signature = crypto.hmac('sha256', SECRET, `${head}.${claims}`, 'base64rawurl');
  return `${head}.${claims}.${signature}`;
}

// The `Authorization` header of `userId` (null when the dev login refused: the caller counts it).
export function signIn(api, userId) {
  if (SECRET) return { Authorization: `Bearer ${signed(userId)}` };
  const res = http.post(`${api}/dev/login`, JSON.stringify({ userId }), {
    headers: { 'Content-Type': 'application/json' },
    tags: { name: 'dev_login' },
  });
  if (res.status !== 200) {
    console.warn(`dev login ${res.status}: start the service with AUTH_DEV_LOGIN=true or pass -e AUTH_JWT_SECRET=...`);
    return null;
  }
  return { Authorization: `Bearer ${res.json().accessToken}` };
}
