-- Register or replace a campaign's flow graph, binding the campaign to its
-- tenant.  The graph is written as per-node facts in the meta hash so that
-- record.lua reads only the nodes an event touches:
--   n:<id>              facts: binary, 2-byte big-endian numbers (cheap for
--                       record.lua to read): idx, end flag (1 byte),
--                       successor count and idxs, predecessor count and idxs
--   start               facts of the start node
--   pt:<target>         facts of the only node with an edge into target
--   pl:<target>\31<lbl> facts of the only node whose edge into target has label lbl
-- Node indexes are allocated once per node id and never reused: user records
-- store indexes, so they must outlive reloads.
--
-- KEYS: 1 meta  2 script  3 registry  4 names  5 epoch marker  6 dirty index
-- ARGV: 1 tenant  2 campaign  3 script JSON  4 sha
--       5 msgpack {node ids, start id, end ids, edges {{src, dst}...},
--                  unique predecessor map, unique labelled source map}
--       6 'restore': written back from the report store's durable copy after
--         Redis lost its data; the stored owner wins and no marker is needed.
-- Returns 1, -1 when the campaign belongs (or belonged) to another tenant, or
-- -4 when Redis holds no epoch marker (it lost its data: the campaign's
-- binding must be restored before anything is written for it).
-- The campaign is marked changed, so the next snapshot persists the script.

local META = KEYS[1]
local restoring = ARGV[6] == 'restore'
if not restoring and not redis.call('GET', KEYS[5]) then return -4 end
-- The registry outlives a campaign's expired keys, so the binding does too;
-- for its own tenant, loading the script reopens a closed campaign.
local owner = redis.call('HGET', META, 'tenant') or redis.call('HGET', KEYS[3], ARGV[2])
if owner and owner ~= ARGV[1] and not restoring then return -1 end
redis.call('HSET', META, 'tenant', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])

-- Forget the previous graph's derived fields.
local old = redis.call('HGET', META, 'graph')
if old then
  local g = cmsgpack.unpack(old)
  for _, f in ipairs(g[2]) do redis.call('HDEL', META, f) end
  for _, id in ipairs(g[3]) do
    local v = redis.call('HGET', META, 'n:' .. id)
    if v then redis.call('HSET', META, 'n:' .. id, string.sub(v, 1, 2) .. '\0\0\0\0\0') end
  end
end
redis.call('HDEL', META, 'start')

local p = cmsgpack.unpack(ARGV[5])
local ix, ends, succ, pred = {}, {}, {}, {}
for _, id in ipairs(p[1]) do
  local v = redis.call('HGET', META, 'n:' .. id)
  local i = nil
  if v then
    local hi, lo = string.byte(v, 1, 2)
    i = hi * 256 + lo
  end
  if not i then
    i = redis.call('HINCRBY', META, '#n', 1)
    redis.call('HSET', KEYS[4], i, id)
  end
  ix[id] = i
  succ[id], pred[id] = {}, {}
end
for _, id in ipairs(p[3]) do ends[id] = true end
for _, e in ipairs(p[4]) do
  table.insert(succ[e[1]], ix[e[2]])
  table.insert(pred[e[2]], ix[e[1]])
end
local function u16(n) return string.char(math.floor(n / 256), n % 256) end
local function facts(id)
  local out = {u16(ix[id]), ends[id] and '\1' or '\0', u16(#succ[id])}
  for _, x in ipairs(succ[id]) do out[#out + 1] = u16(x) end
  out[#out + 1] = u16(#pred[id])
  for _, x in ipairs(pred[id]) do out[#out + 1] = u16(x) end
  return table.concat(out)
end
for _, id in ipairs(p[1]) do redis.call('HSET', META, 'n:' .. id, facts(id)) end
if p[2] ~= '' then redis.call('HSET', META, 'start', facts(p[2])) end
local derived = {}
for target, src in pairs(p[5]) do
  redis.call('HSET', META, 'pt:' .. target, facts(src))
  derived[#derived + 1] = 'pt:' .. target
end
for key, src in pairs(p[6]) do
  redis.call('HSET', META, 'pl:' .. key, facts(src))
  derived[#derived + 1] = 'pl:' .. key
end
redis.call('HSET', META, 'graph', cmsgpack.pack({ARGV[4], derived, p[1]}), 'script_sha', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3])
if not redis.call('HGET', META, 'dirty') then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('HSET', META, 'dirty', now)
  redis.call('ZADD', KEYS[6], 'NX', now, ARGV[2])
end
return 1
