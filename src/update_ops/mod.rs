//! The update-op engine of `stream::update` and `state::update`: parses the `ops` array of a
//! call and applies the ops, in order, to one stored value (PROTOCOL.md §6.2).
//!
//! Pure logic, no I/O: the owner of the value reads it, calls [`parse_ops`] once and
//! [`apply_ops`] once, then stores the result and reports `errors` next to `old_value` and
//! `new_value`.
//!
//! * A wrongly-typed op (`by: 1.5`, a `set` without `path`, an unknown `type`, …) fails the whole
//!   call: [`parse_ops`] returns a serde-style message naming the op index and field, which the
//!   caller reports as `deserialization_error`.
//! * An op that is well-typed but cannot be applied (a path that is too deep, an increment of a
//!   string, …) is skipped and recorded as an [`UpdateOpError`]; the ops after it still run.
//!
//! Paths are literal keys, never split on dots. `set`, `increment`, `decrement` and `remove` take
//! a single key (`""` means the whole value); `merge` and `append` also accept an array of keys for
//! a nested target. Limits: 32 path segments, 256 bytes per segment, no `__proto__`,
//! `constructor` or `prototype` segment; a merge value has at most 1024 top-level keys, none of
//! those three names, and a nesting depth of at most 16.

mod apply;
mod parse;
#[cfg(test)]
mod tests;

use serde::Serialize;
use serde_json::Value;

pub use apply::apply_ops;
pub use parse::parse_ops;

/// Documentation link carried by every [`UpdateOpError`].
pub const DOC_URL: &str = "https://iii.dev/docs/workers/iii-state#error-codes";
/// Most segments a path may have.
pub const MAX_PATH_DEPTH: usize = 32;
/// Longest path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 256;
/// Deepest nesting of a merge value (a scalar is 0, each object or array adds 1).
pub const MAX_VALUE_DEPTH: usize = 16;
/// Most top-level keys of a merge value.
pub const MAX_VALUE_KEYS: usize = 1024;
/// Keys that are refused in paths and as top-level merge keys (JavaScript prototype pollution).
pub const FORBIDDEN_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

const OP_NAMES: &str = "`set`, `merge`, `increment`, `decrement`, `append`, `remove`";

/// One op that could not be applied; it was skipped and the following ops still ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpdateOpError {
    /// 0-based index of the op in the request's `ops` array.
    pub op_index: usize,
    /// Stable code such as `increment.not_number` or `merge.path.too_deep`.
    pub code: String,
    /// Human-readable reason.
    pub message: String,
    /// Always [`DOC_URL`].
    pub doc_url: String,
}

/// One parsed op. `Merge` and `Append` paths are already split into literal segments; an empty
/// vector means the root.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOp {
    /// Replace the whole value (`path` empty) or one top-level key.
    Set { path: String, value: Value },
    /// Shallow-merge an object into the root or into the object at a nested path.
    Merge { path: Vec<String>, value: Value },
    /// Add `by` to a number (the whole value when `path` is empty).
    Increment { path: String, by: i64 },
    /// Subtract `by` from a number (the whole value when `path` is empty).
    Decrement { path: String, by: i64 },
    /// Push onto an array or concatenate onto a string.
    Append { path: Vec<String>, value: Value },
    /// Delete one top-level key, or null the whole value when `path` is empty.
    Remove { path: String },
}

impl UpdateOp {
    /// The op's wire name, also the first part of its error codes.
    pub fn name(&self) -> &'static str {
        match self {
            UpdateOp::Set { .. } => "set",
            UpdateOp::Merge { .. } => "merge",
            UpdateOp::Increment { .. } => "increment",
            UpdateOp::Decrement { .. } => "decrement",
            UpdateOp::Append { .. } => "append",
            UpdateOp::Remove { .. } => "remove",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------
