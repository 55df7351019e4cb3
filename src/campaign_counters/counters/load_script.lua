-- Register or replace a campaign's flow graph, binding the campaign to its
-- tenant.  Node indexes are allocated here, once per node id, and never
-- reused: per-user records store indexes, so they must outlive reloads.
--
-- KEYS: 1 meta  2 script  3 registry
-- ARGV: 1 tenant  2 campaign  3 script JSON  4 sha
--       5 msgpack {node ids, start id, end ids, edges {{src, dst}...},
--                  unique predecessor map, unique labelled source map}
-- Returns 1, or -1 when the campaign belongs to another tenant.

local owner = redis.call('HGET', KEYS[1], 'tenant')
if owner and owner ~= ARGV[1] then return -1 end
if not owner then
  redis.call('HSET', KEYS[1], 'tenant', ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
end

local p = cmsgpack.unpack(ARGV[5])
local names, ix, ends, succ, pred = {}, {}, {}, {}, {}
for _, id in ipairs(p[1]) do
  local i = tonumber(redis.call('HGET', KEYS[1], 'n:' .. id))
  if not i then
    i = redis.call('HINCRBY', KEYS[1], '#n', 1)
    redis.call('HSET', KEYS[1], 'n:' .. id, i, 'i:' .. i, id)
  end
  names[i] = id
  ix[id] = i
end
for _, id in ipairs(p[3]) do ends[ix[id]] = 1 end
for _, e in ipairs(p[4]) do
  local s, d = ix[e[1]], ix[e[2]]
  succ[s] = succ[s] or {}
  table.insert(succ[s], d)
  pred[d] = pred[d] or {}
  table.insert(pred[d], s)
end
local start = 0
if p[2] ~= '' then start = ix[p[2]] end
local graph = {ARGV[4], start, names, ix, ends, succ, pred, p[5], p[6]}
redis.call('HSET', KEYS[1], 'graph', cmsgpack.pack(graph), 'script_sha', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
return 1
