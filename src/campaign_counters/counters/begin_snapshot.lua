-- Start a snapshot: freeze the change log, so events recorded meanwhile log
-- their users for the next snapshot.
--
-- KEYS: 1 meta  2 change log  3 frozen change log (what this snapshot persists)
-- Returns {repair generation, pending since (ms, 0: nothing pending)}.
--
-- The log is appended to the frozen one (it is left over when an earlier
-- snapshot died before it finished), so no user is lost; users get logged
-- again once the generation moves on.  The `dirty` mark is cleared: events
-- recorded from now on set it again and keep the campaign in the dirty index.
-- record.lua logs users under generation 0 while `gen` is absent (earlier
-- versions: 1), so the first snapshot moves it to 2: users logged before it,
-- by either version, are logged again by their next event.
local meta = KEYS[1]
local log = redis.call('GET', KEYS[2])
if log then
  redis.call('APPEND', KEYS[3], log)
  redis.call('DEL', KEYS[2])
end
redis.call('HSETNX', meta, 'gen', 1)
redis.call('HINCRBY', meta, 'gen', 1)
local dirty = redis.call('HGET', meta, 'dirty')
redis.call('HDEL', meta, 'dirty')
return {tonumber(redis.call('HGET', meta, 'rgen') or '0'), tonumber(dirty or '0')}
