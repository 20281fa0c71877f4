-- reserve: hold `amount` on every cap, or on none and say why per cap.
-- KEYS: hold, holds, owners, busy, owner's holds, epoch, then (spend, held) per cap
-- ARGV: prefix, now, owner, hold_id, amount, epoch, then (subject, limit|'', kind, seconds)
local now = clock(ARGV[2])
local owner, hold_id, amount, epoch = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]

-- A store this client has not written since it was (re)created: Redis lost its data or
-- this is the client's first write. Register the owner so a live proxy keeps its holds.
local store_epoch = redis.call('GET', KEYS[6])
if store_epoch ~= epoch then
  if not store_epoch then
    store_epoch = fmt(now) .. ':' .. hold_id
    redis.call('SET', KEYS[6], store_epoch)
  end
  redis.call('ZADD', KEYS[3], fmt(now), owner)
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {1, store_epoch} end  -- a retried call

local n = (#ARGV - 6) / 4
local refusals, charges = {}, {}
for i = 0, n - 1 do
  local a = 7 + 4 * i
  local subject, limit, kind, sec = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  charges[i + 1] = {subject, bucket_of(kind, sec, now)}
  if limit ~= '' or kind ~= 'balance' then
    local spent, rows = window_spend(KEYS[7 + 2 * i], kind, sec, now, true)
    if limit ~= '' then
      limit = tonumber(limit)
      local reserved = tonumber(redis.call('GET', KEYS[8 + 2 * i]) or '0')
      local r = judge(limit, kind, sec, amount, spent, reserved, now, rows)
      if r then
        refusals[#refusals + 1] = {subject, r[1], r[2], limit, spent, reserved, r[3] and 1 or 0}
      end
    end
  end
end
if #refusals > 0 then return {0, store_epoch, unpack(refusals)} end

for i = 0, n - 1 do redis.call('INCRBY', KEYS[8 + 2 * i], int(amount)) end
redis.call('HSET', KEYS[1], 'owner', owner, 'amount', int(amount), 'created', fmt(now),
  'charges', cjson.encode(charges))
redis.call('ZADD', KEYS[2], fmt(now), hold_id)
redis.call('SADD', KEYS[5], hold_id)
redis.call('SADD', KEYS[4], owner)
return {1, store_epoch}
