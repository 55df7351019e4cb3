-- Apply one campaign event atomically.
--
-- Per user and campaign there is one hash field holding a record per job the
-- user was seen in (plus a campaign-wide record once a user is in two jobs).
-- A record keeps what the metrics need: flags, earliest timestamps, the nodes
-- reached and the nodes the user went on from.  Counters are the sum over
-- users of what their records contribute, so an event adds exactly the
-- change it made to one record: exact, O(nodes), independent of arrival order.
--
-- The script reads graph facts of the few nodes an event touches from the
-- meta hash (written by load_script.lua), never the whole graph.
--
-- All reads and checks happen before the first write: Redis does not roll a
-- script back, so a rejected event must leave nothing behind.
--
-- KEYS: 1 meta  2 users  3 job counters  4 campaign counters  5 journal
--       6 idempotency  7 day-any HLL  8 day-sent HLL  9 day-interacted HLL
--       10 dirty index (campaign -> unpersisted changes)  11 registry  12 names
-- Job counters hold a job's metrics; the last change of a job is its journal's
-- last id, so the hot path writes no timestamps.
-- ARGV: 1 type (t|s|i|x)  2 tenant  3 campaign  4 job  5 user  6 ts (ms)
--       7 has id (0|1)  8 id ttl (s)  9 target  10 choice  11 node  12 title
--       13 status  14 day  15 (unused)  16 journal (0|1)
-- Returns 1 applied, 0 duplicate id, -1 campaign bound to another tenant,
--         -2 too many distinct nodes.

local K_META, K_USERS, K_JOB, K_CAMP = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local etype, tenant, campaign, job, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ts = tonumber(ARGV[6])
local target, choice, node = ARGV[9], ARGV[10], ARGV[11]
local MAX_NODES = 4096
local SEP = '\31'

-- Node facts: "idx|end(0/1)|successor idxs|predecessor idxs".
local function facts(v)
  if not v then return nil end
  local idx, fin, succ, pred = string.match(v, '^(%d+)|(%d)|([%d,]*)|([%d,]*)$')
  return {idx = tonumber(idx), fin = fin == '1', succ = succ, pred = pred}
end

local m
if etype == 'i' then
  m = redis.call('HMGET', K_META, 'tenant', 'j:' .. job, 'start', 'n:' .. target,
    node ~= '' and 'n:' .. node or 'n:', 'pt:' .. target, 'pl:' .. target .. SEP .. choice, '#n')
else
  m = redis.call('HMGET', K_META, 'tenant', 'j:' .. job, 'start')
end
if m[1] and m[1] ~= tenant then
  redis.call('HINCRBY', K_META, 'rejected', 1)
  return -1
end

local tf, nf, new_nodes = nil, nil, 0
if etype == 'i' then
  tf = facts(m[4])
  if not tf then new_nodes = 1 end
  if node ~= '' then
    if node == target then nf = tf else
      nf = facts(m[5])
      if not nf then new_nodes = new_nodes + 1 end
    end
  else
    nf = facts(m[6]) or (choice ~= '' and facts(m[7])) or nil
  end
  if new_nodes > 0 and tonumber(m[8] or '0') + new_nodes > MAX_NODES then return -2 end
end

if ARGV[7] == '1' then
  if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', ARGV[8]) then return 0 end
end

-- From here on: writes.

if not m[1] then
  redis.call('HSET', K_META, 'tenant', tenant)
  redis.call('HSET', KEYS[11], campaign, tenant)
end
-- Score: changes not yet persisted; a snapshot subtracts what it saw.
redis.call('ZINCRBY', KEYS[10], 1, campaign)

local function set_status(key, now)
  local cur = tonumber(redis.call('HGET', key, 'status_ts'))
  if not cur or ts >= cur then
    redis.call('HSET', key, 'status', ARGV[13], 'status_ts', ts, 'updated_at', now)
  else
    redis.call('HSET', key, 'updated_at', now)
  end
end

if etype == 'x' then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  set_status(K_CAMP, now)
  if job ~= '' then set_status(K_JOB, now) end
  if ARGV[13] == 'COMPLETED' then redis.call('HSET', K_META, 'completed_at', now) end
  return 1
end

local function allocate(id)
  local i = redis.call('HINCRBY', K_META, '#n', 1)
  local f = i .. '|0||'
  redis.call('HSET', K_META, 'n:' .. id, f)
  redis.call('HSET', KEYS[12], i, id)
  return facts(f)
end
if etype == 'i' then
  if not tf then tf = allocate(target) end
  if node ~= '' and not nf then nf = node == target and tf or allocate(node) end
end

local ji = tonumber(m[2])
if not ji then
  ji = redis.call('HINCRBY', K_META, '#j', 1)
  redis.call('HSET', K_META, 'j:' .. job, ji)
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

local function empty()
  return {flags = 0, first = -1, sent = -1, fin = -1, exit = 0, n = 0, R = {}, K = {}}
end

local start = facts(m[3])

local function name_of(i)
  return redis.call('HGET', KEYS[12], i) or ''
end

local function completion(s)
  if bit.band(s.flags, 8) == 0 then return nil end
  return s.fin - (s.sent >= 0 and s.sent or s.first)
end

-- Apply the event to a record in place; return the counter changes it makes.
local function apply(s)
  local d = {}
  local before = completion(s)
  local function flag(b, field)
    if bit.band(s.flags, b) == 0 then
      s.flags = bit.bor(s.flags, b)
      d[field] = 1
    end
  end
  local function continued(i)
    if not s.K[i] then
      s.K[i] = true
      d['k:' .. i] = 1
    end
  end
  local function reach(f)
    if s.R[f.idx] then return end
    s.R[f.idx] = true
    d['r:' .. f.idx] = 1
    for x in string.gmatch(f.succ, '%d+') do
      if s.R[tonumber(x)] then continued(f.idx) break end
    end
    for x in string.gmatch(f.pred, '%d+') do
      local p = tonumber(x)
      if s.R[p] then continued(p) end
    end
  end
  flag(1, 'target')
  if s.first < 0 or ts < s.first then s.first = ts end
  if etype == 's' then
    flag(2, 'sent')
    if s.sent < 0 or ts < s.sent then s.sent = ts end
    if start then reach(start) end
  elseif etype == 'i' then
    flag(4, 'interacted')
    s.n = s.n + 1
    d.interactions = 1
    reach(tf)
    if nf then
      reach(nf)
      if choice ~= '' then d['ch:' .. nf.idx .. SEP .. choice] = 1 end
    end
    if tf.fin then
      flag(8, 'completed')
      if s.fin < 0 or ts < s.fin or (ts == s.fin and tf.idx ~= s.exit and target < name_of(s.exit)) then
        s.fin = ts
        s.exit = tf.idx
      end
    end
  end
  local after = completion(s)
  if after and after ~= (before or 0) then d.ct_ms = after - (before or 0) end
  return d
end

-- Campaign totals are the sum of the job counters plus the campaign hash,
-- which holds only corrections for users seen in several jobs: most events
-- then write one counters hash, not two.
local function add(key, d)
  for f, v in pairs(d) do redis.call('HINCRBY', key, f, v) end
end

-- Load the user's records.
local raw = redis.call('HGET', K_USERS, user)
local recs = raw and cmsgpack.unpack(raw) or {}
local job_s, camp_s, others = nil, nil, {}
for _, r in ipairs(recs) do
  if r[1] == ji then job_s = decode(r)
  elseif r[1] == 0 then camp_s = decode(r)
  else others[#others + 1] = r end
end

local out
job_s = job_s or empty()
if #others == 0 then
  -- Only this job so far: the campaign record is the job's record.
  add(K_JOB, apply(job_s))
  out = {encode(ji, job_s)}
else
  -- A user seen in exactly one other job so far: that job's record is the
  -- campaign record (from the second job on, record 0 is stored).
  if not camp_s then camp_s = decode(others[1]) end
  local dj, dc = apply(job_s), apply(camp_s)
  add(K_JOB, dj)
  local fix = {}
  for f, v in pairs(dc) do
    if v ~= (dj[f] or 0) then fix[f] = v - (dj[f] or 0) end
  end
  for f, v in pairs(dj) do
    if dc[f] == nil then fix[f] = -v end
  end
  add(K_CAMP, fix)
  out = others
  out[#out + 1] = encode(ji, job_s)
  out[#out + 1] = encode(0, camp_s)
end
redis.call('HSET', K_USERS, user, cmsgpack.pack(out))

if etype == 'i' then redis.call('HINCRBY', K_CAMP, 'i:' .. ARGV[14], 1) end
-- The journal lists every user event: interactions make journeys, and every
-- entry tells the snapshot which users' summaries changed.
if ARGV[16] == '1' then
  redis.call('XADD', KEYS[5], '*', 'e', cmsgpack.pack({user, ts, etype, target, choice, nf and nf.idx or 0, ARGV[12]}))
end

-- Day HLLs; the client gives each a TTL once (EXPIRE after its first batch).
redis.call('PFADD', KEYS[7], user)
if etype == 's' then redis.call('PFADD', KEYS[8], user) end
if etype == 'i' then redis.call('PFADD', KEYS[9], user) end
return 1
