/* The Lua scripts of the `redis` queue driver (queue_redis.c), one per
 * operation that must be atomic: each runs whole on the Redis node, so two
 * workers never both move, claim, reap or settle one job.
 *
 * Keys (P = "surge:q:"): P job:ID (hash: the job), P q:QUEUE (a stream per
 * queue, consumer group "g"; an entry {id: ID} per time the job became
 * ready), P queues (set of queue names), P delayed (zset ID -> run_at_ms:
 * enqueued for later and retry backoffs), P done / P dead (zsets ID ->
 * finished_ms), P deadletter (stream: one entry per job that went dead),
 * P unique (hash unique key -> ID), P all (zset ID -> created_ms, for
 * listing), P seq (ids of jobs enqueued straight into Redis: "r<n>"),
 * P wake (stream: one entry per enqueue, retry or hand-back; idle workers
 * block on it), P relay (the relay's lock).
 *
 * Job hash fields: kind queue payload state prio attempts max run_at
 * created token lease worker started finished error ukey hist sid. `token`
 * is the fencing token: bumped at every claim and every change of hands. */
#ifndef SURGE_JOBS_QUEUE_REDIS_LUA_H
#define SURGE_JOBS_QUEUE_REDIS_LUA_H

/* Helpers shared by the scripts; ARGV[1] is always the key prefix. */
#define RQ_LUA_COMMON                                                                              \
    "local P = ARGV[1]\n"                                                                          \
    "local function push(id, jk, q)\n"                                                             \
    "  local s = P .. 'q:' .. q\n"                                                                 \
    "  if redis.call('SADD', P .. 'queues', q) == 1 then\n"                                        \
    "    redis.pcall('XGROUP', 'CREATE', s, 'g', '0', 'MKSTREAM')\n"                               \
    "  end\n"                                                                                      \
    "  local sid = redis.call('XADD', s, '*', 'id', id)\n"                                         \
    "  redis.call('HSET', jk, 'sid', sid, 'state', 'ready')\n"                                     \
    "end\n"                                                                                        \
    "local function unstream(jk)\n"                                                                \
    "  local sid = redis.call('HGET', jk, 'sid')\n"                                                \
    "  if sid and sid ~= '' then\n"                                                                \
    "    local s = P .. 'q:' .. redis.call('HGET', jk, 'queue')\n"                                 \
    "    redis.call('XACK', s, 'g', sid)\n"                                                        \
    "    redis.call('HDEL', jk, 'sid')\n"                                                          \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function wake(id)\n"                                                                    \
    "  redis.call('XADD', P .. 'wake', 'MAXLEN', '~', '1000', '*', 'j', id)\n"                     \
    "end\n"                                                                                        \
    "local function unlock_unique(id, jk)\n"                                                       \
    "  local uk = redis.call('HGET', jk, 'ukey')\n"                                                \
    "  if uk and uk ~= '' and redis.call('HGET', P .. 'unique', uk) == id then\n"                  \
    "    redis.call('HDEL', P .. 'unique', uk)\n"                                                  \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function fail(id, jk, dead, retry_at, err, line, now)\n"                                \
    "  unstream(jk)\n"                                                                             \
    "  local h = (redis.call('HGET', jk, 'hist') or '') .. line .. '\\n'\n"                        \
    "  if #h > 32768 then h = string.sub(h, -32768) end\n"                                         \
    "  redis.call('HINCRBY', jk, 'token', 1)\n"                                                    \
    "  redis.call('HSET', jk, 'hist', h, 'error', err, 'finished', now, 'lease', 0)\n"             \
    "  if dead then\n"                                                                             \
    "    redis.call('HSET', jk, 'state', 'dead', 'run_at', now)\n"                                 \
    "    redis.call('ZADD', P .. 'dead', now, id)\n"                                               \
    "    redis.call('XADD', P .. 'deadletter', 'MAXLEN', '~', '100000', '*', 'id', id,\n"          \
    "               'kind', redis.call('HGET', jk, 'kind'), 'error', err)\n"                       \
    "    unlock_unique(id, jk)\n"                                                                  \
    "  elseif retry_at > now then\n"                                                               \
    "    redis.call('HSET', jk, 'state', 'delayed', 'run_at', retry_at)\n"                         \
    "    redis.call('ZADD', P .. 'delayed', retry_at, id)\n"                                       \
    "    wake(id)\n"                                                                               \
    "  else\n"                                                                                     \
    "    redis.call('HSET', jk, 'run_at', now)\n"                                                  \
    "    push(id, jk, redis.call('HGET', jk, 'queue'))\n"                                          \
    "    wake(id)\n"                                                                               \
    "  end\n"                                                                                      \
    "end\n"

/* Streams: an entry is acked (XACK) when its job settles, moves or is
 * found stale, never deleted one by one (XDEL costs the node several
 * microseconds per entry, and its tombstones stop Redis from counting a
 * group's lag); trim(s) drops every entry before the oldest pending one (or
 * up to the last delivered when none is pending: all acked), whole stream
 * nodes at a time, and returns the fields of the group g (XINFO GROUPS:
 * name, pending, last-delivered-id, lag...), or nil. */
#define RQ_LUA_TRIM                                                                                \
    "local function group(s)\n"                                                                    \
    "  local gs = redis.pcall('XINFO', 'GROUPS', s)\n"                                             \
    "  if type(gs) ~= 'table' or gs.err then return nil end\n"                                     \
    "  for _, g in ipairs(gs) do\n"                                                                \
    "    local f = {}\n"                                                                           \
    "    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end\n"                                             \
    "    if f.name == 'g' then return f end\n"                                                     \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function trim(s)\n"                                                                     \
    "  local g, minid = group(s), nil\n"                                                           \
    "  if g and tonumber(g.pending) > 0 then\n"                                                    \
    "    minid = redis.call('XPENDING', s, 'g')[2]\n"                                              \
    "  elseif g then\n"                                                                            \
    "    local ms, sq = string.match(g['last-delivered-id'], '^(%d+)-(%d+)$')\n"                   \
    "    if ms then minid = ms .. '-' .. string.format('%d', tonumber(sq) + 1) end\n"              \
    "  end\n"                                                                                      \
    "  if minid then redis.call('XTRIM', s, 'MINID', minid) end\n"                                 \
    "  return g\n"                                                                                 \
    "end\n"

/* ENQUEUE: P now n (id kind queue payload run_at prio ukey max created)...
 * Per job, a code and an id: {0, id} added (id '' = a new "r<n>"), {1,
 * other} a pending job holds the unique key, {3, id} the job exists
 * already (a relay repeating itself). One wake entry per call. The hash is
 * written whole by one HSET (state and stream entry included), and the
 * jobs' entries in P all by one ZADD per call: each redis.call costs the
 * node a command and an AOF record. */
#define RQ_LUA_ENQUEUE                                                                             \
    RQ_LUA_COMMON                                                                                  \
    "local now, n, out, added = tonumber(ARGV[2]), tonumber(ARGV[3]), {}, 0\n"                     \
    "local all, seen = {}, {}\n"                                                                   \
    "for k = 0, n - 1 do\n"                                                                        \
    "  local b = 4 + k * 9\n"                                                                      \
    "  local id, uk, code = ARGV[b], ARGV[b + 6], 0\n"                                             \
    "  if id == '' then id = 'r' .. redis.call('INCR', P .. 'seq')\n"                              \
    "  elseif redis.call('EXISTS', P .. 'job:' .. id) == 1 then code = 3 end\n"                    \
    "  if code == 0 and uk ~= '' then\n"                                                           \
    "    local other = redis.call('HGET', P .. 'unique', uk)\n"                                    \
    "    local st = other and redis.call('HGET', P .. 'job:' .. other, 'state')\n"                 \
    "    if st == 'ready' or st == 'delayed' or st == 'running' then\n"                            \
    "      code, id = 1, other\n"                                                                  \
    "    else\n"                                                                                   \
    "      redis.call('HSET', P .. 'unique', uk, id)\n"                                            \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  if code == 0 then\n"                                                                        \
    "    local jk, q = P .. 'job:' .. id, ARGV[b + 2]\n"                                           \
    "    local f = {'kind', ARGV[b + 1], 'queue', q, 'payload', ARGV[b + 3], 'prio', ARGV[b + "    \
    "5],\n"                                                                                        \
    "      'attempts', 0, 'max', ARGV[b + 7], 'run_at', ARGV[b + 4], 'created', ARGV[b + 8],\n"    \
    "      'token', 0, 'ukey', uk, 'hist', '', 'error', '', 'lease', 0, 'worker', '',\n"           \
    "      'started', 0, 'finished', 0, 'state', 'delayed'}\n"                                     \
    "    if tonumber(ARGV[b + 4]) > now then\n"                                                    \
    "      redis.call('ZADD', P .. 'delayed', ARGV[b + 4], id)\n"                                  \
    "    else\n"                                                                                   \
    "      local s = P .. 'q:' .. q\n"                                                             \
    "      if not seen[q] and redis.call('SADD', P .. 'queues', q) == 1 then\n"                    \
    "        redis.pcall('XGROUP', 'CREATE', s, 'g', '0', 'MKSTREAM')\n"                           \
    "      end\n"                                                                                  \
    "      seen[q] = true\n"                                                                       \
    "      f[#f] = 'ready'\n"                                                                      \
    "      f[#f + 1] = 'sid'\n"                                                                    \
    "      f[#f + 1] = redis.call('XADD', s, '*', 'id', id)\n"                                     \
    "    end\n"                                                                                    \
    "    redis.call('HSET', jk, unpack(f))\n"                                                      \
    "    all[#all + 1] = ARGV[b + 8]\n"                                                            \
    "    all[#all + 1] = id\n"                                                                     \
    "    added = added + 1\n"                                                                      \
    "  end\n"                                                                                      \
    "  out[#out + 1] = code\n"                                                                     \
    "  out[#out + 1] = id\n"                                                                       \
    "end\n"                                                                                        \
    "if added > 0 then\n"                                                                          \
    "  redis.call('ZADD', P .. 'all', unpack(all))\n"                                              \
    "  wake('')\n"                                                                                 \
    "end\n"                                                                                        \
    "return out\n"

/* CLAIM: P now lease_until worker min_idle_ms backoff_base backoff_cap seed
 * room nnames names... ncaps (name cap)... (min_idle_ms '-': no reaping in
 * this call)
 * Due delayed jobs into their streams; expired leases (XAUTOCLAIM finds
 * entries idle past min_idle; the hash's lease decides) retried with full
 * jitter or dead; an entry found idle whose lease still runs (renewed late,
 * or a holder with a longer --lease) goes back to its holder with an idle
 * time that makes it due again when that lease ends; now and then, the
 * group's consumers idle for 10 minutes with nothing pending (workers gone)
 * are deleted; then XREADGROUP per queue within room and caps; last,
 * each stream is trimmed (RQ_LUA_TRIM).
 * {next_due_ms, expired, expired_dead, {{id kind queue payload token
 * attempts max created run_at}...}, backlog (entries in the streams)}. */
#define RQ_LUA_CLAIM                                                                               \
    RQ_LUA_COMMON                                                                                  \
    RQ_LUA_TRIM                                                                                    \
    "local now, lease_until, worker = tonumber(ARGV[2]), ARGV[3], ARGV[4]\n"                       \
    "local min_idle, base, cap = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])\n"                  \
    "local seed, room = tonumber(ARGV[8]) % 2147483646 + 1, tonumber(ARGV[9])\n"                   \
    "local function rnd() seed = (seed * 16807) % 2147483647 return seed end\n"                    \
    "local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, 1000)\n"     \
    "for _, id in ipairs(due) do\n"                                                                \
    "  redis.call('ZREM', P .. 'delayed', id)\n"                                                   \
    "  local jk = P .. 'job:' .. id\n"                                                             \
    "  local h = redis.call('HMGET', jk, 'queue', 'state')\n"                                      \
    "  if h[1] and h[2] == 'delayed' then push(id, jk, h[1]) end\n"                                \
    "end\n"                                                                                        \
    "local expired, expired_dead = 0, 0\n"                                                         \
    "local queues = redis.call('SMEMBERS', P .. 'queues')\n"                                       \
    "for _, q in ipairs(min_idle == '-' and {} or queues) do\n"                                    \
    "  local s = P .. 'q:' .. q\n"                                                                 \
    "  local r = redis.pcall('XAUTOCLAIM', s, 'g', 'reaper', min_idle, '0-0', 'COUNT', 100)\n"     \
    "  if type(r) == 'table' and not r.err then\n"                                                 \
    "    for _, e in ipairs(r[2]) do\n"                                                            \
    "      local sid, f = e[1], e[2]\n"                                                            \
    "      local id = type(f) == 'table' and f[2]\n"                                               \
    "      local jk = id and (P .. 'job:' .. id)\n"                                                \
    "      local h = jk and redis.call('HMGET', jk, 'sid', 'state', 'lease', 'attempts', 'max',\n" \
    "                                  'worker', 'started')\n"                                     \
    "      if not h or h[1] ~= sid then\n"                                                         \
    "        redis.call('XACK', s, 'g', sid)\n"                                                    \
    "      elseif h[2] == 'running' and tonumber(h[3]) < now then\n"                               \
    "        local att, max = tonumber(h[4]), tonumber(h[5])\n"                                    \
    "        local ceil = base\n"                                                                  \
    "        for i = 2, att do if ceil >= cap then break end ceil = ceil * 2 end\n"                \
    "        if ceil > cap then ceil = cap end\n"                                                  \
    "        local at = now\n"                                                                     \
    "        if ceil > 0 then at = now + rnd() % (ceil + 1) end\n"                                 \
    "        local line = cjson.encode({attempt = att, worker = h[6],\n"                           \
    "          started_ms = tonumber(h[7]), ended_ms = now, error = 'lease expired'})\n"           \
    "        fail(id, jk, att >= max, at, 'lease expired', line, now)\n"                           \
    "        expired = expired + 1\n"                                                              \
    "        if att >= max then expired_dead = expired_dead + 1 end\n"                             \
    "      elseif h[2] == 'running' then\n"                                                        \
    "        local idle = tonumber(min_idle) - (tonumber(h[3]) - now)\n"                           \
    "        if idle < 0 then idle = 0 end\n"                                                      \
    "        redis.call('XCLAIM', s, 'g', h[6], 0, sid, 'IDLE', idle, 'JUSTID')\n"                 \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "if rnd() % 200 == 0 then\n"                                                                   \
    "  for _, q in ipairs(queues) do\n"                                                            \
    "    local cs = redis.pcall('XINFO', 'CONSUMERS', P .. 'q:' .. q, 'g')\n"                      \
    "    if type(cs) == 'table' and not cs.err then\n"                                             \
    "      for _, c in ipairs(cs) do\n"                                                            \
    "        local f = {}\n"                                                                       \
    "        for j = 1, #c, 2 do f[c[j]] = c[j + 1] end\n"                                         \
    "        if f.pending == 0 and f.idle > 600000 then\n"                                         \
    "          redis.call('XGROUP', 'DELCONSUMER', P .. 'q:' .. q, 'g', f.name)\n"                 \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local names, caps, i = {}, {}, 11\n"                                                          \
    "for k = 1, tonumber(ARGV[10]) do names[#names + 1] = ARGV[i] i = i + 1 end\n"                 \
    "local ncaps = tonumber(ARGV[i]) i = i + 1\n"                                                  \
    "for k = 1, ncaps do caps[ARGV[i]] = tonumber(ARGV[i + 1]) i = i + 2 end\n"                    \
    "if #names == 0 and #queues > 0 then\n"                                                        \
    "  local start = rnd() % #queues\n"                                                            \
    "  for k = 0, #queues - 1 do names[#names + 1] = queues[(start + k) % #queues + 1] end\n"      \
    "end\n"                                                                                        \
    "local out, got = {}, 0\n"                                                                     \
    "for _, q in ipairs(names) do\n"                                                               \
    "  local lim = room - got\n"                                                                   \
    "  if caps[q] and caps[q] < lim then lim = caps[q] end\n"                                      \
    "  if lim > 0 then\n"                                                                          \
    "    local s = P .. 'q:' .. q\n"                                                               \
    "    local r = redis.pcall('XREADGROUP', 'GROUP', 'g', worker, 'COUNT', lim, 'STREAMS', s,\n"  \
    "                          '>')\n"                                                             \
    "    if type(r) == 'table' and r.err then\n"                                                   \
    "      if string.find(r.err, 'NOGROUP') and redis.call('EXISTS', s) == 1 then\n"               \
    "        redis.pcall('XGROUP', 'CREATE', s, 'g', '0')\n"                                       \
    "      end\n"                                                                                  \
    "    elseif type(r) == 'table' and r[1] then\n"                                                \
    "      for _, e in ipairs(r[1][2]) do\n"                                                       \
    "        local sid, f = e[1], e[2]\n"                                                          \
    "        local id = type(f) == 'table' and f[2]\n"                                             \
    "        local jk = id and (P .. 'job:' .. id)\n"                                              \
    "        local h = jk and redis.call('HMGET', jk, 'sid', 'state', 'token', 'attempts', "       \
    "'kind',\n"                                                                                    \
    "                                    'payload', 'max', 'created', 'run_at')\n"                 \
    "        if h and h[1] == sid and h[2] == 'ready' then\n"                                      \
    "          local tok, att = tonumber(h[3]) + 1, tonumber(h[4]) + 1\n"                          \
    "          redis.call('HSET', jk, 'state', 'running', 'lease', lease_until, 'worker', "        \
    "worker,\n"                                                                                    \
    "                     'started', now, 'token', tok, 'attempts', att)\n"                        \
    "          out[#out + 1] = {id, h[5], q, h[6], tok, att, h[7], h[8], h[9]}\n"                  \
    "          got = got + 1\n"                                                                    \
    "        else\n"                                                                               \
    "          redis.call('XACK', s, 'g', sid)\n"                                                  \
    "        end\n"                                                                                \
    "      end\n"                                                                                  \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local nd = redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')\n"                        \
    "local backlog = 0\n"                                                                          \
    "for _, q in ipairs(queues) do\n"                                                              \
    "  local s = P .. 'q:' .. q\n"                                                                 \
    "  trim(s)\n"                                                                                  \
    "  backlog = backlog + redis.call('XLEN', s)\n"                                                \
    "end\n"                                                                                        \
    "return {nd[2] or '0', expired, expired_dead, out, backlog}\n"

/* SETTLE: P now n (id token how retry_at error line)...; how: a ack, l
 * release (hand back unrun), r retry, d dead. One result per item: 0, or
 * -1 when the job is not running under that token any more (stale). The
 * acks of a call go out as one XACK per stream and one ZADD to P done (a
 * command per job cost the node most of an ack); the claims trim the
 * acked entries (RQ_LUA_TRIM). */
#define RQ_LUA_SETTLE                                                                              \
    RQ_LUA_COMMON                                                                                  \
    "local now, n, res = tonumber(ARGV[2]), tonumber(ARGV[3]), {}\n"                               \
    "local acks, done = {}, {}\n"                                                                  \
    "for k = 0, n - 1 do\n"                                                                        \
    "  local b = 4 + k * 6\n"                                                                      \
    "  local id, how = ARGV[b], ARGV[b + 2]\n"                                                     \
    "  local jk = P .. 'job:' .. id\n"                                                             \
    "  local h = redis.call('HMGET', jk, 'state', 'token', 'queue', 'sid', 'ukey')\n"              \
    "  if h[1] ~= 'running' or h[2] ~= ARGV[b + 1] then\n"                                         \
    "    res[#res + 1] = -1\n"                                                                     \
    "  else\n"                                                                                     \
    "    if how == 'a' then\n"                                                                     \
    "      if h[4] and h[4] ~= '' then\n"                                                          \
    "        local l = acks[h[3]] or {}\n"                                                         \
    "        acks[h[3]] = l\n"                                                                     \
    "        l[#l + 1] = h[4]\n"                                                                   \
    "      end\n"                                                                                  \
    "      redis.call('HSET', jk, 'state', 'done', 'finished', now, 'lease', 0, 'sid', '')\n"      \
    "      done[#done + 1] = now\n"                                                                \
    "      done[#done + 1] = id\n"                                                                 \
    "      if h[5] and h[5] ~= '' and redis.call('HGET', P .. 'unique', h[5]) == id then\n"        \
    "        redis.call('HDEL', P .. 'unique', h[5])\n"                                            \
    "      end\n"                                                                                  \
    "    elseif how == 'l' then\n"                                                                 \
    "      unstream(jk)\n"                                                                         \
    "      redis.call('HINCRBY', jk, 'token', 1)\n"                                                \
    "      redis.call('HINCRBY', jk, 'attempts', -1)\n"                                            \
    "      redis.call('HSET', jk, 'lease', 0, 'run_at', now)\n"                                    \
    "      push(id, jk, h[3])\n"                                                                   \
    "      wake(id)\n"                                                                             \
    "    else\n"                                                                                   \
    "      fail(id, jk, how == 'd', tonumber(ARGV[b + 3]), ARGV[b + 4], ARGV[b + 5], now)\n"       \
    "    end\n"                                                                                    \
    "    res[#res + 1] = 0\n"                                                                      \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "for q, l in pairs(acks) do\n"                                                                 \
    "  redis.call('XACK', P .. 'q:' .. q, 'g', unpack(l))\n"                                       \
    "end\n"                                                                                        \
    "if #done > 0 then redis.call('ZADD', P .. 'done', unpack(done)) end\n"                        \
    "return res\n"

/* LOCK: P me ttl_ms -> 1 when me holds the relay lock (taken or
 * extended), 0 when another holder does. */
#define RQ_LUA_LOCK                                                                                \
    "local k = ARGV[1] .. 'relay'\n"                                                               \
    "local v = redis.call('GET', k)\n"                                                             \
    "if v == ARGV[2] then redis.call('PEXPIRE', k, ARGV[3]) return 1 end\n"                        \
    "if v then return 0 end\n"                                                                     \
    "redis.call('SET', k, ARGV[2], 'PX', ARGV[3])\n"                                               \
    "return 1\n"

/* RENEW: P lease_until n (id token)...: the lease extended and the stream
 * entry's idle time reset (XCLAIM JUSTID to its holder, so XAUTOCLAIM
 * leaves it alone). 0 or -1 (stale) per item. */
#define RQ_LUA_RENEW                                                                               \
    "local P, res = ARGV[1], {}\n"                                                                 \
    "for k = 0, tonumber(ARGV[3]) - 1 do\n"                                                        \
    "  local id, tok = ARGV[4 + k * 2], ARGV[5 + k * 2]\n"                                         \
    "  local jk = P .. 'job:' .. id\n"                                                             \
    "  local h = redis.call('HMGET', jk, 'state', 'token', 'sid', 'worker', 'queue')\n"            \
    "  if h[1] == 'running' and h[2] == tok then\n"                                                \
    "    redis.call('HSET', jk, 'lease', ARGV[2])\n"                                               \
    "    if h[3] then\n"                                                                           \
    "      redis.pcall('XCLAIM', P .. 'q:' .. h[5], 'g', h[4], 0, h[3], 'JUSTID')\n"               \
    "    end\n"                                                                                    \
    "    res[#res + 1] = 0\n"                                                                      \
    "  else res[#res + 1] = -1 end\n"                                                              \
    "end\n"                                                                                        \
    "return res\n"

/* STATS: P now -> {ready, delayed, running, done, dead, oldest_ready_ms}.
 * Ready: stream entries not delivered yet (the group's lag; when Redis
 * cannot tell it, XLEN - pending after a trim: exact when nothing is
 * pending, else it may count acked entries behind the oldest pending one)
 * plus delayed jobs already due; running: the groups' pending entries. */
#define RQ_LUA_STATS                                                                               \
    RQ_LUA_TRIM                                                                                    \
    "local P, now = ARGV[1], tonumber(ARGV[2])\n"                                                  \
    "local ready, running, oldest = 0, 0, 0\n"                                                     \
    "for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do\n"                               \
    "  local s = P .. 'q:' .. q\n"                                                                 \
    "  local g = trim(s)\n"                                                                        \
    "  local len = redis.call('XLEN', s)\n"                                                        \
    "  local p = g and tonumber(g.pending) or 0\n"                                                 \
    "  local r = g and tonumber(g.lag) or len - p\n"                                               \
    "  running = running + p\n"                                                                    \
    "  if r > 0 then\n"                                                                            \
    "    ready = ready + r\n"                                                                      \
    "    local last = g and g['last-delivered-id'] or '0-0'\n"                                     \
    "    local e = redis.call('XRANGE', s, '(' .. last, '+', 'COUNT', 1)\n"                        \
    "    if e[1] then\n"                                                                           \
    "      local t = tonumber(string.match(e[1][1], '^(%d+)'))\n"                                  \
    "      if oldest == 0 or t < oldest then oldest = t end\n"                                     \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local due = redis.call('ZCOUNT', P .. 'delayed', '-inf', now)\n"                              \
    "if due > 0 then\n"                                                                            \
    "  local t = tonumber(redis.call('ZRANGE', P .. 'delayed', 0, 0, 'WITHSCORES')[2])\n"          \
    "  if oldest == 0 or t < oldest then oldest = t end\n"                                         \
    "end\n"                                                                                        \
    "return {ready + due, redis.call('ZCARD', P .. 'delayed') - due, running,\n"                   \
    "  redis.call('ZCARD', P .. 'done'), redis.call('ZCARD', P .. 'dead'), tostring(oldest)}\n"

/* LIST: P state queue limit -> {{id kind queue state prio attempts max
 * run_at created error}...}, newest first (done, dead and delayed from
 * their own sets; other filters scan the newest 200,000 jobs at most). */
#define RQ_LUA_LIST                                                                                \
    "local P, st, q, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])\n"                       \
    "local src = P .. 'all'\n"                                                                     \
    "if st == 'done' or st == 'dead' or st == 'delayed' then src = P .. st end\n"                  \
    "local out, off = {}, 0\n"                                                                     \
    "while #out < limit and off < 200000 do\n"                                                     \
    "  local ids = redis.call('ZREVRANGE', src, off, off + 999)\n"                                 \
    "  if #ids == 0 then break end\n"                                                              \
    "  off = off + #ids\n"                                                                         \
    "  for _, id in ipairs(ids) do\n"                                                              \
    "    local h = redis.call('HMGET', P .. 'job:' .. id, 'kind', 'queue', 'state', 'prio',\n"     \
    "                         'attempts', 'max', 'run_at', 'created', 'error')\n"                  \
    "    if h[1] and (st == '' or h[3] == st) and (q == '' or h[2] == q) then\n"                   \
    "      out[#out + 1] = {id, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]}\n"           \
    "      if #out >= limit then break end\n"                                                      \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "return out\n"

/* RETRY: P now id ('' = every dead job whose unique key no pending job
 * holds) -> the number made ready again. */
#define RQ_LUA_RETRY                                                                               \
    RQ_LUA_COMMON                                                                                  \
    "local now, one = ARGV[2], ARGV[3]\n"                                                          \
    "local function replay(id, all)\n"                                                             \
    "  local jk = P .. 'job:' .. id\n"                                                             \
    "  local h = redis.call('HMGET', jk, 'state', 'ukey', 'queue')\n"                              \
    "  if h[1] ~= 'dead' then return 0 end\n"                                                      \
    "  if h[2] and h[2] ~= '' then\n"                                                              \
    "    local other = redis.call('HGET', P .. 'unique', h[2])\n"                                  \
    "    local ost = other and redis.call('HGET', P .. 'job:' .. other, 'state')\n"                \
    "    local held = ost == 'ready' or ost == 'delayed' or ost == 'running'\n"                    \
    "    if held and all then return 0 end\n"                                                      \
    "    if not held then redis.call('HSET', P .. 'unique', h[2], id) end\n"                       \
    "  end\n"                                                                                      \
    "  redis.call('ZREM', P .. 'dead', id)\n"                                                      \
    "  redis.call('HINCRBY', jk, 'token', 1)\n"                                                    \
    "  redis.call('HSET', jk, 'attempts', 0, 'run_at', now)\n"                                     \
    "  push(id, jk, h[3])\n"                                                                       \
    "  wake(id)\n"                                                                                 \
    "  return 1\n"                                                                                 \
    "end\n"                                                                                        \
    "if one ~= '' then return replay(one, false) end\n"                                            \
    "local n = 0\n"                                                                                \
    "for _, id in ipairs(redis.call('ZRANGE', P .. 'dead', 0, -1)) do\n"                           \
    "  n = n + replay(id, true)\n"                                                                 \
    "end\n"                                                                                        \
    "return n\n"

/* PURGE: P state ('done' or 'dead') -> how many deleted (at most 1000 per
 * call: the caller loops until 0). */
#define RQ_LUA_PURGE                                                                               \
    "local P, st = ARGV[1], ARGV[2]\n"                                                             \
    "local z = P .. st\n"                                                                          \
    "local ids = redis.call('ZRANGE', z, 0, 999)\n"                                                \
    "for _, id in ipairs(ids) do\n"                                                                \
    "  redis.call('DEL', P .. 'job:' .. id)\n"                                                     \
    "  redis.call('ZREM', P .. 'all', id)\n"                                                       \
    "  redis.call('ZREM', z, id)\n"                                                                \
    "end\n"                                                                                        \
    "if st == 'dead' and #ids > 0 then redis.call('XTRIM', P .. 'deadletter', 'MAXLEN', 0) end\n"  \
    "return #ids\n"

#endif
