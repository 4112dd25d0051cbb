//! [`Code`]: every error code the engine puts on the wire, with its string.

use crate::protocol::ErrorBody;

/// Every error code the engine puts on the wire, in one place. The strings are upstream's where
/// upstream has the case (the published SDKs and apps match on them), ours otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// No function by that id (upstream).
    FunctionNotFound,
    /// The worker serving the call went away (upstream).
    InvocationStopped,
    /// Nobody answered within the call's deadline.
    InvocationTimeout,
    /// RBAC refused a call, a registration or a binding (upstream).
    Forbidden,
    /// The auth function refused a connection (upstream).
    AuthError,
    /// A frame that could not be used.
    InvalidMessage,
    /// A frame whose `type` the engine does not know.
    UnknownMessageType,
    /// A caller reused an invocation id that is still in flight.
    DuplicateInvocationId,
    /// A function's input does not have the shape it needs (upstream).
    DeserializationError,
    /// A function id that breaks the id rules.
    InvalidId,
    /// A reattach with a wrong token, or on another listener.
    ReattachRejected,
    /// A trigger provider refused a binding (upstream).
    TriggerRegistrationFailed,
    /// `engine::functions::info` of an unknown id (upstream).
    NotFound,
    /// Bad arguments to an `engine::*` function (upstream).
    InvalidArguments,
    /// An enqueue action with no queue to take it (upstream).
    EnqueueError,
    /// The engine dropped an internal call (it was stopping).
    InvocationError,
    /// The stream store could not write (upstream's codes, one per function).
    StreamSetError,
    StreamDeleteError,
    StreamUpdateError,
    /// The stream store wrote, but could not make the write durable.
    StreamWriteFailed,
}

impl Code {
    /// The string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::FunctionNotFound => "function_not_found",
            Code::InvocationStopped => "invocation_stopped",
            Code::InvocationTimeout => "invocation_timeout",
            Code::Forbidden => "FORBIDDEN",
            Code::AuthError => "AUTH_ERROR",
            Code::InvalidMessage => "invalid_message",
            Code::UnknownMessageType => "unknown_message_type",
            Code::DuplicateInvocationId => "duplicate_invocation_id",
            Code::DeserializationError => "deserialization_error",
            Code::InvalidId => "invalid_id",
            Code::ReattachRejected => "reattach_rejected",
            Code::TriggerRegistrationFailed => "trigger_registration_failed",
            Code::NotFound => "NOT_FOUND",
            Code::InvalidArguments => "INVALID_ARGUMENTS",
            Code::EnqueueError => "enqueue_error",
            Code::InvocationError => "invocation_error",
            Code::StreamSetError => "STREAM_SET_ERROR",
            Code::StreamDeleteError => "STREAM_DELETE_ERROR",
            Code::StreamUpdateError => "STREAM_UPDATE_ERROR",
            Code::StreamWriteFailed => "STREAM_WRITE_FAILED",
        }
    }

    /// Is `body` an error with this code?
    pub fn is(self, body: &ErrorBody) -> bool {
        body.code == self.as_str()
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Code> for String {
    fn from(code: Code) -> String {
        code.as_str().to_string()
    }
}
