//! Reading what the SDKs send on `/otel` (`MODULES.md` §6.2): OTLP/JSON trace, log and metric
//! export requests, turned into the stored shapes the query functions return. Numbers may be
//! strings or numbers; attribute values are stringified (spans) or kept as JSON (logs).
//!
//! Every record is bounded whatever a worker sends: at most [`MAX_ATTRIBUTES`] attributes,
//! [`MAX_EVENTS`] events, [`MAX_TEXT`] characters per value, so a stored item has a ceiling
//! and the stores' item counts bound their memory.

use serde_json::{json, Map, Value};

pub const MAX_ATTRIBUTES: usize = 64;
pub const MAX_EVENTS: usize = 32;
pub const MAX_TEXT: usize = 4096;

/// A stored span (`MODULES.md` §6.2 shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// `ok`, `error` or `unset`.
    pub status: &'static str,
    pub status_description: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub service_name: String,
    pub events: Vec<Value>,
    pub links: Vec<Value>,
    pub scope: Option<(String, Option<String>)>,
}

impl Span {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "start_time_unix_nano": self.start_ns,
            "end_time_unix_nano": self.end_ns,
            "status": self.status,
            "attributes": self.attributes.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "service_name": self.service_name,
            "events": self.events,
            "links": self.links,
        });
        if let Some(d) = &self.status_description {
            v["status_description"] = json!(d);
        }
        if let Some((name, version)) = &self.scope {
            v["instrumentation_scope_name"] = json!(name);
            if let Some(ver) = version {
                v["instrumentation_scope_version"] = json!(ver);
            }
        }
        v
    }

    pub fn duration_ms(&self) -> f64 {
        self.end_ns.saturating_sub(self.start_ns) as f64 / 1e6
    }

    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(v: &str) -> String {
    if v.len() <= MAX_TEXT {
        return v.to_string();
    }
    let mut end = MAX_TEXT;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

/// A number given as a number or a string.
pub fn number(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// An OTLP `AnyValue` as JSON.
fn any_value(v: &Value) -> Value {
    let Some(obj) = v.as_object() else {
        return Value::Null;
    };
    if let Some(s) = obj.get("stringValue").and_then(Value::as_str) {
        return json!(text(s));
    }
    if let Some(i) = obj.get("intValue") {
        return match i {
            Value::String(s) => s.parse::<i64>().map(|n| json!(n)).unwrap_or(json!(s)),
            other => other.clone(),
        };
    }
    if let Some(d) = obj.get("doubleValue") {
        return d.clone();
    }
    if let Some(b) = obj.get("boolValue") {
        return b.clone();
    }
    if let Some(arr) = v.pointer("/arrayValue/values").and_then(Value::as_array) {
        return Value::Array(arr.iter().take(MAX_ATTRIBUTES).map(any_value).collect());
    }
    if let Some(kv) = v.pointer("/kvlistValue/values") {
        return Value::Object(attributes_map(kv));
    }
    if let Some(b) = obj.get("bytesValue") {
        return b.clone();
    }
    Value::Null
}

fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => text(&other.to_string()),
    }
}

/// `[{key, value}]` as `{key: json}`.
pub fn attributes_map(list: &Value) -> Map<String, Value> {
    list.as_array()
        .map(|a| {
            a.iter()
                .take(MAX_ATTRIBUTES)
                .filter_map(|kv| {
                    Some((
                        kv.get("key")?.as_str()?.to_string(),
                        any_value(kv.get("value")?),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `[{key, value}]` as `[(key, string)]`.
fn attributes_list(list: &Value) -> Vec<(String, String)> {
    attributes_map(list)
        .into_iter()
        .map(|(k, v)| (k, stringify(&v)))
        .collect()
}

fn service_of(resource: &Map<String, Value>) -> String {
    resource
        .get("service.name")
        .map(stringify)
        .unwrap_or_else(|| "unknown".into())
}

fn scope_of(scope: &Value) -> Option<(String, Option<String>)> {
    let name = scope.get("name")?.as_str()?.to_string();
    let version = scope
        .get("version")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((name, version))
}

fn status_of(v: &Value) -> (&'static str, Option<String>) {
    let code = match v.get("code") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) if s.ends_with("OK") => 1,
        Some(Value::String(s)) if s.ends_with("ERROR") => 2,
        _ => 0,
    };
    let status = match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    };
    let message = v
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(text);
    (status, message)
}

/// The spans of an `ExportTraceServiceRequest`.
pub fn spans(doc: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes_map(&rs["resource"]["attributes"]);
        let service = service_of(&resource);
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            let scope = scope_of(&ss["scope"]);
            for s in ss["spans"].as_array().into_iter().flatten() {
                let (status, status_description) = status_of(&s["status"]);
                let parent = s["parentSpanId"].as_str().filter(|p| !p.is_empty());
                let events = s["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(MAX_EVENTS)
                    .map(|e| {
                        json!({
                            "name": text(e["name"].as_str().unwrap_or("")),
                            "timestamp_unix_nano": number(&e["timeUnixNano"]),
                            "attributes": attributes_list(&e["attributes"]).into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let links = s["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(MAX_EVENTS)
                    .map(|l| {
                        json!({
                            "trace_id": l["traceId"], "span_id": l["spanId"],
                            "trace_state": l["traceState"].as_str().unwrap_or(""),
                            "attributes": attributes_list(&l["attributes"]).into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                out.push(Span {
                    trace_id: text(s["traceId"].as_str().unwrap_or("")),
                    span_id: text(s["spanId"].as_str().unwrap_or("")),
                    parent_span_id: parent.map(text),
                    name: text(s["name"].as_str().unwrap_or("")),
                    start_ns: number(&s["startTimeUnixNano"]),
                    end_ns: number(&s["endTimeUnixNano"]),
                    status,
                    status_description,
                    attributes: attributes_list(&s["attributes"]),
                    service_name: service.clone(),
                    events,
                    links,
                    scope: scope.clone(),
                });
            }
        }
    }
    out
}

/// The OTel name of a severity number, for records that send only the number (the Node SDK).
fn severity_name(n: u64) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "",
    }
}

/// The log records of an `ExportLogsServiceRequest`, in the stored shape (a missing
/// `severityText` is named from the number).
pub fn logs(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rl in doc["resourceLogs"].as_array().into_iter().flatten() {
        let resource = attributes_map(&rl["resource"]["attributes"]);
        let service = service_of(&resource);
        for sl in rl["scopeLogs"].as_array().into_iter().flatten() {
            let scope = scope_of(&sl["scope"]);
            for r in sl["logRecords"].as_array().into_iter().flatten() {
                let body = any_value(&r["body"]);
                let severity = number(&r["severityNumber"]);
                let severity_text = match r["severityText"].as_str().filter(|t| !t.is_empty()) {
                    Some(t) => t.to_string(),
                    None => severity_name(severity).to_string(),
                };
                let mut log = json!({
                    "timestamp_unix_nano": number(&r["timeUnixNano"]),
                    "observed_timestamp_unix_nano": number(&r["observedTimeUnixNano"]),
                    "severity_number": severity,
                    "severity_text": severity_text,
                    "body": match body { Value::String(s) => s, other => stringify(&other) },
                    "attributes": attributes_map(&r["attributes"]),
                    "trace_id": r["traceId"].as_str().filter(|s| !s.is_empty()),
                    "span_id": r["spanId"].as_str().filter(|s| !s.is_empty()),
                    "resource": resource,
                    "service_name": service,
                });
                if let Some((name, version)) = &scope {
                    log["instrumentation_scope_name"] = json!(name);
                    log["instrumentation_scope_version"] = json!(version);
                }
                out.push(log);
            }
        }
    }
    out
}

/// The metrics of an `ExportMetricsServiceRequest`: one entry per metric, with at most 16 of
/// its data points.
pub fn metrics(doc: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for rm in doc["resourceMetrics"].as_array().into_iter().flatten() {
        let resource = attributes_map(&rm["resource"]["attributes"]);
        let service = service_of(&resource);
        for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
            for m in sm["metrics"].as_array().into_iter().flatten() {
                let kind = [
                    "sum",
                    "gauge",
                    "histogram",
                    "exponentialHistogram",
                    "summary",
                ]
                .into_iter()
                .find(|k| m.get(*k).is_some())
                .unwrap_or("unknown");
                let points: Vec<Value> = m[kind]["dataPoints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(16)
                    .map(|p| {
                        let mut p = p.clone();
                        if let Some(a) = p.get("attributes").cloned() {
                            p["attributes"] = Value::Object(attributes_map(&a));
                        }
                        p
                    })
                    .collect();
                out.push(json!({
                    "name": text(m["name"].as_str().unwrap_or("")),
                    "description": text(m["description"].as_str().unwrap_or("")),
                    "unit": m["unit"].as_str().unwrap_or(""),
                    "type": kind,
                    "service_name": service,
                    "data_points": points,
                }));
            }
        }
    }
    out
}
