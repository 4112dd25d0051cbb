//! The cron module (`iii-cron`, `MODULES.md` §3): a `CronActor` that provides the `cron` trigger
//! type and calls each bound function on its schedule.
//!
//! Expressions are upstream's (the `cron` crate, the parser upstream uses): 6 or 7 fields,
//! seconds first (`sec min hour day-of-month month day-of-week [year]`), `@daily` and friends;
//! day-of-week is 1–7 with Sunday = 1 (`SUN`–`SAT` also work). A day-of-week field of just `0`
//! is taken as Sunday, the classic crontab meaning, since upstream's parser refuses it; `7`
//! keeps upstream's meaning (Saturday). Times are UTC unless the binding names an IANA
//! `timezone` (upstream has no such key).
//!
//! Per job: wait for the next tick, call the condition (if any) and the function, wait for the
//! function to finish, repeat. A run never overlaps the previous run of the same job: ticks
//! that pass while it runs are skipped, not queued (and ticks missed while the engine was down
//! are not replayed). A failed run is logged, not retried. The next tick is computed after the
//! previous *scheduled* tick, never from a clock that may lag, so a tick never runs twice.
//! Re-registering a trigger id replaces its job.
//!
//! With the `redis` adapter every engine sharing the Redis runs its own timers, and before a
//! run takes the tick's lock: `SET cron_lock:<function>:<expression>:<timezone>:<tick> NX PX
//! 600000`. The key names the tick itself and is never released (it expires), so each tick runs
//! exactly once across the engines however far apart their clocks fire, and the same schedule
//! registered by workers on several engines (each with its own trigger id) is one job. Upstream
//! keys the lock by trigger id and releases it after the run, so engines that fire later run the
//! tick again. If Redis cannot be reached the tick is skipped (logged): never run twice.
//!
//! Payload (`data`): `{"trigger":"cron","job_id":<trigger id>,"scheduled_time":<RFC 3339>,
//! "actual_time":<RFC 3339>}`, `+00:00` for UTC as upstream; the trigger's `metadata` goes with
//! the call.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};

use crate::messages::{
    BuiltinCall, BuiltinDone, BuiltinTriggerType, RegisterBuiltins, TriggerBinding,
};
use crate::modules::fire::{config_text, passes};
use crate::payload::Payload;
use crate::protocol::ErrorBody;
use crate::registry::Registry;
use crate::router::CallRequest;

/// How long one run may take before it counts as finished (and failed).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Parses an expression as upstream does, plus `0` alone as Sunday in the day-of-week field.
pub fn parse_expression(expr: &str) -> Result<cron::Schedule, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("Cron expression is required".into());
    }
    let mut fields: Vec<&str> = expr.split_whitespace().collect();
    if (fields.len() == 6 || fields.len() == 7) && fields[5] == "0" {
        fields[5] = "SUN";
    }
    cron::Schedule::from_str(&fields.join(" "))
        .map_err(|e| format!("Invalid cron expression '{expr}': {e}"))
}

/// One scheduled job.
struct Job {
    /// `<function>:<expression>:<timezone>`: the job's name in the Redis tick locks.
    identity: String,
    schedule: cron::Schedule,
    tz: Option<Tz>,
    function_id: String,
    condition: Option<String>,
    metadata: Option<Value>,
    /// The last tick that ran or was skipped; the next one comes strictly after it.
    last: DateTime<Utc>,
    running: bool,
    timer: Option<SpawnHandle>,
    /// Changes when the job is replaced, so a stale timer or run does nothing.
    generation: u64,
}

impl Job {
    /// The first tick after `after` (and after now), in UTC.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = after.max(Utc::now());
        match self.tz {
            None => self.schedule.after(&from).next(),
            Some(tz) => self
                .schedule
                .after(&from.with_timezone(&tz))
                .next()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    fn payload(&self, id: &str, scheduled: DateTime<Utc>) -> Value {
        let (scheduled, actual) = match self.tz {
            None => (scheduled.to_rfc3339(), Utc::now().to_rfc3339()),
            Some(tz) => (
                scheduled.with_timezone(&tz).to_rfc3339(),
                Utc::now().with_timezone(&tz).to_rfc3339(),
            ),
        };
        json!({"trigger": "cron", "job_id": id, "scheduled_time": scheduled, "actual_time": actual})
    }
}

/// The cron actor. See the module docs.
pub struct CronActor {
    registry: Registry,
    /// The `redis` adapter's connection: ticks are locked across engines.
    lock: Option<redis::aio::ConnectionManager>,
    jobs: HashMap<String, Job>,
    generations: u64,
}

/// Starts the actor on `arbiter` and announces the `cron` trigger type; with `lock` (the
/// `redis` adapter's connection) each tick runs once across engines.
pub fn start(
    registry: Registry,
    arbiter: &ArbiterHandle,
    lock: Option<redis::aio::ConnectionManager>,
) -> Addr<CronActor> {
    let reg = registry.clone();
    let actor = CronActor::start_in_arbiter(arbiter, move |_| CronActor {
        registry: reg,
        lock,
        jobs: HashMap::new(),
        generations: 0,
    });
    registry.do_send(RegisterBuiltins {
        owner: "iii-cron",
        functions: Vec::new(),
        calls: actor.clone().recipient(),
        trigger_types: vec![BuiltinTriggerType {
            id: "cron".into(),
            description: "Run a function on a cron schedule (seconds first, UTC by default)".into(),
            engine_wide: false,
        }],
        bindings: actor.clone().recipient(),
    });
    actor
}

impl CronActor {
    fn bind(
        &mut self,
        id: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
        ctx: &mut Context<Self>,
    ) {
        match parse_job(&config) {
            Ok((schedule, tz, condition)) => {
                self.unbind(&id, ctx);
                self.generations += 1;
                let expression = config["expression"].as_str().unwrap_or("").trim();
                let zone = tz
                    .map(|z| z.name().to_string())
                    .unwrap_or_else(|| "UTC".into());
                let job = Job {
                    identity: format!("{function_id}:{expression}:{zone}"),
                    schedule,
                    tz,
                    function_id,
                    condition,
                    metadata,
                    last: Utc::now(),
                    running: false,
                    timer: None,
                    generation: self.generations,
                };
                self.jobs.insert(id.clone(), job);
                self.schedule(id, ctx);
            }
            Err(message) => {
                self.registry.reject_binding(id, message);
            }
        }
    }

    fn unbind(&mut self, id: &str, ctx: &mut Context<Self>) {
        if let Some(job) = self.jobs.remove(id) {
            if let Some(timer) = job.timer {
                ctx.cancel_future(timer);
            }
        }
    }

    /// Sets the timer for the job's next tick.
    fn schedule(&mut self, id: String, ctx: &mut Context<Self>) {
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(next) = job.next_after(job.last) else {
            log::info!("cron job {id}: the schedule has no more ticks");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let generation = job.generation;
        job.timer = Some(ctx.run_later(wait, move |act, ctx| act.tick(id, generation, next, ctx)));
    }

    fn tick(
        &mut self,
        id: String,
        generation: u64,
        scheduled: DateTime<Utc>,
        ctx: &mut Context<Self>,
    ) {
        let Some(job) = self
            .jobs
            .get_mut(&id)
            .filter(|j| j.generation == generation)
        else {
            return;
        };
        job.last = scheduled;
        job.timer = None;
        if job.running {
            log::debug!("cron job {id}: the previous run is still going; tick {scheduled} skipped");
            return self.schedule(id, ctx);
        }
        job.running = true;
        let payload = Payload::from_value(&job.payload(&id, scheduled));
        let lock = self.lock.clone().map(|conn| {
            let key = format!("cron_lock:{}:{}", job.identity, scheduled.timestamp());
            (conn, key)
        });
        let run = run_once(
            lock,
            self.registry.clone(),
            id.clone(),
            job.condition.clone(),
            job.function_id.clone(),
            job.metadata.clone(),
            payload,
        );
        let job_id = id.clone();
        ctx.spawn(run.into_actor(self).map(move |(), act, _ctx| {
            if let Some(job) = act
                .jobs
                .get_mut(&job_id)
                .filter(|j| j.generation == generation)
            {
                job.running = false;
            }
        }));
        self.schedule(id, ctx);
    }
}

/// The tick's lock across engines: taken (run), taken by another engine (skip), or Redis
/// unreachable (skip, logged).
async fn take_lock(conn: &mut redis::aio::ConnectionManager, key: &str, id: &str) -> bool {
    let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
        .arg(key)
        .arg(std::process::id())
        .arg("NX")
        .arg("PX")
        .arg(600_000)
        .query_async(conn)
        .await;
    match taken {
        Ok(Some(_)) => true,
        Ok(None) => {
            log::debug!("cron job {id}: {key} ran on another engine");
            false
        }
        Err(e) => {
            log::error!("cron job {id}: cannot take {key} from Redis ({e}); tick skipped");
            false
        }
    }
}

/// One run: the tick's lock (with Redis), the condition, then the function, awaited; failures
/// are logged.
async fn run_once(
    lock: Option<(redis::aio::ConnectionManager, String)>,
    registry: Registry,
    id: String,
    condition: Option<String>,
    function_id: String,
    metadata: Option<Value>,
    payload: Payload,
) {
    if let Some((mut conn, key)) = lock {
        if !take_lock(&mut conn, &key, &id).await {
            return;
        }
    }
    if let Some(condition) = condition {
        let check = registry
            .call(CallRequest::new(condition.clone(), payload.clone()))
            .await;
        match passes(&check) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                return log::warn!("cron job {id}: condition {condition} failed ({e}); run skipped")
            }
        }
    }
    let mut req = CallRequest::new(function_id.clone(), payload).timeout(RUN_TIMEOUT);
    req.metadata = metadata;
    if let Err(e) = registry.call(req).await {
        log::warn!(
            "cron job {id}: {function_id} failed: {}: {}",
            e.code,
            e.message
        );
    }
}

/// Reads a `cron` binding's config: `expression` (required), `condition_function_id`,
/// `timezone` (IANA name).
fn parse_job(config: &Value) -> Result<(cron::Schedule, Option<Tz>, Option<String>), String> {
    let expression = match config.get("expression") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err("Cron expression is required".into()),
    };
    let schedule = parse_expression(expression)?;
    let condition = config_text(config, "condition_function_id", "cron")?;
    let tz = match config_text(config, "timezone", "cron")? {
        None => None,
        Some(name) if name.eq_ignore_ascii_case("utc") => None,
        Some(name) => Some(name.parse::<Tz>().map_err(|_| {
            format!("Unknown timezone '{name}' (use an IANA name such as Europe/Paris)")
        })?),
    };
    Ok((schedule, tz, condition))
}

impl Actor for CronActor {
    type Context = Context<Self>;
}

impl Handler<BuiltinCall> for CronActor {
    type Result = ();
    fn handle(&mut self, call: BuiltinCall, _ctx: &mut Self::Context) {
        self.registry.do_send(BuiltinDone {
            engine_id: call.engine_id,
            outcome: Err(ErrorBody::new(
                "function_not_found",
                format!("Function {} not found", call.function_id),
            )),
        });
    }
}

impl Handler<TriggerBinding> for CronActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerBinding, ctx: &mut Self::Context) {
        match msg {
            TriggerBinding::Bind {
                id,
                function_id,
                config,
                metadata,
                ..
            } => self.bind(id, function_id, config, metadata, ctx),
            TriggerBinding::Unbind { id } => self.unbind(&id, ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};

    #[test]
    fn upstream_syntax_is_accepted_and_five_fields_are_not() {
        for ok in [
            "* * * * * *",
            "0 0 9 * * MON-FRI",
            "*/5 * * * * * 2099",
            "@daily",
            "0 0 0 * * 1",
        ] {
            parse_expression(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        assert_eq!(
            parse_expression("  ").unwrap_err(),
            "Cron expression is required"
        );
        let e = parse_expression("* * * * *").unwrap_err();
        assert!(
            e.starts_with("Invalid cron expression '* * * * *': "),
            "{e}"
        );
    }

    #[test]
    fn sunday_is_1_and_a_lone_0_is_sunday_too() {
        let after = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(); // a Wednesday
        for expr in ["0 0 0 * * 1", "0 0 0 * * 0", "0 0 0 * * SUN"] {
            let next = parse_expression(expr)
                .unwrap()
                .after(&after)
                .next()
                .unwrap();
            assert_eq!(next.weekday(), chrono::Weekday::Sun, "{expr}");
        }
        // 7 keeps upstream's meaning: Saturday.
        let next = parse_expression("0 0 0 * * 7")
            .unwrap()
            .after(&after)
            .next()
            .unwrap();
        assert_eq!(next.weekday(), chrono::Weekday::Sat);
    }

    #[test]
    fn a_timezone_moves_the_tick_and_the_payload_says_so() {
        let config = json!({"expression": "0 0 9 * * *", "timezone": "Europe/Paris"});
        let (schedule, tz, _) = parse_job(&config).unwrap();
        let job = Job {
            identity: String::new(),
            schedule,
            tz,
            function_id: "f".into(),
            condition: None,
            metadata: None,
            last: Utc::now(),
            running: false,
            timer: None,
            generation: 0,
        };
        let next = job.next_after(Utc::now()).unwrap();
        let local = next.with_timezone(&chrono_tz::Europe::Paris);
        assert_eq!((local.hour(), local.minute()), (9, 0));
        let p = job.payload("t1", next);
        assert!(
            p["scheduled_time"]
                .as_str()
                .unwrap()
                .contains("T09:00:00+0"),
            "{p}"
        );
        assert!(parse_job(&json!({"expression": "* * * * * *", "timezone": "Mars/Base"})).is_err());
        assert_eq!(
            parse_job(&json!({})).unwrap_err(),
            "Cron expression is required"
        );
    }

    #[test]
    fn utc_payload_uses_plus_zero_offset() {
        let (schedule, tz, _) = parse_job(&json!({"expression": "* * * * * *"})).unwrap();
        let job = Job {
            identity: String::new(),
            schedule,
            tz,
            function_id: "f".into(),
            condition: None,
            metadata: None,
            last: Utc::now(),
            running: false,
            timer: None,
            generation: 0,
        };
        let at = Utc.with_ymd_and_hms(2025, 1, 1, 9, 0, 0).unwrap();
        let p = job.payload("job", at);
        assert_eq!(p["scheduled_time"], "2025-01-01T09:00:00+00:00");
        assert_eq!(p["trigger"], "cron");
        assert_eq!(p["job_id"], "job");
        assert!(p["actual_time"].as_str().unwrap().ends_with("+00:00"));
    }
}
