-- Replace a campaign's live state with the state a repair built beside it.
--
-- KEYS: 1 repair tail, then pairs (shadow key, live key), the meta and the
-- campaign counters first: (shadow meta, live meta), (shadow counters,
-- live counters), then the rest.
-- ARGV: 1 the id of the last tail entry the repair applied to the shadow
--       ('0-0': none).
-- Returns 1 when swapped; 0 when events reached the tail after that entry
-- (apply them to the shadow too, then call again): nothing is changed.
--
-- A live key without a shadow twin is deleted.  The live status and
-- completion mark survive when the shadow has no status of its own.  The
-- repair generation (`rgen`) goes up by one, so a snapshot that read the old
-- state trims nothing.  Renamed keys carry the shadow's (absent) TTL.
local tail = KEYS[1]
local last = redis.call('XREVRANGE', tail, '+', '-', 'COUNT', 1)
if (last[1] and last[1][1] or '0-0') ~= ARGV[1] then return 0 end
local meta, camp = KEYS[3], KEYS[5]
local status = redis.call('HMGET', camp, 'status', 'status_ts', 'updated_at')
local completed = redis.call('HGET', meta, 'completed_at')
local rgen = tonumber(redis.call('HGET', meta, 'rgen') or '0')
for i = 2, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
  else
    redis.call('DEL', KEYS[i + 1])
  end
end
if status[1] and not redis.call('HGET', camp, 'status') then
  redis.call('HSET', camp, 'status', status[1], 'status_ts', status[2], 'updated_at', status[3])
  if completed then redis.call('HSET', meta, 'completed_at', completed) end
end
redis.call('HSET', meta, 'rgen', rgen + 1)
redis.call('HDEL', meta, 'repairing')
redis.call('DEL', tail)
return 1
