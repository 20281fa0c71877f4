-- snapshot (read-only): settled spend inside each cap's window and its live holds.
-- KEYS: (spend, held) per cap   ARGV: prefix, now, then (kind, seconds) per cap
local now = clock(ARGV[2])
local out = {}
for i = 0, #KEYS / 2 - 1 do
  local kind, sec = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local spent = window_spend(KEYS[1 + 2 * i], kind, sec, now, false)
  out[i + 1] = {spent, tonumber(redis.call('GET', KEYS[2 + 2 * i]) or '0')}
end
return out
