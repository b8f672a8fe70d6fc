"""The Lua scripts of :class:`~avtomatika.storage.redis.RedisStorage`: each one is one atomic change.

Key names come from :mod:`avtomatika.keys` (``$NAME`` below is that constant) after the namespace
prefix the storage passes as ``ARGV[1]``. Scripts build some keys from what they read (the worker a
task was given to, the queue it waits in), so on Redis Cluster every key must share one hash slot
(see :mod:`avtomatika.keys`).

Numbers that matter to the last bit (due times, scores, deadlines) are passed as strings and handed to
Redis as they are: Lua's number-to-string conversion keeps only 14 significant digits.

Invariants the scripts keep, so that counts are exact without scanning:

- a task hash has ``qkey``/``member`` exactly when its entry is in that zset (QUEUE or INBOX), and is
  then counted once in QUEUED_COUNTS under its type;
- LOAD_COUNTS[w] is the size of LOAD+w; JOB_COUNTS sums to the number of job hashes.
"""

from __future__ import annotations

from string import Template

from ... import keys

#: Helpers shared by the scripts that change jobs and tasks.
_PRELUDE = """
local ns = ARGV[1]
local function key(name, suffix) return ns .. name .. (suffix or '') end

local function decrement(hash, field)
  if redis.call('HINCRBY', hash, field, -1) <= 0 then redis.call('HDEL', hash, field) end
end

local function load_add(worker, task_id)
  if redis.call('SADD', key('$LOAD', worker), task_id) == 1 then
    redis.call('HINCRBY', key('$LOAD_COUNTS'), worker, 1)
  end
end

local function load_remove(worker, task_id)
  if redis.call('SREM', key('$LOAD', worker), task_id) == 1 then decrement(key('$LOAD_COUNTS'), worker) end
end

-- Take a task out of the queue or inbox it waits in, if it waits in one.
local function dequeue(task_key)
  local at = redis.call('HMGET', task_key, 'qkey', 'member', 'type')
  if not at[1] then return end
  redis.call('ZREM', at[1], at[2])
  decrement(key('$QUEUED_COUNTS'), at[3])
  redis.call('HDEL', task_key, 'qkey', 'member', 'score')
  redis.call('ZREM', key('$INBOXED', at[3]), string.sub(at[2], 18))
end

-- Equal scores sort by member: the zero-padded sequence keeps them first in first out.
local function enqueue(task_key, task_id, task_type, worker, score, queued_at)
  local sequence = redis.call('INCR', key('$TASK_SEQUENCE'))
  local member = string.format('%016d:%s', sequence, task_id)
  local qkey, wake
  if worker ~= '' then
    qkey, wake = key('$INBOX', worker), 'w:' .. worker
    load_add(worker, task_id)
    redis.call('ZADD', key('$INBOXED', task_type), queued_at, task_id)
  else
    qkey, wake = key('$QUEUE', task_type), 't:' .. task_type
  end
  redis.call('ZADD', qkey, score, member)
  redis.call('HSET', task_key, 'qkey', qkey, 'member', member, 'score', score)
  redis.call('HINCRBY', key('$QUEUED_COUNTS'), task_type, 1)
  redis.call('PUBLISH', key('$TASK_WAKE'), wake)
end

local function store_task(task_id, job_id, task_type, status, worker, doc, score, queued_at)
  local task_key = key('$TASK', task_id)
  local old = redis.call('HMGET', task_key, 'status', 'worker_id', 'qkey', 'score', 'member')
  if not old[1] then
    redis.call('SADD', key('$JOB_TASKS', job_id), task_id)
  elseif old[2] and old[2] ~= worker then
    load_remove(old[2], task_id)  -- given to another worker, or to anyone
  end
  local target = false
  if status == 'queued' then
    if worker ~= '' then target = key('$INBOX', worker) else target = key('$QUEUE', task_type) end
  end
  -- Stored again, queued where it waits already at the same priority: it keeps its place.
  local stays = target and old[3] == target and old[4] == score
  if not stays then dequeue(task_key) end
  redis.call('DEL', task_key)
  redis.call('HSET', task_key, 'doc', doc, 'status', status, 'type', task_type, 'job_id', job_id)
  if worker ~= '' then redis.call('HSET', task_key, 'worker_id', worker) end
  if stays then
    redis.call('HSET', task_key, 'qkey', old[3], 'member', old[5], 'score', old[4])
    if worker ~= '' then redis.call('ZADD', key('$INBOXED', task_type), queued_at, task_id) end
  elseif target then
    enqueue(task_key, task_id, task_type, worker, score, queued_at)
  end
end

local function close_task(task_id, status)
  local task_key = key('$TASK', task_id)
  if redis.call('EXISTS', task_key) == 0 then return end
  local worker = redis.call('HGET', task_key, 'worker_id')
  dequeue(task_key)
  redis.call('HSET', task_key, 'status', status)
  redis.call('ZREM', key('$TIMERS'), '$TIMEOUT_TIMER' .. task_id)
  if worker then load_remove(worker, task_id) end
end

local INDEXED = {'status', 'blueprint', 'state', 'client'}

-- The job's fields start at ARGV[a]: id, version, doc, token, status, blueprint, state, client,
-- counted (its JOB_COUNTS field), terminal ('1' or '0').
local function store_job(a)
  local job_id, counted = ARGV[a], ARGV[a + 8]
  local job_key = key('$JOB', job_id)
  local old = redis.call('HMGET', job_key, 'seq', 'counted', 'status', 'blueprint', 'state', 'client')
  local seq = old[1]
  if not seq then
    seq = redis.call('INCR', key('$JOB_SEQUENCE'))
    redis.call('ZADD', key('$JOBS_ALL'), seq, job_id)
  end
  if old[2] ~= counted then
    if old[2] then decrement(key('$JOB_COUNTS'), old[2]) end
    redis.call('HINCRBY', key('$JOB_COUNTS'), counted, 1)
  end
  for i, field in ipairs(INDEXED) do
    local before, after = old[i + 2], ARGV[a + 3 + i]
    if before ~= after then
      if before and before ~= '' then redis.call('ZREM', key('$JOBS_BY', field .. ':' .. before), job_id) end
      if after ~= '' then redis.call('ZADD', key('$JOBS_BY', field .. ':' .. after), seq, job_id) end
    end
  end
  redis.call('HSET', job_key, 'doc', ARGV[a + 2], 'version', ARGV[a + 1], 'seq', seq, 'commit', ARGV[a + 3],
    'status', ARGV[a + 4], 'blueprint', ARGV[a + 5], 'state', ARGV[a + 6], 'client', ARGV[a + 7],
    'counted', counted)
  local terminal = key('$JOBS_TERMINAL')
  if ARGV[a + 9] ~= '1' then
    redis.call('ZREM', terminal, job_id)
  elseif not redis.call('ZSCORE', terminal, job_id) then
    redis.call('ZADD', terminal, redis.call('INCR', key('$TERMINAL_SEQUENCE')), job_id)
  end
end

-- Drop a job with its tasks, branch results and index entries.
local function forget(job_id)
  local job_key = key('$JOB', job_id)
  local old = redis.call('HMGET', job_key, 'counted', 'status', 'blueprint', 'state', 'client')
  if old[1] then decrement(key('$JOB_COUNTS'), old[1]) end
  for i, field in ipairs(INDEXED) do
    local value = old[i + 1]
    if value and value ~= '' then redis.call('ZREM', key('$JOBS_BY', field .. ':' .. value), job_id) end
  end
  redis.call('ZREM', key('$JOBS_ALL'), job_id)
  redis.call('ZREM', key('$JOBS_TERMINAL'), job_id)
  redis.call('DEL', job_key, key('$BRANCHES', job_id))
  local tasks_key = key('$JOB_TASKS', job_id)
  for _, task_id in ipairs(redis.call('SMEMBERS', tasks_key)) do
    local task_key = key('$TASK', task_id)
    local worker = redis.call('HGET', task_key, 'worker_id')
    dequeue(task_key)
    if worker then load_remove(worker, task_id) end
    redis.call('ZREM', key('$TIMERS'), '$TIMEOUT_TIMER' .. task_id)
    redis.call('DEL', task_key)
  end
  redis.call('DEL', tasks_key)
end

local function trim_terminal(max_terminal)
  local terminal = key('$JOBS_TERMINAL')
  local excess = redis.call('ZCARD', terminal) - max_terminal
  if excess > 0 then
    for _, job_id in ipairs(redis.call('ZRANGE', terminal, 0, excess - 1)) do forget(job_id) end
  end
end

-- Queue the job to be stepped. With a consumer (a process one of whose takers is idle), also read for
-- it the oldest entry no one has read, as XREADGROUP would: {1, entry id, its job id}; else {1}.
local function run(job_id, consumer)
  redis.call('XADD', key('$RUNNABLE'), '*', 'job', job_id)
  if consumer == '' then return {1} end
  -- pcall: without the group (a Redis restarted empty) the entry waits for the reader, which creates it.
  local read = redis.pcall('XREADGROUP', 'GROUP', '$RUNNABLE_GROUP', consumer, 'COUNT', 1, 'STREAMS',
    key('$RUNNABLE'), '>')
  if not read or read.err then return {1} end
  local entry = read[1][2][1]
  return {1, entry[1], entry[2][2]}
end

-- A reply kept for a retried call (see REPLY in keys): the earlier answer, or nil.
local function earlier_reply(token)
  local reply = redis.call('LRANGE', key('$REPLY', token), 0, -1)
  if #reply > 0 then return reply end
  return nil
end

local function keep_reply(token, reply)
  if #reply == 0 then return end
  local reply_key = key('$REPLY', token)
  for first = 1, #reply, 1000 do
    redis.call('RPUSH', reply_key, unpack(reply, first, math.min(first + 999, #reply)))
  end
  redis.call('EXPIRE', reply_key, $REPLY_TTL_S)
end
"""

CREATE_JOB = """
-- KEYS[1]: the job. ARGV: ns, max terminal jobs, run ('1'), consumer to read an entry for ('' for none;
-- see run), then the job's fields (see store_job). Returns {1} (or what run returns), {2} if a retried
-- call was applied already.
if redis.call('HGET', KEYS[1], 'commit') == ARGV[8] then return {2} end
store_job(5)
trim_terminal(tonumber(ARGV[2]))
if ARGV[3] == '1' then return run(ARGV[5], ARGV[4]) end
return {1}
"""

COMMIT = """
-- KEYS[1]: the job. ARGV: ns, expected version, max terminal jobs, run, clear branches, consumer to
-- read an entry for ('' for none; see run), the job's fields (ARGV[7..16], see store_job), then four
-- counted lists: closed tasks (id, status), tasks (id, job id, type, status, worker or '', doc, score,
-- queued_at), cancelled timer ids, timers (id, due). Returns {1} (or what run returns); {0} if the
-- version is not the expected one, {2} if a retried call was applied already.
local job_id = ARGV[7]
local stored = redis.call('HMGET', KEYS[1], 'version', 'commit')
if stored[1] ~= ARGV[2] then
  if stored[2] and stored[2] == ARGV[10] then return {2} end
  return {0}
end
store_job(7)
local at = 17
local function arg()
  at = at + 1
  return ARGV[at - 1]
end
for _ = 1, tonumber(arg()) do
  local task_id = arg()
  close_task(task_id, arg())
end
for _ = 1, tonumber(arg()) do
  local task_id, owner, task_type, status, worker, doc, score = arg(), arg(), arg(), arg(), arg(), arg(), arg()
  store_task(task_id, owner, task_type, status, worker, doc, score, arg())
end
for _ = 1, tonumber(arg()) do redis.call('ZREM', key('$TIMERS'), arg()) end
for _ = 1, tonumber(arg()) do
  local timer_id = arg()
  redis.call('ZADD', key('$TIMERS'), arg(), timer_id)
end
if ARGV[5] == '1' then redis.call('DEL', key('$BRANCHES', job_id)) end
trim_terminal(tonumber(ARGV[3]))
if ARGV[4] == '1' then return run(job_id, ARGV[6]) end
return {1}
"""

CLAIM_TASK = """
-- ARGV: ns, worker id, taken_at (json), then for each candidate, best first: its queue or inbox (its
-- own, or another worker's when taking it over), member, task id, deadline (json), deadline (score).
-- Assigns the first candidate still queued to the worker and returns its hash; nil if every one was
-- taken meanwhile.
for i = 4, #ARGV, 5 do
  local queue, member, task_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local task_key = key('$TASK', task_id)
  if redis.call('ZREM', queue, member) == 1 then
    if redis.call('HGET', task_key, 'member') == member then
      dequeue(task_key)
      local previous = redis.call('HGET', task_key, 'worker_id')
      if previous and previous ~= ARGV[2] then load_remove(previous, task_id) end
      redis.call('HSET', task_key, 'status', 'assigned', 'worker_id', ARGV[2], 'x:taken_at', ARGV[3],
        'x:deadline', ARGV[i + 3])
      load_add(ARGV[2], task_id)
      redis.call('ZADD', key('$TIMERS'), ARGV[i + 4], '$TIMEOUT_TIMER' .. task_id)
      return redis.call('HGETALL', task_key)
    end
    -- a stale entry (cannot happen while the invariants hold), now gone: try the next
  else
    -- Taken by someone else, or this is a retried call whose first run took it: then it bears our stamp.
    local mine = redis.call('HMGET', task_key, 'worker_id', 'x:taken_at')
    if mine[1] == ARGV[2] and mine[2] == ARGV[3] then return redis.call('HGETALL', task_key) end
  end
end
return nil
"""

SCAN_QUEUES = """
-- KEYS: queues or inboxes, then INBOXED sets. ARGV: ns, number of queues, offset, count, steal cutoff.
-- Returns, for each queue, its entries from the offset as {member, score, the task's hash, ...}; then
-- how many tasks the INBOXED sets hold queued at or before the cutoff.
local reply, queues = {}, tonumber(ARGV[2])
for i = 1, queues do
  local page = redis.call('ZRANGE', KEYS[i], ARGV[3], ARGV[3] + ARGV[4] - 1, 'WITHSCORES')
  local entries = {}
  for j = 1, #page, 2 do
    entries[#entries + 1] = page[j]
    entries[#entries + 1] = page[j + 1]
    entries[#entries + 1] = redis.call('HGETALL', key('$TASK', string.sub(page[j], 18)))
  end
  reply[i] = entries
end
local waiting = 0
for i = queues + 1, #KEYS do waiting = waiting + redis.call('ZCOUNT', KEYS[i], '-inf', ARGV[5]) end
reply[queues + 1] = waiting
return reply
"""

UPDATE_TASK = """
-- KEYS[1]: the task. ARGV: ns, then field/value pairs: status and worker_id plain ('' for none),
-- others orjson. Returns the task's hash, or nil if it is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
for i = 2, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field == 'status' then
    if value ~= 'queued' then dequeue(KEYS[1]) end
    redis.call('HSET', KEYS[1], 'status', value)
  elseif field == 'worker_id' then
    if value == '' then redis.call('HDEL', KEYS[1], 'worker_id') else redis.call('HSET', KEYS[1], field, value) end
  else
    redis.call('HSET', KEYS[1], 'x:' .. field, value)
  end
end
return redis.call('HGETALL', KEYS[1])
"""

ADD_BRANCH_RESULT = """
-- KEYS[1]: the job's branch results. ARGV: ns, task id, result. Records the result and closes the task
-- as done; returns how many results are recorded.
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
close_task(ARGV[2], 'done')
return redis.call('HLEN', KEYS[1])
"""

POP_DUE_TIMERS = """
-- ARGV: ns, at, limit, call token. Claims (removes) and returns the due timer ids, earliest first.
local earlier = earlier_reply(ARGV[4])
if earlier then return earlier end
local timers = key('$TIMERS')
local due = redis.call('ZRANGEBYSCORE', timers, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, timer_id in ipairs(due) do redis.call('ZREM', timers, timer_id) end
keep_reply(ARGV[4], due)
return due
"""

SAVE_WORKER = """
-- ARGV: ns, worker id, doc, expires_at.
redis.call('SET', key('$WORKER', ARGV[2]), ARGV[3])
redis.call('ZADD', key('$WORKER_EXPIRY'), ARGV[4], ARGV[2])
if not redis.call('ZSCORE', key('$WORKERS'), ARGV[2]) then
  redis.call('ZADD', key('$WORKERS'), redis.call('INCR', key('$WORKER_SEQUENCE')), ARGV[2])
end
return 1
"""

POP_EXPIRED_WORKERS = """
-- ARGV: ns, at, call token. Removes the workers expired at `at`; returns, for each, its record,
-- the number of its unanswered tasks, then their ids.
local earlier = earlier_reply(ARGV[3])
if earlier then return earlier end
local reply = {}
for _, worker_id in ipairs(redis.call('ZRANGEBYSCORE', key('$WORKER_EXPIRY'), '-inf', ARGV[2])) do
  local worker_key = key('$WORKER', worker_id)
  local doc = redis.call('GET', worker_key)
  redis.call('DEL', worker_key)
  redis.call('ZREM', key('$WORKER_EXPIRY'), worker_id)
  redis.call('ZREM', key('$WORKERS'), worker_id)
  local load_key = key('$LOAD', worker_id)
  local task_ids = redis.call('SMEMBERS', load_key)
  redis.call('DEL', load_key)
  redis.call('HDEL', key('$LOAD_COUNTS'), worker_id)
  -- Its inbox was never taken: those tasks stay 'queued' for the engine to queue again for anyone.
  local inbox = key('$INBOX', worker_id)
  for _, member in ipairs(redis.call('ZRANGE', inbox, 0, -1)) do
    local task_key = key('$TASK', string.sub(member, 18))
    if redis.call('HGET', task_key, 'member') == member then dequeue(task_key) end
  end
  redis.call('DEL', inbox)
  if doc then
    reply[#reply + 1] = doc
    reply[#reply + 1] = tostring(#task_ids)
    for _, task_id in ipairs(task_ids) do reply[#reply + 1] = task_id end
  end
end
keep_reply(ARGV[3], reply)
return reply
"""

RENEW_LEASES = """
-- KEYS[1]: the runnable stream. ARGV: group, consumer, entry ids. Resets the idle time of the entries
-- this consumer still owns; returns the ids it no longer owns (taken over, or acknowledged elsewhere).
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""

ACK_ENTRY = """
-- KEYS[1]: the runnable stream, KEYS[2]: a step lease key. ARGV: group, entry id ('' for none), the
-- lease's holder ('' for none). Ends the step: releases the lease if that holder still holds it, then
-- acknowledges the entry and deletes it.
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return 1
"""

RELEASE_ENTRIES = """
-- KEYS[1]: the runnable stream. ARGV: group, consumer, entry ids read but never handed out. Puts each
-- one this consumer still owns back as a new entry, for another process to take at once.
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    local entry = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
    if entry[1] then redis.call('XADD', KEYS[1], '*', unpack(entry[1][2])) end
  end
end
return 1
"""


def _source(body: str, *, prelude: bool = True) -> str:
    names = {name: value for name, value in vars(keys).items() if name.isupper()}
    return Template((_PRELUDE if prelude else "") + body).substitute(names)


RENEW_STEP_LEASES = """
-- KEYS: step lease keys. ARGV[1]: lease length (ms); ARGV[2..]: the holder of each key, in order.
-- Extends each lease still held by its holder; returns the positions (1-based) of those lost.
local lost = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  else
    lost[#lost + 1] = i
  end
end
return lost
"""

LEASE_STEP = """
-- KEYS[1]: a step lease key, KEYS[2]: its job. ARGV: holder, lease length (ms). {1, the job's document
-- (none if it is gone)} if the holder has the lease now: taken, or held already (a retried call whose
-- first run took it); {0} while someone else holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  return {1, redis.call('HGET', KEYS[2], 'doc')}
end
return {0}
"""

RELEASE_STEP_LEASE = """
-- KEYS[1]: a step lease key. ARGV[1]: its holder. Deletes it only if that holder still holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


#: Script name -> Lua source, ready to load.
SOURCES: dict[str, str] = {
    "create_job": _source(CREATE_JOB),
    "commit": _source(COMMIT),
    "claim_task": _source(CLAIM_TASK),
    "scan_queues": _source(SCAN_QUEUES),
    "update_task": _source(UPDATE_TASK),
    "add_branch_result": _source(ADD_BRANCH_RESULT),
    "pop_due_timers": _source(POP_DUE_TIMERS),
    "save_worker": _source(SAVE_WORKER),
    "pop_expired_workers": _source(POP_EXPIRED_WORKERS),
    "renew_leases": _source(RENEW_LEASES, prelude=False),
    "ack_entry": _source(ACK_ENTRY, prelude=False),
    "release_entries": _source(RELEASE_ENTRIES, prelude=False),
    "renew_step_leases": _source(RENEW_STEP_LEASES, prelude=False),
    "lease_step": _source(LEASE_STEP, prelude=False),
    "release_step_lease": _source(RELEASE_STEP_LEASE, prelude=False),
}
