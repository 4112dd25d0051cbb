//! The Redis layout of the queue's `redis` adapter and the Lua scripts that change it. Each
//! script is one atomic step, so engines sharing the Redis never see a half-made change, and
//! all times are Redis's own clock (`TIME`), so engines' clocks need not agree.
//!
//! Per queue (`<k>` = `named:<queue>`, `topic:<topic>::<function>` or `unclaimed:<topic>`,
//! prefix `P` = `iii:queue:<k>`):
//!
//! * `P:jobs` — hash, job id → the job (JSON, the builtin store's record).
//! * `P:ready` — list of tokens that may go out now, oldest first. A token is a job id; in a
//!   FIFO queue it is a message group, whose head job is the one that goes out.
//! * `P:delayed` — sorted set, token → when it may go out (a retry's backoff).
//! * `P:leases` — sorted set, token → until when a delivery holds it. A token leased is out
//!   to exactly one engine; when the lease runs out (its engine died, or lost Redis) the next
//!   claim puts it back in front of `P:ready`: that is how a job held by a dead engine is
//!   redelivered.
//! * `P:dead` — hash, job id → dead letter `{job, error, failed_at}`.
//! * `P:purging` — set of tokens leased when the queue was last purged: one claimed only to be
//!   handed back (its function is not on the claiming engine) is dropped instead.
//! * FIFO: `P:g:<group>` — list of the group's job ids in order; `P:groups` — set of groups.
//!
//! Shared: `iii:queue:queues` (set of every `<k>` that ever held a job),
//! `iii:queue:subs:<topic>` (hash, function id → its subscription's `{fifo, max_depth}`),
//! `iii:queue:idem:<scope>:<key>` (first receipt of an idempotency key, expiring with its
//! window) and the channel `iii:queue:wake` (a queue key, published when a job may go out).

use std::sync::LazyLock;

/// The Redis prefix of a queue's keys.
pub fn prefix(key: &str) -> String {
    format!("iii:queue:{key}")
}

/// The set of every queue key.
pub const QUEUES: &str = "iii:queue:queues";
/// The channel that tells engines a queue has a job to claim.
pub const WAKE: &str = "iii:queue:wake";

/// The subscriptions of a topic.
pub fn subs(topic: &str) -> String {
    format!("iii:queue:subs:{topic}")
}

/// An idempotency key's record.
pub fn idem(scope: &str, key: &str) -> String {
    format!("iii:queue:idem:{scope}:{key}")
}

/// Redis's clock in milliseconds.
const NOW: &str = "local function now() local t = redis.call('TIME') \
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end ";

/// Puts job `id` (token `group` in a FIFO queue) of queue prefix `p` behind the others.
const PUSH: &str = "local function push(p, id, fifo, group) \
    if fifo == '1' then local g = p .. ':g:' .. group \
        redis.call('RPUSH', g, id) redis.call('SADD', p .. ':groups', group) \
        if redis.call('LLEN', g) == 1 then redis.call('RPUSH', p .. ':ready', group) end \
    else redis.call('RPUSH', p .. ':ready', id) end end ";

/// A FIFO group's head job `id` is finished: it leaves the group, and if the finishing
/// delivery still held the group, the next job of it may go out.
const NEXT_OF_GROUP: &str = "local function next_of_group(p, group, id, held, key) \
    local g = p .. ':g:' .. group redis.call('LREM', g, 1, id) \
    if redis.call('LLEN', g) == 0 then redis.call('SREM', p .. ':groups', group) \
    elseif held == 1 then redis.call('RPUSH', p .. ':ready', group) \
        redis.call('PUBLISH', 'iii:queue:wake', key) end end ";

/// Takes in jobs, all or none. ARGV: idempotency key ('' none), its window ms, the receipt,
/// the topic's subscriptions hash ('' for an enqueue), the subscribers the jobs were made for
/// (sorted, '\n'-joined), the number of jobs, then per job: prefix, queue key, id, job JSON,
/// fifo '1'/'0', group, max_depth. → {'ok', receipt} | {'seen', first receipt} |
/// {'full', queue key, jobs held} | {'changed', ''} (subscribers changed: make the jobs again).
const ENQUEUE_LUA: &str = "\
    if ARGV[1] ~= '' then local r = redis.call('GET', ARGV[1]) \
        if r then return {'seen', r} end end \
    if ARGV[4] ~= '' then local s = redis.call('HKEYS', ARGV[4]) table.sort(s) \
        if table.concat(s, '\\n') ~= ARGV[5] then return {'changed', ''} end end \
    local n = tonumber(ARGV[6]) \
    for i = 0, n - 1 do local b = 7 + i * 7 \
        local held = redis.call('HLEN', ARGV[b] .. ':jobs') \
        if held >= tonumber(ARGV[b + 6]) then return {'full', ARGV[b + 1], tostring(held)} end end \
    for i = 0, n - 1 do local b = 7 + i * 7 local p = ARGV[b] \
        redis.call('HSET', p .. ':jobs', ARGV[b + 2], ARGV[b + 3]) \
        push(p, ARGV[b + 2], ARGV[b + 4], ARGV[b + 5]) \
        redis.call('SADD', 'iii:queue:queues', ARGV[b + 1]) \
        redis.call('PUBLISH', 'iii:queue:wake', ARGV[b + 1]) end \
    if ARGV[1] ~= '' then redis.call('SET', ARGV[1], ARGV[3], 'PX', ARGV[2]) end \
    return {'ok', ARGV[3]}";

/// Leases up to `want` jobs of queue prefix `p` for `lease` ms. Expired leases and due retries
/// go back in front first. → {token, id, job JSON, token, id, job JSON, …}; when none may go
/// out, {ms until the earliest retry or lease comes due} (or {} if there is none).
const CLAIM_FN: &str = "local function claim(p, lease, fifo, want) \
    local n = now() local out = {} \
    local exp = redis.call('ZRANGEBYSCORE', p .. ':leases', '-inf', n, 'LIMIT', 0, 100) \
    for _, t in ipairs(exp) do redis.call('ZREM', p .. ':leases', t) \
        redis.call('LPUSH', p .. ':ready', t) end \
    local due = redis.call('ZRANGEBYSCORE', p .. ':delayed', '-inf', n, 'LIMIT', 0, 100) \
    for i = #due, 1, -1 do redis.call('ZREM', p .. ':delayed', due[i]) \
        redis.call('LPUSH', p .. ':ready', due[i]) end \
    for _ = 1, want + 100 do \
        if #out >= want * 3 then break end \
        local t = redis.call('LPOP', p .. ':ready') \
        if not t then break end \
        if not redis.call('ZSCORE', p .. ':leases', t) \
            and not redis.call('ZSCORE', p .. ':delayed', t) then \
            local id = t \
            if fifo == '1' then id = redis.call('LINDEX', p .. ':g:' .. t, 0) end \
            if id then local job = redis.call('HGET', p .. ':jobs', id) \
                if job then redis.call('ZADD', p .. ':leases', n + lease, t) \
                    table.insert(out, t) table.insert(out, id) table.insert(out, job) end end end end \
    if #out == 0 then \
        local d = redis.call('ZRANGE', p .. ':delayed', 0, 0, 'WITHSCORES') \
        local l = redis.call('ZRANGE', p .. ':leases', 0, 0, 'WITHSCORES') \
        local next = nil \
        if d[2] then next = tonumber(d[2]) end \
        if l[2] and (not next or tonumber(l[2]) < next) then next = tonumber(l[2]) end \
        if next then return {tostring(math.max(0, next - n))} end end \
    return out end ";

/// A delivery of job `id` (token `token`) succeeded: it goes, and in a FIFO queue the group
/// goes on. → 1 if the delivery still held its lease.
const ACK_FN: &str = "local function ack(p, token, id, fifo, key) \
    local held = redis.call('ZREM', p .. ':leases', token) \
    redis.call('SREM', p .. ':purging', token) redis.call('HDEL', p .. ':jobs', id) \
    if fifo == '1' then next_of_group(p, token, id, held, key) end \
    return held end ";

/// Claims up to ARGV[4] jobs. ARGV: prefix, lease ms, fifo, how many. → see `claim`.
const CLAIM_LUA: &str = "return claim(ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]))";

/// A delivery succeeded. ARGV: prefix, token, id, fifo, queue key. → see `ack`.
const ACK_LUA: &str = "return ack(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])";

/// A delivery succeeded and the queue has room for more: the ack and the next claim in one
/// round trip. ARGV: prefix, token, id, fifo, queue key, lease ms, how many. → see `claim`.
const ACK_CLAIM_LUA: &str = "ack(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) \
    return claim(ARGV[1], tonumber(ARGV[6]), ARGV[4], tonumber(ARGV[7]))";

/// A delivery failed. ARGV: prefix, token, id, fifo, queue key, the job JSON with the attempt
/// counted, the backoff ms, the dead letter JSON ('' unless it is dead now). A job purged or
/// done meanwhile (its lease ran out and another delivery finished it) stays gone, and in a
/// FIFO queue its group goes on; a job whose lease ran out is already back in line, so it is
/// not scheduled twice. → 1 if the delivery still held its lease.
const FAIL_LUA: &str = "\
    local p = ARGV[1] local held = redis.call('ZREM', p .. ':leases', ARGV[2]) \
    redis.call('SREM', p .. ':purging', ARGV[2]) \
    if ARGV[8] ~= '' then \
        if redis.call('HDEL', p .. ':jobs', ARGV[3]) == 1 then \
            redis.call('HSET', p .. ':dead', ARGV[3], ARGV[8]) end \
        if ARGV[4] == '1' then next_of_group(p, ARGV[2], ARGV[3], held, ARGV[5]) end \
    elseif redis.call('HEXISTS', p .. ':jobs', ARGV[3]) == 1 then \
        redis.call('HSET', p .. ':jobs', ARGV[3], ARGV[6]) \
        if held == 1 then redis.call('ZADD', p .. ':delayed', now() + tonumber(ARGV[7]), ARGV[2]) end \
    elseif ARGV[4] == '1' then next_of_group(p, ARGV[2], ARGV[3], held, ARGV[5]) end \
    return held";

/// A claimed job goes back, behind the others, without using an attempt (its function is not
/// registered on the engine that claimed it; another engine may have it) — unless the queue
/// was purged while it was claimed: then it goes. ARGV: prefix, token, id, fifo, queue key.
const RELEASE_LUA: &str = "\
    local p = ARGV[1] \
    if redis.call('ZREM', p .. ':leases', ARGV[2]) == 0 then return 0 end \
    if redis.call('SREM', p .. ':purging', ARGV[2]) == 1 then \
        redis.call('HDEL', p .. ':jobs', ARGV[3]) \
        if ARGV[4] == '1' then next_of_group(p, ARGV[2], ARGV[3], 1, ARGV[5]) end \
        return 1 end \
    redis.call('RPUSH', p .. ':ready', ARGV[2]) return 0";

/// Records a subscription; the topic's first subscriber takes over its unclaimed messages.
/// ARGV: subscriptions hash, function id, subscription JSON, unclaimed prefix, unclaimed key,
/// the subscription's prefix, its key, its fifo. → 1 if the function was not subscribed.
const SUBSCRIBE_LUA: &str = "\
    local new = redis.call('HSET', ARGV[1], ARGV[2], ARGV[3]) \
    redis.call('SADD', 'iii:queue:queues', ARGV[7]) \
    if new == 1 and redis.call('HLEN', ARGV[1]) == 1 then \
        local u = ARGV[4] local p = ARGV[6] \
        for _, id in ipairs(redis.call('LRANGE', u .. ':ready', 0, -1)) do \
            local job = redis.call('HGET', u .. ':jobs', id) \
            if job then redis.call('HSET', p .. ':jobs', id, job) push(p, id, ARGV[8], '') end end \
        redis.call('DEL', u .. ':jobs', u .. ':ready') \
        redis.call('SREM', 'iii:queue:queues', ARGV[5]) \
        redis.call('PUBLISH', 'iii:queue:wake', ARGV[7]) end \
    return new";

/// Moves a dead letter back into its queue, its attempts reset. ARGV: prefix, id, job JSON,
/// fifo, group, queue key. → 1 if it was a dead letter.
const REQUEUE_LUA: &str = "\
    if redis.call('HDEL', ARGV[1] .. ':dead', ARGV[2]) == 0 then return 0 end \
    redis.call('HSET', ARGV[1] .. ':jobs', ARGV[2], ARGV[3]) \
    push(ARGV[1], ARGV[2], ARGV[4], ARGV[5]) \
    redis.call('PUBLISH', 'iii:queue:wake', ARGV[6]) return 1";

/// Drops every job not being delivered; those claimed only to be handed back go when they are.
/// ARGV: prefix, fifo. → how many dropped now.
const PURGE_LUA: &str = "\
    local p = ARGV[1] local keep = {} \
    local leased = redis.call('ZRANGE', p .. ':leases', 0, -1) \
    redis.call('DEL', p .. ':purging') \
    for _, t in ipairs(leased) do redis.call('SADD', p .. ':purging', t) end \
    if ARGV[2] == '1' then \
        for _, g in ipairs(leased) do local h = redis.call('LINDEX', p .. ':g:' .. g, 0) \
            if h then keep[h] = true end end \
        for _, g in ipairs(redis.call('SMEMBERS', p .. ':groups')) do \
            if redis.call('ZSCORE', p .. ':leases', g) then redis.call('LTRIM', p .. ':g:' .. g, 0, 0) \
            else redis.call('DEL', p .. ':g:' .. g) redis.call('SREM', p .. ':groups', g) end end \
    else for _, t in ipairs(leased) do keep[t] = true end end \
    local n = 0 \
    for _, id in ipairs(redis.call('HKEYS', p .. ':jobs')) do \
        if not keep[id] then redis.call('HDEL', p .. ':jobs', id) n = n + 1 end end \
    redis.call('DEL', p .. ':ready', p .. ':delayed') \
    return n";

/// A script with the helpers it may use.
fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!(
        "{NOW}{PUSH}{NEXT_OF_GROUP}{CLAIM_FN}{ACK_FN}{body}"
    ))
}

/// The scripts, made (and their digests computed) once.
pub static ENQUEUE: LazyLock<redis::Script> = LazyLock::new(|| script(ENQUEUE_LUA));
pub static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| script(CLAIM_LUA));
pub static ACK: LazyLock<redis::Script> = LazyLock::new(|| script(ACK_LUA));
pub static ACK_CLAIM: LazyLock<redis::Script> = LazyLock::new(|| script(ACK_CLAIM_LUA));
pub static FAIL: LazyLock<redis::Script> = LazyLock::new(|| script(FAIL_LUA));
pub static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| script(RELEASE_LUA));
pub static SUBSCRIBE: LazyLock<redis::Script> = LazyLock::new(|| script(SUBSCRIBE_LUA));
pub static REQUEUE: LazyLock<redis::Script> = LazyLock::new(|| script(REQUEUE_LUA));
pub static PURGE: LazyLock<redis::Script> = LazyLock::new(|| script(PURGE_LUA));

/// Loads every script into Redis, so that the first uses do not each load it again.
pub async fn load_all(conn: &mut redis::aio::ConnectionManager) {
    for s in [
        &ENQUEUE, &CLAIM, &ACK, &ACK_CLAIM, &FAIL, &RELEASE, &SUBSCRIBE, &REQUEUE, &PURGE,
    ] {
        if let Err(e) = s.prepare_invoke().load_async(conn).await {
            log::warn!("iii-queue: cannot load a script into Redis: {e}");
        }
    }
}
