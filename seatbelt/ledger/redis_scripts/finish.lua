-- finish: settle (charge `actual`, all of it) or release (charge nothing) a hold, once.
-- An orphaned hold was charged whole by a reclaim: settle corrects that charge to
-- `actual`, release refunds it.
-- KEYS: hold, orphans   ARGV: prefix, hold_id, mode ('settle' | 'release'), actual
local hold_id, mode, actual = ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'owner', 'amount', 'charges', 'orphaned')
if not h[1] then return {0, 0} end  -- settled/released before, or forgotten: a no-op
local amount = tonumber(h[2])
local charges = cjson.decode(h[3])
local delta
if h[4] then
  delta = mode == 'settle' and actual - amount or -amount
  redis.call('ZREM', KEYS[2], hold_id)
else
  delta = mode == 'settle' and actual or 0
  unhold(hold_id, h[1], amount, charges)
end
charge(charges, delta)
redis.call('DEL', KEYS[1])
return {1, (mode == 'settle' and actual > amount) and 1 or 0}
