"""The fleet limiter's Lua scripts: each decision is one atomic script, one round trip.

They run ``sidecar.policy.admission.admit`` and the AIMD rules of ``sidecar.policy.concurrency``
on the server, on the server's clock (``TIME``), so the sidecars' own clocks never matter. Times
are integer microseconds; numbers written back go through ``%d`` because Lua's default conversion
would round them. Lease sets are sorted sets scored by expiry: the scripts reap expired leases
before counting, so the slots of a pod that died come back once its leases run out.
"""

from __future__ import annotations

from sidecar.policy.concurrency import (
    AIMD_DECREASE_FACTOR,
    AIMD_FORGET_AFTER,
    AIMD_INCREASE_INTERVAL,
    AIMD_MIN_LIMIT,
)

__all__ = ["ACQUIRE", "PAUSE", "PAUSED_FOR", "RELEASE", "RENEW", "USAGE"]

GRANTED, PAUSED, FULL, RATE = 0, 1, 2, 3

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%d', x) end
local function expire_after_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', key, math.ceil((tonumber(last[2]) - now) / 1000) + 1) end
end
"""

ACQUIRE = _PRELUDE + f"""
-- KEYS: pause, aimd, then per scope i: KEYS[1+2i] its TAT, KEYS[2+2i] its lease set.
-- ARGV: lease id, lease ttl µs, max wait µs, then 4 per scope i, from o = 4i - 1: ARGV[o+1]
-- interval µs (0: no rate), ARGV[o+2] tolerance µs, ARGV[o+3] concurrency (0: none), ARGV[o+4]
-- '1' for the provider's own scope (where the AIMD limit applies).
-- Returns {{status, scope index, µs, now}}: status {GRANTED} granted (µs: the wait before starting),
-- {PAUSED} paused (µs left), {FULL} concurrency full, {RATE} rate (µs until a start would be allowed).
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return {{{PAUSED}, 0, paused - now, now}} end
local lowered = nil
local aimd = redis.call('HMGET', KEYS[2], 'limit', 'changed_at')
if aimd[1] and now - tonumber(aimd[2]) < {AIMD_FORGET_AFTER} then lowered = tonumber(aimd[1]) end
local n = (#KEYS - 2) / 2
local start, rate_scope, tats = now, 0, {{}}
for i = 1, n do
  local o, leases = 4 * i - 1, KEYS[2 + 2 * i]
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', int(now))
  local limit = tonumber(ARGV[o + 3])
  if ARGV[o + 4] == '1' and lowered and (limit == 0 or lowered < limit) then limit = lowered end
  if limit > 0 and redis.call('ZCARD', leases) >= limit then return {{{FULL}, i, 0, now}} end
  if tonumber(ARGV[o + 1]) > 0 then
    tats[i] = tonumber(redis.call('GET', KEYS[1 + 2 * i]) or '0')
    local earliest = tats[i] - tonumber(ARGV[o + 2])
    if earliest > start then start, rate_scope = earliest, i end
  end
end
if start - now > tonumber(ARGV[3]) then return {{{RATE}, rate_scope, start - now, now}} end
local expires = int(now + tonumber(ARGV[2]))
for i = 1, n do
  local interval = tonumber(ARGV[4 * i])
  if interval > 0 then
    local tat = math.max(tats[i], start) + interval
    redis.call('SET', KEYS[1 + 2 * i], int(tat), 'PX', int(math.ceil((tat - now) / 1000) + 1))
  end
  redis.call('ZADD', KEYS[2 + 2 * i], expires, ARGV[1])
  expire_after_last(KEYS[2 + 2 * i])
end
return {{{GRANTED}, 0, start - now, now}}
"""

RELEASE = _PRELUDE + f"""
-- KEYS: aimd, then the lease sets (KEYS[2] the provider's own when ARGV[4] is '1').
-- ARGV: lease id, 'ok' | 'concurrency' | 'abandoned', admitted at µs, provider scope present,
-- configured concurrency of the provider (0: none).
local in_flight = 1
if ARGV[4] == '1' then in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. int(now), '+inf') end
for i = 2, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
if ARGV[2] == 'abandoned' then return 0 end
local a = redis.call('HMGET', KEYS[1], 'limit', 'ceiling', 'changed_at')
local limit, ceiling, changed = tonumber(a[1]), tonumber(a[2]), tonumber(a[3])
if limit and now - changed >= {AIMD_FORGET_AFTER} then limit = nil end
local function lower_to(value, top)
  redis.call('HSET', KEYS[1], 'limit', value, 'ceiling', top, 'changed_at', int(now))
  redis.call('PEXPIRE', KEYS[1], {AIMD_FORGET_AFTER // 1000})
  return value
end
if ARGV[2] == 'ok' then
  if not limit or now - changed < {AIMD_INCREASE_INTERVAL} then return 0 end
  if limit + 1 >= ceiling then redis.call('DEL', KEYS[1]) return 0 end
  return lower_to(limit + 1, ceiling)
end
if limit and tonumber(ARGV[3]) <= changed then return limit end
local base, top = limit, ceiling
if not limit then
  local configured = tonumber(ARGV[5])
  if configured > 0 then base = configured else base = math.max(in_flight, {AIMD_MIN_LIMIT}) end
  top = base
end
return lower_to(math.max({AIMD_MIN_LIMIT}, math.floor(base * {AIMD_DECREASE_FACTOR})), top)
"""

RENEW = _PRELUDE + """
-- KEYS: the lease sets. ARGV: lease id, lease ttl µs. Only a lease still held is pushed out
-- (XX): a release racing with a renewal must not bring the lease back.
local renewed = 0
for i = 1, #KEYS do
  renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', int(now + tonumber(ARGV[2])), ARGV[1])
  expire_after_last(KEYS[i])
end
return renewed
"""

PAUSE = _PRELUDE + """
-- KEYS: pause. ARGV: pause µs. The later of the pause in force and this one wins; returns µs left.
local ends = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
if ends > now then redis.call('SET', KEYS[1], int(ends), 'PX', int(math.ceil((ends - now) / 1000))) end
return math.max(ends - now, 0)
"""

PAUSED_FOR = _PRELUDE + """
-- KEYS: pause. Returns µs left of the pause in force (0: none).
return math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - now, 0)
"""

USAGE = _PRELUDE + """
-- KEYS: one scope's TAT, its lease set. ARGV: tolerance µs, '1' when the scope has a rate.
-- Returns {leases held now, µs until a start would be allowed}: for /health/detailed, read-only.
local held = redis.call('ZCOUNT', KEYS[2], '(' .. int(now), '+inf')
local wait = 0
if ARGV[2] == '1' then
  wait = math.max(tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[1]) - now, 0)
end
return {held, wait}
"""
