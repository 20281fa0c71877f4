-- digest: store this owner's policy digest (unless ARGV[4] is '') and name every other
-- live owner (lease not lapsed) whose digest differs.
-- KEYS: owners, digests   ARGV: prefix, now, owner, digest, mine, lease
local now, owner, lease = clock(ARGV[2]), ARGV[3], tonumber(ARGV[6])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], owner, ARGV[4]) end
local out = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local o, d = flat[i], flat[i + 1]
  if o ~= owner and d ~= ARGV[5] then
    local beat = redis.call('ZSCORE', KEYS[1], o)
    if beat and tonumber(beat) >= now - lease then out[#out + 1] = {o, d} end
  end
end
return out
