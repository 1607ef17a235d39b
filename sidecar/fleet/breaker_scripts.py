"""Lua for the shared breaker record: one hash per provider and a trial lease, on Redis time.

The record holds ``state`` (``open`` / ``closed``), ``until`` (µs, server time), ``generation``
(bumped by every change, so late verdicts can be told apart), ``open_for`` (µs, the open time now
in force, doubled by each failed trial up to the cap) and ``successes`` (trial successes so far).
OPEN past ``until`` is HALF_OPEN. Every script answers with the same view:
``{state, µs until trials, generation, open_for µs, successes, granted}``, state 0 closed,
1 open, 2 half-open; ``granted`` is 1 only when this call won the trial lease.
"""

from __future__ import annotations

__all__ = ["OPEN", "READ", "RESET", "TRIAL", "VERDICT"]

RECORD_TTL_MS = 24 * 3600 * 1000  # a record nobody touched for a day is forgotten

_PRELUDE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(x) return string.format('%d', x) end
local function view(granted)
  local r = redis.call('HMGET', KEYS[1], 'state', 'until', 'generation', 'open_for', 'successes')
  local state, left = 0, 0
  if r[1] == 'open' then
    left = tonumber(r[2]) - now
    if left > 0 then state = 1 else state, left = 2, 0 end
  end
  return {{state, left, tonumber(r[3] or '0'), tonumber(r[4] or '0'), tonumber(r[5] or '0'), granted}}
end
local function write(...)
  redis.call('HSET', KEYS[1], ...)
  redis.call('PEXPIRE', KEYS[1], {RECORD_TTL_MS})
end
local function generation() return tonumber(redis.call('HGET', KEYS[1], 'generation') or '0') end
"""

READ = _PRELUDE + """
-- KEYS: record, trial.
return view(0)
"""

OPEN = _PRELUDE + """
-- KEYS: record, trial. ARGV: open for µs. A record already open (or half-open) is followed as it
-- is, never extended: only a closed (or absent) record is opened.
if redis.call('HGET', KEYS[1], 'state') == 'open' then return view(0) end
write('state', 'open', 'until', int(now + tonumber(ARGV[1])), 'generation', generation() + 1,
      'open_for', ARGV[1], 'successes', 0)
redis.call('DEL', KEYS[2])
return view(0)
"""

TRIAL = _PRELUDE + """
-- KEYS: record, trial. ARGV: token, lease ms. Half-open only: SET NX makes exactly one winner;
-- its lease expires if the winner vanishes, and the next asker may then run the trial.
local r = redis.call('HMGET', KEYS[1], 'state', 'until')
if r[1] ~= 'open' or tonumber(r[2]) > now then return view(0) end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return view(1) end
return view(0)
"""

VERDICT = _PRELUDE + """
-- KEYS: record, trial. ARGV: token, generation of the trial, '1' success / '0' failure,
-- success threshold, recovery µs, max recovery µs (0: no growth).
-- A verdict from another generation (the record moved on meanwhile) changes nothing.
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
local r = redis.call('HMGET', KEYS[1], 'state', 'generation', 'open_for', 'successes')
if r[1] ~= 'open' or tonumber(r[2]) ~= tonumber(ARGV[2]) then return view(0) end
local recovery = tonumber(ARGV[5])
if ARGV[3] == '1' then
  local successes = tonumber(r[4] or '0') + 1
  if successes >= tonumber(ARGV[4]) then
    write('state', 'closed', 'until', 0, 'generation', tonumber(r[2]) + 1, 'open_for', int(recovery),
          'successes', 0)
  else
    write('successes', successes)
  end
  return view(0)
end
local grown = recovery
if tonumber(ARGV[6]) > 0 then grown = math.max(recovery, math.min(tonumber(r[3]) * 2, tonumber(ARGV[6]))) end
write('state', 'open', 'until', int(now + grown), 'generation', tonumber(r[2]) + 1, 'open_for', int(grown),
      'successes', 0)
return view(0)
"""

RESET = _PRELUDE + """
-- KEYS: record, trial. An operator's reset: closed for everyone.
write('state', 'closed', 'until', 0, 'generation', generation() + 1, 'successes', 0)
redis.call('DEL', KEYS[2])
return view(0)
"""
