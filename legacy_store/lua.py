"""The Lua scripts that make socket removal atomic.

Why Lua: removing a socket means reading its set (its rooms) and then removing
it from each room; done from a client that is a read-then-write race against a
concurrent join. A script runs atomically in Redis. The scripts touch room keys
derived from the socket set's members, so they need a single Redis; on a Redis
Cluster, whose slots the legacy keys span, the per-key forms take their place
(:mod:`legacy_store.writes`, :mod:`legacy_store.slot_cleanup`).
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

# KEYS[1] owners hash, KEYS[2..n] candidate socket keys. ARGV[1] node key prefix,
# ARGV[2] "1" for a dry run, then per candidate its sid and its room key prefix.
# For each candidate, atomically: skip it if its owner is alive, or if it is a room
# set (it exists and does not hold its own id); otherwise remove it from its rooms,
# delete it and its owner entry. Returns, per removed socket,
# {key, memberships removed, socket set deleted (0/1), rooms emptied, owner entry (0/1),
# owner id or ""}.
CLEAN_BATCH = """
local owners, node_prefix, dry = KEYS[1], ARGV[1], ARGV[2] == '1'
local alive, results = {}, {}
for i = 2, #KEYS do
  local key, sid, room_prefix = KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]
  local owner = redis.call('HGET', owners, key)
  local live = false
  if owner then
    if alive[owner] == nil then alive[owner] = redis.call('EXISTS', node_prefix .. owner) == 1 end
    live = alive[owner]
  end
  local existed = redis.call('EXISTS', key)
  local is_room = existed == 1 and redis.call('SISMEMBER', key, sid) == 0
  if not live and not is_room and (existed == 1 or owner) then
    local memberships, emptied = 0, 0
    for _, room in ipairs(redis.call('SMEMBERS', key)) do
      if room ~= sid then
        local room_key = room_prefix .. room
        if redis.call('SISMEMBER', room_key, sid) == 1 then
          memberships = memberships + 1
          if redis.call('SCARD', room_key) == 1 then emptied = emptied + 1 end
          if not dry then redis.call('SREM', room_key, sid) end
        end
      end
    end
    if not dry then
      redis.call('DEL', key)
      redis.call('HDEL', owners, key)
    end
    results[#results + 1] = {key, memberships, existed, emptied, owner and 1 or 0, owner or ''}
  end
end
return results
"""
