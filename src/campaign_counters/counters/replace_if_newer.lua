-- Replace a hash whole unless it already holds newer figures (the dashboards'
-- latest overview of a period, a tenant's latest nightly check).
--
-- KEYS[1]: the hash.
-- ARGV[1]: the field that orders versions (an ISO date: compares as text);
-- ARGV[2]: this version's value of it; ARGV[3..]: field, value, ... (the new
-- content, ARGV[1] included).
-- A backfill writing an older period, or a late catch-up job, leaves the
-- newer figures in place. Returns 1 when replaced, 0 when kept.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and current > ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
