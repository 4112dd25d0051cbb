//! `RegistryActor`: the actor around the [`Router`]. It turns messages into router events and
//! carries out the effects the router returns — queueing frames in the connections' outboxes,
//! handing calls and bindings to modules, answering modules' calls, scheduling — and nothing
//! else: every routing decision is the router's.
//!
//! It runs on its own arbiter (thread). Because every change goes through this one mailbox,
//! ordering questions have simple answers: frames of one connection are handled in the order
//! they arrived, a reattach cleans the old connection up before the new one's next frame, and
//! cleanup runs exactly once. It never awaits a worker: a call is forwarded and parked, and the
//! result comes back as another message.

use std::collections::HashMap;
use std::time::Instant;

use actix::prelude::*;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::error::Code;
use crate::ids::IdMap;
use crate::messages::{
    BuiltinCall, BuiltinDone, Call, Connect, Disconnect, FireTrigger, FromWorker, RegisterBuiltins,
    ToSession, TriggerBinding, TriggerRejected,
};
use crate::outbox::{Delivery, Outbox};
use crate::protocol::ErrorBody;
use crate::router::{Effect, Effects, Event, Outcome, Router, TICK};

/// Stalled sockets are looked for every this many ticks (one second).
const STALL_CHECK_TICKS: u64 = 20;

/// A module's two mailboxes.
struct Module {
    calls: Recipient<BuiltinCall>,
    bindings: Recipient<TriggerBinding>,
}

/// The registry actor. See the module docs.
pub struct RegistryActor {
    router: Router,
    outboxes: IdMap<Outbox<ToSession>>,
    modules: Vec<Module>,
    /// Modules' calls waiting for their outcome, by token.
    replies: HashMap<u64, oneshot::Sender<Outcome>>,
    next_token: u64,
    /// Reused between events.
    effects: Effects,
    spare: Effects,
    ticks: u64,
}

impl Default for RegistryActor {
    fn default() -> Self {
        Self::new()
    }
}

impl RegistryActor {
    pub fn new() -> Self {
        RegistryActor {
            router: Router::new(),
            outboxes: IdMap::default(),
            modules: Vec::new(),
            replies: HashMap::new(),
            next_token: 0,
            effects: Vec::new(),
            spare: Vec::new(),
            ticks: 0,
        }
    }

    /// Hands one event to the router and carries out everything it causes.
    fn run(&mut self, event: Event, ctx: &mut Context<Self>) {
        let mut effects = std::mem::take(&mut self.effects);
        let mut more = std::mem::take(&mut self.spare);
        self.router.handle(event, &mut effects);
        while !effects.is_empty() {
            for effect in effects.drain(..) {
                self.apply(effect, &mut more, ctx);
            }
            std::mem::swap(&mut effects, &mut more);
        }
        self.effects = effects;
        self.spare = more;
    }

    fn apply(&mut self, effect: Effect, more: &mut Effects, ctx: &mut Context<Self>) {
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
            Effect::Reply { token, outcome } => {
                if let Some(tx) = self.replies.remove(&token) {
                    let _ = tx.send(outcome);
                }
            }
            Effect::Later { after, event } => {
                ctx.run_later(after, move |act, ctx| act.run(event, ctx));
            }
        }
    }

    /// The periodic tick; once a second also the sockets that stopped draining.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.run(
            Event::Tick {
                now: Instant::now(),
            },
            ctx,
        );
        self.ticks = self.ticks.wrapping_add(1);
        if !self.ticks.is_multiple_of(STALL_CHECK_TICKS) {
            return;
        }
        let stalled: Vec<(Uuid, u64)> = self
            .outboxes
            .iter_mut()
            .filter_map(|(id, o)| o.stalled_for().map(|ms| (*id, ms)))
            .collect();
        for (worker_id, ms) in stalled {
            let why = format!("nothing drained for {ms} ms");
            self.run(Event::Unreachable { worker_id, why }, ctx);
        }
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Connect> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) {
        let stall_ms = msg.listener.write_stall_timeout_ms;
        let hard_cap = msg.listener.max_outbound_bytes.saturating_mul(4);
        let outbox = Outbox::new(msg.session, msg.flow.clone(), stall_ms, hard_cap);
        self.outboxes.insert(msg.worker_id, outbox);
        let event = Event::Connect {
            worker_id: msg.worker_id,
            listener: msg.listener,
            peer: msg.peer,
            flow: msg.flow,
            telemetry: msg.telemetry,
        };
        self.run(event, ctx);
    }
}

impl Handler<FromWorker> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: FromWorker, ctx: &mut Self::Context) {
        let event = Event::Frame {
            worker_id: msg.worker_id,
            msg: msg.msg,
            bytes: msg.bytes,
        };
        self.run(event, ctx);
    }
}

impl Handler<Disconnect> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        self.run(
            Event::Disconnect {
                worker_id: msg.worker_id,
            },
            ctx,
        );
        self.outboxes.remove(&msg.worker_id);
    }
}

impl Handler<Call> for RegistryActor {
    type Result = ResponseFuture<Outcome>;
    fn handle(&mut self, msg: Call, ctx: &mut Self::Context) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let token = self.next_token;
        self.next_token += 1;
        self.replies.insert(token, tx);
        self.run(Event::Call { token, req: msg.0 }, ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ErrorBody::new(
                    Code::InvocationError,
                    "the engine dropped the call",
                ))
            })
        })
    }
}

impl Handler<RegisterBuiltins> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: RegisterBuiltins, ctx: &mut Self::Context) {
        self.modules.push(Module {
            calls: msg.calls,
            bindings: msg.bindings,
        });
        let event = Event::Install {
            owner: msg.owner,
            functions: msg.functions,
            trigger_types: msg.trigger_types,
        };
        self.run(event, ctx);
    }
}

impl Handler<BuiltinDone> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: BuiltinDone, ctx: &mut Self::Context) {
        let event = Event::ModuleDone {
            engine_id: msg.engine_id,
            outcome: msg.outcome,
        };
        self.run(event, ctx);
    }
}

impl Handler<FireTrigger> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: FireTrigger, ctx: &mut Self::Context) {
        let event = Event::Fire {
            function_id: msg.function_id,
            data: msg.data,
            metadata: msg.metadata,
        };
        self.run(event, ctx);
    }
}

impl Handler<TriggerRejected> for RegistryActor {
    type Result = ();
    fn handle(&mut self, msg: TriggerRejected, ctx: &mut Self::Context) {
        let event = Event::BindingRejected {
            trigger_id: msg.trigger_id,
            error: msg.error,
        };
        self.run(event, ctx);
    }
}
