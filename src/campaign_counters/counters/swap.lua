-- Replace a campaign's live state with the state built beside it (a repair).
--
-- KEYS: pairs (shadow key, live key), the campaign's meta and campaign
-- counters first: (shadow meta, live meta), (shadow script, live script),
-- (shadow names, live names), (shadow users, live users),
-- (shadow campaign counters, live campaign counters), then the rest.
-- A live key without a shadow twin is deleted.  The live campaign status and
-- completion mark survive when the shadow has no status of its own.
-- Renamed keys carry the shadow's (absent) TTL: a repaired campaign keeps its
-- keys until its next snapshot expires them again.
local meta, camp = KEYS[2], KEYS[10]
local status = redis.call('HMGET', camp, 'status', 'status_ts', 'updated_at')
local completed = redis.call('HGET', meta, 'completed_at')
for i = 1, #KEYS, 2 do
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
return 1
