//! [`Payload`]: a call's `data` or `result` carried through the engine as the JSON text it
//! arrived as, parsed only where the engine itself needs the value.
//!
//! The engine routes payloads; it rarely reads them. Parsing a payload into a
//! `serde_json::Value` costs many times its size in memory (a 60 MiB message of small records
//! peaked at 1.3 GB) and most of a call's CPU, and writing it out again costs as much. A
//! `Payload` is a view into the received frame's buffer (no copy at all when the frame is
//! decoded with [`crate::protocol::decode_shared`]), shared by every copy of the frame (a
//! fan-out to many subscribers keeps one), and written back out verbatim by
//! [`Payload::write_json`], which also adds `_caller_worker_id` to an object by splicing text.
//! Engine-hosted functions parse it with [`Payload::parse`].

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// The key the engine sets in a call's `data` to the caller's worker id (`PROTOCOL.md` §4.3).
pub const CALLER_KEY: &str = "_caller_worker_id";

/// A JSON value kept as text. Cloning shares the text.
///
/// Invariant: the bytes are one complete JSON value, and therefore valid UTF-8 (every
/// constructor takes them from a `str` that was checked or produced by serde_json).
#[derive(Clone)]
pub struct Payload(Bytes);

impl Payload {
    /// JSON `null`.
    pub fn null() -> Payload {
        Payload(Bytes::from_static(b"null"))
    }

    /// Serialises a value (which cannot fail for a `serde_json::Value`).
    pub fn from_value(value: &Value) -> Payload {
        Payload::from_serialize(value)
    }

    /// Serialises anything serialisable; a value that cannot be written becomes `null`.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Payload {
        match serde_json::to_vec(value) {
            Ok(bytes) => Payload(Bytes::from(bytes)),
            Err(e) => {
                log::error!("could not encode a payload: {e}");
                Payload::null()
            }
        }
    }

    /// Checks that `text` is one JSON value and keeps it.
    pub fn from_raw_text(text: String) -> Result<Payload, serde_json::Error> {
        serde_json::from_str::<IgnoredAny>(&text)?;
        Ok(Payload(Bytes::from(text)))
    }

    /// A raw value borrowed from a frame: a view into `backing` when the frame's text lives
    /// there, a copy otherwise.
    pub(crate) fn from_raw(raw: &RawValue, backing: Option<&Bytes>) -> Payload {
        let text = raw.get().as_bytes();
        match backing {
            Some(b) if contains(b, text) => Payload(b.slice_ref(text)),
            _ => Payload(Bytes::copy_from_slice(text)),
        }
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        // SAFETY: see the type's invariant; every constructor stores text that is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The JSON text as shared bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length of the JSON text in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true: the shortest JSON value is one byte. Here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Is this JSON `null`?
    pub fn is_null(&self) -> bool {
        &self.0[..] == b"null"
    }

    /// Is this a JSON object?
    pub fn is_object(&self) -> bool {
        self.0.first() == Some(&b'{')
    }

    /// Parses the text into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.0)
    }

    /// Parses the text into a `Value` (`null` if it somehow is not JSON).
    pub fn to_value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }

    /// Appends the JSON text to `out`; with a `caller`, an object gets `_caller_worker_id` set
    /// to it (other values are written unchanged, as upstream does). The key is appended as the
    /// object's last member, so even a payload that smuggles its own copy under an escaped
    /// spelling is read with the engine's value by every last-wins JSON parser; a payload that
    /// names the key plainly is rebuilt so the frame carries it once.
    pub fn write_json(&self, out: &mut String, caller: Option<&str>) {
        let text = self.as_str();
        let Some(caller) = caller.filter(|_| self.is_object()) else {
            out.push_str(text);
            return;
        };
        if text.contains(CALLER_KEY) {
            let mut value = self.to_value();
            if let Value::Object(map) = &mut value {
                map.insert(CALLER_KEY.into(), Value::String(caller.to_string()));
            }
            out.push_str(&value.to_string());
            return;
        }
        let body = &text[..text.len() - 1];
        out.push_str(body);
        if !body[1..].trim().is_empty() {
            out.push(',');
        }
        out.push('"');
        out.push_str(CALLER_KEY);
        out.push_str("\":");
        push_json_str(out, caller);
        out.push('}');
    }

    /// This payload with `_caller_worker_id` set (see [`Payload::write_json`]).
    pub fn with_caller(&self, caller: &str) -> Payload {
        let mut out = String::with_capacity(self.len() + CALLER_KEY.len() + caller.len() + 8);
        self.write_json(&mut out, Some(caller));
        Payload(Bytes::from(out))
    }
}

/// Is `part` a slice of `whole`'s memory?
fn contains(whole: &Bytes, part: &[u8]) -> bool {
    let (w, p) = (whole.as_ptr() as usize, part.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        // Ids and names almost never need escaping.
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escaped.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(escaped);
        }
        plain = i + c.len_utf8();
    }
    out.push_str(&s[plain..]);
    out.push('"');
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
        self.0 == other.0
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

/// Writes the text verbatim (through a copy: serde needs an owned raw value). The hot frames
/// are written by hand with [`Payload::write_json`] instead.
impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw =
            RawValue::from_string(self.as_str().to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text: Box<str> = raw.into();
        Ok(Payload(Bytes::from(String::from(text))))
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
    fn round_trips_verbatim() {
        let text = r#"{"b":[1,2,{"c":"\u00e9"}],"a":1.50}"#;
        let payload = p(text);
        assert_eq!(serde_json::to_string(&payload).unwrap(), text);
        let back: Payload = serde_json::from_str(text).unwrap();
        assert_eq!(back.as_str(), text);
        assert!(Payload::null().is_null());
        assert!(Payload::from_raw_text("{".into()).is_err());
    }

    #[test]
    fn a_raw_value_inside_its_frame_is_not_copied() {
        let frame = Bytes::from_static(br#"{"data":{"x":[1,2]}}"#);
        #[derive(Deserialize)]
        struct F<'a> {
            #[serde(borrow)]
            data: &'a RawValue,
        }
        let text = std::str::from_utf8(&frame).unwrap();
        let f: F = serde_json::from_str(text).unwrap();
        let shared = Payload::from_raw(f.data, Some(&frame));
        assert_eq!(shared.as_str(), r#"{"x":[1,2]}"#);
        assert_eq!(shared.as_bytes().as_ptr(), frame[8..].as_ptr());
        let copied = Payload::from_raw(f.data, None);
        assert_eq!(copied, shared);
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nctl\u{1}",
            "é ü 日本",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }
}
