"""The waiting room's Lua scripts (one round trip each); models/waiting_room.py calls them.

Every script derives its key names from the concert's `{c:<id>}` tag or receives them in KEYS,
so all keys of one call share one Redis Cluster slot.
"""

from __future__ import annotations

from models.redis_support import NOW_MS_LUA

MIN_POLL_MS = 1_000  # near the front a fan polls once a second
EARLY_FRACTION = 0.2  # a poll more than 20 % before its pollAfterMs is refused
SWEEP_SLICE = 1_000  # waiting tokens examined per abandoned-waiter slice (one short script call)

# Shared by the issue and poll scripts. ARGV[1..5] = tag, limit, waiting ttl, active ttl, longest
# poll interval (ms); NOW is the Redis server's clock (TIME), never the caller's. describe()
# reads a token in one go {user, concert, status, rank, expires, soldout, poll field}; pace()
# turns a rank into (estimated wait s, pollAfterMs). The token's `p` field "<last poll ms>:<due
# ms>" is the only thing a poll writes: it paces polls and is what the abandoned-waiter sweep
# reads. Key names derive from the concert's tag (one slot).
PRELUDE = (
    NOW_MS_LUA
    + """
local TAG, LIMIT = ARGV[1], tonumber(ARGV[2])
local WTTL, ATTL, MAXP = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local NOW = now_ms()
local function last_poll(p) return tonumber(string.match(p or '', '^(%d+)')) or 0 end
local function describe(token)
  local h = redis.call('HMGET', TAG .. ':t:' .. token, 'user', 'concert', 'status', 'expires', 'p', 'member')
  if not h[3] then return false end
  local rank, expires = 0, h[4]
  if h[3] == 'ACTIVE' then
    local exp = redis.call('ZSCORE', TAG .. ':active', token)
    if not exp or tonumber(exp) <= NOW then return false end
  else
    local last = last_poll(h[5])
    if last + WTTL <= NOW then return false end
    if h[3] == 'PREQUEUED' then
      -- a fair start's pre-queue (models/prequeue.py) is the head of the queue, in drawn order
      local r = redis.call('ZRANK', TAG .. ':pre', h[6] or '')
      if not r then return false end
      rank, h[3] = r + 1, 'WAITING'
    else
      local r = redis.call('ZRANK', TAG .. ':waiting', token)
      if not r then return false end
      rank = redis.call('ZCARD', TAG .. ':pre') + r + 1
    end
    expires = last + WTTL
  end
  return {h[1], h[2], h[3], rank, expires, redis.call('EXISTS', TAG .. ':soldout'), h[5] or ''}
end
local function per_second(rate)  -- rate: the value of TAG:rate when the caller has read it (false: none)
  if rate == nil then rate = redis.call('GET', TAG .. ':rate') end
  local count, oldest = string.match(rate or '0:', '^(%d+):(%d*)$')
  count = tonumber(count) or 0
  if count > 0 then return count / (math.max(1000, NOW - (tonumber(oldest) or NOW)) / 1000) end
  return LIMIT / (ATTL / 1000)
end
local function pace(rank, rate)
  if rank <= 0 then return 0, 0 end
  local per_s = per_second(rate)
  local wait_ms = rank / per_s * 1000
  local after = math.max("""
    + str(MIN_POLL_MS)
    + """, math.floor(wait_ms / 4))
  return math.max(1, math.floor(wait_ms / 1000 + 0.5)), math.min(after, MAXP, math.floor(WTTL / 3))
end
"""
)

# The join's rate limits (RATE_LIMIT_ISSUE_USER / _IP), checked before anything else is read or
# written (after PRELUDE; RA = the ARGV index of their count, RK = the KEYS index of the first):
# ARGV[RA] = how many, then (requests, window ms) each; KEYS[RK..] their windows rl:{c:N}:<name>,
# declared like every key a script touches on a Cluster (the concert's slot, outside the queue's
# wr: keys). One fixed window each. Over a limit the script answers {'LIMITED', ms until that
# window resets, requests, 0, reset ms}; otherwise rl_max, rl_left, rl_reset describe the tightest.
# A window that does not exist yet (a fan's first join, the common case at an opening) is one
# SET NX PX: count 1, reset NOW + window, no second call; an existing window is INCRed, and only
# the window that refuses or is the tightest reads its PTTL (each redis.call costs the server
# about as much as a command: a new fan's two windows were INCR + PEXPIRE each before).
RATES = """
local rl_max, rl_left, rl_reset, rl_key = 0, -1, 0, false
local NR = tonumber(ARGV[RA]) or 0
local function window_ttl(key, window)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then ttl = window; redis.call('PEXPIRE', key, window) end
  return ttl
end
for i = 0, NR - 1 do
  local key, most, window = KEYS[RK + i], tonumber(ARGV[RA + 1 + 2 * i]), tonumber(ARGV[RA + 2 + 2 * i])
  local n, reset = 1, NOW + window
  if not redis.call('SET', key, 1, 'PX', window, 'NX') then
    n, reset = redis.call('INCR', key), false  -- false: its reset is read only if it is needed
    if n > most then
      local ttl = window_ttl(key, window)
      return {'LIMITED', ttl, most, 0, NOW + ttl}
    end
  end
  if rl_left < 0 or most - n < rl_left then rl_max, rl_left, rl_reset, rl_key = most, most - n, reset, {key, window} end
end
if rl_reset == false then rl_reset = NOW + window_ttl(rl_key[1], rl_key[2]) end
"""

# The rate limits alone (a fair start's pre-queue join, a join of an unknown concert): ARGV[1..5]
# as PRELUDE, ARGV[6..] the limits, KEYS[2..] their windows. {'OK', requests, left, reset ms} or
# the LIMITED reply.
LIMITS = PRELUDE + "local RA, RK = 6, 2\n" + RATES + "return {'OK', rl_max, rl_left, rl_reset}\n"


ISSUE = (
    PRELUDE
    + """
local new_token, user, concert = ARGV[6], ARGV[7], ARGV[8]
local join_limit = tonumber(ARGV[9])  -- operator controls: the limit for admission on join (-1: LIMIT)
if join_limit < 0 then join_limit = LIMIT end
local RA, RK = 10, 2
"""
    + RATES
    + """
local waiting, active, ukey = TAG .. ':waiting', TAG .. ':active', TAG .. ':u:' .. user
-- KEYS[2 + NR] = wr:concerts on one Redis (a global key: on a Cluster the caller adds it after
-- the script, on its own slot); every join lists the concert, as a repeated one or a direct
-- admission lists one that the next admission pass drops
if KEYS[2 + NR] then redis.call('SADD', KEYS[2 + NR], concert) end
-- what a join reads, in one call (each redis.call costs the server as much as a command): the
-- user's live token, then the flags sold out, gate closed, the admission rate and the counters
local flags = redis.call('MGET', ukey, TAG .. ':soldout', TAG .. ':gate', TAG .. ':rate',
                         TAG .. ':popped', TAG .. ':gone')
-- what a web process's poll memo (models/poll_memo.py) needs to answer later polls itself
local function rl(reply, seq)  -- seq: a waiting token's arrival sequence (its place in the line)
  reply[11], reply[12], reply[13] = rl_max, rl_left, rl_reset
  reply[14], reply[15], reply[16] = flags[5] or 0, flags[6] or 0, seq or 0
  return reply
end
local existing = flags[1]
if existing then
  local found = describe(existing)
  if found then
    local wait_s, after = pace(found[4], flags[4])
    return rl({existing, 0, found[1], found[2], found[3], found[4], found[5], found[6], wait_s, after},
              redis.call('ZSCORE', waiting, existing))
  end
  redis.call('DEL', TAG .. ':t:' .. existing)
  if redis.call('ZREM', waiting, existing) == 1 then
    redis.call('INCR', TAG .. ':gone')
    flags[6] = (tonumber(flags[6]) or 0) + 1
  end
end
local hk = TAG .. ':t:' .. new_token
local soldout = flags[2] and 1 or 0
local nwaiting = redis.call('ZCARD', waiting) + redis.call('ZCARD', TAG .. ':pre')
if nwaiting == 0 and soldout == 0 then
  redis.call('ZREMRANGEBYSCORE', active, '-inf', NOW)
end
-- a fair-start concert's gate stays closed until its pre-queue is released (models/prequeue.py)
if nwaiting == 0 and soldout == 0 and not flags[3] and redis.call('ZCARD', active) < join_limit then
  redis.call('ZADD', active, NOW + ATTL, new_token)
  redis.call('HSET', hk, 'user', user, 'concert', concert, 'status', 'ACTIVE', 'issued', NOW, 'admitted', NOW,
             'expires', NOW + ATTL)
  redis.call('PEXPIRE', hk, ATTL + 60000)
  redis.call('SET', ukey, new_token, 'PX', ATTL)
  redis.call('ZADD', TAG .. ':admits', NOW, new_token .. ':1')  -- a direct admission counts in the rate
  redis.call('INCR', TAG .. ':admitted')  -- admissions ever (the operator console)
  return rl({new_token, 1, user, concert, 'ACTIVE', 0, NOW + ATTL, soldout, 0, 0})
end
local wait_s, after = pace(nwaiting + 1, flags[4])
local seq = redis.call('INCR', TAG .. ':seq')
redis.call('ZADD', waiting, seq, new_token)
-- a waiting token has no TTL: the sweep (and admission) drop it once `p` is WAITING_TTL old
redis.call('HSET', hk, 'user', user, 'concert', concert, 'status', 'WAITING', 'issued', NOW,
           'p', NOW .. ':' .. (NOW + after))
redis.call('SET', ukey, new_token)
-- the newest arrival has the highest sequence: its rank is the queue's length
return rl({new_token, 1, user, concert, 'WAITING', nwaiting + 1, NOW + WTTL, soldout, wait_s, after}, seq)
"""
)

# A poll: one round trip, one HSET of `p` for a WAITING token; a poll more than 20 % early is
# answered {'EARLY', ms until due} and writes nothing. An ACTIVE token is never early.
POLL = (
    PRELUDE
    + """
local token, touch = ARGV[6], ARGV[7]
local found = describe(token)
if not found then return false end
local c = redis.call('MGET', TAG .. ':rate', TAG .. ':popped', TAG .. ':gone')
local wait_s, after = pace(found[4], c[1])
if found[3] == 'WAITING' and touch == '1' then
  local last, due = string.match(found[7], '^(%d+):(%d+)$')
  last, due = tonumber(last), tonumber(due)
  if last and due and NOW < due - (due - last) * """
    + str(EARLY_FRACTION)
    + """ then
    return {'EARLY', due - NOW}
  end
  redis.call('HSET', TAG .. ':t:' .. token, 'p', NOW .. ':' .. (NOW + after))
  found[5] = NOW + WTTL
end
-- and what a web process's poll memo needs (models/poll_memo.py): popped, gone, and the token's
-- arrival sequence (its place in the line; 0 for a pre-queued one)
return {found[1], found[2], found[3], found[4], found[5], found[6], wait_s, after,
        c[2] or 0, c[3] or 0, redis.call('ZSCORE', TAG .. ':waiting', token) or 0}
"""
)

# Leave: ARGV[3], when not empty, is the caller's user id: a token of another user is left alone
# and the reply is -1 (the route's 403), so the owner check and the leave are one round trip.
LEAVE = """
local hk, waiting, active, pre, entrants, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token, uprefix, caller = ARGV[1], ARGV[2], ARGV[3] or ''
local h = redis.call('HMGET', hk, 'user', 'member')
local user = h[1]
if caller ~= '' and user and user ~= caller then return -1 end
local ukey = uprefix .. (user or '')
local existed = redis.call('DEL', hk)
if h[2] then  -- a pre-queued fan leaves the draw too
  redis.call('ZREM', pre, h[2])
  redis.call('HDEL', entrants, token)
end
if redis.call('ZREM', waiting, token) == 1 then redis.call('INCR', gone) end
redis.call('ZREM', active, token)
if redis.call('GET', ukey) == token then redis.call('DEL', ukey) end
return existed
"""

# One bounded slice of the abandoned-waiter sweep: the next ARGV[4] waiting tokens after the
# cursor (an arrival score), dropping those whose last poll is WAITING_TTL old. Returns
# {examined, dropped, wrapped (the cursor went back to the front), waiting}.
SWEEP = (
    NOW_MS_LUA
    + """
local waiting, cursor_key, gone = KEYS[1], KEYS[2], KEYS[3]
local prefix, ukprefix, wttl, count = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local cursor = redis.call('GET', cursor_key) or '-inf'
if cursor ~= '-inf' then cursor = '(' .. cursor end
local slice = redis.call('ZRANGEBYSCORE', waiting, cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, count)
local dropped = 0
for i = 1, #slice, 2 do
  local t = slice[i]
  local h = redis.call('HMGET', prefix .. t, 'user', 'p')
  if (tonumber(string.match(h[2] or '', '^(%d+)')) or 0) + wttl <= now then
    redis.call('ZREM', waiting, t)
    redis.call('DEL', prefix .. t)
    if h[1] and redis.call('GET', ukprefix .. h[1]) == t then redis.call('DEL', ukprefix .. h[1]) end
    dropped = dropped + 1
  end
end
if dropped > 0 then redis.call('INCRBY', gone, dropped) end
local wrapped = 0
if #slice < 2 * count then
  redis.call('DEL', cursor_key)
  wrapped = 1
else
  redis.call('SET', cursor_key, slice[#slice], 'PX', 3600000)
end
return {#slice / 2, dropped, wrapped, redis.call('ZCARD', waiting)}
"""
)

# An admission pass: expire actives, then pop waiters into the free slots (FIFO); a popped
# waiter whose last poll is WAITING_TTL old is dropped instead (bounded: at most free + 1,000 pops).
ADMIT = (
    NOW_MS_LUA
    + """
local waiting, active, admits, soldout, gate, pre = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local popped_key = KEYS[7]  -- waiting tokens ever popped from the head (admitted or dropped): poll memo
local reopen = KEYS[8]  -- seats came back less than REOPEN_MS ago: no admission yet
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local attl, wttl, ukprefix = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local cap = tonumber(ARGV[6])
local now = now_ms()  -- operator controls: at most this many per pass (-1: no cap)
redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
redis.call('ZREMRANGEBYSCORE', admits, '-inf', now - 60000)
if redis.call('EXISTS', soldout) == 1 or redis.call('EXISTS', gate) == 1 or redis.call('EXISTS', reopen) == 1 then
  return {0, redis.call('ZCARD', waiting) + redis.call('ZCARD', pre), redis.call('ZCARD', active), 0}
end
local free = limit - redis.call('ZCARD', active)
if cap >= 0 and free > cap then free = cap end
local admitted, dropped, budget = 0, 0, free + 1000
while free > 0 and budget > 0 do
  -- a fair start's pre-queue first (members "<draw key>:<token>", in drawn order), then arrivals
  local from_pre = true
  local popped = redis.call('ZPOPMIN', pre, math.min(free, budget))
  if #popped == 0 then
    from_pre = false
    popped = redis.call('ZPOPMIN', waiting, math.min(free, budget))
  end
  if #popped == 0 then break end
  budget = budget - #popped / 2
  redis.call('INCRBY', popped_key, #popped / 2)  -- the pre-queue is ahead of every arrival too
  for i = 1, #popped, 2 do
    local t = popped[i]
    if from_pre then t = string.sub(t, 66) end
    local hk = prefix .. t
    local h = redis.call('HMGET', hk, 'user', 'p')
    local user = h[1]
    if user and (tonumber(string.match(h[2] or '', '^(%d+)')) or 0) + wttl > now then
      redis.call('ZADD', active, now + attl, t)
      redis.call('HSET', hk, 'status', 'ACTIVE', 'admitted', now, 'expires', now + attl)
      redis.call('PEXPIRE', hk, attl + 60000)
      redis.call('SET', ukprefix .. user, t, 'PX', attl)
      admitted, free = admitted + 1, free - 1
    else
      redis.call('DEL', hk)
      if user and redis.call('GET', ukprefix .. user) == t then redis.call('DEL', ukprefix .. user) end
      dropped = dropped + 1
    end
  end
end
if admitted > 0 then redis.call('ZADD', admits, now, now .. ':' .. admitted) end
local total, oldest = 0, now
for i, e in ipairs(redis.call('ZRANGE', admits, 0, -1, 'WITHSCORES')) do
  if i % 2 == 1 then total = total + tonumber(string.match(e, ':(%d+)$'))
  elseif tonumber(e) < oldest then oldest = tonumber(e) end
end
redis.call('SET', string.sub(admits, 1, -8) .. ':rate', total .. ':' .. oldest, 'PX', 120000)
return {admitted, redis.call('ZCARD', waiting) + redis.call('ZCARD', pre), redis.call('ZCARD', active), dropped}
"""
)

# Seats came back: KEYS[1] soldout is cleared and, if it was set, KEYS[2] reopen is set for ARGV[1] ms
# (atomic: no admission can slip between the two).
REOPEN = """
if redis.call('DEL', KEYS[1]) == 1 then redis.call('SET', KEYS[2], '1', 'PX', ARGV[1]) end
return 0
"""

# The operator's counts in one round trip: {waiting, pre-queued, gate closed, active and unexpired}.
COUNTS = (
    NOW_MS_LUA
    + """
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('EXISTS', KEYS[3]),
        redis.call('ZCOUNT', KEYS[4], '(' .. now_ms(), '+inf')}
"""
)

# The admissions of the last ARGV[1] ms (members "<ms or token>:<count>").
RATE = (
    NOW_MS_LUA
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], now_ms() - tonumber(ARGV[1]), '+inf')
"""
)
