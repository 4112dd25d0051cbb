//! [`Registry`]: the one owner of the [`Router`], shared by every thread that reports to it.
//! It turns what sockets and modules report into router events and carries out the effects
//! the router returns — queueing frames in the connections' outboxes, handing calls and
//! bindings to modules, answering modules' calls, scheduling — and nothing else: every routing
//! decision is the router's.
//!
//! Events are handled on the thread that reports them, under one lock: a socket thread routes
//! the call its worker just sent and hands the frame straight to the callee's socket actor, and
//! the callee's thread routes the result straight back. A call crosses threads twice (as
//! through a bare relay), not four times as it would through a registry thread of its own.
//! The lock is the mailbox: one event at a time, its effects carried out before the next
//! event, so ordering has the same simple answers — frames of one connection are handled in the
//! order they arrived (one socket reports from one thread, in order), a reattach cleans the old
//! connection up before the new one's next frame, and cleanup runs exactly once. Nothing done
//! under the lock waits: outboxes and module mailboxes are actor mailboxes, replies are
//! one-shot channels. Timers (the router's tick, delayed events) run on the registry's clock
//! thread, which reports like anyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::channels::{Channels, ABANDONED_AFTER};
use crate::error::Code;
use crate::ids::IdMap;
use crate::messages::{
    BuiltinCall, BuiltinDone, Connect, Disconnect, FireMany, FireTrigger, FromWorker,
    RegisterBuiltins, ToSession, TriggerBinding, TriggerRejected,
};
use crate::outbox::{Delivery, Outbox};
use crate::protocol::ErrorBody;
use crate::router::{CallRequest, Effect, Effects, Event, Outcome, Router, TICK};

/// Stalled sockets are looked for every this many ticks (one second).
const STALL_CHECK_TICKS: u64 = 20;
/// How often abandoned channels are looked for.
const CHANNEL_SWEEP: Duration = Duration::from_secs(60);

/// A module's two mailboxes.
struct Module {
    calls: Recipient<BuiltinCall>,
    bindings: Recipient<TriggerBinding>,
}

/// The state behind the lock.
struct Core {
    router: Router,
    outboxes: IdMap<Outbox<ToSession>>,
    modules: Vec<Module>,
    /// Modules' calls waiting for their outcome, by token.
    replies: HashMap<u64, Reply>,
    next_token: u64,
    /// Reused between events.
    effects: Effects,
    spare: Effects,
    /// Delayed events, scheduled on the clock thread once the lock is released.
    later: Vec<(Duration, Event)>,
    ticks: u64,
}

/// A handle to the registry; clones share it. See the module docs.
#[derive(Clone)]
pub struct Registry {
    core: Arc<Mutex<Core>>,
    clock: ArbiterHandle,
    /// The channel table (shared with the router's `engine::channels::create`).
    channels: Channels,
    /// What modules publish for `/metrics`.
    sources: Arc<crate::metrics::Sources>,
    /// Where telemetry goes (`iii-observability`), once it runs.
    telemetry: Arc<std::sync::OnceLock<crate::modules::observability::Sink>>,
}

/// Where the outcome of a module's internal call goes.
enum Reply {
    Future(oneshot::Sender<Outcome>),
    Then(Box<dyn FnOnce(Outcome) + Send>),
}

/// What a socket or a module can report to the registry.
pub trait Report {
    fn report(self, registry: &Registry);
}

impl Registry {
    /// A registry whose timers run on `clock` (an arbiter of its own: a tick never waits
    /// behind a socket).
    pub fn start(clock: ArbiterHandle) -> Registry {
        let router = Router::new();
        let channels = router.channels.clone();
        let registry = Registry {
            core: Arc::new(Mutex::new(Core {
                router,
                outboxes: IdMap::default(),
                modules: Vec::new(),
                replies: HashMap::new(),
                next_token: 0,
                effects: Vec::new(),
                spare: Vec::new(),
                later: Vec::new(),
                ticks: 0,
            })),
            clock,
            channels,
            sources: Arc::default(),
            telemetry: Arc::default(),
        };
        let channels = registry.channels.clone();
        registry.clock.spawn(async move {
            let mut interval = actix::clock::interval(CHANNEL_SWEEP);
            loop {
                interval.tick().await;
                let n = channels.sweep(ABANDONED_AFTER);
                if n > 0 {
                    log::info!("{n} abandoned channel(s) removed");
                }
            }
        });
        let ticker = registry.clone();
        registry.clock.spawn(async move {
            let mut interval = actix::clock::interval(TICK);
            loop {
                interval.tick().await;
                ticker.tick();
            }
        });
        registry
    }

    /// Lets workers register HTTP-invoked functions, under these URL rules.
    /// Where modules publish their numbers for `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::Sources {
        &self.sources
    }

    /// A copy of the router's counters and gauges (`engine::metrics::list`).
    pub fn call_stats(&self) -> (crate::metrics::RouterStats, crate::metrics::Gauges) {
        self.with(|core| (core.router.stats.clone(), core.router.gauges()))
    }

    /// From now on the router records a span of every call and hands it to `tracing`.
    pub fn trace_calls(&self, tracing: crate::router::Tracing) {
        self.with(|core| core.router.tracing = Some(tracing));
    }

    /// Where sockets and `engine::log::*` hand telemetry to.
    pub fn set_telemetry(
        &self,
        sink: crate::modules::observability::Sink,
        dropped: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let _ = self.telemetry.set(sink);
        self.sources.telemetry_dropped(dropped);
    }

    /// Hands telemetry to `iii-observability` without waiting; dropped (and counted) when its
    /// queue is full or it does not run.
    pub fn telemetry(&self, item: crate::modules::observability::Telemetry) {
        use crate::modules::observability::{
            Telemetry, FRAME_BYTES_QUEUED, MAX_FRAME_BYTES_QUEUED,
        };
        use std::sync::atomic::Ordering;
        let Some(sink) = self.telemetry.get() else {
            return;
        };
        // Frames are bounded by bytes as well as by count: a flood of large OTLP frames must not
        // queue hundreds of MiB.
        let bytes = match &item {
            Telemetry::Frame(f) => f.len(),
            _ => 0,
        };
        if bytes > 0
            && FRAME_BYTES_QUEUED.fetch_add(bytes, Ordering::AcqRel) + bytes
                > MAX_FRAME_BYTES_QUEUED
        {
            FRAME_BYTES_QUEUED.fetch_sub(bytes, Ordering::AcqRel);
            return self.sources.count_dropped_telemetry();
        }
        if sink.try_send(item).is_err() {
            FRAME_BYTES_QUEUED.fetch_sub(bytes, Ordering::AcqRel);
            self.sources.count_dropped_telemetry();
        }
    }

    /// The Prometheus text of every metric (the lock is held only to copy the router's
    /// counters).
    pub fn metrics_text(&self) -> String {
        let (stats, gauges) = self.with(|core| (core.router.stats.clone(), core.router.gauges()));
        crate::metrics::render(&stats, &gauges, &self.sources)
    }

    /// Is a function with this id registered right now (by a worker or a module, here or on
    /// another engine of the cluster)?
    pub fn has_function(&self, function_id: &str) -> bool {
        let core = self.lock();
        core.router.functions.contains_key(function_id)
            || core.router.remote_functions.contains(function_id)
    }

    /// The functions trusted workers registered on this engine: what `iii-cluster` offers the
    /// other engines.
    pub fn shared_functions(&self) -> Vec<String> {
        let core = self.lock();
        let mut ids: Vec<String> = core
            .router
            .functions
            .iter()
            .filter(|(_, f)| f.trusted && matches!(f.owner, crate::router::Owner::Session(_)))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The functions other engines offer (and this one does not have).
    pub fn set_remote_functions(&self, ids: std::collections::HashSet<String>) {
        self.with(|core| core.router.remote_functions = ids);
    }

    pub fn allow_http_functions(&self, security: crate::config::SecurityConfig) {
        self.with(|core| core.router.http_security = Some(security));
    }

    /// The channel table.
    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// Reports `msg` (a [`Connect`], a [`FromWorker`], a [`BuiltinDone`], …): handled now, on
    /// this thread.
    pub fn do_send<R: Report>(&self, msg: R) {
        msg.report(self);
    }

    /// A trigger provider refuses binding `trigger_id` for `message`
    /// (`trigger_registration_failed`): logged, and the registration answered with it.
    pub fn reject_binding(&self, trigger_id: String, message: String) {
        log::warn!("trigger {trigger_id}: {message}");
        self.do_send(crate::messages::TriggerRejected {
            trigger_id,
            error: ErrorBody::new("trigger_registration_failed", message),
        });
    }

    /// An internal call (no caller connection); resolves with the function's result.
    pub fn call(&self, req: CallRequest) -> impl std::future::Future<Output = Outcome> {
        let (tx, rx) = oneshot::channel();
        self.with(|core| {
            let token = core.next_token;
            core.next_token += 1;
            core.replies.insert(token, Reply::Future(tx));
            core.run(Event::Call { token, req });
        });
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(ErrorBody::new(
                    Code::InvocationError,
                    "the engine dropped the call",
                ))
            })
        }
    }

    /// An internal call whose outcome is handed to `then` (on whatever thread finishes the
    /// call, under the registry's lock: `then` should only send a message). Unlike
    /// [`Registry::call`] nothing needs polling, so an actor that is kept busy by its mailbox
    /// still gets its answers, as messages.
    pub fn call_then(&self, req: CallRequest, then: impl FnOnce(Outcome) + Send + 'static) {
        self.with(|core| {
            let token = core.next_token;
            core.next_token += 1;
            core.replies.insert(token, Reply::Then(Box::new(then)));
            core.run(Event::Call { token, req });
        });
    }

    /// Runs `f` under the lock, then schedules the delayed events it caused.
    fn with<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut core = self.lock();
        let out = f(&mut core);
        let later = std::mem::take(&mut core.later);
        drop(core);
        if !later.is_empty() {
            self.schedule(later);
        }
        out
    }

    /// Runs each event on the clock thread after its delay.
    fn schedule(&self, later: Vec<(Duration, Event)>) {
        for (after, event) in later {
            let registry = self.clone();
            self.clock.spawn(async move {
                actix::clock::sleep(after).await;
                registry.run(event);
            });
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic under the lock stops the engine (the panic hook exits), so a poisoned lock
        // is never seen by a running engine; taking it anyway keeps shutdown quiet.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, event: Event) {
        self.with(|core| core.run(event));
    }

    /// The periodic tick; once a second also the sockets that stopped draining.
    fn tick(&self) {
        self.with(|core| {
            core.run(Event::Tick {
                now: Instant::now(),
            });
            core.ticks = core.ticks.wrapping_add(1);
            if !core.ticks.is_multiple_of(STALL_CHECK_TICKS) {
                return;
            }
            let stalled: Vec<(Uuid, u64)> = core
                .outboxes
                .iter_mut()
                .filter_map(|(id, o)| o.stalled_for().map(|ms| (*id, ms)))
                .collect();
            for (worker_id, ms) in stalled {
                let why = format!("nothing drained for {ms} ms");
                core.run(Event::Unreachable { worker_id, why });
            }
        });
    }
}

impl Core {
    /// Hands one event to the router and carries out everything it causes.
    fn run(&mut self, event: Event) {
        let mut effects = std::mem::take(&mut self.effects);
        let mut more = std::mem::take(&mut self.spare);
        self.router.handle(event, &mut effects);
        while !effects.is_empty() {
            for effect in effects.drain(..) {
                self.apply(effect, &mut more);
            }
            std::mem::swap(&mut effects, &mut more);
        }
        self.effects = effects;
        self.spare = more;
    }

    fn apply(&mut self, effect: Effect, more: &mut Effects) {
        match effect {
            Effect::Send { to, msg } => {
                let Some(outbox) = self.outboxes.get_mut(&to) else {
                    return;
                };
                let bytes = msg.wire_len();
                let event = match outbox.send(msg, bytes) {
                    Delivery::Sent => return,
                    Delivery::Stalled { ms } => Event::Unreachable {
                        worker_id: to,
                        why: format!("nothing drained for {ms} ms"),
                    },
                    Delivery::Overflow { queued } => Event::Unreachable {
                        worker_id: to,
                        why: format!("{queued} bytes queued for it"),
                    },
                    Delivery::Closed => Event::Disconnect { worker_id: to },
                };
                self.router.handle(event, more);
            }
            Effect::Force { to, msg } => {
                if let Some(outbox) = self.outboxes.get(&to) {
                    outbox.force(msg);
                }
            }
            Effect::Forget { conn } => {
                self.outboxes.remove(&conn);
            }
            Effect::ModuleCall { module, call } => {
                // Unbounded on purpose: what a module has waiting is bounded by its callers'
                // flow control (calls in flight per connection), never by refusing a call.
                if let Some(m) = self.modules.get(module) {
                    m.calls.do_send(call);
                }
            }
            Effect::ModuleBinding { module, binding } => {
                if let Some(m) = self.modules.get(module) {
                    m.bindings.do_send(binding);
                }
            }
            Effect::Reply { token, outcome } => match self.replies.remove(&token) {
                Some(Reply::Future(tx)) => {
                    let _ = tx.send(outcome);
                }
                Some(Reply::Then(then)) => then(outcome),
                None => {}
            },
            Effect::Later { after, event } => self.later.push((after, event)),
        }
    }
}

impl Report for Connect {
    fn report(self, registry: &Registry) {
        registry.with(|core| {
            let stall_ms = self.listener.write_stall_timeout_ms;
            let hard_cap = self.listener.max_outbound_bytes.saturating_mul(4);
            let outbox = Outbox::new(self.session, self.flow.clone(), stall_ms, hard_cap);
            core.outboxes.insert(self.worker_id, outbox);
            core.run(Event::Connect {
                worker_id: self.worker_id,
                listener: self.listener,
                peer: self.peer,
                flow: self.flow,
                telemetry: self.telemetry,
            });
        });
    }
}

impl Report for FromWorker {
    fn report(self, registry: &Registry) {
        registry.run(Event::Frame {
            worker_id: self.worker_id,
            msg: self.msg,
            bytes: self.bytes,
        });
    }
}

impl Report for Disconnect {
    fn report(self, registry: &Registry) {
        registry.with(|core| {
            core.run(Event::Disconnect {
                worker_id: self.worker_id,
            });
            core.outboxes.remove(&self.worker_id);
        });
    }
}

impl Report for RegisterBuiltins {
    fn report(self, registry: &Registry) {
        registry.with(|core| {
            core.modules.push(Module {
                calls: self.calls,
                bindings: self.bindings,
            });
            core.run(Event::Install {
                owner: self.owner,
                functions: self.functions,
                trigger_types: self.trigger_types,
            });
        });
    }
}

impl Report for BuiltinDone {
    fn report(self, registry: &Registry) {
        registry.run(Event::ModuleDone {
            engine_id: self.engine_id,
            outcome: self.outcome,
        });
    }
}

impl Report for FireTrigger {
    fn report(self, registry: &Registry) {
        registry.run(Event::Fire {
            function_id: self.function_id,
            data: self.data,
            metadata: self.metadata,
        });
    }
}

impl Report for FireMany {
    fn report(self, registry: &Registry) {
        registry.with(|core| {
            for fire in self.0 {
                core.run(Event::Fire {
                    function_id: fire.function_id,
                    data: fire.data,
                    metadata: fire.metadata,
                });
            }
        });
    }
}

impl Report for TriggerRejected {
    fn report(self, registry: &Registry) {
        registry.run(Event::BindingRejected {
            trigger_id: self.trigger_id,
            error: self.error,
        });
    }
}
