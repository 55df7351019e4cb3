-- Apply a batch of events of one campaign atomically, in order.
--
-- Per user and campaign there is one hash field holding a record per job the
-- user was seen in (plus a campaign-wide record once a user is in two jobs).
-- A record keeps what the metrics need: flags, earliest timestamps, the nodes
-- reached and the nodes the user went on from.  Counters are the sum over
-- users of what their records contribute, so an event adds exactly the
-- change it made to one record: exact, O(nodes), independent of arrival order.
--
-- Campaign totals are the sum of the job counters plus the campaign hash,
-- which only holds corrections for users seen in several jobs (and per-day
-- interaction counts and the status).  The last change of a job is its
-- journal's last id, so the hot path writes no timestamps.
--
-- A batch shares its reads (graph facts, job indexes, user records) and its
-- writes (counter increments, HyperLogLog adds, user records are flushed once
-- at the end): one call of 1,000 events costs far less than 1,000 calls.
-- The chat service's single event is a batch of one.
--
-- Checks come before writes for every event, and no command below can fail
-- on well-formed keys, so an event is applied whole or not at all.
--
-- KEYS: 1 meta  2 users  3 campaign counters  4 dirty index  5 registry
--       6 names  then the keys events refer to by position: job counters
--       (journal right after), day HLLs (any, sent, interacted, then the
--       tenant's users of the day, across campaigns), id marks.
-- ARGV: 1 campaign  2 id ttl (s)  3 journal (0|1)  4 number of events, then
--       per event 14 values: type (t|s|i|x), tenant, job, user, ts (ms),
--       target, choice, node, title, status, day, job key #, day key #,
--       id key # (0: no id).
-- Returns one code per event: 1 applied, 0 duplicate id, -1 campaign bound
-- to another tenant, -2 too many distinct nodes.

local K_META, K_USERS, K_CAMP, K_DIRTY, K_REG, K_NAMES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local campaign, id_ttl, journal, n = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
local FIELDS, MAX_NODES, SEP = 14, 4096, '\31'

-- Meta fields read once per batch.
local meta_cache = {}
local function meta(field)
  local v = meta_cache[field]
  if v == nil then
    v = redis.call('HGET', K_META, field) or false
    meta_cache[field] = v
  end
  return v
end

-- Node facts: "idx|end(0/1)|successor idxs|predecessor idxs".
local facts_cache = {}
local function facts(v)
  if not v then return nil end
  local f = facts_cache[v]
  if not f then
    local idx, fin, succ, pred = string.match(v, '^(%d+)|(%d)|([%d,]*)|([%d,]*)$')
    f = {idx = tonumber(idx), fin = fin == '1', succ = succ, pred = pred}
    facts_cache[v] = f
  end
  return f
end

-- Accumulated writes, flushed at the end.
local incr, hll, user_recs, order = {}, {}, {}, {}
local function add(key, d)
  local acc = incr[key]
  if not acc then acc = {}; incr[key] = acc end
  for f, v in pairs(d) do acc[f] = (acc[f] or 0) + v end
end
local function hll_add(key, user)
  local set = hll[key]
  if not set then set = {}; hll[key] = set end
  set[user] = true
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

local function encode(ji, s)
  return {ji, s.flags, s.first, s.sent >= 0 and s.sent - s.first or -1,
          s.fin >= 0 and s.fin - s.first or -1, s.exit, s.n, sorted_keys(s.R), sorted_keys(s.K)}
end

local function empty()
  return {flags = 0, first = -1, sent = -1, fin = -1, exit = 0, n = 0, R = {}, K = {}}
end

-- A user's records: {ji -> state}, decoded once per batch.
local function records(user)
  local u = user_recs[user]
  if not u then
    u = {}
    local raw = redis.call('HGET', K_USERS, user)
    if raw then
      for _, r in ipairs(cmsgpack.unpack(raw)) do u[r[1]] = decode(r) end
    end
    user_recs[user] = u
    order[#order + 1] = user
  end
  return u
end

local function name_of(i)
  return redis.call('HGET', K_NAMES, i) or ''
end

local function completion(s)
  if bit.band(s.flags, 8) == 0 then return nil end
  return s.fin - (s.sent >= 0 and s.sent or s.first)
end

-- Apply one event to a record in place; return the counter changes it makes.
local function apply(s, ev)
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
  local ts = ev.ts
  flag(1, 'target')
  if s.first < 0 or ts < s.first then s.first = ts end
  if ev.type == 's' then
    flag(2, 'sent')
    if s.sent < 0 or ts < s.sent then s.sent = ts end
    if ev.start then reach(ev.start) end
  elseif ev.type == 'i' then
    flag(4, 'interacted')
    s.n = s.n + 1
    d.interactions = 1
    reach(ev.tf)
    if ev.nf then
      reach(ev.nf)
      if ev.choice ~= '' then d['ch:' .. ev.nf.idx .. SEP .. ev.choice] = 1 end
    end
    if ev.tf.fin then
      flag(8, 'completed')
      if s.fin < 0 or ts < s.fin or (ts == s.fin and ev.tf.idx ~= s.exit and ev.target < name_of(s.exit)) then
        s.fin = ts
        s.exit = ev.tf.idx
      end
    end
  end
  local after = completion(s)
  if after and after ~= (before or 0) then d.ct_ms = after - (before or 0) end
  return d
end

local function copy(s)
  local c = {flags = s.flags, first = s.first, sent = s.sent, fin = s.fin, exit = s.exit, n = s.n, R = {}, K = {}}
  for i in pairs(s.R) do c.R[i] = true end
  for i in pairs(s.K) do c.K[i] = true end
  return c
end

-- Apply a user event to the user's records and queue the counter changes.
local function apply_user_event(ev, ji, job_key)
  local u = records(ev.user)
  local jobs = 0
  for j in pairs(u) do
    if j ~= 0 and j ~= ji then jobs = jobs + 1 end
  end
  local job_s = u[ji] or empty()
  u[ji] = job_s
  if jobs == 0 then
    -- Only this job so far: the campaign record is the job's record.
    add(job_key, apply(job_s, ev))
    return
  end
  local camp_s = u[0]
  if not camp_s then
    -- The user's first event in a second job: the other job's record is
    -- the campaign record until now.
    for j, s in pairs(u) do
      if j ~= 0 and j ~= ji then camp_s = copy(s) end
    end
    u[0] = camp_s
  end
  local dj, dc = apply(job_s, ev), apply(camp_s, ev)
  add(job_key, dj)
  local fix = {}
  for f, v in pairs(dc) do
    if v ~= (dj[f] or 0) then fix[f] = v - (dj[f] or 0) end
  end
  for f, v in pairs(dj) do
    if dc[f] == nil then fix[f] = -v end
  end
  add(K_CAMP, fix)
end

local function set_status(key, status, ts)
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local cur = tonumber(redis.call('HGET', key, 'status_ts'))
  if not cur or ts >= cur then
    redis.call('HSET', key, 'status', status, 'status_ts', ts, 'updated_at', now)
  else
    redis.call('HSET', key, 'updated_at', now)
  end
  return now
end

local function allocate(id)
  local i = redis.call('HINCRBY', K_META, '#n', 1)
  local v = i .. '|0||'
  redis.call('HSET', K_META, 'n:' .. id, v)
  redis.call('HSET', K_NAMES, i, id)
  meta_cache['n:' .. id] = v
  meta_cache['#n'] = tostring(i)
  return facts(v)
end

local codes, applied, rejected = {}, 0, 0
local owner = meta('tenant')
for e = 0, n - 1 do
  local b = 4 + e * FIELDS
  local ev = {type = ARGV[b + 1], tenant = ARGV[b + 2], job = ARGV[b + 3], user = ARGV[b + 4],
              ts = tonumber(ARGV[b + 5]), target = ARGV[b + 6], choice = ARGV[b + 7], node = ARGV[b + 8]}
  local code = 1
  if owner and owner ~= ev.tenant then
    code = -1
  elseif ev.type == 'i' then
    -- Resolve the nodes before any write; count nodes still to allocate.
    local fresh = 0
    ev.tf = facts(meta('n:' .. ev.target))
    if not ev.tf then fresh = 1 end
    if ev.node ~= '' then
      if ev.node == ev.target then ev.nf = ev.tf else
        ev.nf = facts(meta('n:' .. ev.node))
        if not ev.nf then fresh = fresh + 1 end
      end
    else
      ev.nf = facts(meta('pt:' .. ev.target)) or
              (ev.choice ~= '' and facts(meta('pl:' .. ev.target .. SEP .. ev.choice))) or nil
    end
    if fresh > 0 and tonumber(meta('#n') or '0') + fresh > MAX_NODES then code = -2 end
  end
  local idem = tonumber(ARGV[b + 14])
  if code == 1 and idem > 0 and not redis.call('SET', KEYS[idem], '1', 'NX', 'EX', id_ttl) then code = 0 end
  if code == 1 then
    applied = applied + 1
    if not owner then
      redis.call('HSET', K_META, 'tenant', ev.tenant)
      redis.call('HSET', K_REG, campaign, ev.tenant)
      owner = ev.tenant
    end
    local job_key = KEYS[tonumber(ARGV[b + 12])]
    if ev.type == 'x' then
      local now = set_status(K_CAMP, ARGV[b + 10], ev.ts)
      if ev.job ~= '' then set_status(job_key, ARGV[b + 10], ev.ts) end
      if ARGV[b + 10] == 'COMPLETED' then redis.call('HSET', K_META, 'completed_at', now) end
    else
      if ev.type == 'i' then
        if not ev.tf then ev.tf = allocate(ev.target) end
        if ev.node ~= '' and not ev.nf then ev.nf = ev.node == ev.target and ev.tf or allocate(ev.node) end
      end
      ev.start = ev.type == 's' and facts(meta('start')) or nil
      local ji = tonumber(meta('j:' .. ev.job))
      if not ji then
        ji = redis.call('HINCRBY', K_META, '#j', 1)
        redis.call('HSET', K_META, 'j:' .. ev.job, ji)
        meta_cache['j:' .. ev.job] = tostring(ji)
      end
      apply_user_event(ev, ji, job_key)
      -- The journal lists every user event: interactions make journeys, and
      -- every entry tells the snapshot whose summaries changed.
      if journal then
        redis.call('XADD', KEYS[tonumber(ARGV[b + 12]) + 1], '*', 'e',
          cmsgpack.pack({ev.user, ev.ts, ev.type, ev.target, ev.choice, ev.nf and ev.nf.idx or 0, ARGV[b + 9]}))
      end
      local day = tonumber(ARGV[b + 13])
      hll_add(KEYS[day], ev.user)
      hll_add(KEYS[day + 3], ev.user)
      if ev.type == 's' then hll_add(KEYS[day + 1], ev.user) end
      if ev.type == 'i' then
        hll_add(KEYS[day + 2], ev.user)
        add(K_CAMP, {['i:' .. ARGV[b + 11]] = 1})
      end
    end
  elseif code < 0 then
    rejected = rejected + 1
  end
  codes[#codes + 1] = code
end

-- Flush: user records in one HSET, counter increments, HyperLogLog adds.
local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local pairs_out = {}
for _, user in ipairs(order) do
  local recs = {}
  for j, s in pairs(user_recs[user]) do recs[#recs + 1] = encode(j, s) end
  if #recs > 0 then
    table.sort(recs, function(a, b) return a[1] < b[1] end)
    pairs_out[#pairs_out + 1] = user
    pairs_out[#pairs_out + 1] = cmsgpack.pack(recs)
  end
end
if #pairs_out > 0 then chunked('HSET', K_USERS, pairs_out) end
for key, acc in pairs(incr) do
  for f, v in pairs(acc) do
    if v ~= 0 then redis.call('HINCRBY', key, f, v) end
  end
end
for key, set in pairs(hll) do chunked('PFADD', key, sorted_keys(set)) end
-- Score of the dirty index: changes not yet persisted; a snapshot subtracts what it saw.
if applied > 0 then redis.call('ZINCRBY', K_DIRTY, applied, campaign) end
if rejected > 0 then redis.call('HINCRBY', K_META, 'rejected', rejected) end
return codes
