-- Extend a lease if it is still ours.
-- KEYS: 1 lease  ARGV: 1 our token  2 milliseconds
-- Returns 1, or 0 when the lease expired or another holder took it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
