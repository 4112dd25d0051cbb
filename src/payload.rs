//! [`Payload`]: a call's `data` or `result` carried through the engine as the JSON text it
//! arrived as, parsed only where the engine itself needs the value.
//!
//! The engine routes payloads; it rarely reads them. Parsing a payload into a
//! `serde_json::Value` costs about ten times its size in memory and most of a call's CPU, and
//! writing it out again costs as much. A `Payload` is the raw text (shared, so a fan-out to
//! many subscribers keeps one copy), written back out verbatim. Engine-hosted functions parse it
//! with [`Payload::parse`]; the engine adds `_caller_worker_id` to an object with
//! [`Payload::with_caller`] by splicing text, not by rebuilding the value.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// The key the engine sets in a call's `data` to the caller's worker id (`PROTOCOL.md` §4.3).
pub const CALLER_KEY: &str = "_caller_worker_id";

/// A JSON value kept as text. Cloning shares the text.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// JSON `null`.
    pub fn null() -> Payload {
        thread_local! {
            static NULL: Payload = Payload::from_raw_text("null".to_string()).expect("null is JSON");
        }
        NULL.with(Payload::clone)
    }

    /// Serialises a value (which cannot fail for a `serde_json::Value`).
    pub fn from_value(value: &Value) -> Payload {
        Payload::from_serialize(value)
    }

    /// Serialises anything serialisable; a value that cannot be written becomes `null`.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Payload {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Payload(Arc::from(raw)),
            Err(e) => {
                log::error!("could not encode a payload: {e}");
                Payload::null()
            }
        }
    }

    /// Checks that `text` is one JSON value and keeps it as is.
    pub fn from_raw_text(text: String) -> Result<Payload, serde_json::Error> {
        RawValue::from_string(text).map(|raw| Payload(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    /// Never true: the shortest JSON value is one byte. Here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.0.get().is_empty()
    }

    /// Is this JSON `null`?
    pub fn is_null(&self) -> bool {
        self.as_str() == "null"
    }

    /// Is this a JSON object?
    pub fn is_object(&self) -> bool {
        self.as_str().starts_with('{')
    }

    /// Parses the text into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }

    /// Parses the text into a `Value` (`null` if it somehow is not JSON).
    pub fn to_value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }

    /// This payload with `_caller_worker_id` set to `worker_id`, when it is an object (other
    /// values are returned unchanged, as upstream does). The key is appended as the object's
    /// last member, so even a payload that smuggles its own copy under an escaped spelling is
    /// read with the engine's value by every last-wins JSON parser; a payload that names the
    /// key plainly is rebuilt so the frame carries it once.
    pub fn with_caller(&self, worker_id: &str) -> Payload {
        let text = self.as_str();
        if !text.starts_with('{') {
            return self.clone();
        }
        if text.contains(CALLER_KEY) {
            let mut value = self.to_value();
            if let Value::Object(map) = &mut value {
                map.insert(CALLER_KEY.into(), Value::String(worker_id.to_string()));
            }
            return Payload::from_value(&value);
        }
        let body = &text[..text.len() - 1];
        let empty = body[1..].trim().is_empty();
        let mut out = String::with_capacity(text.len() + CALLER_KEY.len() + worker_id.len() + 8);
        out.push_str(body);
        if !empty {
            out.push(',');
        }
        out.push('"');
        out.push_str(CALLER_KEY);
        out.push_str("\":");
        // Worker ids are UUIDs: nothing to escape, but write it as JSON to be sure.
        out.push_str(&Value::String(worker_id.to_string()).to_string());
        out.push('}');
        Payload::from_raw_text(out).unwrap_or_else(|_| self.clone())
    }

    /// This payload without `_caller_worker_id` (for the middleware's view of a call).
    pub fn without_caller(&self) -> Payload {
        if !self.is_object() || !self.as_str().contains(CALLER_KEY) {
            return self.clone();
        }
        let mut value = self.to_value();
        if let Value::Object(map) = &mut value {
            map.remove(CALLER_KEY);
        }
        Payload::from_value(&value)
    }
}

impl Default for Payload {
    fn default() -> Self {
        Payload::null()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 200;
        let text = self.as_str();
        match text.char_indices().nth(SHOWN) {
            Some((i, _)) => write!(f, "Payload({}… {} bytes)", &text[..i], text.len()),
            None => write!(f, "Payload({text})"),
        }
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Equal when the texts are equal (`{"a":1}` and `{ "a": 1 }` differ).
impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Payload::from_value(&value)
    }
}

impl From<&Value> for Payload {
    fn from(value: &Value) -> Self {
        Payload::from_value(value)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Ok(Payload(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(text: &str) -> Payload {
        Payload::from_raw_text(text.to_string()).unwrap()
    }

    #[test]
    fn caller_is_spliced_into_objects_only() {
        let id = "0d1f6c9e-1111-4222-8333-444455556666";
        assert_eq!(
            p(r#"{"a":1}"#).with_caller(id).to_value(),
            json!({"a": 1, CALLER_KEY: id})
        );
        assert_eq!(
            p("{ }").with_caller(id).to_value(),
            json!({ CALLER_KEY: id })
        );
        assert_eq!(p("[1,2]").with_caller(id), p("[1,2]"));
        assert_eq!(p("null").with_caller(id), p("null"));
        assert_eq!(p("\"x\"").with_caller(id), p("\"x\""));
    }

    #[test]
    fn a_spoofed_caller_is_overwritten() {
        let id = "real";
        let plain = p(r#"{"_caller_worker_id":"fake","x":1}"#).with_caller(id);
        assert_eq!(plain.to_value(), json!({"x": 1, CALLER_KEY: "real"}));
        assert_eq!(plain.as_str().matches(CALLER_KEY).count(), 1);
        // An escaped spelling is not recognised as text, but the engine's key comes last and
        // wins when the object is read.
        let escaped = p(r#"{"\u005fcaller_worker_id":"fake"}"#).with_caller(id);
        assert_eq!(escaped.to_value()[CALLER_KEY], "real");
    }

    #[test]
    fn round_trips_verbatim_and_strips_the_caller() {
        let text = r#"{"b":[1,2,{"c":"\u00e9"}],"a":1.50}"#;
        let payload = p(text);
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        let back: Payload = serde_json::from_str(text).unwrap();
        assert_eq!(back.as_str(), text);
        assert_eq!(
            p(r#"{"x":1,"_caller_worker_id":"w"}"#)
                .without_caller()
                .to_value(),
            json!({"x": 1})
        );
        assert!(Payload::null().is_null());
        assert!(Payload::from_raw_text("{".into()).is_err());
    }
}
