-- adjust: an operator's signed correction of one subject's settled spend (a port of
-- windows.plan_adjust). A negative delta cancels in-window spend newest bucket first, down
-- to zero per bucket; the rest (and any positive delta) goes to the current bucket.
-- Returns the window's spend after it. Holds, owners and the epoch are not touched.
-- KEYS: spend   ARGV: prefix, now, kind, seconds, delta
local now = clock(ARGV[2])
local kind, sec, delta = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local _, rows = window_spend(KEYS[1], kind, sec, now, true)
if delta < 0 then
  table.sort(rows, function(a, b) return a[1] > b[1] end)
  for _, r in ipairs(rows) do
    if delta == 0 then break end
    if r[2] > 0 then
      local take = math.min(r[2], -delta)
      redis.call('HINCRBY', KEYS[1], int(r[1]), int(-take))
      delta = delta + take
    end
  end
end
if delta ~= 0 then
  redis.call('HINCRBY', KEYS[1], int(bucket_of(kind, sec, now)), int(delta))
end
local spent = window_spend(KEYS[1], kind, sec, now, false)
return spent
