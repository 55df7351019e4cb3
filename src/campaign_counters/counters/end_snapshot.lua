-- Finish a snapshot: drop the frozen change log it persisted, and the
-- campaign's dirty mark when nothing was recorded since it began.
--
-- KEYS: 1 meta  2 frozen change log  3 dirty index
-- ARGV: 1 campaign  2 the repair generation the snapshot began with
-- Returns 1, or 0 when a repair swapped in new state meanwhile: then nothing
-- is dropped (the repair persists the campaign itself).
local meta = KEYS[1]
if tonumber(redis.call('HGET', meta, 'rgen') or '0') ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[2])
local dirty = redis.call('HGET', meta, 'dirty')
if dirty then
  redis.call('ZADD', KEYS[3], 'XX', dirty, ARGV[1])  -- pending since the first change after the begin
else
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
