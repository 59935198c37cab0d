import { createHash } from 'node:crypto';

/**
 * The lease rules and the commit, as Lua run atomically on the shard that owns the
 * session. Each script touches only the session's own keys (KEYS 1–9, see keys.ts), so
 * it works the same on standalone Redis, behind Sentinel and on Redis Cluster.
 *
 * Common arguments (ARGV 1–9), in this order, for every script:
 *   now (epoch ms), owner (engine id, or '' for nobody), owner channel prefix, lease
 *   time limit ms, recall deadline ms, ping-pong half-life ms, ping-pong threshold,
 *   event channel, session id.
 * Script-specific arguments follow from ARGV 10.
 *
 * Scripts that can move a lease (`countsLeases`) reply with arrays whose last element
 * is the counters of what the script did {grants, recalls, handovers, pingPongGrants,
 * revocations}, which the engine adds to the cluster-wide statistics. Refusals are error replies that start
 * with a KILN_ERR_ code; a script validates everything before it writes anything,
 * because Redis does not roll a script's writes back.
 */

const PRELUDE = `
local KM, KA, KC, KL, KW, KWD, KK, KB, KX = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local now = tonumber(ARGV[1])
local owner = ARGV[2]
local ownerChan = ARGV[3]
local leaseTtl = tonumber(ARGV[4])
local recallMs = tonumber(ARGV[5])
local halfLife = tonumber(ARGV[6])
local threshold = tonumber(ARGV[7])
local eventChan = ARGV[8]
local sid = ARGV[9]
local stat = {0, 0, 0, 0, 0}

local function tell(to, msg)
  redis.call('PUBLISH', ownerChan .. to, cjson.encode(msg))
end

local function snapshot()
  local m = redis.call('HGETALL', KM)
  if #m == 0 then return false end
  return {m, redis.call('HGETALL', KA)}
end

-- A number Kiln wrote into a field of key; absent is 'default'. Anything else was written
-- by someone else: named (key and field), where tonumber's nil would fail further on
-- naming nothing. Raised, so it reaches the caller from inside any helper.
local function numIn(key, field, value, default)
  if not value then return default end
  local n = tonumber(value)
  if n == nil then error('KILN_ERR_STORAGE_DAMAGED ' .. key .. ' field "' .. field .. '" is not a number', 0) end
  return n
end

-- Before a script's first write: its lease keys are of the types Kiln gives them (or
-- absent). A key planted with another type would fail a call halfway, after the data
-- was deleted and before the lease and its waiters were told.
local function leaseKeysSound()
  for _, kt in ipairs({{KL, 'hash'}, {KW, 'list'}, {KWD, 'hash'}}) do
    local t = redis.call('TYPE', kt[1])['ok']
    if t ~= 'none' and t ~= kt[2] then error('KILN_ERR_STORAGE_DAMAGED ' .. kt[1] .. ' is a ' .. t .. ', not a ' .. kt[2], 0) end
  end
end

-- The deadline fields of a metadata read (HMGET KM 'la', 'it', 'ae', ...).
local function timesOf(m)
  return numIn(KM, 'la', m[1], 0), numIn(KM, 'it', m[2], 0), numIn(KM, 'ae', m[3], 0)
end

local function deadlineOf(la, it, ae, grace)
  local d = -1
  if it > 0 then d = la + it + grace end
  if ae > 0 and (d < 0 or ae < d) then d = ae end
  return d
end

-- Redis's own TTL on the session's data: its deadline plus a slack, so memory comes
-- back even if no process sweeps; none for a session that never expires.
local function keepDataUntil(d, slack)
  if d >= 0 then
    local at = math.floor(d + slack)
    redis.call('PEXPIREAT', KM, at)
    redis.call('PEXPIREAT', KA, at)
    redis.call('PEXPIREAT', KC, at)
  else
    redis.call('PERSIST', KM)
    redis.call('PERSIST', KA)
    redis.call('PERSIST', KC)
  end
end

-- Moves the access time forward to 'at' (never past now): 1 if it moved, else 0.
local function touchTo(at, slack)
  local m = redis.call('HMGET', KM, 'la', 'it', 'ae')
  if not m[1] then return 0 end
  local was, it, ae = timesOf(m)
  local la = math.min(at, now)
  if la <= was then return 0 end
  redis.call('HSET', KM, 'la', la)
  keepDataUntil(deadlineOf(la, it, ae, 0), slack)
  return 1
end

-- First waiter still waiting; waiters whose acquire timed out are dropped on the way.
local function nextWaiter()
  while true do
    local head = redis.call('LINDEX', KW, 0)
    if not head then return nil end
    local d = tonumber(redis.call('HGET', KWD, head) or '0')
    if d > now then return head end
    redis.call('LPOP', KW)
    redis.call('HDEL', KWD, head)
  end
end

local function unqueue(who)
  if redis.call('HDEL', KWD, who) == 1 then redis.call('LREM', KW, 0, who) end
end

local function enqueue(who, untilMs)
  local cur = redis.call('HGET', KWD, who)
  if not cur then redis.call('RPUSH', KW, who) end
  if not cur or tonumber(cur) < untilMs then redis.call('HSET', KWD, who, untilMs) end
  local keep = math.floor(untilMs - now + 1000)
  if redis.call('PTTL', KW) < keep then
    redis.call('PEXPIRE', KW, keep)
    redis.call('PEXPIRE', KWD, keep)
  end
end

local function decayed(score, at)
  return score * math.pow(0.5, (now - at) / halfLife)
end

local function isPingPong()
  local b = redis.call('HMGET', KB, 'sc', 'at')
  if not b[1] then return false end
  return decayed(tonumber(b[1]), tonumber(b[2])) >= threshold
end

-- Records who got the session; true when it is bouncing between processes.
local function noteOwner(who)
  local b = redis.call('HMGET', KB, 'lo', 'sc', 'at')
  local score = 0
  if b[1] then
    score = decayed(tonumber(b[2]), tonumber(b[3]))
    if b[1] ~= who then score = score + 1 end
  end
  redis.call('HSET', KB, 'lo', who, 'sc', tostring(score), 'at', now)
  redis.call('PEXPIRE', KB, math.floor(halfLife * 12))
  return score >= threshold
end

-- Gives the lease to who, with a fencing token larger than any before. When others
-- still wait, the new holder is asked at once to give it back after its current use.
local function grant(who)
  unqueue(who)
  local token = redis.call('INCR', KK)
  redis.call('PEXPIRE', KK, 86400000)
  local pp = noteOwner(who)
  stat[1] = stat[1] + 1
  if pp then stat[4] = stat[4] + 1 end
  local rd = 0
  if nextWaiter() then rd = now + recallMs end
  redis.call('HSET', KL, 'o', who, 't', token, 'rd', rd)
  if rd > 0 then
    redis.call('PEXPIRE', KL, recallMs)
    stat[2] = stat[2] + 1
    tell(who, {k = 'r', s = sid, t = token, d = rd})
  else
    redis.call('PEXPIRE', KL, leaseTtl)
  end
  return token, pp, rd
end

-- The holder let go, or lost the lease: the first live waiter gets it and is told.
local function passOn()
  redis.call('DEL', KL)
  local head = nextWaiter()
  if not head then return end
  local token = grant(head)
  stat[3] = stat[3] + 1
  tell(head, {k = 'g', s = sid, t = token})
end

-- The session is gone: its holder (unless it asked for this) is told, waiters move on.
local function endLease(reason, except)
  local h = redis.call('HMGET', KL, 'o', 't')
  if not h[1] then return end
  if h[1] ~= except then
    stat[5] = stat[5] + 1
    tell(h[1], {k = 'v', s = sid, t = tonumber(h[2]), why = reason})
  end
  passOn()
end

local function leaseIs(token)
  local h = redis.call('HMGET', KL, 'o', 't')
  return h[1] == owner and tonumber(h[2]) == token
end

local function leaseLost()
  return redis.error_reply('KILN_ERR_LEASE_LOST the lease token is not current (revoked, moved, or never granted)')
end
`;

/** ARGV 10: until when the caller waits (epoch ms). Reply: {'G', token, pingPong, recallDeadline, snapshot, stats} or {'W', recallDeadline, stats}. */
const ACQUIRE = `
local waitUntil = tonumber(ARGV[10])
local h = redis.call('HMGET', KL, 'o', 't', 'rd')
if h[1] == owner then
  local rd = tonumber(h[3])
  if rd == 0 then redis.call('PEXPIRE', KL, leaseTtl) end
  return {'G', tonumber(h[2]), isPingPong() and 1 or 0, rd, snapshot(), stat}
end
if h[1] then
  enqueue(owner, waitUntil)
  local rd = tonumber(h[3])
  if rd == 0 then
    rd = now + recallMs
    redis.call('HSET', KL, 'rd', rd)
    redis.call('PEXPIRE', KL, recallMs)
    stat[2] = stat[2] + 1
    tell(h[1], {k = 'r', s = sid, t = tonumber(h[2]), d = rd})
  end
  return {'W', rd, stat}
end
local head = nextWaiter()
if head and head ~= owner then
  -- Free, but another process was waiting first (the holder's lease ran out): it gets
  -- the session and is asked to hand it on; we queue behind it.
  enqueue(owner, waitUntil)
  passOn()
  return {'W', tonumber(redis.call('HGET', KL, 'rd') or '0'), stat}
end
local token, pp, rd = grant(owner)
return {'G', token, pp and 1 or 0, rd, snapshot(), stat}
`;

/** ARGV 10: token; 11 and 12 (optional): access time to apply first, key slack ms. Reply: {released 0|1, stats, touched 0|1}. */
const RELEASE = `
if not leaseIs(tonumber(ARGV[10])) then return {0, stat} end
local touched = 0
if ARGV[11] then touched = touchTo(tonumber(ARGV[11]), tonumber(ARGV[12])) end
passOn()
return {1, stat, touched}
`;

/** The caller's acquire timed out: out of the queue. Reply: {1, stats}. */
const CANCEL_WAIT = `
unqueue(owner)
return {1, stat}
`;

/** ARGV 10: token. Reply: 1 renewed, 0 not ours any more, or the recall deadline when a recall is pending. */
const RENEW = `
local h = redis.call('HMGET', KL, 'o', 't', 'rd')
if h[1] ~= owner or tonumber(h[2]) ~= tonumber(ARGV[10]) then return 0 end
local rd = tonumber(h[3])
if rd == 0 then
  redis.call('PEXPIRE', KL, leaseTtl)
  return 1
end
return rd
`;

/** ARGV 10: token. Reply: snapshot or nil. */
const LOAD = `
if not leaseIs(tonumber(ARGV[10])) then return leaseLost() end
return snapshot()
`;

/** ARGV 10 token, 11 accessed at, 12 key slack ms. Reply: 1 applied, 0 not. */
const TOUCH = `
if not leaseIs(tonumber(ARGV[10])) then return 0 end
return touchTo(tonumber(ARGV[11]), tonumber(ARGV[12]))
`;

/**
 * ARGV 10 token, 11 commit id, 12 base version, 13 last accessed at, 14 principal mode
 * ('u' unchanged, 'n' clear, 's' set), 15 principal, 16 idle timeout ('' unchanged),
 * 17 absolute expiry ('' unchanged), 18 release '1'|'0', 19 maxAttributeBytes,
 * 20 maxSessionBytes, 21 maxAttributes, 22 key slack ms, 23 number of sets, then per
 * set: name, value, name length (JavaScript's, so sizes agree with every engine); then
 * the number of deletes and per delete: name, name length; then the number of patches
 * and per patch: name, offset, bytes cut, bytes put, base length, name length.
 * Reply: {'D', version, deadline now (-1 none) or false when the session is gone,
 * principal now or false, the principal that commit replaced or false, stats} for a retry
 * already applied (its first reply, and the index writes that followed it, may have been
 * lost), or {'A', version, old principal, created 0|1, deadline (-1 none) or false when
 * unchanged, byte change, stats}. A commit id's entry in KC is "id TAB version", with
 * "TAB principal replaced" after it when the commit changed the principal.
 */
const COMMIT = `
local token = tonumber(ARGV[10])
local cid = ARGV[11]
local base = tonumber(ARGV[12])
local releaseAfter = ARGV[18] == '1'
local function maybeRelease()
  if releaseAfter and leaseIs(token) then passOn() end
end
for _, e in ipairs(redis.call('LRANGE', KC, 0, -1)) do
  local tab = string.find(e, '\\t', 1, true)
  if tab and string.sub(e, 1, tab - 1) == cid then
    maybeRelease()
    local rest = string.sub(e, tab + 1)
    local version, replaced = rest, false
    local tab2 = string.find(rest, '\\t', 1, true)
    if tab2 then version, replaced = string.sub(rest, 1, tab2 - 1), string.sub(rest, tab2 + 1) end
    local m = redis.call('HMGET', KM, 'la', 'it', 'ae', 'p')
    local d = false
    if m[1] then
      local la, it, ae = timesOf(m)
      d = deadlineOf(la, it, ae, 0)
    end
    return {'D', tonumber(version), d, m[4] or false, replaced, stat}
  end
end
if not leaseIs(token) then return leaseLost() end
local exists = redis.call('EXISTS', KM) == 1
if base == 0 then
  if exists then return redis.error_reply('KILN_ERR_SESSION_EXISTS a session with this id exists already') end
  if redis.call('EXISTS', KX) == 1 then return redis.error_reply('KILN_ERR_SESSION_DESTROYED the session was destroyed; a late commit cannot bring it back') end
elseif not exists then
  if redis.call('EXISTS', KX) == 1 then return redis.error_reply('KILN_ERR_SESSION_DESTROYED the session was destroyed; a late commit cannot bring it back') end
  return redis.error_reply('KILN_ERR_SESSION_NOT_FOUND the session does not exist (expired or never created)')
else
  local v = numIn(KM, 'v', redis.call('HGET', KM, 'v'), 0)
  if v ~= base then return redis.error_reply('KILN_ERR_CONFLICT commit computed from version ' .. base .. ', session is at ' .. v) end
end
local maxAttr, maxSession, maxCount = tonumber(ARGV[19]), tonumber(ARGV[20]), tonumber(ARGV[21])
local oldBytes = numIn(KM, 'b', redis.call('HGET', KM, 'b'), 0)
local bytes = oldBytes
local count = redis.call('HLEN', KA)
local nset = tonumber(ARGV[23])
local delAt = 24 + nset * 3
local ndel = tonumber(ARGV[delAt])
local dels = {}
for i = 0, ndel - 1 do
  local name, len = ARGV[delAt + 1 + i * 2], tonumber(ARGV[delAt + 2 + i * 2])
  dels[name] = true
  if redis.call('HEXISTS', KA, name) == 1 then
    bytes = bytes - len - redis.call('HSTRLEN', KA, name)
    count = count - 1
  end
end
for i = 0, nset - 1 do
  local name, value, len = ARGV[24 + i * 3], ARGV[25 + i * 3], tonumber(ARGV[26 + i * 3])
  if #value > maxAttr then
    return redis.error_reply('KILN_ERR_ATTRIBUTE_TOO_LARGE session attribute "' .. name .. '" is ' .. #value .. ' bytes encoded, above maxAttributeBytes ' .. maxAttr)
  end
  if not dels[name] and redis.call('HEXISTS', KA, name) == 1 then
    bytes = bytes - len - redis.call('HSTRLEN', KA, name)
  else
    count = count + 1
  end
  bytes = bytes + len + #value
end
local patchAt = delAt + 1 + ndel * 2
local npatch = tonumber(ARGV[patchAt] or '0')
local patched = {}
for i = 0, npatch - 1 do
  local o = patchAt + 1 + i * 6
  local name, at, cut, piece, baseLen, len = ARGV[o], tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), ARGV[o + 3], tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
  local old = redis.call('HGET', KA, name)
  if (not old) or dels[name] or #old ~= baseLen then
    return redis.error_reply('KILN_ERR_CONFLICT patch of attribute "' .. name .. '" was computed from a value the session does not hold')
  end
  if at + cut > #old then return redis.error_reply('KILN_ERR_INVALID_ARGUMENT patch of attribute "' .. name .. '" reaches past its end') end
  local value = string.sub(old, 1, at) .. piece .. string.sub(old, at + cut + 1)
  if #value > maxAttr then
    return redis.error_reply('KILN_ERR_ATTRIBUTE_TOO_LARGE session attribute "' .. name .. '" would be ' .. #value .. ' bytes encoded, above maxAttributeBytes ' .. maxAttr)
  end
  bytes = bytes + #value - #old
  patched[#patched + 1] = {name, value}
end
if count > maxCount then return redis.error_reply('KILN_ERR_TOO_MANY_ATTRIBUTES session would hold ' .. count .. ' attributes, above maxAttributes ' .. maxCount) end
if bytes > maxSession then return redis.error_reply('KILN_ERR_SESSION_TOO_LARGE session would be ' .. bytes .. ' bytes, above maxSessionBytes ' .. maxSession) end
for i = 0, ndel - 1 do redis.call('HDEL', KA, ARGV[delAt + 1 + i * 2]) end
for i = 0, nset - 1 do redis.call('HSET', KA, ARGV[24 + i * 3], ARGV[25 + i * 3]) end
for _, p in ipairs(patched) do redis.call('HSET', KA, p[1], p[2]) end
local cur = redis.call('HMGET', KM, 'la', 'it', 'ae', 'p')
local curLa, it, ae = timesOf(cur)
local la = math.min(math.max(tonumber(ARGV[13]), curLa), now)
local v = base + 1
if ARGV[16] ~= '' then it = tonumber(ARGV[16]) end
if ARGV[17] ~= '' then ae = tonumber(ARGV[17]) end
redis.call('HSET', KM, 'v', v, 'la', la, 'b', bytes, 'it', it, 'ae', ae)
if not exists then redis.call('HSET', KM, 'ca', la) end
if ARGV[14] == 's' then redis.call('HSET', KM, 'p', ARGV[15]) elseif ARGV[14] == 'n' then redis.call('HDEL', KM, 'p') end
local record = cid .. '\\t' .. v
local newPrincipal = nil
if ARGV[14] == 's' then newPrincipal = ARGV[15] end
if ARGV[14] ~= 'u' and cur[4] and cur[4] ~= newPrincipal then record = record .. '\\t' .. cur[4] end
redis.call('LPUSH', KC, record)
redis.call('LTRIM', KC, 0, 15)
local d = deadlineOf(la, it, ae, 0)
keepDataUntil(d, tonumber(ARGV[22]))
maybeRelease()
local timeoutsChanged = (not exists) or ARGV[16] ~= '' or ARGV[17] ~= ''
local newDeadline = false
if timeoutsChanged then newDeadline = d end
return {'A', v, cur[4] or false, exists and 0 or 1, newDeadline, bytes - oldBytes, stat}
`;

/**
 * Destroys from anywhere; owner = who asked ('' = nobody: every holder is told).
 * ARGV 10 reason, 11 touch grace ms, 12 longest tombstone ms, 13 shortest tombstone ms.
 * Reply: {destroyed 0|1, principal, bytes freed, holder, holder's token, stats}, or
 * {2, principal or false, …} when only its tombstone is left (destroyed before); the
 * engine applies a revocation of its own lease at once instead of waiting for the message.
 */
const DESTROY = `
if redis.call('EXISTS', KM) == 0 then
  -- Destroyed before (its WAIT may have come back short, its clean-up not done): the
  -- tombstone says so, and whose it was, for the engine to finish once this run's WAIT
  -- confirms the replicas have everything up to here.
  local kx = redis.pcall('GET', KX)
  if type(kx) ~= 'string' then return {0, false, 0, false, 0, stat} end
  -- This run's clean-up (after its WAIT) gets the same window as the first run's: while
  -- the tombstone lives no session is made under the id, whose entries it would take out.
  local ttl = redis.call('PTTL', KX)
  if ttl >= 0 and ttl < tonumber(ARGV[13]) then redis.call('PEXPIRE', KX, ARGV[13]) end
  local was = false
  if string.sub(kx, 1, 1) == 'p' then was = string.sub(kx, 2) end
  return {2, was, 0, false, 0, stat}
end
-- A logout is never blocked by damaged data: metadata that cannot be read (a field that is
-- no number, a key of another type) is taken as unknown, and the tombstone lives its longest.
local m = redis.pcall('HMGET', KM, 'la', 'it', 'ae', 'p', 'b')
if m.err then m = {} end
local la, it, ae = tonumber(m[1] or '0'), tonumber(m[2] or '0'), tonumber(m[3] or '0')
local longest = now + tonumber(ARGV[12])
local d = longest
if la and it and ae then d = deadlineOf(la, it, ae, tonumber(ARGV[11])) end
if d < 0 or d > longest then d = longest end
local untilMs = math.max(d, now + tonumber(ARGV[13]))
redis.call('DEL', KM, KA, KC)
-- '1' (no principal), or 'p' and the principal: see the top of this script.
local tombstone = '1'
if m[4] then tombstone = 'p' .. m[4] end
redis.call('SET', KX, tombstone, 'PX', math.floor(untilMs - now))
local reason = ARGV[10]
local holder = redis.pcall('HMGET', KL, 'o', 't')
if holder.err then
  -- Not a lease: nobody holds the session.
  redis.call('DEL', KL)
  holder = {}
end
endLease('destroyed', owner)
local kind = 'destroyed'
if reason == 'expired' then kind = 'expired' end
local principal = m[4] or false
redis.call('PUBLISH', eventChan, cjson.encode({type = kind, sessionId = sid, principal = principal or cjson.null, at = now, reason = reason}))
return {1, principal, tonumber(m[5] or '0') or 0, holder[1] or false, tonumber(holder[2] or '0') or 0, stat}
`;

/**
 * The sweep found the session due: expires it unless a touch or commit moved its
 * deadline (a leased session gets the touch grace). ARGV 10 touch grace ms.
 * Reply: {0, stats} gone already, {2, deadline (-1 = never), stats} not due, {1, principal, bytes freed, stats}.
 */
const EXPIRE = `
if redis.call('EXISTS', KM) == 0 then return {0, stat} end
local m = redis.call('HMGET', KM, 'la', 'it', 'ae', 'p', 'b')
local grace = 0
if redis.call('EXISTS', KL) == 1 then grace = tonumber(ARGV[10]) end
local la, it, ae = timesOf(m)
local d = deadlineOf(la, it, ae, grace)
if d < 0 or d > now then return {2, d, stat} end
leaseKeysSound()
redis.call('DEL', KM, KA, KC)
endLease('expired', '')
redis.call('PUBLISH', eventChan, cjson.encode({type = 'expired', sessionId = sid, principal = m[4] or cjson.null, at = now}))
return {1, m[4] or false, tonumber(m[5] or '0') or 0, stat}
`;

/** Metadata without the lease (listing, the principal index, the admin inspector). Reply: flat meta hash or empty. */
const PEEK = `
return redis.call('HGETALL', KM)
`;

/** Data without the lease, for the admin inspector only. */
const PEEK_SNAPSHOT = `
return snapshot()
`;

export interface RedisScript {
  name: string;
  source: string;
  sha: string;
  /** The reply is an array whose last element is the lease counters. */
  countsLeases: boolean;
  /**
   * The same script replying `{its reply, CLUSTER MYID}`: which node ran it. On a
   * Cluster a script may run on another master than its WAIT goes to (node-redis follows
   * MOVED and ASK for the script; the WAIT, keyless, goes where its slot table says), so
   * the runner compares the two before it trusts the WAIT (ScriptRunner.runScript).
   */
  nodeNamed: { source: string; sha: string };
}

const sha1 = (source: string) => createHash('sha1').update(source).digest('hex');

function script(name: string, body: string, countsLeases = true): RedisScript {
  const source = PRELUDE + body;
  // The whole script as one function, so its top-level returns come back here; an error
  // reply (redis.error_reply) goes out as it is, an error still.
  const named = `local function kilnScript()\n${source}\nend\nlocal reply = kilnScript()\nif type(reply) == 'table' and reply.err then return reply end\nif reply == nil then reply = false end\nreturn {reply, redis.call('CLUSTER', 'MYID')}\n`;
  return { name, source, sha: sha1(source), countsLeases, nodeNamed: { source: named, sha: sha1(named) } };
}

export const SCRIPTS = {
  acquire: script('acquire', ACQUIRE),
  release: script('release', RELEASE),
  cancelWait: script('cancelWait', CANCEL_WAIT),
  renew: script('renew', RENEW, false),
  load: script('load', LOAD, false),
  touch: script('touch', TOUCH, false),
  commit: script('commit', COMMIT),
  destroy: script('destroy', DESTROY),
  expire: script('expire', EXPIRE),
  peek: script('peek', PEEK, false),
  peekSnapshot: script('peekSnapshot', PEEK_SNAPSHOT, false),
} as const;
