//! Engine errors as data.
//!
//! [`EngineError`] is the one error type the routing path produces. Each variant has a stable wire
//! `code()` (the strings the published SDKs and upstream use: `function_not_found`,
//! `invocation_stopped`, `FORBIDDEN`, …) and a message naming the thing that failed; `to_body()`
//! turns it into the [`ErrorBody`] carried by an `invocationresult` frame.

pub use crate::protocol::{Code, ErrorBody};

/// Everything that can go wrong while routing a call, as seen by the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("Function {0} not found")]
    FunctionNotFound(String),
    #[error("Invocation stopped")]
    InvocationStopped,
    #[error("function {function_id} did not answer within {timeout_ms} ms")]
    InvocationTimeout {
        function_id: String,
        timeout_ms: u64,
    },
    #[error("function '{function_id}' not allowed ({hint})")]
    Forbidden { function_id: String, hint: String },
    #[error("{0}")]
    InvalidMessage(String),
    #[error("invocation id {0} is already in flight on this connection")]
    DuplicateInvocationId(String),
    #[error("Failed to deserialize input for {function_id}: {reason}")]
    Deserialization { function_id: String, reason: String },
}

impl EngineError {
    /// The stable wire code of this error.
    pub fn code(&self) -> Code {
        match self {
            EngineError::FunctionNotFound(_) => Code::FunctionNotFound,
            EngineError::InvocationStopped => Code::InvocationStopped,
            EngineError::InvocationTimeout { .. } => Code::InvocationTimeout,
            EngineError::Forbidden { .. } => Code::Forbidden,
            EngineError::InvalidMessage(_) => Code::InvalidMessage,
            EngineError::DuplicateInvocationId(_) => Code::DuplicateInvocationId,
            EngineError::Deserialization { .. } => Code::DeserializationError,
        }
    }

    /// The `{code, message}` body sent on the wire.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().into(),
            message: self.to_string(),
            stacktrace: None,
        }
    }
}

impl From<EngineError> for ErrorBody {
    fn from(e: EngineError) -> Self {
        e.to_body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_match_upstream() {
        let e = EngineError::FunctionNotFound("todos::nope".into());
        assert_eq!(e.code().as_str(), "function_not_found");
        assert_eq!(e.to_string(), "Function todos::nope not found");
        let e = EngineError::Forbidden {
            function_id: "todos::secret".into(),
            hint: "add to rbac.expose_functions".into(),
        };
        assert_eq!(e.code(), Code::Forbidden);
        assert_eq!(
            e.to_string(),
            "function 'todos::secret' not allowed (add to rbac.expose_functions)"
        );
        assert_eq!(
            EngineError::InvocationStopped.to_body().message,
            "Invocation stopped"
        );
    }
}
