-- Apply a batch of events of one campaign atomically, in order.
--
-- KEYS: 1 meta  2 users  3 campaign counters  4 dirty index  5 registry  6 names
--       7 rejected-events index  8 epoch marker  9 change log  10 repair tail
--       11 event ids
--       then the keys events refer to by position: job counters, and per local
--       day four HyperLogLogs (any, sent, interacted, then the tenant's users
--       of the day across campaigns).
-- ARGV: 1 campaign  2 the epoch the caller expects ('': any)  3 now (Unix ms,
--       the caller's clock)  4 id TTL (s)  5 keep journeys (1|0)  6 day TTL (s)
--       7 max distinct choices per node  8 max distinct local days
--       9 the events, msgpack, 13 values per event: type (t|s|i|x), tenant,
--         job, user, ts (ms), target, choice, node, status, day (yyyymmdd),
--         job key #, day key #, id fingerprint ('': no id).
-- Repair tail entries: field 'e', a msgpack array of 11 values per applied
-- event with an id (the first 10 above, then the fingerprint).
-- Returns one string: a byte per event, its code + 8, then a newline and
-- the epoch ('' when there is none).  (A table reply costs Redis a 16 KB
-- reply-buffer allocation per call.)  Codes:
--   1 applied, 0 duplicate id, -1 campaign bound to another tenant,
--   -2 too many distinct nodes, -3 campaign closed (completed, keys expired:
--   counting again from zero would overwrite its persisted reports),
--   -4 no epoch marker (Redis lost its data, or was never initialised),
--   -5 the epoch is not the one the caller expects (Redis was restored or
--   replaced), -6 the target or node is not a node of the campaign's script.
--   On -4 and -5 nothing of the batch is applied.
--
-- State.  Per user and campaign one hash field holds a header (the
-- change-log generation the user was last logged in, the latest local day
-- with events, and which day HyperLogLogs already hold the user) and a
-- record per job: flags, earliest timestamps, the nodes reached and gone on
-- from, and the journey steps (plus a campaign-wide record once the user is
-- in two jobs).  Counters are the sum over users of what their records
-- contribute, so an event adds exactly the change it made to one record:
-- exact, O(nodes), independent of arrival order.  Campaign totals are the
-- sum of the job counters plus the campaign hash, which holds corrections
-- for users seen in several jobs.
--
-- De-duplication needs no key per event: ids are remembered in one hash per
-- campaign whose fields are buckets of fingerprints (9 bytes of BLAKE2b of
-- the id, then the arrival second, 4 bytes), grown by linear hashing: a
-- bucket holding more than SPLIT_AT entries makes the next bucket in line
-- split in two, so buckets stay small whatever the volume (about 20 bytes
-- per remembered id) and an event reads and writes one of them.  Entries
-- older than the id TTL (plus the second their stamp was rounded down)
-- never match, and are dropped when their bucket is rewritten.  A user
-- appends its name to the change log once per generation; a snapshot
-- persists the users listed there.  While a repair
-- builds a campaign beside its live keys, applied events with an id are also
-- appended to the repair tail, to be applied to the rebuilt state before it
-- is swapped in.
--
-- Cost.  A batch shares its reads (one HMGET of the meta fields it needs,
-- one of its users' records, one of its id buckets) and its writes
-- (counter increments, HyperLogLog adds, records, buckets and the change log
-- are flushed once at the end).  Redis runs this whole body on every call,
-- so helpers are few (each costs a closure per call) and records are
-- changed in place as the arrays they are stored as.  Checks come before
-- writes for every event, and no command below can fail on well-formed
-- keys, so an event is applied whole or not at all.

local K_META, K_USERS, K_CAMP, K_DIRTY, K_REG, K_NAMES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local K_REJ, K_EPOCH, K_LOG, K_TAIL, K_IDS = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local campaign, want_epoch, now_text = ARGV[1], ARGV[2], ARGV[3]
local E = cmsgpack.unpack(ARGV[9])
local FIELDS, MAX_NODES, SEP, FP, SPLIT_AT = 13, 4096, '\31', 13, 16  -- FP: bytes per remembered id
local band, bor, floor, byte, sub, find = bit.band, bit.bor, math.floor, string.byte, string.sub, string.find
local fmt = string.format
local call = redis.call

local epoch = call('GET', K_EPOCH)
if not epoch or (want_epoch ~= '' and epoch ~= want_epoch) then
  return string.rep(string.char((epoch and -5 or -4) + 8), #E / FIELDS) .. '\n' .. (epoch or '')
end

local keep = ARGV[5] == '1'
local now = tonumber(now_text)
local now_s = floor(now / 1000)
-- Ids stamped at or before `oldest` are forgotten.  A stamp is the arrival
-- second rounded down, so the extra second keeps every id at least id TTL.
local oldest = now_s - tonumber(ARGV[4]) - 1

-- == Reads: meta fields, user records, id buckets, each in one call ==========

local meta, users = {}, {}
-- Id buckets: level, split pointer, buckets at the level (read from the
-- meta hash below).  A fingerprint's bucket is its 32-bit number (bytes
-- 6-9) mod ids_n, or mod 2 * ids_n below the pointer, computed inline where
-- needed (a helper costs a call per event).  bname: a bucket number's field
-- name, made once per call ('%d': a number given to redis.call is
-- formatted with '%.17g', several times dearer).
local ids_L, ids_p, ids_n, buckets, bname = 4, 0, 16, {}, {}
do
  local want, seen, names = {'tenant', 'gen', 'dirty', 'repairing', '#n', '#d', 'start', 'ids:L', 'ids:p'}, {}, {}
  for b = 0, #E - 1, FIELDS do  -- each value is looked up once: concatenation costs
    local etype, job, user = E[b + 1], E[b + 3], E[b + 4]
    if job ~= '' and not seen[job] then seen[job] = true; want[#want + 1] = 'j:' .. job; want[#want + 1] = 't:' .. job end
    if etype == 'i' then
      local target, choice, node = E[b + 6], E[b + 7], E[b + 8]
      if not seen[target] then seen[target] = true; want[#want + 1] = 'n:' .. target; want[#want + 1] = 'pt:' .. target end
      if node ~= '' then
        if not seen[node] then seen[node] = true; want[#want + 1] = 'n:' .. node end
      elseif choice ~= '' then
        local f = 'pl:' .. target .. SEP .. choice
        if not seen[f] then seen[f] = true; want[#want + 1] = f end
      end
    end
    if etype ~= 'x' then
      local day = E[b + 10]
      if not seen[day] then seen[day] = true; want[#want + 1] = 'd:' .. day end
      if users[user] == nil then users[user] = false; names[#names + 1] = user end  -- read below
    end
  end
  local got = call('HMGET', K_META, unpack(want))
  for i = 1, #want do meta[want[i]] = got[i] end
  ids_L, ids_p = tonumber(meta['ids:L'] or '4'), tonumber(meta['ids:p'] or '0')
  ids_n = 2 ^ ids_L
  for i = 1, #names, 1000 do
    local part = #names <= 1000 and names or {unpack(names, i, math.min(i + 999, #names))}
    local raws = call('HMGET', K_USERS, unpack(part))
    for k = 1, #part do
      local u = raws[k] and cmsgpack.unpack(raws[k]) or {{'', '', 0}}
      local J = {}
      for r = 2, #u do J[u[r][1]] = u[r] end
      users[part[k]] = {u[1], J, false}  -- header, records by job index, changed
    end
  end
  local cand, nc = {}, 0  -- bucket numbers to read
  for b = 13, #E, FIELDS do
    local fp = E[b]
    if fp ~= '' then
      local w, x, y, z = byte(fp, 6, 9)
      local a = ((w * 256 + x) * 256 + y) * 256 + z
      local k = a % ids_n
      if k < ids_p then k = a % (2 * ids_n) end
      nc = nc + 1; cand[nc] = k
    end
  end
  -- The buckets the pointer is likely to split in this call (about one
  -- per SPLIT_AT / 2 new ids) are read with the others.
  for q = ids_p, ids_p + math.min(floor(nc * 2 / SPLIT_AT), ids_n) - 1 do
    nc = nc + 1; cand[nc] = q < ids_n and q or q - ids_n
  end
  local wanted, wanted_s = {}, {}
  for i = 1, nc do
    local k = cand[i]
    if not bname[k] then
      local name = fmt('%d', k)
      bname[k] = name; wanted[#wanted + 1] = k; wanted_s[#wanted_s + 1] = name
    end
  end
  for i = 1, #wanted, 1000 do
    local part = #wanted <= 1000 and wanted or {unpack(wanted, i, math.min(i + 999, #wanted))}
    local got2 = call('HMGET', K_IDS, unpack(wanted_s, i, math.min(i + 999, #wanted)))
    for k = 1, #part do buckets[part[k]] = got2[k] or '' end
  end
end

-- == Helpers ===================================================================

-- Node facts (see load_script.lua: 2-byte numbers idx, end flag byte,
-- successor count and idxs, predecessor count and idxs), parsed once per
-- call into {idx, is end, successors, predecessors, reach field}.
local facts_cache = {}
local function facts(v)
  if not v then return nil end
  local f = facts_cache[v]
  if not f then
    local h, l, e, sh, sl = byte(v, 1, 5)
    local idx, S, P = h * 256 + l, {}, {}
    local at = 6
    for i = 1, sh * 256 + sl do
      local a, c = byte(v, at, at + 1)
      S[i] = a * 256 + c; at = at + 2
    end
    local ph, pl = byte(v, at, at + 1)
    at = at + 2
    for i = 1, ph * 256 + pl do
      local a, c = byte(v, at, at + 1)
      P[i] = a * 256 + c; at = at + 2
    end
    f = {idx, e == 1, S, P, 'r:' .. idx}
    facts_cache[v] = f
  end
  return f
end

-- The user reached node f: count it (in A, and out of B when given), and
-- note the nodes it went on from.  R and K are sorted index lists.
local kname = {}
local function gone_on(K, x, A, B)  -- note that the user went on from node x (once)
  local k = #K
  for j = 1, k do if K[j] == x then return end end
  while k > 0 and K[k] > x do K[k + 1] = K[k]; k = k - 1 end
  K[k + 1] = x
  local kf = kname[x]
  if not kf then kf = 'k:' .. x; kname[x] = kf end
  A[kf] = (A[kf] or 0) + 1
  if B then B[kf] = (B[kf] or 0) - 1 end
end
local function reach(R, K, f, A, B)
  local idx = f[1]
  local i = #R
  for j = 1, i do if R[j] == idx then return end end
  while i > 0 and R[i] > idx do R[i + 1] = R[i]; i = i - 1 end
  R[i + 1] = idx
  A[f[5]] = (A[f[5]] or 0) + 1
  if B then B[f[5]] = (B[f[5]] or 0) - 1 end
  local S, n = f[3], #R
  for s = 1, #S do
    local x = S[s]
    local hit = false
    for j = 1, n do if R[j] == x then hit = true; break end end
    if hit then gone_on(K, idx, A, B); break end
  end
  local P = f[4]
  for p = 1, #P do
    local x = P[p]
    for j = 1, n do if R[j] == x then gone_on(K, x, A, B); break end end
  end
end

-- Apply one event to a record r in place (the stored array: job idx, flags,
-- first ts, sent - first, end - first, exit idx, interactions, reached,
-- gone on from, steps), adding the counter changes it makes to A (and
-- taking them out of B).  flags: 1 targeted 2 sent 4 interacted
-- 8 completed; -1 = absent.  Steps: flat {ts - first, node idx, choice}.
local function apply(r, etype, ts, tf, nf, chf, choice, target, start, A, B, exit_name)
  local flags, first = r[2], r[3]
  local before = band(flags, 8) ~= 0 and r[5] - (r[4] >= 0 and r[4] or 0) or nil
  if band(flags, 1) == 0 then
    flags = bor(flags, 1)
    A.target = (A.target or 0) + 1
    if B then B.target = (B.target or 0) - 1 end
  end
  if first < 0 then
    r[3] = ts
  elseif ts < first then  -- an earlier event: everything kept relative to the first moves
    local d = first - ts
    r[3] = ts
    if r[4] >= 0 then r[4] = r[4] + d end
    if r[5] >= 0 then r[5] = r[5] + d end
    local S = r[10]
    if S then for i = 1, #S, 3 do S[i] = S[i] + d end end
  end
  first = r[3]
  if etype == 's' then
    if band(flags, 2) == 0 then
      flags = bor(flags, 2)
      A.sent = (A.sent or 0) + 1
      if B then B.sent = (B.sent or 0) - 1 end
    end
    if r[4] < 0 or ts - first < r[4] then r[4] = ts - first end
    if start then reach(r[8], r[9], start, A, B) end
  elseif etype == 'i' then
    if band(flags, 4) == 0 then
      flags = bor(flags, 4)
      A.interacted = (A.interacted or 0) + 1
      if B then B.interacted = (B.interacted or 0) - 1 end
    end
    r[7] = r[7] + 1
    A.interactions = (A.interactions or 0) + 1
    if B then B.interactions = (B.interactions or 0) - 1 end
    reach(r[8], r[9], tf, A, B)
    local S = r[10]
    if S then  -- a journey step, after every step not later than it
      local d = ts - first
      local i = #S - 2
      while i > 0 and S[i] > d do
        S[i + 3], S[i + 4], S[i + 5] = S[i], S[i + 1], S[i + 2]
        i = i - 3
      end
      S[i + 3], S[i + 4], S[i + 5] = d, tf[1], choice
    end
    if nf then
      reach(r[8], r[9], nf, A, B)
      if chf then
        A[chf] = (A[chf] or 0) + 1
        if B then B[chf] = (B[chf] or 0) - 1 end
      end
    end
    if tf[2] then
      if band(flags, 8) == 0 then
        flags = bor(flags, 8)
        A.completed = (A.completed or 0) + 1
        if B then B.completed = (B.completed or 0) - 1 end
      end
      local fin = r[5] >= 0 and first + r[5] or -1
      if fin < 0 or ts < fin or (ts == fin and tf[1] ~= r[6] and target < exit_name(r[6])) then
        r[5] = ts - first
        r[6] = tf[1]
      end
    end
  end
  r[2] = flags
  if band(flags, 8) ~= 0 then
    local after = r[5] - (r[4] >= 0 and r[4] or 0)
    if after ~= (before or 0) then
      A.ct_ms = (A.ct_ms or 0) + after - (before or 0)
      if B then B.ct_ms = (B.ct_ms or 0) - after + (before or 0) end
    end
  end
end

-- An id bucket's entries: 9 bytes of fingerprint, then the 4-byte stamp,
-- in arrival order.  The bucket without its expired entries, rewritten only
-- when the first (oldest) entry expired.
local function unexpired(s)
  if #s < FP then return s end
  local c1, c2, c3, c4 = byte(s, 10, 13)
  if ((c1 * 256 + c2) * 256 + c3) * 256 + c4 > oldest then return s end
  local live, nl = {}, 0
  for at = 1, #s, FP do
    c1, c2, c3, c4 = byte(s, at + 9, at + 12)
    if ((c1 * 256 + c2) * 256 + c3) * 256 + c4 > oldest then nl = nl + 1; live[nl] = sub(s, at, at + FP - 1) end
  end
  return table.concat(live)
end

local names_cache = {}
local function exit_name(i)
  local n = names_cache[i]
  if not n then n = call('HGET', K_NAMES, i) or ''; names_cache[i] = n end
  return n
end

-- == Main loop ================================================================

local codes, applied, rejected = {}, 0, {}
local incr, hll, changed, written, logged, tail, job_index, day_ok, chfields = {}, {}, {}, {}, {}, {}, {}, {}, {}
local nchanged = 0
local node_of, choice_at, day_field, touched = {}, {}, {}, {}
local A_camp = {}
incr[K_CAMP] = A_camp
local owner = meta['tenant']
local closed = false
if not owner then
  owner = call('HGET', K_REG, campaign)
  closed = owner ~= false
end
local scripted = meta['start'] ~= false  -- with a script, an event names only its nodes
local gen = meta['gen'] or '0'  -- before the first snapshot (which makes it 2, see begin_snapshot.lua)
local repairing = meta['repairing'] and tonumber(meta['repairing']) > now  -- a deadline: a crashed repair stops the tail
local start_facts = facts(meta['start'])
local stamp = string.char(floor(now_s / 16777216) % 256, floor(now_s / 65536) % 256, floor(now_s / 256) % 256,
                          now_s % 256)
local ids_moved = false

for b = 0, #E - 1, FIELDS do
  local etype, tenant, user, target, choice, node = E[b + 1], E[b + 2], E[b + 4], E[b + 6], E[b + 7], E[b + 8]
  local ts, fp = E[b + 5], E[b + 13]
  local tf, nf = nil, nil
  local code = 1
  if owner and owner ~= tenant then
    code = -1
  elseif closed then
    code = -3
  elseif etype == 'i' then
    -- Resolve the nodes before any write; count nodes still to allocate.
    local fresh = 0
    tf = node_of[target]
    if tf == nil then tf = facts(meta['n:' .. target]) or false; node_of[target] = tf end
    tf = tf or nil
    if not tf then fresh = 1 end
    if node ~= '' then
      if node == target then nf = tf else
        nf = node_of[node]
        if nf == nil then nf = facts(meta['n:' .. node]) or false; node_of[node] = nf end
        nf = nf or nil
        if not nf then fresh = fresh + 1 end
      end
    else
      local by = choice_at[target]
      if not by then by = {}; choice_at[target] = by end
      nf = by[choice]
      if nf == nil then
        nf = facts(meta['pt:' .. target]) or (choice ~= '' and facts(meta['pl:' .. target .. SEP .. choice])) or false
        by[choice] = nf
      end
      nf = nf or nil
    end
    if fresh > 0 then
      if scripted then code = -6 elseif tonumber(meta['#n'] or '0') + fresh > MAX_NODES then code = -2 end
    end
  end
  -- The id: remembered (and not expired) in its bucket, or remembered now.
  local bk = nil
  if code == 1 and fp ~= '' then
    local w, x, y, z = byte(fp, 6, 9)
    local a = ((w * 256 + x) * 256 + y) * 256 + z
    bk = a % ids_n
    if bk < ids_p then bk = a % (2 * ids_n) end
    local s = buckets[bk]
    if s == nil then s = call('HGET', K_IDS, fmt('%d', bk)) or ''; buckets[bk] = s end
    local at = find(s, fp, 1, true)
    while at do
      if (at - 1) % FP == 0 then
        local c1, c2, c3, c4 = byte(s, at + 9, at + 12)
        if ((c1 * 256 + c2) * 256 + c3) * 256 + c4 > oldest then code = 0; break end
      end
      at = find(s, fp, at + 1, true)
    end
  end
  if code == 1 then
    applied = applied + 1
    if bk then
      local s = buckets[bk]
      s = unexpired(s) .. fp .. stamp
      buckets[bk], written[bk] = s, true
      if #s > SPLIT_AT * FP then
        -- Split the bucket the pointer is at into itself and its image one
        -- level up: an entry moves when bit ids_L of its number (bytes 6-9,
        -- big-endian) is set.  Runs of entries going the same way are cut
        -- out whole.
        local n = ids_n
        local old = buckets[ids_p]
        if old == nil then old = call('HGET', K_IDS, bname[ids_p] or fmt('%d', ids_p)) or '' end
        old = unexpired(old)
        local off, div = 8 - floor(ids_L / 8), 2 ^ (ids_L % 8)
        local stay, move, ns, nm, run_at, run_move = {}, {}, 0, 0, 1, nil
        for at = 1, #old, FP do
          local mv = floor(byte(old, at + off) / div) % 2 == 1
          if mv ~= run_move then
            if run_move then nm = nm + 1; move[nm] = sub(old, run_at, at - 1)
            elseif run_move == false then ns = ns + 1; stay[ns] = sub(old, run_at, at - 1) end
            run_at, run_move = at, mv
          end
        end
        if run_move then nm = nm + 1; move[nm] = sub(old, run_at)
        elseif run_move == false then ns = ns + 1; stay[ns] = sub(old, run_at) end
        buckets[ids_p], buckets[ids_p + n] = table.concat(stay), table.concat(move)
        written[ids_p], written[ids_p + n] = true, true
        ids_p = ids_p + 1
        if ids_p >= n then ids_L, ids_p, ids_n = ids_L + 1, 0, 2 * n end
        ids_moved = true
      end
    end
    if not owner then
      call('HSET', K_META, 'tenant', tenant)
      call('HSET', K_REG, campaign, tenant)
      owner = tenant
    end
    local job, jref = E[b + 3], E[b + 11]
    if etype == 'x' then
      -- The status, in the campaign hash (and the job's); only a campaign
      -- whose latest status is COMPLETED gets its keys expired.
      local status = E[b + 9]
      for _, key in ipairs(job ~= '' and {K_CAMP, KEYS[jref]} or {K_CAMP}) do
        local cur = tonumber(call('HGET', key, 'status_ts'))
        local latest = not cur or ts >= cur
        if latest then
          call('HSET', key, 'status', status, 'status_ts', ts, 'updated_at', now_text)
        else
          call('HSET', key, 'updated_at', now_text)
        end
        if key == K_CAMP and latest then
          if status == 'COMPLETED' then call('HSET', K_META, 'completed_at', now_text)
          else call('HDEL', K_META, 'completed_at') end
        end
      end
    else
      local u = users[user]
      local h, J = u[1], u[2]
      local chf = nil
      if etype == 'i' then
        for pass = 1, 2 do  -- allocate the target, then the node, when new (no script, under the cap)
          local id = pass == 1 and target or node
          if id ~= '' and not (pass == 1 and tf or nf) then
            local f = pass == 2 and id == target and tf or nil
            if not f then
              local i = call('HINCRBY', K_META, '#n', 1)
              local v = string.char(floor(i / 256), i % 256, 0, 0, 0, 0, 0)
              call('HSET', K_META, 'n:' .. id, v)
              call('HSET', K_NAMES, i, id)
              meta['n:' .. id], meta['#n'] = v, i
              f = facts(v)
              node_of[id] = f
            end
            if pass == 1 then tf = f else nf = f end
          end
        end
        if nf and choice ~= '' then
          -- The counter field of the choice: beyond max_choices distinct
          -- choices of a node, further ones are counted under '(other)'.
          local at = chfields[nf]
          if not at then at = {}; chfields[nf] = at end
          local known = at[choice]
          if not known then
            local key = nf[1] .. SEP .. choice
            known = {'ch:' .. key, false}
            if not call('HGET', K_META, 'c:' .. key) then
              if tonumber(call('HGET', K_META, '#c:' .. nf[1]) or '0') < tonumber(ARGV[7]) then
                call('HSET', K_META, 'c:' .. key, 1)
                call('HINCRBY', K_META, '#c:' .. nf[1], 1)
              else
                known = {'ch:' .. nf[1] .. SEP .. '(other)', true}
              end
            end
            at[choice] = known
          end
          chf = known[1]
          if known[2] then A_camp['over:choices'] = (A_camp['over:choices'] or 0) + 1 end
        end
      end
      local ji = job_index[job]
      if not ji then
        ji = tonumber(meta['j:' .. job])
        if not ji then
          ji = call('HINCRBY', K_META, '#j', 1)
          call('HSET', K_META, 'j:' .. job, ji)
        end
        job_index[job] = ji
      end
      local A_job = incr[KEYS[jref]]
      if not A_job then A_job = {}; incr[KEYS[jref]] = A_job end
      local other = nil
      for j in pairs(J) do
        if j ~= 0 and j ~= ji then other = j break end
      end
      local r = J[ji]
      if not r then
        r = {ji, 0, -1, -1, -1, 0, 0, {}, {}, keep and {} or nil}
        J[ji] = r
      end
      local start = etype == 's' and start_facts or nil
      if not other then
        -- Only this job so far: the campaign record is the job's record.
        apply(r, etype, ts, tf, nf, chf, choice, target, start, A_job, nil, exit_name)
      else
        local c = J[0]
        if not c then
          -- The user's first event in a second job: the other job's record
          -- has been the campaign record until now.
          local o = J[other]
          local R, K = {}, {}
          for i = 1, #o[8] do R[i] = o[8][i] end
          for i = 1, #o[9] do K[i] = o[9][i] end
          c = {0, o[2], o[3], o[4], o[5], o[6], o[7], R, K}
          J[0] = c
        end
        -- Campaign corrections = the campaign record's change - the job's change.
        apply(r, etype, ts, tf, nf, chf, choice, target, start, A_job, A_camp, exit_name)
        apply(c, etype, ts, tf, nf, chf, choice, target, start, A_camp, nil, exit_name)
      end
      if not u[3] then u[3] = true; nchanged = nchanged + 1; changed[nchanged] = user end
      if keep and h[1] ~= gen then
        h[1] = gen
        logged[#logged + 1] = user
      end
      -- Day HyperLogLogs: skipped when the header shows the user is in them.
      -- A local day's keys are counted against max_days and given their TTL
      -- once (the meta field holds when they expire).
      local day, dref = E[b + 10], E[b + 12]
      local ok = day_ok[day]
      if ok == nil then
        day_field[day] = 'i:' .. day
        local until_ms = tonumber(meta['d:' .. day])
        ok = until_ms and until_ms > now
        if not ok then
          ok = until_ms ~= nil or tonumber(meta['#d'] or '0') < tonumber(ARGV[8])
          if ok then
            if not until_ms then meta['#d'] = call('HINCRBY', K_META, '#d', 1) end
            call('HSET', K_META, 'd:' .. day, now + tonumber(ARGV[6]) * 1000)
            for k = dref, dref + 3 do call('EXPIRE', KEYS[k], ARGV[6]) end
          end
        end
        day_ok[day] = ok
      end
      if ok then
        local dn = day  -- yyyymmdd: compared as text
        local bits = etype == 's' and 3 or etype == 'i' and 5 or 1
        local have = 0
        if h[2] == dn then have = h[3] elseif dn > h[2] then h[2], h[3] = dn, 0 end
        if band(bits, 1) ~= 0 and band(have, 1) == 0 then
          local m = hll[dref]; if not m then m = {}; hll[dref] = m end; m[#m + 1] = user
          m = hll[dref + 3]; if not m then m = {}; hll[dref + 3] = m end; m[#m + 1] = user
        end
        if band(bits, 2) ~= 0 and band(have, 2) == 0 then
          local m = hll[dref + 1]; if not m then m = {}; hll[dref + 1] = m end; m[#m + 1] = user
        end
        if band(bits, 4) ~= 0 and band(have, 4) == 0 then
          local m = hll[dref + 2]; if not m then m = {}; hll[dref + 2] = m end; m[#m + 1] = user
        end
        if h[2] == dn then h[3] = bor(h[3], bits) end
        if etype == 'i' then
          local f = day_field[day]
          A_camp[f] = (A_camp[f] or 0) + 1
        end
      else
        A_camp['over:days'] = (A_camp['over:days'] or 0) + 1
      end
      if not touched[job] then  -- the job's last change, kept to the second
        touched[job] = true
        local tj = meta['t:' .. job]
        if not tj or sub(tj, 1, -4) ~= sub(now_text, 1, -4) then call('HSET', K_META, 't:' .. job, now_text) end
      end
    end
    if repairing and fp ~= '' then  -- events without an id are taken from the history
      for k = 1, 10 do tail[#tail + 1] = E[b + k] end
      tail[#tail + 1] = fp
    end
  elseif code < 0 then
    rejected[code] = (rejected[code] or 0) + 1
  end
  codes[b / FIELDS + 1] = code + 8
end

-- == Flush =====================================================================

local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end
local out = {}
-- Users whose only events were duplicates (or rejected) keep their record as it was.
for i = 1, nchanged do
  local user = changed[i]
  local u = users[user]
  local J = u[2]
  local recs, j1 = {u[1]}, next(J)
  if next(J, j1) == nil then recs[2] = J[j1] else  -- in one job (most users), else in job order
    local jis = {}
    for j in pairs(J) do jis[#jis + 1] = j end
    table.sort(jis)
    for k = 1, #jis do recs[k + 1] = J[jis[k]] end
  end
  out[2 * i - 1] = user
  out[2 * i] = cmsgpack.pack(recs)
end
if #out > 0 then chunked('HSET', K_USERS, out) end
local ids_out, ids_gone = {}, {}
for k in pairs(written) do
  local name = bname[k] or fmt('%d', k)
  if buckets[k] == '' then ids_gone[#ids_gone + 1] = name else
    ids_out[#ids_out + 1] = name
    ids_out[#ids_out + 1] = buckets[k]
  end
end
if #ids_out > 0 then chunked('HSET', K_IDS, ids_out) end
if #ids_gone > 0 then chunked('HDEL', K_IDS, ids_gone) end
if ids_moved then call('HSET', K_META, 'ids:L', ids_L, 'ids:p', ids_p) end
for key, a in pairs(incr) do
  for f, v in pairs(a) do
    if v ~= 0 then call('HINCRBY', key, f, v == 1 and '1' or v) end
  end
end
for ref, members in pairs(hll) do chunked('PFADD', KEYS[ref], members) end  -- repeats are harmless
if #logged > 0 then call('APPEND', K_LOG, table.concat(logged, SEP) .. SEP) end
if #tail > 0 then call('XADD', K_TAIL, '*', 'e', cmsgpack.pack(tail)) end
if applied > 0 and not meta['dirty'] then
  call('HSET', K_META, 'dirty', now_text)
  call('ZADD', K_DIRTY, 'NX', now_text, campaign)
end
for code, n in pairs(rejected) do call('HINCRBY', K_REJ, campaign .. SEP .. -code, n) end
local parts, nev = {}, #E / FIELDS
for i = 1, nev, 1000 do parts[#parts + 1] = string.char(unpack(codes, i, math.min(i + 999, nev))) end
return table.concat(parts) .. '\n' .. epoch
