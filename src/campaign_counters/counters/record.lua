-- Apply one campaign event atomically.
--
-- Per user and campaign there is one hash field holding a record per job the
-- user was seen in (plus a campaign-wide record once a user is in two jobs).
-- A record keeps what the metrics need: flags, earliest timestamps, the nodes
-- reached and the nodes the user continued from.  Counters are the sum over
-- users of each record's contribution, so an event only has to add the
-- difference between the new and the old contribution of the records it
-- changes: exact, O(nodes) and independent of arrival order.
--
-- All reads and checks happen before the first write: Redis does not roll a
-- script back, so a rejected event must leave nothing behind.
--
-- KEYS: 1 meta  2 users  3 job counters  4 campaign counters  5 journal
--       6 idempotency  7 day-any HLL  8 day-sent HLL  9 day-interacted HLL
--       10 dirty index (campaign -> unpersisted changes)  11 registry
-- ARGV: 1 type (t|s|i|x)  2 tenant  3 campaign  4 job  5 user  6 ts (ms)
--       7 has id (0|1)  8 id ttl (s)  9 target  10 choice  11 node  12 title
--       13 status  14 day  15 day ttl (s)  16 journal (0|1)
-- Returns 1 applied, 0 duplicate id, -1 campaign bound to another tenant,
--         -2 too many distinct nodes.

local K_META, K_USERS, K_JOB, K_CAMP = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local etype, tenant, campaign, job, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ts = tonumber(ARGV[6])
local target, choice, node = ARGV[9], ARGV[10], ARGV[11]
local MAX_NODES = 4096
local SEP = '\31'

local m = redis.call('HMGET', K_META, 'tenant', 'graph', 'j:' .. job)
if m[1] and m[1] ~= tenant then
  redis.call('HINCRBY', K_META, 'rejected', 1)
  return -1
end

local g = m[2] and cmsgpack.unpack(m[2]) or nil
-- graph: 1 sha 2 start idx 3 names (idx->id) 4 ix (id->idx) 5 ends (idx->1)
--        6 succ (idx->list) 7 pred (idx->list) 8 unique predecessor
--        9 unique labelled source
local names = g and g[3] or {}
local ix = g and g[4] or {}
local ends = g and g[5] or {}
local succ = g and g[6] or {}
local pred = g and g[7] or {}

-- Resolve node indexes before any write; unknown nodes get one allocated.
local tidx, nidx, node_id
local to_alloc = {}
local function lookup(id)
  local i = ix[id]
  if i then return i end
  i = tonumber(redis.call('HGET', K_META, 'n:' .. id))
  if i then return i end
  to_alloc[#to_alloc + 1] = id
  return nil
end
if etype == 'i' then
  tidx = lookup(target)
  node_id = node
  if node_id == '' and g then
    node_id = g[8][target] or (choice ~= '' and g[9][target .. SEP .. choice]) or ''
  end
  if node_id ~= '' and node_id ~= target then nidx = lookup(node_id) end
  if node_id == target then nidx = tidx end
  if #to_alloc > 0 then
    local used = tonumber(redis.call('HGET', K_META, '#n') or '0')
    if used + #to_alloc > MAX_NODES then return -2 end
  end
end

if ARGV[7] == '1' then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', ARGV[8]) then return 0 end
end

-- From here on: writes.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)

if not m[1] then
  redis.call('HSET', K_META, 'tenant', tenant)
  redis.call('HSET', KEYS[11], campaign, tenant)
end
-- Score: changes not yet persisted; a snapshot subtracts what it saw.
redis.call('ZINCRBY', KEYS[10], 1, campaign)

local function set_status(key)
  local cur = tonumber(redis.call('HGET', key, 'status_ts'))
  if not cur or ts >= cur then
    redis.call('HSET', key, 'status', ARGV[13], 'status_ts', ts, 'updated_at', now)
  else
    redis.call('HSET', key, 'updated_at', now)
  end
end

if etype == 'x' then
  set_status(K_CAMP)
  if job ~= '' then set_status(K_JOB) end
  if ARGV[13] == 'COMPLETED' then redis.call('HSET', K_META, 'completed_at', now) end
  return 1
end

for _, id in ipairs(to_alloc) do
  local i = redis.call('HINCRBY', K_META, '#n', 1)
  redis.call('HSET', K_META, 'n:' .. id, i, 'i:' .. i, id)
  names[i] = id
  if id == target then tidx = i end
  if id == node_id then nidx = i end
end

local ji = tonumber(m[3])
if not ji then
  ji = redis.call('HINCRBY', K_META, '#j', 1)
  redis.call('HSET', K_META, 'j:' .. job, ji, 'jn:' .. ji, job)
end

local function name_of(i)
  local n = names[i]
  if not n then
    n = redis.call('HGET', K_META, 'i:' .. i)
    names[i] = n
  end
  return n
end

-- A record: {job idx, flags, first ts, sent-first, end-first, exit idx,
--            interactions, reached idx list, continued idx list}
-- flags: 1 targeted  2 sent  4 interacted  8 completed.  -1 = absent.
local function decode(r)
  local s = {flags = r[2], first = r[3], sent = -1, fin = -1, exit = r[6], n = r[7], R = {}, K = {}}
  if r[4] >= 0 then s.sent = r[3] + r[4] end
  if r[5] >= 0 then s.fin = r[3] + r[5] end
  for _, i in ipairs(r[8]) do s.R[i] = true end
  for _, i in ipairs(r[9]) do s.K[i] = true end
  return s
end

local function sorted_keys(set)
  local out = {}
  for i in pairs(set) do out[#out + 1] = i end
  table.sort(out)
  return out
end

local function encode(ji_, s)
  return {ji_, s.flags, s.first, s.sent >= 0 and s.sent - s.first or -1,
          s.fin >= 0 and s.fin - s.first or -1, s.exit, s.n, sorted_keys(s.R), sorted_keys(s.K)}
end

local EMPTY = {flags = 0, first = -1, sent = -1, fin = -1, exit = 0, n = 0, R = {}, K = {}}

local start = g and g[2] or 0
local is_end = tidx and ends[tidx] ~= nil

local function apply(o)
  local s = {flags = o.flags, first = o.first, sent = o.sent, fin = o.fin, exit = o.exit, n = o.n, R = {}, K = {}}
  for i in pairs(o.R) do s.R[i] = true end
  s.flags = bit.bor(s.flags, 1)
  if s.first < 0 or ts < s.first then s.first = ts end
  if etype == 's' then
    s.flags = bit.bor(s.flags, 2)
    if s.sent < 0 or ts < s.sent then s.sent = ts end
    if start > 0 then s.R[start] = true end
  elseif etype == 'i' then
    s.flags = bit.bor(s.flags, 4)
    s.n = s.n + 1
    s.R[tidx] = true
    if nidx then s.R[nidx] = true end
    if is_end then
      s.flags = bit.bor(s.flags, 8)
      if s.fin < 0 or ts < s.fin or (ts == s.fin and target < name_of(s.exit)) then
        s.fin = ts
        s.exit = tidx
      end
    end
  end
  for i in pairs(s.R) do
    local out = succ[i]
    if out then
      for _, j in ipairs(out) do
        if s.R[j] then s.K[i] = true; break end
      end
    end
  end
  return s
end

-- What one record adds to its scope's counters.
local function contribution(s)
  local c = {}
  if bit.band(s.flags, 1) ~= 0 then c.target = 1 end
  if bit.band(s.flags, 2) ~= 0 then c.sent = 1 end
  if bit.band(s.flags, 4) ~= 0 then c.interacted = 1 end
  if bit.band(s.flags, 8) ~= 0 then
    c.completed = 1
    local base = s.sent >= 0 and s.sent or s.first
    c.ct_ms = s.fin - base
  end
  for i in pairs(s.R) do c['r:' .. name_of(i)] = 1 end
  for i in pairs(s.K) do c['k:' .. name_of(i)] = 1 end
  return c
end

local function add_delta(key, old, new)
  local a, b = contribution(old), contribution(new)
  for f, v in pairs(b) do
    local d = v - (a[f] or 0)
    if d ~= 0 then redis.call('HINCRBY', key, f, d) end
  end
  for f, v in pairs(a) do
    if b[f] == nil then redis.call('HINCRBY', key, f, -v) end
  end
  if etype == 'i' then
    redis.call('HINCRBY', key, 'interactions', 1)
    if choice ~= '' and nidx then
      redis.call('HINCRBY', key, 'ch:' .. name_of(nidx) .. SEP .. choice, 1)
    end
  end
  redis.call('HSET', key, 'updated_at', now)
end

-- Load the user's records.
local raw = redis.call('HGET', K_USERS, user)
local recs = raw and cmsgpack.unpack(raw) or {}
local job_old, camp_old, others = nil, nil, {}
for _, r in ipairs(recs) do
  if r[1] == ji then job_old = decode(r)
  elseif r[1] == 0 then camp_old = decode(r)
  else others[#others + 1] = r end
end
if not camp_old then
  -- With at most one job the campaign record is that job's record.
  if #others == 1 then camp_old = decode(others[1]) else camp_old = job_old or EMPTY end
end
job_old = job_old or EMPTY

local job_new = apply(job_old)
add_delta(K_JOB, job_old, job_new)
local out
if #others == 0 then
  add_delta(K_CAMP, job_old, job_new)
  out = {encode(ji, job_new)}
else
  local camp_new = apply(camp_old)
  add_delta(K_CAMP, camp_old, camp_new)
  out = others
  out[#out + 1] = encode(ji, job_new)
  out[#out + 1] = encode(0, camp_new)
end
redis.call('HSET', K_USERS, user, cmsgpack.pack(out))

if etype == 'i' then redis.call('HINCRBY', K_CAMP, 'i:' .. ARGV[14], 1) end
-- The journal lists every user event: interactions make journeys, and every
-- entry tells the snapshot which users' summaries changed.
if ARGV[16] == '1' then
  redis.call('XADD', KEYS[5], '*', 'e', cmsgpack.pack({user, ts, etype, target, choice, node_id or '', ARGV[12]}))
end

local day_ttl = ARGV[15]
local function hll(key)
  if redis.call('PFADD', key, user) == 1 and redis.call('TTL', key) < 0 then
    redis.call('EXPIRE', key, day_ttl)
  end
end
hll(KEYS[7])
if etype == 's' then hll(KEYS[8]) end
if etype == 'i' then hll(KEYS[9]) end
return 1
