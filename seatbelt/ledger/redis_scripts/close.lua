-- close: an owner without live holds leaves; one with live holds stays registered until
-- its lease lapses (then its holds are reclaimed), so closing never frees a budget early.
-- KEYS: owners, digests, owner's holds   ARGV: prefix, owner
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  return 1
end
return 0
