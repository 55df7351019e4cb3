-- Replace a stream whole with rows of fixed entry ids 1-0, 2-0, ...: a table
-- the dashboards read with XRANGE - + (one row per entry), e.g. the analysis
-- heatmap, one row per weekday. A reader sees the old rows or the new ones.
--
-- KEYS[1]: the stream.
-- ARGV[1]: n, the number of fields per row; ARGV[2 .. n+1]: the field names;
-- ARGV[n+2 ..]: the values, n per row, row after row (no rows: no stream).
-- Returns the number of rows written.
local n = tonumber(ARGV[1])
local rows = (#ARGV - 1 - n) / n
redis.call('DEL', KEYS[1])
for r = 1, rows do
  local entry = {}
  for f = 1, n do
    entry[2 * f - 1] = ARGV[1 + f]
    entry[2 * f] = ARGV[1 + n + (r - 1) * n + f]
  end
  redis.call('XADD', KEYS[1], r .. '-0', unpack(entry))
end
return rows
