"""The fleet limiter's Lua scripts: atomic decisions, several to a round trip.

``ACQUIRE`` and ``RELEASE`` take a batch: the calls one sidecar makes in one turn of its event
loop go as one script run, applied one after the other exactly as separate runs would be, at one
server time. A batch is one provider's (its keys share a hash tag).

They run ``sidecar.policy.admission.admit`` and the AIMD rules of ``sidecar.policy.concurrency``
on the server, on the server's clock (``TIME``), so the sidecars' own clocks never matter. Times
are integer microseconds; numbers written back go through ``%d`` because Lua's default conversion
would round them. Lease sets are sorted sets scored by expiry: the scripts reap expired leases
before counting, so the slots of a pod that died come back once its leases run out.

``ACQUIRE`` may book a share with a call (places for the sidecar's next calls, see
``sidecar.fleet.limiter``); ``PAUSE`` and a lowering by ``RELEASE`` publish the key they changed on
the notices channel, so sidecars holding shares of that provider drop them (with ``pcall``: a
Redis user denied PUBLISH still pauses and lowers).
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
local function by_thousands(list, each)  -- unpack is bounded by Lua's C stack: 1000 items a call
  for first = 1, #list, 1000 do each(first, math.min(first + 999, #list)) end
end
local function expire_after_last(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', key, math.ceil((tonumber(last[2]) - now) / 1000) + 1) end
end
"""

_BATCH = """
-- A batch: ARGV is, per call, its number of keys, its number of arguments, then its arguments;
-- KEYS holds the calls' keys one after the other. Returns each call's reply, in order.
local replies, k, a = {{}}, 1, 1
while a <= #ARGV do
  local nk, na = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  replies[#replies + 1] = {one}({{unpack(KEYS, k, k + nk - 1)}}, {{unpack(ARGV, a + 2, a + 1 + na)}})
  k, a = k + nk, a + 2 + na
end{end}
return replies
"""

ACQUIRE = _PRELUDE + f"""
-- What the batch has read, and what it will write once every call is decided: each key is read
-- and written once a batch, not once a call (a redis.call costs more than the rest of a decision).
-- The calls see each other's bookings and leases.
local pauses, lowered, tats, counts, dirty_tats, adds = {{}}, {{}}, {{}}, {{}}, {{}}, {{}}
local function pause_end(key)
  if pauses[key] == nil then pauses[key] = tonumber(redis.call('GET', key) or '0') end
  return pauses[key]
end
local function lowered_limit(key)
  if lowered[key] == nil then
    local aimd = redis.call('HMGET', key, 'limit', 'changed_at')
    lowered[key] = false
    if aimd[1] and now - tonumber(aimd[2]) < {AIMD_FORGET_AFTER} then lowered[key] = tonumber(aimd[1]) end
  end
  return lowered[key]
end
local function held(key)
  if counts[key] == nil then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
    counts[key] = redis.call('ZCARD', key)
  end
  return counts[key]
end
local function tat_of(key)
  if tats[key] == nil then tats[key] = tonumber(redis.call('GET', key) or '0') end
  return tats[key]
end

local function acquire(KEYS, ARGV)
-- KEYS: pause, aimd, then per scope i: KEYS[1+2i] its TAT, KEYS[2+2i] its lease set.
-- ARGV: lease id, lease ttl µs, max wait µs, then 4 per scope i, from o = 4i - 1: ARGV[o+1]
-- interval µs (0: no rate), ARGV[o+2] tolerance µs, ARGV[o+3] concurrency (0: none), ARGV[o+4]
-- '1' for the provider's own scope (where the AIMD limit applies); last, the share wanted (0: none)
-- and the longest life of a share (µs).
-- Returns {{status, scope index, µs, now, share, life}}: status {GRANTED} granted (µs: the wait
-- before starting), {PAUSED} paused (µs left), {FULL} concurrency full, {RATE} rate (µs until a
-- start would be allowed). share: the places booked besides the call's own, leased as
-- '<lease id>.<j>'; life: µs from now during which they may be used.
local paused = pause_end(KEYS[1])
if paused > now then return {{{PAUSED}, 0, paused - now, now, 0, 0}} end
local low = lowered_limit(KEYS[2])
local n = (#KEYS - 2) / 2
local start, rate_scope = now, 0
for i = 1, n do
  local o = 4 * i - 1
  local limit = tonumber(ARGV[o + 3])
  if ARGV[o + 4] == '1' and low and (limit == 0 or low < limit) then limit = low end
  if limit > 0 and held(KEYS[2 + 2 * i]) >= limit then return {{{FULL}, i, 0, now, 0, 0}} end
  if tonumber(ARGV[o + 1]) > 0 then
    local earliest = tat_of(KEYS[1 + 2 * i]) - tonumber(ARGV[o + 2])
    if earliest > start then start, rate_scope = earliest, i end
  end
end
if start - now > tonumber(ARGV[3]) then return {{{RATE}, rate_scope, start - now, now, 0, 0}} end
-- A share only while no budget is half used once it is booked, none is lowered, none waits. Its
-- rate tokens may be used at any time of its life, so they are booked after its end (no use is
-- ever later than its booking: an idle bucket forgives nothing); its life is at most a quarter of
-- the burst's time, leaving at least a quarter of the burst for the places.
local share, life = tonumber(ARGV[4 * n + 4]), tonumber(ARGV[4 * n + 5])
if share > 0 and (low or start > now) then share = 0 end
for i = 1, n do
  if tonumber(ARGV[4 * i]) > 0 then life = math.min(life, math.floor(tonumber(ARGV[4 * i + 1]) / 4)) end
end
for i = 1, n do
  if share < 2 then break end
  local o = 4 * i - 1
  local interval, limit = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 3])
  if limit > 0 then share = math.min(share, math.floor(limit / 2) - held(KEYS[2 + 2 * i]) - 1) end
  if interval > 0 then
    local used = math.max(tat_of(KEYS[1 + 2 * i]), now) + interval - now
    share = math.min(share, math.floor((tonumber(ARGV[o + 2]) / 2 - math.max(used, life)) / interval))
  end
end
if share < 2 or life < 1000 then share, life = 0, 0 end
local expires = int(now + tonumber(ARGV[2]))
for i = 1, n do
  local interval, key, leases = tonumber(ARGV[4 * i]), KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  if interval > 0 then
    local tat = math.max(tat_of(key), start) + interval
    if share > 0 then tat = math.max(tat, now + life) + interval * share end
    tats[key] = tat
    if not dirty_tats[key] then dirty_tats[key] = true dirty_tats[#dirty_tats + 1] = key end
  end
  counts[leases] = held(leases) + 1 + share
  local added = adds[leases]
  if not added then added = {{}} adds[leases] = added adds[#adds + 1] = leases end
  added[#added + 1] = expires
  added[#added + 1] = ARGV[1]
  for j = 1, share do
    added[#added + 1] = expires
    added[#added + 1] = ARGV[1] .. '.' .. j
  end
end
return {{{GRANTED}, 0, start - now, now, share, math.floor(life)}}
end
""" + _BATCH.format(one="acquire", end="""
for _, key in ipairs(dirty_tats) do
  redis.call('SET', key, int(tats[key]), 'PX', int(math.ceil((tats[key] - now) / 1000) + 1))
end
for _, key in ipairs(adds) do
  redis.call('ZADD', key, unpack(adds[key]))
  expire_after_last(key)
end
""")

RELEASE = _PRELUDE + f"""
local states = {{}}  -- aimd key -> {{limit, ceiling, changed}} as this batch last left it
local removals = {{}}  -- lease set -> the ids to take out of it, in one ZREM at the end
local function remove_now()
  for _, key in ipairs(removals) do
    local ids = removals[key]
    by_thousands(ids, function(first, last) redis.call('ZREM', key, unpack(ids, first, last)) end)
  end
  removals = {{}}
end
local function aimd_of(key)
  if states[key] == nil then
    local a = redis.call('HMGET', key, 'limit', 'ceiling', 'changed_at')
    states[key] = {{tonumber(a[1]), tonumber(a[2]), tonumber(a[3])}}
  end
  return states[key]
end
local function lower_to(key, value, top, channel)
  redis.call('HSET', key, 'limit', value, 'ceiling', top, 'changed_at', int(now))
  redis.call('PEXPIRE', key, {AIMD_FORGET_AFTER // 1000})
  states[key] = {{value, top, now}}
  if channel then redis.pcall('PUBLISH', channel, key) end
  return value
end

local function release(KEYS, ARGV)
-- KEYS: aimd, then the lease sets (KEYS[2] the provider's own when ARGV[4] is '1').
-- ARGV: lease id, 'ok' | 'concurrency' | 'abandoned', admitted at µs, provider scope present,
-- configured concurrency of the provider (0: none); for 'concurrency', the notices channel; for
-- 'ok' and 'abandoned', more lease ids that ended the same way (one call for a turn's give-backs
-- of one shape: as many calls one after the other would do, for their AIMD step is once a turn).
local in_flight, last = 1, #ARGV
if ARGV[2] == 'concurrency' then
  last = 1
  if ARGV[4] == '1' then
    remove_now()  -- the calls before this one in the batch have ended
    in_flight = redis.call('ZCOUNT', KEYS[2], '(' .. int(now), '+inf')
  end
end
for i = 2, #KEYS do
  local ids = removals[KEYS[i]]
  if not ids then ids = {{}} removals[KEYS[i]] = ids removals[#removals + 1] = KEYS[i] end
  ids[#ids + 1] = ARGV[1]
  for j = 6, last do ids[#ids + 1] = ARGV[j] end
end
if ARGV[2] == 'abandoned' then return 0 end
local a = aimd_of(KEYS[1])
local limit, ceiling, changed = a[1], a[2], a[3]
if limit and now - changed >= {AIMD_FORGET_AFTER} then limit = nil end
if ARGV[2] == 'ok' then
  if not limit or now - changed < {AIMD_INCREASE_INTERVAL} then return 0 end
  if limit + 1 >= ceiling then
    redis.call('DEL', KEYS[1])
    states[KEYS[1]] = {{nil, nil, nil}}
    return 0
  end
  return lower_to(KEYS[1], limit + 1, ceiling, nil)
end
if limit and tonumber(ARGV[3]) <= changed then return limit end
local base, top = limit, ceiling
if not limit then
  local configured = tonumber(ARGV[5])
  if configured > 0 then base = configured else base = math.max(in_flight, {AIMD_MIN_LIMIT}) end
  top = base
end
return lower_to(KEYS[1], math.max({AIMD_MIN_LIMIT}, math.floor(base * {AIMD_DECREASE_FACTOR})), top, ARGV[6])
end
""" + _BATCH.format(one="release", end="\nremove_now()")

RENEW = _PRELUDE + """
-- KEYS: the lease sets. ARGV: lease ttl µs, then the lease ids (every lease a sidecar holds in these
-- sets: one run a tick, not one a lease). Only a lease still held is pushed out (XX): a release
-- racing with a renewal must not bring the lease back. Returns the leases pushed out, summed over
-- the sets.
local expires, members, renewed = int(now + tonumber(ARGV[1])), {}, 0
for j = 2, #ARGV do
  members[#members + 1] = expires
  members[#members + 1] = ARGV[j]
end
for i = 1, #KEYS do
  by_thousands(members, function(first, last)  -- 500 leases a ZADD: score and id, pairs never split
    renewed = renewed + redis.call('ZADD', KEYS[i], 'XX', 'CH', unpack(members, first, last))
  end)
  expire_after_last(KEYS[i])
end
return renewed
"""

PAUSE = _PRELUDE + """
-- KEYS: pause. ARGV: pause µs, the notices channel. The later of the pause in force and this one
-- wins; returns µs left. Every sidecar hears of it on the channel before this script answers.
local ends = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now + tonumber(ARGV[1]))
if ends > now then
  redis.call('SET', KEYS[1], int(ends), 'PX', int(math.ceil((ends - now) / 1000)))
  redis.pcall('PUBLISH', ARGV[2], KEYS[1])
end
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
