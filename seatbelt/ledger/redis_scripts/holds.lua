-- holds (read-only): every live hold, oldest first.
-- KEYS: holds   ARGV: prefix
local out = {}
for _, hold_id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HMGET', P .. 'hold:' .. hold_id, 'owner', 'amount', 'created', 'charges')
  if h[1] then
    local row = {hold_id, h[1], h[2], h[3]}
    for _, c in ipairs(cjson.decode(h[4])) do row[#row + 1] = c[1] end
    out[#out + 1] = row
  end
end
return out
