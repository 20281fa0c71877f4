-- heartbeat: renew this owner's lease, then reclaim (charge whole, as orphaned) every
-- live hold whose owner's lease lapsed or is unknown, or that passed the hard maximum
-- age; forget orphans after `keep` seconds and lapsed owners without holds.
-- Returns {count, store epoch, one row per reclaimed hold: {id, owner, amount, created,
-- subject...}} so the proxy audits and counts exactly the holds this beat charged.
-- KEYS: owners, busy, holds, orphans, epoch, digests, schema
-- ARGV: prefix, now, owner, lease, max_hold, keep, epoch proposal, digest, schema version
local now = clock(ARGV[2])
local owner, lease, max_hold, keep = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])

local schema = redis.call('GET', KEYS[7])
if not schema then
  redis.call('SET', KEYS[7], ARGV[9])
elseif schema ~= ARGV[9] then
  return redis.error_reply('ledger schema version ' .. schema .. ' is not the supported '
    .. ARGV[9])
end
local store_epoch = redis.call('GET', KEYS[5])
if not store_epoch then
  store_epoch = fmt(now) .. ':' .. ARGV[7]
  redis.call('SET', KEYS[5], store_epoch)
end
redis.call('ZADD', KEYS[1], fmt(now), owner)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[6], owner, ARGV[8]) end

local reclaimed, rows = 0, {}
local function orphan(hold_id)
  local key = P .. 'hold:' .. hold_id
  local h = redis.call('HMGET', key, 'owner', 'amount', 'charges', 'orphaned', 'created')
  if not h[1] or h[4] then  -- defensive: never charge a hold twice
    redis.call('ZREM', KEYS[3], hold_id)
    return
  end
  local amount, charges = tonumber(h[2]), cjson.decode(h[3])
  charge(charges, amount)
  unhold(hold_id, h[1], amount, charges)
  redis.call('HSET', key, 'orphaned', fmt(now))
  redis.call('ZADD', KEYS[4], fmt(now), hold_id)
  reclaimed = reclaimed + 1
  local row = {hold_id, h[1], h[2], h[5] or '0'}
  for _, c in ipairs(charges) do row[#row + 1] = c[1] end
  rows[#rows + 1] = row
end

for _, o in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local beat = redis.call('ZSCORE', KEYS[1], o)
  if not beat or tonumber(beat) < now - lease then
    for _, hold_id in ipairs(redis.call('SMEMBERS', P .. 'owner:' .. o)) do orphan(hold_id) end
    redis.call('DEL', P .. 'owner:' .. o)
    redis.call('SREM', KEYS[2], o)
  end
end
for _, hold_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. fmt(now - max_hold))) do
  orphan(hold_id)
end
for _, hold_id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. fmt(now - keep))) do
  redis.call('DEL', P .. 'hold:' .. hold_id)
  redis.call('ZREM', KEYS[4], hold_id)
end
for _, o in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now - lease))) do
  if redis.call('SISMEMBER', KEYS[2], o) == 0 then
    redis.call('ZREM', KEYS[1], o)
    redis.call('HDEL', KEYS[6], o)
  end
end
return {reclaimed, store_epoch, unpack(rows)}
