"""The Lua scripts that make socket removal atomic.

Why Lua: removing a socket means reading its set (its rooms) and then removing
it from each room; done from a client that is a read-then-write race against a
concurrent join. A script runs atomically in Redis. The scripts touch room keys
derived from the socket set's members, so they need a single Redis (not Redis
Cluster, where the legacy schema's keys span hash slots anyway).
"""

from __future__ import annotations

# KEYS[1] socket key, KEYS[2] owners hash. ARGV[1] sid, ARGV[2] room key prefix.
# Returns the number of room memberships removed.
DISCONNECT = """
local removed = 0
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if room ~= ARGV[1] then
    removed = removed + redis.call('SREM', ARGV[2] .. room, ARGV[1])
  end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], KEYS[1])
return removed
"""

# KEYS[1] socket key, KEYS[2] owners hash. ARGV[1] sid, ARGV[2] room key prefix,
# ARGV[3] node key prefix, ARGV[4] "1" for a dry run.
# Checks, atomically, that the socket's owner is not alive, then removes it.
# Returns {-1, 0, 0, 0} for a live owner (untouched), else {memberships removed,
# socket set deleted (0/1), room sets emptied (and so deleted), owner entry removed (0/1)}.
REMOVE_IF_STALE = """
local owner = redis.call('HGET', KEYS[2], KEYS[1])
if owner and redis.call('EXISTS', ARGV[3] .. owner) == 1 then
  return {-1, 0, 0, 0}
end
local dry = ARGV[4] == '1'
local memberships, emptied = 0, 0
local existed = redis.call('EXISTS', KEYS[1])
for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if room ~= ARGV[1] then
    local room_key = ARGV[2] .. room
    if redis.call('SISMEMBER', room_key, ARGV[1]) == 1 then
      memberships = memberships + 1
      if redis.call('SCARD', room_key) == 1 then emptied = emptied + 1 end
      if not dry then redis.call('SREM', room_key, ARGV[1]) end
    end
  end
end
local owned = owner and 1 or 0
if not dry then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], KEYS[1])
end
return {memberships, existed, emptied, owned}
"""
