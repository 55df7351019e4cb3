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
-- writes (counter increments, HyperLogLog adds, user records, one journal
-- entry per job are flushed once at the end): one call of 500 events costs
-- far less than 500 calls.  The chat service's single event is a batch of one.
-- Redis calls dominate the cost of a script, so the per-event work is plain
-- Lua on locals: no closures, no per-event tables beyond what is stored.
--
-- Checks come before writes for every event, and no command below can fail
-- on well-formed keys, so an event is applied whole or not at all.
--
-- KEYS: 1 meta  2 users  3 campaign counters  4 dirty index  5 registry
--       6 names  7 rejected-events index
--       then the keys events refer to by position: job counters
--       (journal right after), day HLLs (any, sent, interacted, then the
--       tenant's users of the day, across campaigns), id marks.
-- ARGV: 1 campaign  2 id ttl (s)  3 journal (0|1)  4 the events: a msgpack
--       array of 14 values per event: type (t|s|i|x), tenant, job, user,
--       ts (ms), target, choice, node, title, status, day, job key #,
--       day key #, id key # (0: no id).  One blob instead of 14 arguments
--       per event spares Redis an object per argument and Lua a tonumber.
-- Journal entries: field 'b', a msgpack array of JOURNAL_WIDTH values per
--       event: user, ts, type, target, choice, choice node index (0: none), title.
-- Returns one code per event: 1 applied, 0 duplicate id, -1 campaign bound
-- to another tenant, -2 too many distinct nodes, -3 campaign closed: it
-- completed and its keys expired (the registry still binds it to its
-- tenant); starting it again from zero would overwrite its persisted
-- reports, so only loading its script again reopens it.

local K_META, K_USERS, K_CAMP, K_DIRTY, K_REG, K_NAMES, K_REJ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local campaign, id_ttl, journal = ARGV[1], ARGV[2], ARGV[3] == '1'
local E = cmsgpack.unpack(ARGV[4])
local FIELDS, MAX_NODES, SEP = 14, 4096, '\31'
local band, bor = bit.band, bit.bor

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

-- Node facts "idx|end(0/1)|successor idxs|predecessor idxs", parsed once per
-- batch into index arrays and the counter field names of the node.
local facts_cache, kname = {}, {}
local function facts(v)
  if not v then return nil end
  local f = facts_cache[v]
  if not f then
    local idx, fin, succ, pred = string.match(v, '^(%d+)|(%d)|([%d,]*)|([%d,]*)$')
    local S, P = {}, {}
    for x in string.gmatch(succ, '%d+') do S[#S + 1] = tonumber(x) end
    for x in string.gmatch(pred, '%d+') do P[#P + 1] = tonumber(x) end
    idx = tonumber(idx)
    f = {idx = idx, fin = fin == '1', succ = S, pred = P, rf = 'r:' .. idx}
    facts_cache[v] = f
  end
  return f
end
local function kfield(i)
  local k = kname[i]
  if not k then k = 'k:' .. i; kname[i] = k end
  return k
end
local chname = {}
local function choice_field(i, choice)
  local names = chname[i]
  if not names then names = {}; chname[i] = names end
  local f = names[choice]
  if not f then f = 'ch:' .. i .. SEP .. choice; names[choice] = f end
  return f
end
local dayname = {}
local function day_field(day)
  local f = dayname[day]
  if not f then f = 'i:' .. day; dayname[day] = f end
  return f
end

-- Accumulated writes, flushed at the end.
local incr, hll, jr, user_recs, order = {}, {}, {}, {}, {}
local function acc(key)
  local a = incr[key]
  if not a then a = {}; incr[key] = a end
  return a
end
local function hll_add(key, user)
  local set = hll[key]
  if not set then set = {}; hll[key] = set end
  set[user] = true
end

-- Add v to field f of accumulator A, and subtract it from B (when given):
-- how a job's change is taken back out of the campaign's corrections.
local function bump(A, B, f, v)
  A[f] = (A[f] or 0) + v
  if B then B[f] = (B[f] or 0) - v end
end

-- A record: {job idx, flags, first ts, sent-first, end-first, exit idx,
--            interactions, reached idx list, continued idx list}
-- flags: 1 targeted  2 sent  4 interacted  8 completed.  -1 = absent.
-- The idx lists are short and kept sorted, so they are used as they are
-- stored: a linear search beats building a set per user.
local function decode(r)
  local s = {flags = r[2], first = r[3], sent = -1, fin = -1, exit = r[6], n = r[7], R = r[8], K = r[9]}
  if r[4] >= 0 then s.sent = r[3] + r[4] end
  if r[5] >= 0 then s.fin = r[3] + r[5] end
  return s
end

local function encode(ji, s)
  return {ji, s.flags, s.first, s.sent >= 0 and s.sent - s.first or -1,
          s.fin >= 0 and s.fin - s.first or -1, s.exit, s.n, s.R, s.K}
end

local function empty()
  return {flags = 0, first = -1, sent = -1, fin = -1, exit = 0, n = 0, R = {}, K = {}}
end

local function has(list, x)
  for i = 1, #list do
    if list[i] == x then return true end
  end
  return false
end

-- Insert x (absent) into a sorted list.
local function put(list, x)
  local i = #list
  while i > 0 and list[i] > x do
    list[i + 1] = list[i]
    i = i - 1
  end
  list[i + 1] = x
end

local function keys_of(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  return out
end

-- A user's records: {ji -> state}, decoded once per batch.
local function records(user)
  local u = user_recs[user]
  if not u then
    u = {}
    local raw = redis.call('HGET', K_USERS, user)
    if raw then
      local recs = cmsgpack.unpack(raw)
      for i = 1, #recs do u[recs[i][1]] = decode(recs[i]) end
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
  if band(s.flags, 8) == 0 then return nil end
  return s.fin - (s.sent >= 0 and s.sent or s.first)
end

local function flag(s, b, field, A, B)
  if band(s.flags, b) == 0 then
    s.flags = bor(s.flags, b)
    bump(A, B, field, 1)
  end
end

local function continued(s, i, A, B)
  if not has(s.K, i) then
    put(s.K, i)
    bump(A, B, kfield(i), 1)
  end
end

-- The user reached node f: count it, and note the nodes it went on from.
local function reach(s, f, A, B)
  local R, idx = s.R, f.idx
  if has(R, idx) then return end
  put(R, idx)
  bump(A, B, f.rf, 1)
  local S, P = f.succ, f.pred
  for i = 1, #S do
    if has(R, S[i]) then continued(s, idx, A, B) break end
  end
  for i = 1, #P do
    if has(R, P[i]) then continued(s, P[i], A, B) end
  end
end

-- Apply one event to a record in place, adding the counter changes it makes
-- to A (and taking them out of B).  tf/nf: facts of the target and choice node.
local function apply(s, etype, ts, tf, nf, choice, target, start, A, B)
  local before = completion(s)
  flag(s, 1, 'target', A, B)
  if s.first < 0 or ts < s.first then s.first = ts end
  if etype == 's' then
    flag(s, 2, 'sent', A, B)
    if s.sent < 0 or ts < s.sent then s.sent = ts end
    if start then reach(s, start, A, B) end
  elseif etype == 'i' then
    flag(s, 4, 'interacted', A, B)
    s.n = s.n + 1
    bump(A, B, 'interactions', 1)
    reach(s, tf, A, B)
    if nf then
      reach(s, nf, A, B)
      if choice ~= '' then bump(A, B, choice_field(nf.idx, choice), 1) end
    end
    if tf.fin then
      flag(s, 8, 'completed', A, B)
      if s.fin < 0 or ts < s.fin or (ts == s.fin and tf.idx ~= s.exit and target < name_of(s.exit)) then
        s.fin = ts
        s.exit = tf.idx
      end
    end
  end
  local after = completion(s)
  if after and after ~= (before or 0) then bump(A, B, 'ct_ms', after - (before or 0)) end
end

local function copy(s)
  local c = {flags = s.flags, first = s.first, sent = s.sent, fin = s.fin, exit = s.exit, n = s.n, R = {}, K = {}}
  for i = 1, #s.R do c.R[i] = s.R[i] end
  for i = 1, #s.K do c.K[i] = s.K[i] end
  return c
end

-- Apply a user event to the user's records and accumulate the counter changes.
local function apply_user_event(user, ji, A_job, etype, ts, tf, nf, choice, target, start)
  local u = records(user)
  local other = nil
  for j in pairs(u) do
    if j ~= 0 and j ~= ji then other = j break end
  end
  local job_s = u[ji]
  if not job_s then job_s = empty(); u[ji] = job_s end
  if not other then
    -- Only this job so far: the campaign record is the job's record.
    apply(job_s, etype, ts, tf, nf, choice, target, start, A_job, nil)
    return
  end
  local camp_s = u[0]
  if not camp_s then
    -- The user's first event in a second job: the other job's record is
    -- the campaign record until now.
    camp_s = copy(u[other])
    u[0] = camp_s
  end
  -- Campaign corrections = the campaign record's change - the job's change.
  local A_camp = acc(K_CAMP)
  apply(job_s, etype, ts, tf, nf, choice, target, start, A_job, A_camp)
  apply(camp_s, etype, ts, tf, nf, choice, target, start, A_camp, nil)
end

-- Returns the time of the change and whether the status is now the latest.
local function set_status(key, status, ts)
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  local cur = tonumber(redis.call('HGET', key, 'status_ts'))
  if not cur or ts >= cur then
    redis.call('HSET', key, 'status', status, 'status_ts', ts, 'updated_at', now)
    return now, true
  end
  redis.call('HSET', key, 'updated_at', now)
  return now, false
end

-- Per-batch caches of what events look up by name: node facts by node id,
-- the node a choice was made at by (target, choice), job indexes by job id.
local by_node, by_choice, job_index = {}, {}, {}
local function node_facts(id)
  local f = by_node[id]
  if f == nil then
    f = facts(meta('n:' .. id)) or false
    by_node[id] = f
  end
  return f or nil
end

-- The script's only node with an edge into target, else the only one whose
-- edge into target is labelled with the choice (DESIGN 3.3).
local function choice_node(target, choice)
  local t = by_choice[target]
  if not t then
    t = {[''] = facts(meta('pt:' .. target)) or false}
    by_choice[target] = t
  end
  local f = t[choice]
  if f == nil then
    f = t[''] or facts(meta('pl:' .. target .. SEP .. choice)) or false
    t[choice] = f
  end
  return f or nil
end

local function allocate(id)
  local i = redis.call('HINCRBY', K_META, '#n', 1)
  local v = i .. '|0||'
  redis.call('HSET', K_META, 'n:' .. id, v)
  redis.call('HSET', K_NAMES, i, id)
  meta_cache['#n'] = tostring(i)
  by_node[id] = facts(v)
  return by_node[id]
end

local codes, applied, rejected = {}, 0, 0
local owner = meta('tenant')
local closed = false
if not owner then
  owner = redis.call('HGET', K_REG, campaign)
  closed = owner ~= false
end
local start_facts = nil
for b = 0, #E - 1, FIELDS do
  local etype, tenant, user, target, choice, node = E[b + 1], E[b + 2], E[b + 4], E[b + 6], E[b + 7], E[b + 8]
  local ts = E[b + 5]
  local tf, nf = nil, nil
  local code = 1
  if owner and owner ~= tenant then
    code = -1
  elseif closed then
    code = -3
  elseif etype == 'i' then
    -- Resolve the nodes before any write; count nodes still to allocate.
    local fresh = 0
    tf = node_facts(target)
    if not tf then fresh = 1 end
    if node ~= '' then
      if node == target then nf = tf else
        nf = node_facts(node)
        if not nf then fresh = fresh + 1 end
      end
    else
      nf = choice_node(target, choice)
    end
    if fresh > 0 and tonumber(meta('#n') or '0') + fresh > MAX_NODES then code = -2 end
  end
  local idem = E[b + 14]
  if code == 1 and idem > 0 and not redis.call('SET', KEYS[idem], '1', 'NX', 'EX', id_ttl) then code = 0 end
  if code == 1 then
    applied = applied + 1
    if not owner then
      redis.call('HSET', K_META, 'tenant', tenant)
      redis.call('HSET', K_REG, campaign, tenant)
      owner = tenant
    end
    local job, jref = E[b + 3], E[b + 12]
    if etype == 'x' then
      local status = E[b + 10]
      local now, latest = set_status(K_CAMP, status, ts)
      if job ~= '' then set_status(KEYS[jref], status, ts) end
      -- Only a campaign whose latest status is COMPLETED gets its keys expired.
      if latest and status == 'COMPLETED' then
        redis.call('HSET', K_META, 'completed_at', now)
      elseif latest then
        redis.call('HDEL', K_META, 'completed_at')
      end
    else
      if etype == 'i' then
        if not tf then tf = allocate(target) end
        if node ~= '' and not nf then nf = node == target and tf or allocate(node) end
      end
      local start = nil
      if etype == 's' then
        start_facts = start_facts or facts(meta('start')) or false
        start = start_facts or nil
      end
      local ji = job_index[job]
      if not ji then
        ji = tonumber(meta('j:' .. job))
        if not ji then
          ji = redis.call('HINCRBY', K_META, '#j', 1)
          redis.call('HSET', K_META, 'j:' .. job, ji)
        end
        job_index[job] = ji
      end
      apply_user_event(user, ji, acc(KEYS[jref]), etype, ts, tf, nf, choice, target, start)
      -- The journal lists every user event: interactions make journeys, and
      -- every entry tells the snapshot whose summaries changed.
      if journal then
        local J = jr[jref]
        if not J then J = {}; jr[jref] = J end
        local k = #J
        J[k + 1], J[k + 2], J[k + 3], J[k + 4] = user, ts, etype, target
        J[k + 5], J[k + 6], J[k + 7] = choice, nf and nf.idx or 0, E[b + 9]
      end
      local day = E[b + 13]
      hll_add(KEYS[day], user)
      hll_add(KEYS[day + 3], user)
      if etype == 's' then hll_add(KEYS[day + 1], user) end
      if etype == 'i' then
        hll_add(KEYS[day + 2], user)
        bump(acc(K_CAMP), nil, day_field(E[b + 11]), 1)
      end
    end
  elseif code < 0 then
    rejected = rejected + 1
  end
  codes[#codes + 1] = code
end

-- Flush: user records in one HSET, counter increments, HyperLogLog adds,
-- one journal entry per job.
local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local function by_job(a, b) return a[1] < b[1] end
local pairs_out = {}
for o = 1, #order do
  local user = order[o]
  local recs = {}
  for j, s in pairs(user_recs[user]) do recs[#recs + 1] = encode(j, s) end
  if #recs > 0 then
    if #recs > 1 then table.sort(recs, by_job) end
    pairs_out[#pairs_out + 1] = user
    pairs_out[#pairs_out + 1] = cmsgpack.pack(recs)
  end
end
if #pairs_out > 0 then chunked('HSET', K_USERS, pairs_out) end
for key, a in pairs(incr) do
  for f, v in pairs(a) do
    if v ~= 0 then redis.call('HINCRBY', key, f, v) end
  end
end
for key, set in pairs(hll) do chunked('PFADD', key, keys_of(set)) end
for jref, J in pairs(jr) do redis.call('XADD', KEYS[jref + 1], '*', 'b', cmsgpack.pack(J)) end
-- Score of the dirty index: changes not yet persisted; a snapshot subtracts what it saw.
if applied > 0 then redis.call('ZINCRBY', K_DIRTY, applied, campaign) end
if rejected > 0 then redis.call('HINCRBY', K_REJ, campaign, rejected) end
return codes
