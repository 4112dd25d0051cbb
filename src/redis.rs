//! Redis, for engines that share one (`adapter: {name: redis, config: {redis_url}}`): the
//! connection every Redis adapter starts with, and a listener for Redis pub/sub channels that
//! outlives a Redis restart.
//!
//! * [`connect`] — opens the command connection (a `ConnectionManager`: it reconnects by itself,
//!   and a command during an outage fails within about a second, or after 5 s without an
//!   answer) within 5 s, or the module — and the engine's boot — fails with upstream's message
//!   (`MODULES.md` §9.4).
//! * [`hash_get`], [`hash_set`], [`hash_delete`], [`hash_update`] — one JSON value per hash
//!   field, written atomically: what the state and stream adapters are made of.
//! * [`listen`] — a task that `PSUBSCRIBE`s to a pattern and hands every message to a callback;
//!   when the connection breaks it reconnects with a backoff (100 ms doubling to 5 s) and
//!   subscribes again, logging the outage once. Messages published while it was away are lost,
//!   as Redis pub/sub loses them: the adapters that use it say what that means for them.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde_json::Value;

use crate::protocol::ErrorBody;

/// Read-modify-write retries of one [`hash_update`] before it gives up.
pub const CAS_ATTEMPTS: usize = 64;

/// A stored value (text that is not JSON reads as `null`).
fn stored(text: Option<String>) -> Option<Value> {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::Null))
}

/// The value of a hash field, if any.
pub async fn hash_get(
    conn: &mut ConnectionManager,
    key: &str,
    field: &str,
) -> redis::RedisResult<Option<Value>> {
    let text: Option<String> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await?;
    Ok(stored(text))
}

/// Writes a hash field and returns its old value, atomically.
pub async fn hash_set(
    conn: &mut ConnectionManager,
    key: &str,
    field: &str,
    value: &Value,
) -> redis::RedisResult<Option<Value>> {
    let old: Option<String> = redis::Script::new(HASH_SET)
        .key(key)
        .arg(field)
        .arg(value.to_string())
        .invoke_async(conn)
        .await?;
    Ok(stored(old))
}

/// Deletes a hash field and returns its old value, atomically.
pub async fn hash_delete(
    conn: &mut ConnectionManager,
    key: &str,
    field: &str,
) -> redis::RedisResult<Option<Value>> {
    let old: Option<String> = redis::Script::new(HASH_DELETE)
        .key(key)
        .arg(field)
        .invoke_async(conn)
        .await?;
    Ok(stored(old))
}

/// Read-modify-write of one field: `apply` gets the current value and returns the new one and
/// what to answer; the write happens only if nobody changed the field meanwhile, otherwise the
/// field is read again (up to [`CAS_ATTEMPTS`] times: then `Ok(None)`). Redis errors go
/// through `failed`.
pub async fn hash_update<T>(
    conn: &mut ConnectionManager,
    key: &str,
    field: &str,
    failed: impl Fn(redis::RedisError) -> ErrorBody,
    mut apply: impl FnMut(Option<Value>) -> Result<(Value, T), ErrorBody>,
) -> Result<Option<T>, ErrorBody> {
    for _ in 0..CAS_ATTEMPTS {
        let current: Option<String> = redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(conn)
            .await
            .map_err(&failed)?;
        let (new, answer) = apply(stored(current.clone()))?;
        let written: i64 = redis::Script::new(HASH_CAS)
            .key(key)
            .arg(field)
            .arg(if current.is_none() { "1" } else { "0" })
            .arg(current.unwrap_or_default())
            .arg(new.to_string())
            .invoke_async(conn)
            .await
            .map_err(&failed)?;
        if written == 1 {
            return Ok(Some(answer));
        }
    }
    Ok(None)
}

/// Lua scripts of the hash helpers below. KEYS[1] is the hash.
/// `SET`: ARGV field, value → the old value, written atomically.
const HASH_SET: &str = "local old = redis.call('HGET', KEYS[1], ARGV[1]) \
                            redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return old";
/// `DELETE`: ARGV field → the old value, deleted atomically.
const HASH_DELETE: &str = "local old = redis.call('HGET', KEYS[1], ARGV[1]) \
                               if old then redis.call('HDEL', KEYS[1], ARGV[1]) end return old";
/// Compare-and-set: ARGV field, '1' if the field must be absent, the expected value, the new
/// value → 1 when written, 0 when the field changed meanwhile.
const HASH_CAS: &str = "local cur = redis.call('HGET', KEYS[1], ARGV[1]) \
                            if ARGV[2] == '1' then if cur then return 0 end \
                            elseif cur ~= ARGV[3] then return 0 end \
                            redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) return 1";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A command Redis has not answered after this long failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The client and its command connection, or why there is none.
pub async fn connect(url: &str) -> Result<(redis::Client, ConnectionManager), String> {
    let client = redis::Client::open(url).map_err(|e| format!("Invalid Redis URL {url}: {e}"))?;
    // During an outage a command fails within about a second (two reconnect attempts at most
    // 500 ms apart) instead of waiting for Redis: callers get an error they can act on. (The
    // crate's defaults wait 1 s, then 60 s, ... before a command learns Redis is gone.)
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_factor(2)
        .set_max_delay(500)
        .set_number_of_retries(2)
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(RESPONSE_TIMEOUT);
    let manager = ConnectionManager::new_with_config(client.clone(), config);
    match tokio::time::timeout(CONNECT_TIMEOUT, manager).await {
        Ok(Ok(conn)) => Ok((client, conn)),
        Ok(Err(e)) => Err(format!("Failed to connect to Redis at {url}: {e}")),
        Err(_) => Err(format!(
            "Redis connection timed out after 5s. Please ensure Redis is running at: {url}"
        )),
    }
}

/// Spawns (on the current arbiter) a task that receives every message of channels matching
/// `pattern` and calls `on_message(channel, payload)`, for as long as the engine runs.
pub fn listen(
    client: redis::Client,
    pattern: String,
    on_message: impl Fn(String, Vec<u8>) + 'static,
) {
    actix::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let mut outage = false;
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => match pubsub.psubscribe(&pattern).await {
                    Ok(()) => {
                        if outage {
                            log::info!("redis: listening to {pattern} again");
                        }
                        backoff = Duration::from_millis(100);
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            on_message(
                                msg.get_channel_name().to_string(),
                                msg.get_payload_bytes().to_vec(),
                            );
                        }
                        log::warn!("redis: the subscription to {pattern} ended; reconnecting");
                    }
                    Err(e) => log::warn!("redis: cannot subscribe to {pattern}: {e}"),
                },
                Err(e) => log::debug!("redis: cannot reach Redis for {pattern}: {e}"),
            }
            outage = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}
