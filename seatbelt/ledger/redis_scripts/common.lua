-- seatbelt ledger: helpers prepended to every script (see addon/ledger/redis.py).
-- The window arithmetic is a line-by-line port of addon/ledger/windows.py, so Redis,
-- SQLite and memory judge alike. ARGV[1] is the key prefix ("{seatbelt}:"); every key
-- carries that one hash tag, so every key a script touches lives in one Cluster slot.
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 7: TIME before writes

local P = ARGV[1]
local DAY = 86400

local function fmt(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end

-- Server time decides window edges; a non-empty argument is the test clock (redis.py
-- sends one only when SEATBELT_TEST_CLOCK=1 was set for a test run).
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- Proleptic Gregorian calendar, days since 1970-01-01 <-> (year, month); H. Hinnant's
-- civil_from_days / days_from_civil (Lua in Redis has no os.date).
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function month_start(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100)
    + math.floor((153 * mp + 2) / 5)
  return (era * 146097 + doe - 719468) * DAY
end

local function next_month_start(ts)
  local y, m = civil(math.floor(ts / DAY))
  if m == 12 then return month_start(y + 1, 1) end
  return month_start(y, m + 1)
end

local function step(sec) return math.max(1, math.floor(sec / 60)) end

local function bucket_of(kind, sec, ts)
  if kind == 'balance' then return 0 end
  if kind == 'rolling' then
    local s = step(sec)
    return math.floor(ts / s) * s
  end
  local days = math.floor(ts / DAY)
  if kind == 'daily' then return days * DAY end
  return month_start(civil(days))
end

local function window_start(kind, sec, now)
  if kind == 'balance' then return nil end
  if kind == 'rolling' then return bucket_of(kind, sec, now - sec) end
  return bucket_of(kind, sec, now)
end

local function window_length(kind, sec, now)
  if kind == 'rolling' then return sec end
  if kind == 'daily' then return DAY end
  return next_month_start(now) - bucket_of('monthly', sec, now)
end

local function ceil_seconds(x) return math.max(1, math.ceil(x - 1e-6)) end

local function until_reset(kind, sec, now)
  if kind == 'daily' then return ceil_seconds(bucket_of(kind, sec, now) + DAY - now) end
  return ceil_seconds(next_month_start(now) - now)
end

-- rows: in-window {bucket, tokens}; the oldest spend totalling `needed` leaves when?
local function until_room(sec, rows, needed, now)
  table.sort(rows, function(a, b) return a[1] < b[1] end)
  local freed = 0
  for _, r in ipairs(rows) do
    freed = freed + r[2]
    -- never more than the window (windows.seconds_until_room)
    if freed >= needed then return math.min(sec, ceil_seconds(r[1] + step(sec) + sec - now)) end
  end
  return sec
end

-- windows.judge: nil if the cap can hold `amount`, else {reason, retry_after|-1, exceeds}.
local function judge(limit, kind, sec, amount, spent, reserved, now, rows)
  if spent + reserved + amount <= limit then return nil end
  if kind == 'balance' then
    if spent + amount > limit then return {'quota', -1, amount > limit} end
    return {'rate', 1, false}
  end
  if amount > limit then return {'rate', window_length(kind, sec, now), true} end
  if spent + amount > limit then
    if kind == 'rolling' then
      return {'rate', until_room(sec, rows, spent + amount - limit, now), false}
    end
    return {'rate', until_reset(kind, sec, now), false}
  end
  return {'rate', 1, false}
end

-- Settled spend inside the window (and its rows). With `prune`, buckets that left the
-- window more than one window length ago are deleted: memory per subject stays bounded
-- (rolling: about 2 * 60 buckets; daily/monthly: 2-3) and nothing in a window is lost.
local function window_spend(key, kind, sec, now, prune)
  local start = window_start(kind, sec, now)
  local flat = redis.call('HGETALL', key)
  local spent, rows, stale = 0, {}, {}
  local horizon = start and start - window_length(kind, sec, now)
  for i = 1, #flat, 2 do
    local b = tonumber(flat[i])
    if start == nil or b >= start then
      local n = tonumber(flat[i + 1])
      spent = spent + n
      rows[#rows + 1] = {b, n}
    elseif prune and b < horizon then
      stale[#stale + 1] = flat[i]
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  return spent, rows
end

-- Spend `delta` on every charge ({subject, bucket}) of a hold.
local function charge(charges, delta)
  if delta == 0 then return end
  for _, c in ipairs(charges) do
    redis.call('HINCRBY', P .. 'spend:' .. c[1], int(c[2]), int(delta))
  end
end

-- A live hold stops being live: its amount leaves every subject's reserved counter and
-- the owner's set; an owner without live holds leaves `busy`.
local function unhold(hold_id, owner, amount, charges)
  for _, c in ipairs(charges) do
    local key = P .. 'held:' .. c[1]
    if redis.call('DECRBY', key, int(amount)) <= 0 then redis.call('DEL', key) end
  end
  local mine = P .. 'owner:' .. owner
  redis.call('ZREM', P .. 'holds', hold_id)
  redis.call('SREM', mine, hold_id)
  if redis.call('SCARD', mine) == 0 then redis.call('SREM', P .. 'busy', owner) end
end
