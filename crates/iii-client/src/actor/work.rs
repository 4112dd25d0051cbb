//! What the client does for its owner and for the engine: commands from the [`Client`]
//! handle (register, call, unregister, shut down), calls of local functions and their answers,
//! trigger-type events for local providers, and local deadlines of calls in flight.
//!
//! [`Client`]: crate::Client

use super::*;

impl ClientActor {
    /// A binding of a type this client provides: hand it over and acknowledge it.
    pub(super) fn provider_event(
        &mut self,
        trigger_type: &str,
        id: &str,
        function_id: &str,
        event: TriggerTypeEvent,
    ) {
        let ack = match self.trigger_types.get(trigger_type) {
            Some((_, tx)) => {
                let _ = tx.send(event);
                None
            }
            None => Some(ErrorBody::new(
                "trigger_type_not_found",
                "Trigger type not found",
            )),
        };
        let frame =
            protocol::Message::TriggerRegistrationResult(protocol::TriggerRegistrationResult {
                id: id.to_string(),
                trigger_type: trigger_type.to_string(),
                function_id: function_id.to_string(),
                error: ack,
            });
        self.send_or_queue(frame.encode());
    }

    /// Runs a local function for the engine and answers it.
    pub(super) fn serve(&mut self, inv: InvokeFunction, ctx: &mut Context<Self>) {
        let Some(f) = self.functions.get(&inv.function_id) else {
            if let Some(id) = inv.invocation_id {
                let err = ErrorBody::new("function_not_found", "Function not found");
                self.send_or_queue(
                    protocol::Message::error_result(id, &inv.function_id, err).encode(),
                );
            }
            return;
        };
        let fut = (f.handler)(inv.data.to_value());
        // Handlers run as tasks on this thread, started in arrival order (actix's own
        // spawned-future list would start a burst of them in reverse).
        let addr = ctx.address();
        let done = HandlerDone {
            invocation_id: inv.invocation_id,
            function_id: inv.function_id,
            traceparent: inv.traceparent,
            baggage: inv.baggage,
            outcome: Ok(Value::Null),
        };
        actix::spawn(async move {
            let outcome = fut.await;
            addr.do_send(HandlerDone { outcome, ..done });
        });
    }

    /// A local handler finished: answer the engine (void calls only log a failure).
    pub(super) fn answer(&mut self, done: HandlerDone) {
        let Some(invocation_id) = done.invocation_id else {
            if let Err(e) = done.outcome {
                log::warn!(
                    "client {}: {} failed: {}",
                    self.opts.name,
                    done.function_id,
                    e.message
                );
            }
            return;
        };
        let (result, error) = match done.outcome {
            Ok(v) => (Some(v).filter(|v| !v.is_null()).map(Payload::from), None),
            Err(e) => (None, Some(e)),
        };
        let frame = protocol::Message::InvocationResult(InvocationResult {
            invocation_id,
            function_id: done.function_id,
            result,
            error,
            traceparent: done.traceparent,
            baggage: done.baggage,
        });
        self.send_or_queue(frame.encode());
    }

    pub(super) fn invoke(
        &mut self,
        req: TriggerRequest,
        timeout: Duration,
        reply: oneshot::Sender<Result<Option<Value>, InvocationError>>,
    ) {
        let id = iii_protocol::ids::next();
        let frame = protocol::Message::InvokeFunction(InvokeFunction {
            invocation_id: Some(id),
            function_id: req.function_id.clone(),
            data: req.payload.into(),
            traceparent: None,
            baggage: None,
            action: req.action,
            metadata: req.metadata,
            timeout_ms: req.timeout.map(|t| t.as_millis() as u64),
            caller: None,
        });
        let started = Instant::now();
        // With an explicit deadline the engine answers at it; the local deadline is a safety
        // net for engines that ignore `timeout_ms`.
        let local = if req.timeout.is_some() {
            timeout + LOCAL_GRACE
        } else {
            timeout
        };
        let deadline = started + local;
        self.pending.insert(
            id,
            PendingCall {
                reply,
                function_id: req.function_id,
                started,
            },
        );
        self.deadlines.add(deadline, id);
        self.send_call_or_queue(Some(id), frame.encode());
    }

    pub(super) fn take_pending(&mut self, id: Uuid) -> Option<PendingCall> {
        self.pending.remove(&id)
    }

    /// Fails every call past its local deadline with `TIMEOUT`.
    pub(super) fn expire(&mut self) {
        for id in self.deadlines.due(Instant::now()) {
            let Some(call) = self.pending.remove(&id) else {
                continue;
            };
            let _ = call.reply.send(Err(InvocationError {
                code: "TIMEOUT".into(),
                message: format!(
                    "invocation of {} timed out after {}ms",
                    call.function_id,
                    call.started.elapsed().as_millis()
                ),
                stacktrace: None,
            }));
            self.queue.retain(|(c, _)| *c != Some(id));
            self.sent.remove(&id);
        }
    }

    pub(super) fn handle_command(&mut self, cmd: Command, ctx: &mut Context<Self>) {
        match cmd {
            Command::RegisterFunction {
                id,
                description,
                metadata,
                handler,
            } => {
                let frame = protocol::Message::RegisterFunction(protocol::RegisterFunction {
                    id: id.clone(),
                    description: description.clone(),
                    request_format: None,
                    response_format: None,
                    metadata: metadata.clone(),
                    invocation: None,
                });
                self.functions.insert(
                    id,
                    FunctionReg {
                        description,
                        metadata,
                        handler,
                    },
                );
                self.send(frame.encode());
            }
            Command::RegisterTrigger {
                id,
                trigger_type,
                function_id,
                config,
            } => {
                let t = TriggerReg {
                    trigger_type,
                    function_id,
                    config,
                };
                let frame = self.trigger_frame(&id, &t);
                self.triggers.insert(id, t);
                self.send(frame);
            }
            Command::RegisterTriggerType {
                id,
                description,
                events,
            } => {
                let frame =
                    json!({"type": "registertriggertype", "id": id, "description": description})
                        .to_string();
                self.trigger_types.insert(id, (description, events));
                self.send(frame);
            }
            Command::Unregister(kind, id) => self.unregister(kind, id),
            Command::Invoke {
                req,
                timeout,
                reply,
            } => self.invoke(req, timeout, reply),
            Command::InvokeVoid {
                function_id,
                payload,
            } => {
                let frame = protocol::Message::InvokeFunction(InvokeFunction {
                    invocation_id: None,
                    function_id,
                    data: payload.into(),
                    traceparent: None,
                    baggage: None,
                    action: Some(Action::Void),
                    metadata: None,
                    timeout_ms: None,
                    caller: None,
                });
                self.send_or_queue(frame.encode());
            }
            Command::Shutdown => self.shutdown(ctx),
            Command::DropConnection => self.on_lost("dropped on request".into(), ctx),
        }
    }

    pub(super) fn unregister(&mut self, kind: RegKind, id: String) {
        let frame = match kind {
            RegKind::Function => {
                self.functions.remove(&id);
                json!({"type": "unregisterfunction", "id": id})
            }
            RegKind::Trigger => match self.triggers.remove(&id) {
                Some(t) => {
                    json!({"type": "unregistertrigger", "id": id, "trigger_type": t.trigger_type})
                }
                None => return,
            },
            RegKind::TriggerType => {
                self.trigger_types.remove(&id);
                json!({"type": "unregistertriggertype", "id": id})
            }
        };
        if kind == RegKind::Trigger {
            self.send_or_queue(frame.to_string());
        } else {
            self.send(frame.to_string());
        }
    }

    pub(super) fn shutdown(&mut self, ctx: &mut Context<Self>) {
        self.closed = true;
        if let Some(mut sink) = self.sink.take() {
            let _ = sink.write(ws::Message::Close(None));
            sink.close();
        }
        self.deadlines.clear();
        for (_, call) in self.pending.drain() {
            let _ = call.reply.send(Err(InvocationError {
                code: "SHUTDOWN".into(),
                message: "the client is shutting down".into(),
                stacktrace: None,
            }));
        }
        let _ = self.state.send(ConnectionState::Closed);
        ctx.run_later(Duration::from_millis(50), |_, ctx| ctx.stop());
    }
}
