//! The contract between the registry and engine-hosted modules that own functions or trigger
//! types (today: the stream module).
//!
//! A module announces itself with [`RegisterBuiltins`](super::RegisterBuiltins); the registry
//! then routes calls of its functions to it as [`BuiltinCall`] (the module answers with
//! [`BuiltinDone`](super::BuiltinDone)) and hands it the bindings of its trigger types as
//! [`TriggerBinding`] (it answers a bad binding with
//! [`TriggerRejected`](super::TriggerRejected)). These messages have one handler per module,
//! which is why they live here rather than beside a single actor.

use actix::prelude::*;
use serde_json::Value;
use uuid::Uuid;

use crate::payload::Payload;

/// A call of an engine-hosted function. Answer with `BuiltinDone { engine_id, .. }`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BuiltinCall {
    pub engine_id: Uuid,
    pub function_id: String,
    pub data: Payload,
}

/// A trigger of a type the module provides was bound or unbound.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum TriggerBinding {
    Bind {
        id: String,
        trigger_type: String,
        function_id: String,
        config: Value,
        metadata: Option<Value>,
    },
    Unbind {
        id: String,
    },
}

/// What the registry needs to know about one engine-hosted function.
#[derive(Debug, Clone)]
pub struct BuiltinFunction {
    pub id: String,
    pub description: String,
}

/// What the registry needs to know about one engine-hosted trigger type.
#[derive(Debug, Clone)]
pub struct BuiltinTriggerType {
    pub id: String,
    pub description: String,
    /// See the registry's trigger-type table: public sessions need it listed.
    pub engine_wide: bool,
}
