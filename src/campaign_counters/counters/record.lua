-- Apply a batch of events of one campaign atomically, in order.
--
-- KEYS: 1 meta  2 users  3 campaign counters  4 dirty index  5 registry  6 names
--       7 rejected-events index  8 epoch marker  9 change log  10 repair tail
--       11 event ids
--       then the keys events refer to by position: job counters, and per local
--       day four HyperLogLogs (any, sent, interacted, then the tenant's users
--       of the day across campaigns).
-- ARGV: 1 campaign  2 the epoch the caller expects ('': any)
--       3 options, msgpack {id ttl s, keep journeys 0|1, day ttl s,
--         max distinct choices per node, max distinct local days}
--       4 the events, msgpack, 13 values per event: type (t|s|i|x), tenant,
--         job, user, ts (ms), target, choice, node, status, day (yyyymmdd),
--         job key #, day key #, id fingerprint ('': no id).
-- Repair tail entries: field 'e', a msgpack array of 11 values per applied
-- event with an id (the first 10 above, then the fingerprint).
-- Returns one code per event, then the epoch ('' when there is none):
--   1 applied, 0 duplicate id, -1 campaign bound to another tenant,
--   -2 too many distinct nodes, -3 campaign closed (completed, keys expired:
--   counting again from zero would overwrite its persisted reports),
--   -4 no epoch marker (Redis lost its data, or was never initialised),
--   -5 the epoch is not the one the caller expects (Redis was restored or
--   replaced).  On -4 and -5 nothing of the batch is applied.
--
-- State.  Per user and campaign one hash field holds a header (the
-- change-log generation the user was last logged in, the latest local day
-- with events and which day HyperLogLogs already hold the user) and a
-- record per job: flags, earliest
-- timestamps, the nodes reached and gone on from, and the journey steps
-- (plus a campaign-wide record once the user is in two jobs).  Counters are
-- the sum over users of what their records contribute, so an event adds
-- exactly the change it made to one record: exact, O(nodes), independent of
-- arrival order.  Campaign totals are the sum of the job counters plus the
-- campaign hash, which holds corrections for users seen in several jobs.
--
-- De-duplication needs no key per event: ids are remembered in one hash per
-- campaign whose fields are buckets of fingerprints (9 bytes of BLAKE2b of
-- the id, then the arrival second, 4 bytes), grown by linear hashing: a
-- bucket holding more than SPLIT_AT entries makes the next bucket in line
-- split in two, so buckets stay small whatever the volume (about 20 bytes
-- per remembered id) and an event reads and writes one of them.  Entries
-- older than the id TTL are dropped whenever their bucket is written, and
-- never match.  A user appends its name to the change log once
-- per generation; a snapshot persists the users listed there.  While a
-- repair builds a campaign beside its live keys, applied events are also
-- appended to the repair tail, to be applied to the rebuilt state before it
-- is swapped in.
--
-- A batch shares its reads (one HMGET of the meta fields it needs, one HMGET
-- of its users' records) and its writes (counter increments, HyperLogLog
-- adds, records, the change log are flushed once at the end).  Checks come
-- before writes for every event, and no command below can fail on
-- well-formed keys, so an event is applied whole or not at all.

local K_META, K_USERS, K_CAMP, K_DIRTY, K_REG, K_NAMES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_REJ, K_EPOCH, K_LOG, K_TAIL, K_IDS = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local campaign, want_epoch = ARGV[1], ARGV[2]
local opts = cmsgpack.unpack(ARGV[3])
local id_ttl, keep, day_ttl, max_choices, max_days = opts[1], opts[2] == 1, opts[3], opts[4], opts[5]
local E = cmsgpack.unpack(ARGV[4])
local FIELDS, MAX_NODES, SEP, FP, SPLIT_AT = 13, 4096, '\31', 13, 16  -- FP: bytes per remembered id
local band, bor, floor, char, byte, sub, find = bit.band, bit.bor, math.floor, string.char, string.byte,
  string.sub, string.find

local function refuse(code, epoch)
  local codes = {}
  for _ = 1, #E / FIELDS do codes[#codes + 1] = code end
  codes[#codes + 1] = epoch or ''
  return codes
end

local epoch = redis.call('GET', K_EPOCH)
if not epoch then return refuse(-4) end
if want_epoch ~= '' and epoch ~= want_epoch then return refuse(-5, epoch) end

local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now = now_s * 1000 + floor(t[2] / 1000)

-- == Meta fields: everything the batch may need, read in one HMGET ==========

local meta = {}
do
  local want, seen = {'tenant', 'gen', 'dirty', 'repairing', '#n', '#d', 'start', 'ids:L', 'ids:p'}, {}
  local function ask(f)
    if not seen[f] then seen[f] = true; want[#want + 1] = f end
  end
  for b = 0, #E - 1, FIELDS do
    local etype, job = E[b + 1], E[b + 3]
    if job ~= '' then ask('j:' .. job); ask('t:' .. job) end
    if etype == 'i' then
      local target, choice, node = E[b + 6], E[b + 7], E[b + 8]
      ask('n:' .. target)
      if node ~= '' then ask('n:' .. node) else
        ask('pt:' .. target)
        if choice ~= '' then ask('pl:' .. target .. SEP .. choice) end
      end
    end
    if etype ~= 'x' then ask('d:' .. E[b + 10]) end
  end
  local got = redis.call('HMGET', K_META, unpack(want))
  for i = 1, #want do meta[want[i]] = got[i] end
end

-- Node facts "idx|end(0/1)|successor idxs|predecessor idxs", parsed once.
local facts_cache = {}
local function facts(v)
  if not v then return nil end
  local f = facts_cache[v]
  if not f then
    local idx, fin, succ, pred = string.match(v, '^(%d+)|(%d)|([%d,]*)|([%d,]*)$')
    local S, P = {}, {}
    for x in string.gmatch(succ, '%d+') do S[#S + 1] = tonumber(x) end
    for x in string.gmatch(pred, '%d+') do P[#P + 1] = tonumber(x) end
    idx = tonumber(idx)
    f = {idx = idx, fin = fin == '1', succ = S, pred = P, rf = 'r:' .. idx, kf = 'k:' .. idx}
    facts_cache[v] = f
  end
  return f
end

local function node_facts(id)
  return facts(meta['n:' .. id])
end

-- The node a choice leading to target was made at (the event's node, else
-- the only node with an edge into target, else the only one whose edge into
-- target is labelled with the choice).
local function choice_node(target, choice)
  return facts(meta['pt:' .. target]) or (choice ~= '' and facts(meta['pl:' .. target .. SEP .. choice])) or nil
end

local function allocate(id)
  local i = redis.call('HINCRBY', K_META, '#n', 1)
  local v = i .. '|0||'
  redis.call('HSET', K_META, 'n:' .. id, v)
  redis.call('HSET', K_NAMES, i, id)
  meta['#n'], meta['n:' .. id] = i, v
  return facts(v)
end

-- The counter field of a choice made at node f: beyond max_choices distinct
-- choices of a node, further ones are counted under '(other)' (the second
-- value is then true).
local choice_fields = {}
local function choice_field(f, choice)
  local key = f.idx .. SEP .. choice
  local field = choice_fields[key]
  if field then return field[1], field[2] end
  field = {'ch:' .. key, false}
  if not redis.call('HGET', K_META, 'c:' .. key) then
    if tonumber(redis.call('HGET', K_META, '#c:' .. f.idx) or '0') < max_choices then
      redis.call('HSET', K_META, 'c:' .. key, 1)
      redis.call('HINCRBY', K_META, '#c:' .. f.idx, 1)
    else
      field = {'ch:' .. f.idx .. SEP .. '(other)', true}
    end
  end
  choice_fields[key] = field
  return field[1], field[2]
end

-- == User records =============================================================
-- Stored: {header, job record, ...}; header {logged generation, latest
-- local day, day flags}; job record {job idx, flags, first ts,
-- sent - first, end - first, exit idx, interactions, reached idxs,
-- continued idxs, steps}; steps: flat {ts - first, node idx, choice, ...}
-- sorted by time then arrival.  flags: 1 targeted 2 sent 4 interacted
-- 8 completed; -1 = absent.  The idx lists are short and kept sorted, so a
-- linear search beats building a set per user.

local function decode_job(r)
  local s = {flags = r[2], first = r[3], sent = -1, fin = -1, exit = r[6], n = r[7], R = r[8], K = r[9],
             S = r[10], base = r[3]}
  if r[4] >= 0 then s.sent = r[3] + r[4] end
  if r[5] >= 0 then s.fin = r[3] + r[5] end
  return s
end

local function encode_job(ji, s)
  local S = s.S
  if S and s.base ~= s.first then  -- steps are kept relative to the earliest event
    local shift = s.base - s.first
    for i = 1, #S, 3 do S[i] = S[i] + shift end
  end
  return {ji, s.flags, s.first, s.sent >= 0 and s.sent - s.first or -1,
          s.fin >= 0 and s.fin - s.first or -1, s.exit, s.n, s.R, s.K, S}
end

local function empty_job(ji)
  return {flags = 0, first = -1, sent = -1, fin = -1, exit = 0, n = 0, R = {}, K = {},
          S = (keep and ji ~= 0) and {} or nil, base = -1}
end

local users = {}  -- user -> {h = header, j = {ji -> state}}
do
  local names, seen = {}, {}
  for b = 0, #E - 1, FIELDS do
    local user = E[b + 4]
    if user ~= '' and not seen[user] then seen[user] = true; names[#names + 1] = user end
  end
  for i = 1, #names, 1000 do
    local part = {unpack(names, i, math.min(i + 999, #names))}
    local raws = redis.call('HMGET', K_USERS, unpack(part))
    for k = 1, #part do
      local u = {h = {0, 0, 0}, j = {}}
      if raws[k] then
        local recs = cmsgpack.unpack(raws[k])
        u.h = recs[1]
        for r = 2, #recs do u.j[recs[r][1]] = decode_job(recs[r]) end
      end
      users[part[k]] = u
    end
  end
end

-- == Event ids ==============================================================
-- Buckets are numbered by the fingerprint's last 4 bytes (a): bucket
-- a mod 2^L, or a mod 2^(L+1) for buckets already split at this level
-- (those below the split pointer p).

local ids_L, ids_p = tonumber(meta['ids:L'] or '4'), tonumber(meta['ids:p'] or '0')
local ids_moved = false
local buckets, written = {}, {}
local stamp = char(floor(now_s / 16777216) % 256, floor(now_s / 65536) % 256, floor(now_s / 256) % 256, now_s % 256)
local oldest = now_s - id_ttl  -- entries that arrived at or before it are forgotten

local function address(s, at)
  local a, b2, c, d = byte(s, at + 5, at + 8)
  return ((a * 256 + b2) * 256 + c) * 256 + d
end
local function arrival(s, at)
  local a, b2, c, d = byte(s, at + 9, at + 12)
  return ((a * 256 + b2) * 256 + c) * 256 + d
end
local function bucket_of(a)
  local n = 2 ^ ids_L
  local b = a % n
  if b < ids_p then b = a % (2 * n) end
  return b
end
local function bucket(b)
  local s = buckets[b]
  if s == nil then s = redis.call('HGET', K_IDS, b) or ''; buckets[b] = s end
  return s
end
local function live_entries(s)
  local out = {}
  for at = 1, #s, FP do
    if arrival(s, at) > oldest then out[#out + 1] = sub(s, at, at + FP - 1) end
  end
  return out
end

local function remembered(fp)
  local s = bucket(bucket_of(address(fp, 1)))
  local at = find(s, fp, 1, true)
  while at do
    if (at - 1) % FP == 0 and arrival(s, at) > oldest then return true end
    at = find(s, fp, at + 1, true)
  end
  return false
end

-- Split the bucket the pointer is at into itself and its image one level up.
local function split()
  local n = 2 ^ ids_L
  local keep, move = {}, {}
  for _, e in ipairs(live_entries(bucket(ids_p))) do
    if address(e, 1) % (2 * n) == ids_p then keep[#keep + 1] = e else move[#move + 1] = e end
  end
  buckets[ids_p], buckets[ids_p + n] = table.concat(keep), table.concat(move)
  written[ids_p], written[ids_p + n] = true, true
  ids_p = ids_p + 1
  if ids_p >= n then ids_L, ids_p = ids_L + 1, 0 end
  ids_moved = true
end

-- The buckets the batch's ids fall in, read at once.
do
  local want, seen = {}, {}
  for b = 0, #E - 1, FIELDS do
    local fp = E[b + 13]
    if fp ~= '' then
      local k = bucket_of(address(fp, 1))
      if not seen[k] then seen[k] = true; want[#want + 1] = k end
    end
  end
  for i = 1, #want, 1000 do
    local part = {unpack(want, i, math.min(i + 999, #want))}
    local got = redis.call('HMGET', K_IDS, unpack(part))
    for k = 1, #part do buckets[part[k]] = got[k] or '' end
  end
end

local function remember(fp)
  local b = bucket_of(address(fp, 1))
  local s = table.concat(live_entries(bucket(b))) .. fp .. stamp
  buckets[b], written[b] = s, true
  if #s > SPLIT_AT * FP then split() end
end

-- == Applying an event to a record ===========================================

local incr, hll, changed = {}, {}, {}
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

-- Add v to field f of accumulator A, and take it out of B (when given): how
-- a job's change is taken back out of the campaign's corrections.
local function bump(A, B, f, v)
  A[f] = (A[f] or 0) + v
  if B then B[f] = (B[f] or 0) - v end
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

-- The user reached node f: count it, and note the nodes it went on from.
local function reach(s, f, A, B)
  local R, idx = s.R, f.idx
  if has(R, idx) then return end
  put(R, idx)
  bump(A, B, f.rf, 1)
  local S, P, K = f.succ, f.pred, s.K
  for i = 1, #S do
    if has(R, S[i]) then
      if not has(K, idx) then put(K, idx); bump(A, B, f.kf, 1) end
      break
    end
  end
  for i = 1, #P do
    local p = P[i]
    if has(R, p) and not has(K, p) then put(K, p); bump(A, B, 'k:' .. p, 1) end
  end
end

-- A journey step, inserted after every step not later than it.
local function add_step(s, ts, idx, choice)
  local S = s.S
  if not S then return end
  if s.base < 0 then s.base = ts end
  local d = ts - s.base
  local i = #S - 2
  while i > 0 and S[i] > d do
    S[i + 3], S[i + 4], S[i + 5] = S[i], S[i + 1], S[i + 2]
    i = i - 3
  end
  S[i + 3], S[i + 4], S[i + 5] = d, idx, choice
end

local names_cache = {}
local function name_of(i)
  local n = names_cache[i]
  if not n then n = redis.call('HGET', K_NAMES, i) or ''; names_cache[i] = n end
  return n
end

-- Apply one event to a record in place, adding the counter changes it makes
-- to A (and taking them out of B).  tf/nf: facts of the target and choice node.
local function apply(s, etype, ts, tf, nf, chf, choice, target, start, A, B)
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
    add_step(s, ts, tf.idx, choice)
    if nf then
      reach(s, nf, A, B)
      if chf then bump(A, B, chf, 1) end
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
  local c = {flags = s.flags, first = s.first, sent = s.sent, fin = s.fin, exit = s.exit, n = s.n, R = {}, K = {},
             base = s.first}
  for i = 1, #s.R do c.R[i] = s.R[i] end
  for i = 1, #s.K do c.K[i] = s.K[i] end
  return c
end

-- Apply a user event to the user's job record (and campaign record, once the
-- user is in two jobs), accumulating the counter changes.
local function apply_user_event(u, ji, A_job, etype, ts, tf, nf, chf, choice, target, start)
  local J = u.j
  local other = nil
  for j in pairs(J) do
    if j ~= 0 and j ~= ji then other = j break end
  end
  local job_s = J[ji]
  if not job_s then job_s = empty_job(ji); J[ji] = job_s end
  if not other then
    -- Only this job so far: the campaign record is the job's record.
    apply(job_s, etype, ts, tf, nf, chf, choice, target, start, A_job, nil)
    return
  end
  local camp_s = J[0]
  if not camp_s then
    -- The user's first event in a second job: the other job's record has
    -- been the campaign record until now.
    camp_s = copy(J[other])
    J[0] = camp_s
  end
  -- Campaign corrections = the campaign record's change - the job's change.
  local A_camp = acc(K_CAMP)
  apply(job_s, etype, ts, tf, nf, chf, choice, target, start, A_job, A_camp)
  apply(camp_s, etype, ts, tf, nf, chf, choice, target, start, A_camp, nil)
end

-- Returns whether the status is now the latest of the scope.
local function set_status(key, status, ts)
  local cur = tonumber(redis.call('HGET', key, 'status_ts'))
  if not cur or ts >= cur then
    redis.call('HSET', key, 'status', status, 'status_ts', ts, 'updated_at', now)
    return true
  end
  redis.call('HSET', key, 'updated_at', now)
  return false
end

-- A local day's per-day structures: counted against max_days, given their
-- TTL once (the meta field holds when they expire).  False beyond the cap.
local function day_ok(day, dref)
  local until_ms = tonumber(meta['d:' .. day])
  if until_ms and until_ms > now then return true end
  if not until_ms then
    if tonumber(meta['#d'] or '0') >= max_days then return false end
    meta['#d'] = redis.call('HINCRBY', K_META, '#d', 1)
  end
  until_ms = now + day_ttl * 1000
  redis.call('HSET', K_META, 'd:' .. day, until_ms)
  meta['d:' .. day] = tostring(until_ms)
  for k = dref, dref + 3 do redis.call('EXPIRE', KEYS[k], day_ttl) end
  return true
end

-- == Main loop ================================================================

local codes, applied, rejected = {}, 0, {}
local owner = meta['tenant']
local closed = false
if not owner then
  owner = redis.call('HGET', K_REG, campaign)
  closed = owner ~= false
end
local gen = tonumber(meta['gen'] or '1')
local repairing = tonumber(meta['repairing'] or '0') > now  -- a deadline: a crashed repair stops the tail
local start_facts = facts(meta['start'])
local job_index, day_days, logged, tail = {}, {}, {}, {}
for b = 0, #E - 1, FIELDS do
  local etype, tenant, user, target, choice, node = E[b + 1], E[b + 2], E[b + 4], E[b + 6], E[b + 7], E[b + 8]
  local ts, fp = E[b + 5], E[b + 13]
  local tf, nf, u = nil, nil, nil
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
    if fresh > 0 and tonumber(meta['#n'] or '0') + fresh > MAX_NODES then code = -2 end
  end
  if code == 1 and fp ~= '' then
    if remembered(fp) then code = 0 else remember(fp) end
  end
  if code == 1 then
    applied = applied + 1
    if not owner then
      redis.call('HSET', K_META, 'tenant', tenant)
      redis.call('HSET', K_REG, campaign, tenant)
      owner = tenant
    end
    local job, jref = E[b + 3], E[b + 11]
    if etype == 'x' then
      local latest = set_status(K_CAMP, E[b + 9], ts)
      if job ~= '' then set_status(KEYS[jref], E[b + 9], ts) end
      -- Only a campaign whose latest status is COMPLETED gets its keys expired.
      if latest and E[b + 9] == 'COMPLETED' then
        redis.call('HSET', K_META, 'completed_at', now)
      elseif latest then
        redis.call('HDEL', K_META, 'completed_at')
      end
    else
      u = users[user]
      local chf, over = nil, false
      if etype == 'i' then
        if not tf then tf = allocate(target) end
        if node ~= '' and not nf then nf = node == target and tf or allocate(node) end
        if nf and choice ~= '' then chf, over = choice_field(nf, choice) end
        if over then bump(acc(K_CAMP), nil, 'over:choices', 1) end
      end
      local ji = job_index[job]
      if not ji then
        ji = tonumber(meta['j:' .. job])
        if not ji then
          ji = redis.call('HINCRBY', K_META, '#j', 1)
          redis.call('HSET', K_META, 'j:' .. job, ji)
          meta['j:' .. job] = ji
        end
        job_index[job] = ji
      end
      apply_user_event(u, ji, acc(KEYS[jref]), etype, ts, tf, nf, chf, choice, target,
                       etype == 's' and start_facts or nil)
      changed[user] = true
      local h = u.h
      if keep and h[1] ~= gen then
        h[1] = gen
        logged[#logged + 1] = user
      end
      -- Day HyperLogLogs: skipped when the header shows the user is in them.
      local day, dref = E[b + 10], E[b + 12]
      local dn = tonumber(day)
      local ok = day_days[day]
      if ok == nil then ok = day_ok(day, dref); day_days[day] = ok end
      if ok then
        local bits = etype == 's' and 3 or etype == 'i' and 5 or 1
        local have = 0
        if h[2] == dn then have = h[3] elseif dn > h[2] then h[2], h[3] = dn, 0 end
        if band(have, 1) == 0 then hll_add(KEYS[dref], user); hll_add(KEYS[dref + 3], user) end
        if band(bits, 2) ~= 0 and band(have, 2) == 0 then hll_add(KEYS[dref + 1], user) end
        if band(bits, 4) ~= 0 and band(have, 4) == 0 then hll_add(KEYS[dref + 2], user) end
        if h[2] == dn then h[3] = bor(h[3], bits) end
        if etype == 'i' then bump(acc(K_CAMP), nil, 'i:' .. day, 1) end
      else
        bump(acc(K_CAMP), nil, 'over:days', 1)
      end
      if meta['t:' .. job] == false or now - tonumber(meta['t:' .. job]) >= 1000 then
        redis.call('HSET', K_META, 't:' .. job, now)
        meta['t:' .. job] = tostring(now)
      end
    end
    if repairing and fp ~= '' then  -- events without an id are taken from the history
      for k = 1, 10 do tail[#tail + 1] = E[b + k] end
      tail[#tail + 1] = fp
    end
  elseif code < 0 then
    rejected[code] = (rejected[code] or 0) + 1
  end
  codes[#codes + 1] = code
end

-- == Flush =====================================================================

local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local function by_job(a, b) return a[1] < b[1] end
local out = {}
-- Users whose only events were duplicates (or rejected) keep their record as it was.
for user in pairs(changed) do
  local u = users[user]
  local jobs = {}
  for j, s in pairs(u.j) do jobs[#jobs + 1] = encode_job(j, s) end
  if #jobs > 1 then table.sort(jobs, by_job) end
  table.insert(jobs, 1, u.h)
  out[#out + 1] = user
  out[#out + 1] = cmsgpack.pack(jobs)
end
if #out > 0 then chunked('HSET', K_USERS, out) end
local ids_out, ids_gone = {}, {}
for b in pairs(written) do
  if buckets[b] == '' then ids_gone[#ids_gone + 1] = b else
    ids_out[#ids_out + 1] = b
    ids_out[#ids_out + 1] = buckets[b]
  end
end
if #ids_out > 0 then chunked('HSET', K_IDS, ids_out) end
if #ids_gone > 0 then chunked('HDEL', K_IDS, ids_gone) end
if ids_moved then redis.call('HSET', K_META, 'ids:L', ids_L, 'ids:p', ids_p) end
for key, a in pairs(incr) do
  for f, v in pairs(a) do
    if v ~= 0 then redis.call('HINCRBY', key, f, v) end
  end
end
for key, set in pairs(hll) do
  local members = {}
  for m in pairs(set) do members[#members + 1] = m end
  chunked('PFADD', key, members)
end
if #logged > 0 then redis.call('APPEND', K_LOG, table.concat(logged, SEP) .. SEP) end
if #tail > 0 then redis.call('XADD', K_TAIL, '*', 'e', cmsgpack.pack(tail)) end
if applied > 0 and meta['dirty'] == false then
  redis.call('HSET', K_META, 'dirty', now)
  redis.call('ZADD', K_DIRTY, 'NX', now, campaign)
end
for code, n in pairs(rejected) do redis.call('HINCRBY', K_REJ, campaign .. SEP .. -code, n) end
codes[#codes + 1] = epoch
return codes
