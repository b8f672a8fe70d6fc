"""The Lua scripts of :class:`~avtomatika.storage.redis.RedisStorage`: each one is one atomic change.

Key names come from :mod:`avtomatika.storage.redis.keys` (``$NAME`` below is that constant) after the namespace
prefix the storage passes as ``ARGV[1]``. Scripts build some keys from what they read (the worker a
task was given to, the queue it waits in), so on Redis Cluster every key must share one hash slot
(see :mod:`avtomatika.storage.redis.keys`).

Numbers that matter to the last bit (due times, scores, deadlines) are passed as strings and handed to
Redis as they are: Lua's number-to-string conversion keeps only 14 significant digits.

Invariants the scripts keep, so that counts are exact without scanning:

- a task's record has ``qkey``/``member`` exactly when its entry is in that zset (QUEUE or INBOX), and its
  id is in INBOXED under its type exactly when that zset is an INBOX (the queued tasks of a type are
  those of its QUEUE and INBOXED);
- LOAD_COUNTS[w] is the size of LOAD+w; JOB_COUNTS sums to the number of jobs.

Among the fields :mod:`avtomatika.storage.redis.keys` lists, a task's record keeps what the take script needs
without decoding the task: ``timeout_s`` (its own, absent for the default) and ``ask`` ('1' when it has
``requirements`` or ``max_cost``: the worker's ``eligible`` must be asked before it is taken).
"""

# Long: the Lua source of every atomic change, one script each; they share one prelude and the keys' layout.

from __future__ import annotations

from string import Template

from . import keys

#: A job's record (see ``keys.JOB``): read, written, and a task listed in it.
_JOB_RECORD = """
-- One string: lines of $JOB_FORMAT, version, fan-in size ('' for none), commit token, counted (which
-- holds its status), task ids (',' between), waits, then the document (JSON has no raw newline). A
-- record of $JOB_FORMAT_ID_APART or $JOB_FORMAT_WHOLE has a status line before counted and no waits
-- line. A job stored by a version before those is a hash of those fields, its tasks as JOB_TASK fields
-- (see keys.JOB): read as such (`legacy`) until it is stored again.

-- The status in a job's counted line, orjson [blueprint, status, state, client]: the blueprint is a JSON
-- string, in which a quote is escaped, so the first ',"' ends it.
local STATUS_COUNTED = '^%[.-,"([^"]*)",'
local function read_job(job_key)
  local raw = redis.pcall('GET', job_key)
  if type(raw) == 'table' then  -- WRONGTYPE: a hash
    local flat, job = redis.call('HGETALL', job_key), {tasks = '', fan_in = '', legacy = true}
    for i = 1, #flat, 2 do
      local field = flat[i]
      if string.sub(field, 1, $JOB_TASK_LENGTH) == '$JOB_TASK' then
        job.tasks = (job.tasks == '' and '' or job.tasks .. ',') .. string.sub(field, $JOB_TASK_LENGTH + 1)
      else
        job[field] = flat[i + 1]
      end
    end
    return job
  end
  if not raw then return nil end
  local lines, at = {}, 1
  for i = 1, 7 do
    local newline = string.find(raw, '\\n', at, true)
    lines[i], at = string.sub(raw, at, newline - 1), newline + 1
  end
  local job = {format = lines[1], version = lines[2], fan_in = lines[3], commit = lines[4]}
  if job.format ~= '$JOB_FORMAT' then  -- its status on a line of its own, then counted and tasks
    job.status, job.counted, job.tasks, job.doc = lines[5], lines[6], lines[7], string.sub(raw, at)
    return job
  end
  job.counted, job.tasks, job.waits, job.doc = lines[5], lines[6], lines[7], string.sub(raw, at)
  job.status = string.match(job.counted, STATUS_COUNTED)
  return job
end

-- The last `n` ids of a list of task ids (',' between), as a JSON wait on them.
local function wait_on_last(tasks, n)
  local ids = {}
  for task_id in string.gmatch(tasks, '[^,]+') do ids[#ids + 1] = task_id end
  return cjson.encode({kind = 'tasks', task_ids = {unpack(ids, #ids - n + 1)}})
end

-- Two JSON objects' members as one object (`head`'s first).
local function joined(head, doc)
  if doc == '{}' then return head end
  return string.sub(head, 1, -2) .. ',' .. string.sub(doc, 2)
end

-- The job's document with the fields its record keeps apart put back: its id, status and version, and
-- for a $JOB_FORMAT record its blueprint, state and client (from counted) and a wait on its last tasks
-- (waits). A hash or a record of $JOB_FORMAT_WHOLE has it whole.
local function whole_doc(job_id, job)
  if job.legacy or job.format == '$JOB_FORMAT_WHOLE' then return job.doc end
  local head = '{"id":' .. cjson.encode(job_id) .. ',"status":"' .. job.status .. '","version":' .. job.version
  if job.format == '$JOB_FORMAT' then
    local counted = cjson.decode(job.counted)  -- blueprint, status, state, client (JSON null for none)
    head = head .. ',"blueprint":' .. cjson.encode(counted[1]) .. ',"state":' .. cjson.encode(counted[3])
    if type(counted[4]) == 'string' then head = head .. ',"client":' .. cjson.encode(counted[4]) end
    if job.waits ~= '' then head = head .. ',"wait":' .. wait_on_last(job.tasks, tonumber(job.waits)) end
  end
  return joined(head .. '}', job.doc)
end

-- The size of the job's fan-out round ('' for none; nil if the job is gone), read from the record's
-- first 64 bytes: they hold its first three lines (the version and size have at most 20 digits each),
-- where its task ids and document can run to kilobytes in a fan-out's job.
local function read_fan_in(job_key)
  local head = redis.pcall('GETRANGE', job_key, 0, 63)
  if type(head) == 'table' then return redis.call('HGET', job_key, 'fan_in') or '' end  -- WRONGTYPE: a hash
  if head == '' then return nil end
  return string.match(head, '^[^\\n]*\\n[^\\n]*\\n([^\\n]*)\\n')
end

-- With `only_new`, the record is written only if the job has none (SET NX): returns whether it was.
-- `job.format`: that of the document (its own when nil): a record of an earlier format keeps it.
local function write_job(job_key, job, only_new)
  local lines = {job.format or '$JOB_FORMAT', job.version, job.fan_in, job.commit}
  if lines[1] == '$JOB_FORMAT' then
    lines[5], lines[6], lines[7], lines[8] = job.counted, job.tasks, job.waits, job.doc
  else
    lines[5], lines[6], lines[7], lines[8] = job.status, job.counted, job.tasks, job.doc
  end
  local record = table.concat(lines, '\\n')
  if only_new then return redis.call('SET', job_key, record, 'NX') ~= false end
  redis.call('SET', job_key, record)
  return true
end

local function with_task(tasks, task_id)
  if tasks == '' then return task_id end
  return tasks .. ',' .. task_id
end

local function has_task(tasks, task_id)
  return string.find(',' .. tasks .. ',', ',' .. task_id .. ',', 1, true) ~= nil
end
"""

#: A task's record (see ``keys.TASK``): read and written as a table of its fields (after the prelude's
#: ``key``: it derives keys).
_TASK_RECORD = """
-- One string: lines of $TASK_FORMAT, the TASK_LINES fields ('' for none), its overlays (name and JSON
-- value of each, a tab between all), then its document (JSON has no raw newline or tab). Read as a table
-- of those fields and its id, an overlay under 'x:' .. its name (as a task's hash kept them: a task a
-- version before 2026-12-07 stored is a hash, read as such until written again); nil for a task that is
-- gone. Its queue position is written without what it is read with: the task id ending its member
-- (the member's sequence alone), and its qkey when that is the queue its worker and type give.
local TASK_LINES = {'status', 'worker_id', 'type', 'qkey', 'member', 'score', 'timeout_s', 'ask'}

-- The queue a task waits in unless its record says another: its worker's inbox, else its type's queue.
local function default_qkey(stored)
  if stored.worker_id then return key('$INBOX', stored.worker_id) end
  return key('$QUEUE', stored.type)
end

local function read_task(task_key)
  local task_id = string.sub(task_key, #key('$TASK') + 1)
  local raw = redis.pcall('GET', task_key)
  if type(raw) == 'table' then  -- WRONGTYPE: a hash
    local flat, stored = redis.call('HGETALL', task_key), {id = task_id}
    for i = 1, #flat, 2 do stored[flat[i]] = flat[i + 1] end
    return stored
  end
  if not raw then return nil end
  local stored, at = {id = task_id}, string.find(raw, '\\n', 1, true) + 1
  for i = 1, #TASK_LINES + 1 do
    local newline = string.find(raw, '\\n', at, true)
    local value = string.sub(raw, at, newline - 1)
    if i <= #TASK_LINES then
      if value ~= '' then stored[TASK_LINES[i]] = value end
    else
      local name
      for part in string.gmatch(value, '[^\\t]+') do
        if name then stored['x:' .. name], name = part, nil else name = part end
      end
    end
    at = newline + 1
  end
  stored.doc = string.sub(raw, at)
  if stored.member then
    stored.qkey, stored.member = stored.qkey or default_qkey(stored), stored.member .. ':' .. task_id
  end
  return stored
end

local function write_task(task_key, stored)
  local short, lines, overlays = {}, {'$TASK_FORMAT'}, {}
  if stored.member then
    short.member = string.match(stored.member, '^[^:]*')
    if stored.qkey == default_qkey(stored) then short.qkey = '' end
  end
  for i, name in ipairs(TASK_LINES) do lines[i + 1] = short[name] or stored[name] or '' end
  for name, value in pairs(stored) do
    if string.sub(name, 1, 2) == 'x:' then overlays[#overlays + 1] = string.sub(name, 3) .. '\\t' .. value end
  end
  lines[#lines + 1] = table.concat(overlays, '\\t')
  lines[#lines + 1] = stored.doc
  redis.call('SET', task_key, table.concat(lines, '\\n'))
end

-- A queue member's sequence ($TASK_SEQUENCE's count): the number of its base-62 digits, then those
-- (0-9, A-Z, a-z sort in that order), so that members sort as their sequences do and equal priorities
-- stay first in first out. A member of a version before 2026-12-08 has 16 decimal digits, starting with
-- 0: it sorts before these.
local SEQUENCE_DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
local function sequence_text(n)
  local digits = ''
  repeat
    local digit = n % 62
    digits, n = string.sub(SEQUENCE_DIGITS, digit + 1, digit + 1) .. digits, (n - digit) / 62
  until n == 0
  return #digits .. digits
end

-- The task id of a queue member (after its sequence and ':').
local function member_task(member)
  return string.sub(member, string.find(member, ':', 1, true) + 1)
end

-- The task's status (nil if it is gone) from the record's first 64 bytes, which hold its first two lines.
local function task_status(task_key)
  local head = redis.pcall('GETRANGE', task_key, 0, 63)
  if type(head) == 'table' then return redis.call('HGET', task_key, 'status') end  -- WRONGTYPE: a hash
  return string.match(head, '^[^\\n]*\\n([^\\n]*)\\n')
end

-- A task's fields as a flat list of names and values (as HGETALL gives a hash's): how replies carry it.
local function flat_of(stored)
  local flat = {}
  for field, value in pairs(stored) do flat[#flat + 1], flat[#flat + 2] = field, value end
  return flat
end
"""

#: Helpers shared by the scripts that change jobs and tasks.
_PRELUDE = (
    _JOB_RECORD
    + """
local ns = ARGV[1]
local function key(name, suffix) return ns .. name .. (suffix or '') end
"""
    + _TASK_RECORD
    + """

-- A field that falls to 0 stays (an HDEL per fall was a command of most steps): the fields of a counter
-- are a bounded set (its blueprints, statuses, states and clients; live workers, whose field goes when
-- they expire), and readers leave out those at 0.
local function decrement(hash, field)
  if redis.call('HINCRBY', hash, field, -1) < 0 then redis.call('HDEL', hash, field) end
end

local function load_add(worker, task_id)
  if redis.call('SADD', key('$LOAD', worker), task_id) == 1 then
    redis.call('HINCRBY', key('$LOAD_COUNTS'), worker, 1)
  end
end

local function load_remove(worker, task_id)
  if redis.call('SREM', key('$LOAD', worker), task_id) == 1 then decrement(key('$LOAD_COUNTS'), worker) end
end

-- Take a task out of the queue or inbox it waits in, if it waits in one. `stored`: the task as read
-- (read_task), left without its position; the caller writes it.
local function dequeue(stored)
  if not stored.qkey then return end
  redis.call('ZREM', stored.qkey, stored.member)
  redis.call('ZREM', key('$INBOXED', stored.type), member_task(stored.member))
  stored.qkey, stored.member, stored.score = nil, nil, nil
end

-- Equal scores sort by member: its sequence keeps them first in first out. `stored`: the
-- task's fields, to which its position is added; the caller writes it.
local function enqueue(stored, task_id, task_type, worker, score, queued_at)
  local sequence = redis.call('INCR', key('$TASK_SEQUENCE'))
  local member = sequence_text(sequence) .. ':' .. task_id
  local qkey, wake
  if worker ~= '' then
    qkey, wake = key('$INBOX', worker), 'w:' .. worker
    load_add(worker, task_id)
    redis.call('ZADD', key('$INBOXED', task_type), queued_at, task_id)
  else
    qkey, wake = key('$QUEUE', task_type), 't:' .. task_type
  end
  redis.call('ZADD', qkey, score, member)
  stored.qkey, stored.member, stored.score = qkey, member, score
  redis.call('PUBLISH', key('$TASK_WAKE'), wake)
end

-- Returns true when the task is new: the caller lists it in its job's record. `new`: the caller knows
-- it is (its job's record does not list it), so it is not read first.
local function store_task(task_id, task_type, status, worker, doc, score, queued_at, timeout, ask, new)
  local task_key = key('$TASK', task_id)
  local old = not new and read_task(task_key) or {}
  if old.worker_id and old.worker_id ~= worker then
    load_remove(old.worker_id, task_id)  -- given to another worker, or to anyone
  end
  local target = false
  if status == 'queued' then
    if worker ~= '' then target = key('$INBOX', worker) else target = key('$QUEUE', task_type) end
  end
  -- Stored again, queued where it waits already at the same priority: it keeps its place.
  local stays = target and old.qkey == target and old.score == score
  if old.status and not stays then dequeue(old) end  -- stored before (every stored task has a status)
  local stored = {doc = doc, status = status, type = task_type}
  if worker ~= '' then stored.worker_id = worker end
  if timeout ~= '' then stored.timeout_s = timeout end
  if ask == '1' then stored.ask = '1' end
  if stays then
    stored.qkey, stored.member, stored.score = old.qkey, old.member, old.score
    if worker ~= '' then redis.call('ZADD', key('$INBOXED', task_type), queued_at, task_id) end
  elseif target then
    enqueue(stored, task_id, task_type, worker, score, queued_at)
  end
  write_task(task_key, stored)  -- replaced whole
  return not old.status
end

-- `stored`: the task as the caller read it (read here when nil).
local function close_task(task_id, status, stored)
  local task_key = key('$TASK', task_id)
  stored = stored or read_task(task_key)
  if not stored then return end
  local worker = stored.worker_id
  dequeue(stored)
  stored.status = status
  write_task(task_key, stored)
  redis.call('ZREM', key('$TIMERS'), '$TIMEOUT_TIMER' .. task_id)
  if worker then load_remove(worker, task_id) end
end

local ENDED = {finished = true, failed = true, cancelled = true}
-- How many arguments a job takes (see store_job).
local JOB_ARGS = 10

-- The list of the jobs of a status and client ('' for none; see JOBS_BY).
local function jobs_of(status, client)
  if client == '' then return key('$JOBS_BY', 'status:' .. status) end
  return key('$JOBS_BY', 'status:' .. status .. ':client:' .. client)
end

-- Take a job out of the lists a version before $JOB_FORMAT listed it in (and JOBS_ALL, where versions
-- before 2026-12-07 listed it too); `values`: field -> value of those it is listed by (false: none).
local function unlist(job_id, values)
  redis.call('ZREM', key('$JOBS_ALL'), job_id)
  for field, value in pairs(values) do
    if value and value ~= '' then redis.call('ZREM', key('$JOBS_BY', field .. ':' .. value), job_id) end
  end
end

-- The job's fields start at ARGV[a]: id, version, doc, token, status, client ('' for none), counted
-- (its JOB_COUNTS field: blueprint, status, state, client), created_at (its score in JOBS_BY), ended_at
-- (when it ended for good, in µs: finished, failed, cancelled; '' while it has not), waits (the ids of
-- the tasks it waits on, ',' between, when its wait is on tasks alone and left out of doc; '' if not).
-- `old`: the job's record as the caller read it (read_job); nil for a job the caller takes to be new,
-- read only if it has a record (see store_new_job); `fan_in`: the size of a new fan-out round ('' or
-- nil: the round as it was); `tasks`: the ids of its new tasks.
-- Returns true when the job has just ended (it joined JOBS_TERMINAL: see trim_terminal); nil, and
-- nothing changed, when `old` is nil and the job has a record.
local function store_job(a, old, fan_in, tasks)
  local job_id, counted, created_at = ARGV[a], ARGV[a + 6], ARGV[a + 7]
  local new = not old
  old = old or {}
  local known = old.tasks or ''
  if old.legacy then  -- a version before JOB_TASK fields listed its tasks in a set: listed in the record too
    for _, task_id in ipairs(redis.call('SMEMBERS', key('$JOB_TASKS', job_id))) do
      if not has_task(known, task_id) then known = with_task(known, task_id) end
    end
  end
  for _, task_id in ipairs(tasks or {}) do known = with_task(known, task_id) end
  if (fan_in or '') == '' then fan_in = old.fan_in or '' end
  local doc, waits = ARGV[a + 2], ARGV[a + 9]
  if waits ~= '' then  -- kept as how many of its last tasks it waits on, when those are the ones
    local n = select(2, string.gsub(waits, ',', '')) + 1
    if known == waits or string.sub(known, -#waits - 1) == ',' .. waits then
      waits = tostring(n)
    else
      doc, waits = joined('{"wait":' .. wait_on_last(waits, n) .. '}', doc), ''
    end
  end
  if not write_job(key('$JOB', job_id), {version = ARGV[a + 1], commit = ARGV[a + 3], status = ARGV[a + 4],
    counted = counted, fan_in = fan_in, tasks = known, waits = waits, doc = doc}, new) then
    return nil
  end
  -- A job's client never changes: a job stored before is listed under it already.
  local client, listed = ARGV[a + 5], false
  if old.seq then  -- listed by a version before 2026-12: by creation sequence, by blueprint and state too
    unlist(job_id, {status = old.status, client = old.client, blueprint = old.blueprint, state = old.state})
  elseif old.status and old.format ~= '$JOB_FORMAT' then  -- listed by its status and by its client apart
    unlist(job_id, {client = client})
    listed = jobs_of(old.status, '')
  elseif old.status then
    listed = jobs_of(old.status, client)
  end
  if old.counted ~= counted then
    if old.counted then decrement(key('$JOB_COUNTS'), old.counted) end
    redis.call('HINCRBY', key('$JOB_COUNTS'), counted, 1)
  end
  local listing = jobs_of(ARGV[a + 4], client)
  if listed ~= listing then
    if listed then redis.call('ZREM', listed, job_id) end
    redis.call('ZADD', listing, created_at, job_id)
  end
  local was_ended, ended_at = old.status and ENDED[old.status], ARGV[a + 8]
  if ended_at == '' then
    if was_ended then redis.call('ZREM', key('$JOBS_TERMINAL'), job_id) end  -- retried
    return false
  end
  if was_ended then return false end
  redis.call('ZADD', key('$JOBS_TERMINAL'), 'NX', ended_at, job_id)
  return true
end

-- Store a job the caller takes to be new (CREATE_JOB's, a commit's children) with nothing read first,
-- unless it has a record already: then as a job stored again. Returns as store_job; nil for a retried
-- call (the record has its commit token), which changes nothing.
local function store_new_job(a)
  local ended = store_job(a)
  if ended ~= nil then return ended end
  local old = read_job(key('$JOB', ARGV[a]))
  if old.commit == ARGV[a + 3] then return nil end
  return store_job(a, old)
end

-- List a new task in the record of its job, when that is not the job being stored (see store_job).
local function list_task(job_id, task_id)
  local job_key = key('$JOB', job_id)
  local job = read_job(job_key)
  if not job then return end
  if job.legacy then
    redis.call('HSET', job_key, '$JOB_TASK' .. task_id, '')  -- its listing fields stay until it is stored
  else
    if (job.waits or '') ~= '' then  -- its wait, on its last tasks, would shift: written out first
      job.doc, job.waits = joined('{"wait":' .. wait_on_last(job.tasks, tonumber(job.waits)) .. '}', job.doc), ''
    end
    job.tasks = with_task(job.tasks, task_id)
    write_job(job_key, job)
  end
end

-- Drop a job with its tasks, branch results and list entries.
local function forget(job_id)
  local job_key = key('$JOB', job_id)
  local job = read_job(job_key) or {}
  if job.counted then decrement(key('$JOB_COUNTS'), job.counted) end
  local client = job.client
  if job.counted and not job.legacy then
    client = cjson.decode(job.counted)[4]  -- blueprint, status, state, client (JSON null for none)
    if type(client) ~= 'string' then client = nil end
  end
  if job.format == '$JOB_FORMAT' then
    redis.call('ZREM', jobs_of(job.status, client or ''), job_id)
  else
    unlist(job_id, {status = job.status, client = client, blueprint = job.blueprint, state = job.state})
  end
  redis.call('ZREM', key('$JOBS_TERMINAL'), job_id)
  local tasks_key = key('$JOB_TASKS', job_id)
  local task_ids = redis.call('SMEMBERS', tasks_key)
  for task_id in string.gmatch(job.tasks or '', '[^,]+') do task_ids[#task_ids + 1] = task_id end
  redis.call('DEL', job_key, key('$BRANCHES', job_id))
  for _, task_id in ipairs(task_ids) do
    local task_key = key('$TASK', task_id)
    local stored = read_task(task_key) or {}
    dequeue(stored)
    if stored.worker_id then load_remove(stored.worker_id, task_id) end
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
-- it the oldest entry no one has read, as XREADGROUP would, and with a holder take the step lease of
-- that entry's job for it (lease_ms long), unless someone holds it: {1, entry id, its job id}, with the
-- lease {1, entry id, its job id, the job's document (nil if it is gone), the breakpoints (HGETALL)}:
-- what a step starts from; {1} without a consumer. `doc`: `job_id`'s document as the script read it,
-- nil when the caller stored it (and has it): then the reply has '' for it.
local function run(job_id, consumer, holder, lease_ms, doc)
  redis.call('XADD', key('$RUNNABLE'), '*', 'job', job_id)
  if consumer == '' then return {1} end
  -- pcall: without the group (a Redis restarted empty) the entry waits for the reader, which creates it.
  local read = redis.pcall('XREADGROUP', 'GROUP', '$RUNNABLE_GROUP', consumer, 'COUNT', 1, 'STREAMS',
    key('$RUNNABLE'), '>')
  if not read or read.err then return {1} end
  local entry = read[1][2][1]
  local entry_job = entry[2][2]
  if (holder or '') == '' or not redis.call('SET', key('$STEP_LEASE', entry_job), holder, 'NX', 'PX', lease_ms) then
    return {1, entry[1], entry_job}
  end
  local found = doc or ''
  if entry_job ~= job_id then
    local other = read_job(key('$JOB', entry_job))
    found = other and whole_doc(entry_job, other) or false
  end
  return {1, entry[1], entry_job, found, redis.call('HGETALL', key('$BREAKPOINTS'))}
end

-- A commit's history lines (avtomatika.feed: a JSON list of rows; '' for none) as one entry of the feed.
local function feed_append(events)
  if events ~= '' then
    redis.call('XADD', key('$FEED'), 'MAXLEN', '~', $FEED_MAX_ENTRIES, '*', 'e', events)
  end
end

-- A reply kept for a retried call (see REPLY in keys): the earlier answer, or nil. Looked for only when
-- `again` is '1': the call is sent again and may have run (a first send's token is new: none is kept).
local function earlier_reply(token, again)
  if again ~= '1' then return nil end
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
)

CREATE_JOB = """
-- KEYS[1]: the job. ARGV: ns, max terminal jobs, run ('1'), consumer to read an entry for ('' for none;
-- see run), then the job's fields (JOB_ARGS of them, see store_job), then its events for the feed ('' for
-- none), then the holder to take the read entry's job's step lease for and for how long (ms; see run).
-- Returns {1} (or what run returns), {2} if a retried call was applied already.
local ended = store_new_job(5)
if ended == nil then return {2} end
if ended then trim_terminal(tonumber(ARGV[2])) end
feed_append(ARGV[5 + JOB_ARGS])
if ARGV[3] == '1' then return run(ARGV[5], ARGV[4], ARGV[6 + JOB_ARGS], ARGV[7 + JOB_ARGS]) end
return {1}
"""

COMMIT = """
-- KEYS[1]: the job. ARGV: ns, expected version, max terminal jobs, run, fan-in size ('' to leave the
-- round as it is), consumer to read an entry for ('' for none; see run), the job's fields (ARGV[7..16],
-- see store_job), then seven counted lists: closed tasks (id, status), tasks (id, job id, type, status,
-- worker or '', doc, score, queued_at, timeout_s or '', ask), task types to add to TASK_TYPES, cancelled
-- timer ids, timers (id, due), branch results the new round starts with (task id, result), child jobs
-- (the fields of each, as store_job reads them), then the events for the feed ('' for none), then the
-- step it ends: its runnable entry ('' for none), the holder of its step lease ('' for none) and the
-- storage's lease length (ms: another holder's lease found instead is put back that long, no shorter
-- than it is renewed), ended as ACK_ENTRY ends one, then the holder to take the read entry's job's step
-- lease for and for how long (ms; see run).
-- Returns {1} (or what run returns); {0} if the version is not the expected one or a task to withdraw
-- was answered since it was read, {2} if a retried call was applied already.
local job_id = ARGV[7]
local stored = read_job(KEYS[1])
if not stored or stored.version ~= ARGV[2] then
  if stored and stored.commit == ARGV[10] then return {2} end
  return {0}
end
local at = 7 + JOB_ARGS
for i = at + 1, at + 2 * tonumber(ARGV[at]), 2 do
  if ARGV[i + 1] == 'withdrawn' and task_status(key('$TASK', ARGV[i])) == 'done' then
    return {0}
  end
end
local new_tasks = {}  -- listed in the job's record as it is stored
local function arg()
  at = at + 1
  return ARGV[at - 1]
end
for _ = 1, tonumber(arg()) do
  local task_id = arg()
  close_task(task_id, arg())
end
-- A record lists every task of its job: one of this job it does not list is new (a job a version before
-- 2026-12-07 kept as a hash may list some in a JOB_TASKS set: its tasks are read first).
local listing, added = not stored.legacy and stored.tasks, {}
for _ = 1, tonumber(arg()) do
  local task_id, owner, task_type, status, worker, doc, score = arg(), arg(), arg(), arg(), arg(), arg(), arg()
  local queued_at, timeout, ask = arg(), arg(), arg()
  local new = listing and owner == job_id and not added[task_id] and not has_task(listing, task_id)
  if store_task(task_id, task_type, status, worker, doc, score, queued_at, timeout, ask, new) then
    if owner == job_id then
      new_tasks[#new_tasks + 1], added[task_id] = task_id, true
    else
      list_task(owner, task_id)
    end
  end
end
local task_types = {}
for _ = 1, tonumber(arg()) do task_types[#task_types + 1] = arg() end
if #task_types > 0 then redis.call('SADD', key('$TASK_TYPES'), unpack(task_types)) end
for _ = 1, tonumber(arg()) do redis.call('ZREM', key('$TIMERS'), arg()) end
for _ = 1, tonumber(arg()) do
  local timer_id = arg()
  redis.call('ZADD', key('$TIMERS'), arg(), timer_id)
end
if ARGV[5] ~= '' then redis.call('DEL', key('$BRANCHES', job_id)) end
local ended = store_job(7, stored, ARGV[5], new_tasks)
for _ = 1, tonumber(arg()) do
  local task_id = arg()
  redis.call('HSET', key('$BRANCHES', job_id), task_id, arg())
end
for _ = 1, tonumber(arg()) do
  store_new_job(at)
  run(ARGV[at], '')
  at = at + JOB_ARGS
end
feed_append(ARGV[at])
local entry_id, holder, lease = ARGV[at + 1], ARGV[at + 2], key('$STEP_LEASE', job_id)
if holder ~= '' then  -- compared and deleted in one command; another's (taken over) is put back
  local held = redis.call('GETDEL', lease)
  if held and held ~= holder then redis.call('SET', lease, held, 'PX', ARGV[at + 3]) end
end
-- pcall: without the group (a Redis restarted empty) there is nothing to acknowledge.
if entry_id ~= '' then redis.pcall('XACK', key('$RUNNABLE'), '$RUNNABLE_GROUP', entry_id) end
if ended then trim_terminal(tonumber(ARGV[3])) end
if ARGV[4] == '1' then return run(job_id, ARGV[6], ARGV[at + 4], ARGV[at + 5]) end
return {1}
"""

TAKE_TASK = """
-- KEYS: the worker's inbox, the queues of its task types, then the INBOXED sets of those types.
-- ARGV: ns, worker id, taken_at (json), default timeout (s), call token, '1' if the call is sent again
-- (see earlier_reply), number of queues, steal cutoff (a queued_at), then the ids of the tasks the
-- caller found eligible (how many, then the ids), then likewise of those it found not eligible.
-- Takes the worker's best task as RedisStorage.take_task promises: the first of its inbox; else the
-- first of its queues by priority, then queue order; else the longest waiting (queued at or before the
-- cutoff) in another worker's inbox. A task marked `ask` is taken only once the caller found it
-- eligible; one it found not eligible is passed over. Returns {1, the taken task's fields}; or, nothing
-- taken, {2, the fields of each of up to $ASK_BATCH tasks marked `ask` the caller has not decided yet, met
-- before any it could take} (it decides them and calls again); or {0, 1 if a task was passed over as
-- not eligible, else 0}.
local worker, taken_at, default_timeout, token = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local queue_count, cutoff = tonumber(ARGV[7]), tonumber(ARGV[8])

-- A retried call whose first run took a task (its reply was lost): that task again, if it still exists.
local earlier = ARGV[6] == '1' and redis.call('GET', key('$REPLY', token))
if earlier then
  local stored = read_task(key('$TASK', earlier))
  if stored then return {1, flat_of(stored)} end
end

local verdicts, at = {}, 9
for _, verdict in ipairs({true, false}) do
  local count = tonumber(ARGV[at])
  for i = at + 1, at + count do verdicts[ARGV[i]] = verdict end
  at = at + count + 1
end
local asked, passed_over = {}, 0

-- A sorted set read $TAKE_PAGE entries at a time, up to the score `max`.
local function cursor(zset, max) return {zset = zset, max = max, page = {}, at = 1, offset = 0, done = false} end

local function head(c)
  if c.at > #c.page then
    if c.done then return nil end
    c.page = redis.call('ZRANGE', c.zset, c.offset, c.offset + $TAKE_PAGE - 1, 'WITHSCORES')
    c.at, c.offset, c.done = 1, c.offset + $TAKE_PAGE, #c.page < 2 * $TAKE_PAGE
    if #c.page == 0 then return nil end
  end
  local score = tonumber(c.page[c.at + 1])
  if score > c.max then c.done, c.page = true, {} return nil end
  return c.page[c.at], score
end

-- The next entry of the cursors merged in one order: score, then member (queue members start with
-- their sequence, so equal priorities stay first in first out across queues); nil when all are read.
local function next_entry(cursors)
  local best, best_member, best_score
  for _, c in ipairs(cursors) do
    local member, score = head(c)
    if member and (not best or score < best_score or (score == best_score and member < best_member)) then
      best, best_member, best_score = c, member, score
    end
  end
  if not best then return nil end
  best.at = best.at + 2
  return best_member, best.zset
end

-- Give the task to the worker: out of its queue and any other worker's load, into this one's, its
-- deadline (taken_at plus its own timeout_s, or the default) and timeout timer set; the call is
-- remembered for a retry. `stored`: the task as read (read_task). Returns the reply: the task as
-- changed here.
local function assign(task_id, stored)
  local own = stored.qkey == key('$INBOX', worker)  -- queued to this worker: in its load already (enqueue)
  dequeue(stored)
  if stored.worker_id and stored.worker_id ~= worker then load_remove(stored.worker_id, task_id) end
  local timeout = tonumber(stored.timeout_s)
  if not timeout or timeout == 0 then timeout = default_timeout end
  -- %.17g: the exact double (Lua's own conversion keeps 14 digits).
  local deadline = string.format('%.17g', tonumber(taken_at) + timeout)
  stored.status, stored.worker_id, stored['x:taken_at'], stored['x:deadline'] = 'assigned', worker, taken_at, deadline
  write_task(key('$TASK', task_id), stored)
  if not own then load_add(worker, task_id) end
  redis.call('ZADD', key('$TIMERS'), deadline, '$TIMEOUT_TIMER' .. task_id)
  -- The feed row of its task_taken event (avtomatika.feed.row_of of avtomatika.events.task_taken):
  -- kind, job id, at (as given, to the last bit), blueprint, state, status, data as JSON text, facts.
  -- The document leaves out fields at their defaults (avtomatika.models.named): Task.attempt 1, state ''.
  local doc = cjson.decode(stored.doc)
  local data = '{"task_id":' .. cjson.encode(task_id) .. ',"task_type":' .. cjson.encode(stored.type)
    .. ',"worker_id":' .. cjson.encode(worker) .. ',"attempt":' .. string.format('%d', doc.attempt or 1) .. '}'
  feed_append('[["task_taken",' .. cjson.encode(doc.job_id) .. ',' .. taken_at .. ',null,'
    .. cjson.encode(doc.state or '') .. ',null,' .. cjson.encode(data) .. ',{"worker_id":' .. cjson.encode(worker)
    .. '}]]')
  redis.call('SET', key('$REPLY', token), task_id, 'EX', $REPLY_TTL_S)
  return {1, flat_of(stored)}
end

-- A task of a queue, or of another worker's inbox, met in the walk (`stored`: its fields as read): the
-- reply that ends the walk, or nil to go on.
local function consider(task_id, stored)
  local verdict = verdicts[task_id]
  if verdict == false then
    passed_over = 1
    return nil
  end
  if stored.ask == '1' and verdict == nil then
    asked[#asked + 1] = flat_of(stored)
    if #asked == $ASK_BATCH then return {2, unpack(asked)} end
    return nil
  end
  if #asked > 0 then return {2, unpack(asked)} end  -- it could be taken, but those come first
  return assign(task_id, stored)
end

-- An entry of a queue or inbox: its task id and fields (read_task); nil for a stale entry (cannot happen
-- while the invariants hold).
local function queued(member, zset)
  local task_id = member_task(member)
  local stored = read_task(key('$TASK', task_id))
  if not stored or stored.qkey ~= zset or stored.member ~= member then return nil end
  return task_id, stored
end

-- An entry of an INBOXED set: likewise, if its task waits in another worker's inbox.
local function left_by_another(task_id)
  local stored = read_task(key('$TASK', task_id))
  if not stored or not stored.qkey or stored.worker_id == worker then return nil end
  return task_id, stored
end

-- Entries of the cursors in order, each looked at by `entry` then `decide`, until one gives a reply.
local function walk(cursors, entry, decide)
  while true do
    local member, zset = next_entry(cursors)
    if not member then return nil end
    local task_id, stored = entry(member, zset)
    if task_id then
      local reply = decide(task_id, stored)
      if reply then return reply end
    end
  end
end

local queues, inboxed = {}, {}
for i = 2, queue_count + 1 do queues[#queues + 1] = cursor(KEYS[i], math.huge) end
for i = queue_count + 2, #KEYS do inboxed[#inboxed + 1] = cursor(KEYS[i], cutoff) end
local reply = walk({cursor(KEYS[1], math.huge)}, queued, assign) or walk(queues, queued, consider)
if not reply and #asked == 0 then reply = walk(inboxed, left_by_another, consider) end
if reply then return reply end
if #asked > 0 then return {2, unpack(asked)} end
return {0, passed_over}
"""


UPDATE_TASK = """
-- KEYS[1]: the task. ARGV: ns, then field/value pairs: status and worker_id plain ('' for none),
-- others orjson. Returns the task's fields (names and values), or nil if it is gone.
local stored = read_task(KEYS[1])
if not stored then return nil end
for i = 2, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if field == 'status' then
    if value ~= 'queued' then dequeue(stored) end
    stored.status = value
  elseif field == 'worker_id' then
    stored.worker_id = value ~= '' and value or nil
  else
    stored['x:' .. field] = value
    -- What the take script reads without decoding the task (see store_task) follows the change.
    if field == 'timeout_s' then
      stored.timeout_s = value ~= 'null' and value or nil
    elseif field == 'requirements' or field == 'max_cost' then
      stored.ask = '1'  -- possibly not any more: asking is always right
    end
  end
end
write_task(KEYS[1], stored)
return flat_of(stored)
"""

ADD_BRANCH_RESULT = """
-- KEYS[1]: the job's branch results, KEYS[2]: the job. ARGV: ns, task id, result, events for the feed
-- ('' for none), job id, consumer to read an entry for ('' for none; see run), the holder to take the
-- read entry's job's step lease for and for how long (ms; see run). Records the result of a
-- task still assigned and closes it as done; the result that completes the round queues the job.
-- Returns {1} recorded, {2} complete (with what run read, see run), {3} duplicate (done already),
-- {4} closed (not waiting for a result).
local stored = read_task(key('$TASK', ARGV[2]))
local status = stored and stored.status
if status == 'done' then return {3} end
if status ~= 'assigned' then return {4} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
close_task(ARGV[2], 'done', stored)
feed_append(ARGV[4])
local fan_in = read_fan_in(KEYS[2])
if fan_in and fan_in ~= '' and redis.call('HLEN', KEYS[1]) == tonumber(fan_in) then
  local queued = run(ARGV[5], ARGV[6], ARGV[7], ARGV[8], whole_doc(ARGV[5], read_job(KEYS[2])))
  queued[1] = 2
  return queued
end
return {1}
"""

CLAIM_TIMERS = """
-- ARGV: ns, at, limit, call token, '1' if the call is sent again (see earlier_reply), when a claimed
-- timer is due again. Claims the due timers, earliest first, moving each to that time; returns their ids.
local earlier = earlier_reply(ARGV[4], ARGV[5])
if earlier then return earlier end
local timers = key('$TIMERS')
local due = redis.call('ZRANGEBYSCORE', timers, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, timer_id in ipairs(due) do redis.call('ZADD', timers, ARGV[6], timer_id) end
keep_reply(ARGV[4], due)
return due
"""

FINISH_TIMERS = """
-- ARGV: ns, then pairs of a claimed timer's id and the time its claim made it due again. Removes each
-- timer still due then (one set again since has moved).
local timers = key('$TIMERS')
for i = 2, #ARGV, 2 do
  local due = redis.call('ZSCORE', timers, ARGV[i])
  if due and tonumber(due) == tonumber(ARGV[i + 1]) then redis.call('ZREM', timers, ARGV[i]) end
end
return 1
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

EXPIRE_WORKERS = """
-- ARGV: ns, at, call token, '1' if the call is sent again (see earlier_reply). Removes the workers
-- expired at `at`, handing their unanswered tasks on: those still queued to the worker's inbox are
-- queued for anyone, those it took get a lost timer due at `at` (their timeout timer cancelled).
-- Returns, for each worker, its record, the number of its unanswered tasks, then their ids.
local earlier = earlier_reply(ARGV[3], ARGV[4])
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
  for _, task_id in ipairs(task_ids) do
    local task_key = key('$TASK', task_id)
    local task = read_task(task_key) or {}
    if task.status == 'queued' and task.score then
      local score = task.score
      dequeue(task)
      task.worker_id = nil
      enqueue(task, task_id, task.type, '', score, '')
      write_task(task_key, task)
    elseif task.status == 'assigned' then
      redis.call('ZREM', key('$TIMERS'), '$TIMEOUT_TIMER' .. task_id)
      redis.call('ZADD', key('$TIMERS'), ARGV[2], '$LOST_TIMER' .. task_id)
    end
  end
  -- Entries of its inbox left behind by tasks queued elsewhere since.
  redis.call('DEL', key('$INBOX', worker_id))
  if doc then
    reply[#reply + 1] = doc
    reply[#reply + 1] = tostring(#task_ids)
    for _, task_id in ipairs(task_ids) do reply[#reply + 1] = task_id end
  end
end
keep_reply(ARGV[3], reply)
return reply
"""

TRIM_FEED = """
-- KEYS[1]: the feed, KEYS[2]: its readers. ARGV: reader, last entry id it wrote, now (s), how long a
-- reader not heard from still holds entries back (s). Notes what the reader wrote, then trims every
-- entry before the oldest last entry of the readers heard from lately.
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
local oldest_ms, oldest_seq, oldest
local readers = redis.call('HGETALL', KEYS[2])
for i = 1, #readers, 2 do
  local id, seen = string.match(readers[i + 1], '^(%S+) (%S+)$$')
  if tonumber(ARGV[3]) - tonumber(seen) > tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[2], readers[i])
  else
    local ms, seq = string.match(id, '^(%d+)-(%d+)$$')
    ms, seq = tonumber(ms), tonumber(seq)
    if not oldest or ms < oldest_ms or (ms == oldest_ms and seq < oldest_seq) then
      oldest_ms, oldest_seq, oldest = ms, seq, id
    end
  end
end
if oldest then redis.call('XTRIM', KEYS[1], 'MINID', oldest) end
return 1
"""

LEASE_FEED = """
-- KEYS[1]: a feed lease key, KEYS[2]: the feed's readers. ARGV: holder, lease length (ms; 0 gives it up),
-- reader, now (s). Notes the reader (from its first look it holds back what the feed has). 1 if the
-- holder has the lease now (taken, or held already and extended, or given up), 0 while someone else
-- holds it.
redis.call('HSETNX', KEYS[2], ARGV[3], '0-0 ' .. ARGV[4])
if tonumber(ARGV[2]) <= 0 then  -- given up
  if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
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
-- acknowledges the entry (deleted by a later TRIM_RUNNABLE).
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
if ARGV[2] ~= '' then redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""

TRIM_RUNNABLE = """
-- KEYS[1]: the runnable stream. ARGV[1]: its group. Deletes the entries the group has read and
-- acknowledged: those before its oldest pending entry, or before the last it read when none is.
local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if pending.err then return 0 end  -- no group yet (a Redis restarted empty): its reader creates it
local keep = pending[2]
if not keep then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
    if fields.name == ARGV[1] then keep = fields['last-delivered-id'] end
  end
end
if keep then redis.call('XTRIM', KEYS[1], 'MINID', keep) end
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


#: Entries of a queue read at a time by the take script.
TAKE_PAGE = 8
#: Most tasks marked ``ask`` the take script hands the caller to decide in one reply.
ASK_BATCH = 16


def _source(body: str, *, prelude: bool = True) -> str:
    names = {name: value for name, value in vars(keys).items() if name.isupper()}
    names |= {"TAKE_PAGE": TAKE_PAGE, "ASK_BATCH": ASK_BATCH, "JOB_TASK_LENGTH": len(keys.JOB_TASK)}
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
-- KEYS[1]: a step lease key, KEYS[2]: its job, KEYS[3]: the breakpoints hash. ARGV: holder, lease
-- length (ms), the job's id. {1, the job's document (none if it is gone), the breakpoints (HGETALL)} if the holder
-- has the lease now: taken, or held already (a retried call whose first run took it); {0} while
-- someone else holds it.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  local job = read_job(KEYS[2])
  return {1, job and whole_doc(ARGV[3], job) or false, redis.call('HGETALL', KEYS[3])}
end
return {0}
"""

REMOVE_BREAKPOINT = """
-- KEYS[1]: the breakpoints hash, KEYS[2]: the timers. ARGV: a breakpoint's id, its RELEASE_HOLDS timer
-- id, now. Removes it and, unless it is a step's, makes the timer due now; returns it (nil if none).
local found = redis.call('HGET', KEYS[1], ARGV[1])
if not found then return nil end
redis.call('HDEL', KEYS[1], ARGV[1])
if not cjson.decode(found)['once'] then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2]) end
return found
"""

SAVE_BULK = """
-- KEYS[1]: a bulk action's record, KEYS[2]: its job list, KEYS[3]: the timers. ARGV: the version it must
-- be stored at, its new record, its timer's id, when that is due ('' : removed), the records' TTL (s).
local stored = redis.call('GET', KEYS[1])
if not stored or cjson.decode(stored)['version'] ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[4] == '' then redis.call('ZREM', KEYS[3], ARGV[3]) else redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) end
return 1
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
    "take_task": _source(TAKE_TASK),
    "update_task": _source(UPDATE_TASK),
    "add_branch_result": _source(ADD_BRANCH_RESULT),
    "claim_timers": _source(CLAIM_TIMERS),
    "finish_timers": _source(FINISH_TIMERS),
    "save_worker": _source(SAVE_WORKER),
    "expire_workers": _source(EXPIRE_WORKERS),
    "trim_feed": _source(TRIM_FEED, prelude=False),
    "lease_feed": _source(LEASE_FEED, prelude=False),
    "renew_leases": _source(RENEW_LEASES, prelude=False),
    "ack_entry": _source(ACK_ENTRY, prelude=False),
    "trim_runnable": _source(TRIM_RUNNABLE, prelude=False),
    "release_entries": _source(RELEASE_ENTRIES, prelude=False),
    "renew_step_leases": _source(RENEW_STEP_LEASES, prelude=False),
    "lease_step": _source(_JOB_RECORD + LEASE_STEP, prelude=False),
    "remove_breakpoint": _source(REMOVE_BREAKPOINT, prelude=False),
    "release_step_lease": _source(RELEASE_STEP_LEASE, prelude=False),
    "save_bulk": _source(SAVE_BULK, prelude=False),
}
