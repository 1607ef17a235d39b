"""The Lua scripts that make each Redis ledger operation atomic.

Layout under the store's prefix ``P`` (``member`` is ``quote(provider)/quote(key)``, so no key or
provider can forge a separator, a glob or a Cluster hash tag)::

    P r:<member>   hash: the record (fields below); PEXPIRE = its lifetime
    P claims       sorted set: member -> claim sequence number (oldest first, for the cap and list)
    P expiry       sorted set: member -> expires_at (for purging)
    P seq          the claim sequence counter

Every key gets a TTL: the record its own, the indexes and counter the longest lifetime written into
them. Lifetimes are also checked against ``now`` from the caller's clock (``ARGV[1]``), so a record
whose ``expires_at`` has passed is absent even before Redis has dropped it.
"""

from __future__ import annotations

__all__ = ["ADOPT", "CLAIM", "COMPLETE", "MARK_UNKNOWN", "RELEASE"]

# Drops up to ``limit`` expired members, oldest expiry first.
_PURGE = """
local function drop(member)
  redis.call('DEL', ARGV[3] .. member)
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
end
local function purge(limit)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, limit)) do
    drop(m)
  end
end
"""

# KEYS: record, claims, expiry, seq
# ARGV: now, member, record key prefix, ttl_ms, max_entries, purge batch, expires_at, field, value, ...
# -> {1, {}, evicted} when claimed, {0, HGETALL of the live record, 0} otherwise
CLAIM = _PURGE + """
local now = tonumber(ARGV[1])
purge(tonumber(ARGV[6]))
local ea = redis.call('HGET', KEYS[1], 'ea')
if ea and tonumber(ea) > now then
  return {0, redis.call('HGETALL', KEYS[1]), 0}
end
redis.call('DEL', KEYS[1])
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local ttl = tonumber(ARGV[4])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[2])
for _, k in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
local evicted = 0
-- Over the cap by one only when the purge above found nothing expired (it takes a batch per claim and
-- a claim adds one), so the oldest live claims go. After max_entries was lowered the excess is
-- larger: a batch goes per claim, so no single script runs long.
local excess = math.min(redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5]), tonumber(ARGV[6]) + 1)
if excess > 0 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    drop(m)
    evicted = evicted + 1
  end
end
return {1, {}, evicted}
"""

# KEYS: record. ARGV: now, claim_id, sent_at or '', status, headers JSON, has body 1/0, body, too large 1/0
COMPLETE = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'id', 'ea')
if not cur[1] or tonumber(cur[3]) <= tonumber(ARGV[1]) or cur[2] ~= ARGV[2] then return 0 end
if cur[1] ~= 'in_flight' and cur[1] ~= 'unknown' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'done', 'rs', ARGV[4], 'rh', ARGV[5], 'rl', ARGV[8])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'sa', ARGV[3]) end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'rb', ARGV[7])
else
  redis.call('HDEL', KEYS[1], 'rb')
end
return 1
"""

# KEYS: record. ARGV: now, claim_id, sent_at or ''
MARK_UNKNOWN = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'id', 'ea')
if not cur[1] or tonumber(cur[3]) <= tonumber(ARGV[1]) or cur[2] ~= ARGV[2] then return 0 end
if cur[1] ~= 'in_flight' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'unknown')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'sa', ARGV[3]) end
return 1
"""

# KEYS: record, claims, expiry. ARGV: now, member, claim_id or '' (an operator's release)
RELEASE = """
local cur = redis.call('HMGET', KEYS[1], 'st', 'id', 'ea')
if not cur[1] then return 0 end
local live = tonumber(cur[3]) > tonumber(ARGV[1])
if ARGV[3] ~= '' then
  if not live or cur[2] ~= ARGV[3] then return 0 end
  if cur[1] ~= 'in_flight' and cur[1] ~= 'unknown' then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
if live then return 1 end
return 0
"""

# ARGV: now, instance id, record key prefix, member, member, ...
ADOPT = """
local n = 0
for i = 4, #ARGV do
  local k = ARGV[3] .. ARGV[i]
  local cur = redis.call('HMGET', k, 'st', 'ow', 'ea')
  if cur[1] == 'in_flight' and cur[2] == ARGV[2] and tonumber(cur[3]) > tonumber(ARGV[1]) then
    redis.call('HSET', k, 'st', 'unknown')
    n = n + 1
  end
end
return n
"""
