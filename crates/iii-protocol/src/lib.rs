//! The iii worker protocol, shared by the engine and the Rust client: the wire types and their
//! encoding ([`protocol`]), payloads kept as JSON text ([`payload`]), wire error codes
//! ([`code`]), and two small pieces both ends need: engine-style ids ([`ids`]) and bucketed
//! deadlines ([`deadlines`]).

pub mod code;
pub mod deadlines;
pub mod ids;
pub mod payload;
pub mod protocol;

pub use code::Code;
pub use payload::Payload;
pub use protocol::{ErrorBody, Message};
