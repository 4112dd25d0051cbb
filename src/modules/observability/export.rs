//! OTLP/HTTP export to a collector (`exporter: otlp` or `both`, `endpoint`): every second the
//! spans and logs that arrived since are encoded as OTLP protobuf (the message types of the
//! maintained `opentelemetry-proto` crate) and POSTed to `<endpoint>/v1/traces` and
//! `<endpoint>/v1/logs`. One request per signal at a time; what waits is bounded
//! ([`MAX_PENDING`] items, the oldest dropped and counted), and a collector that is down costs
//! a logged warning, never memory or a call's time. The in-memory stores are kept either way.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    status, ResourceSpans, ScopeSpans, Span as PSpan, Status,
};
use prost::Message;
use serde_json::Value;

use super::otlp::Span;

/// Items waiting for export per signal before the oldest are dropped.
pub const MAX_PENDING: usize = 20_000;
/// Items per request.
const BATCH: usize = 2_000;

fn text(v: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(v.to_string())),
    }
}

fn kv(k: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(v),
        ..Default::default()
    }
}

fn json_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

fn hex(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    (0..len)
        .map(|i| u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", text(service))],
        ..Default::default()
    })
}

/// Spans as an OTLP request body (spans with malformed ids are left out).
pub fn traces_body(spans: &[Span]) -> Vec<u8> {
    let mut by_service: BTreeMap<&str, Vec<PSpan>> = BTreeMap::new();
    for s in spans {
        let (Some(trace_id), Some(span_id)) = (hex(&s.trace_id, 16), hex(&s.span_id, 8)) else {
            continue;
        };
        let code = match s.status {
            "ok" => status::StatusCode::Ok,
            "error" => status::StatusCode::Error,
            _ => status::StatusCode::Unset,
        };
        by_service.entry(&s.service_name).or_default().push(PSpan {
            trace_id,
            span_id,
            parent_span_id: s
                .parent_span_id
                .as_deref()
                .and_then(|p| hex(p, 8))
                .unwrap_or_default(),
            name: s.name.clone(),
            start_time_unix_nano: s.start_ns,
            end_time_unix_nano: s.end_ns,
            attributes: s.attributes.iter().map(|(k, v)| kv(k, text(v))).collect(),
            status: Some(Status {
                code: code as i32,
                message: s.status_description.clone().unwrap_or_default(),
            }),
            ..Default::default()
        });
    }
    let request = ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "iii".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    request.encode_to_vec()
}

/// Logs (stored shape) as an OTLP request body.
pub fn logs_body(logs: &[Value]) -> Vec<u8> {
    let mut by_service: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
    for l in logs {
        let attributes = l["attributes"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| kv(k, json_value(v))).collect())
            .unwrap_or_default();
        let id = |k: &str, n| l[k].as_str().and_then(|s| hex(s, n)).unwrap_or_default();
        by_service
            .entry(l["service_name"].as_str().unwrap_or("unknown").to_string())
            .or_default()
            .push(LogRecord {
                time_unix_nano: l["timestamp_unix_nano"].as_u64().unwrap_or(0),
                observed_time_unix_nano: l["observed_timestamp_unix_nano"].as_u64().unwrap_or(0),
                severity_number: l["severity_number"].as_i64().unwrap_or(0) as i32,
                severity_text: l["severity_text"].as_str().unwrap_or("").to_string(),
                body: Some(text(l["body"].as_str().unwrap_or(""))),
                attributes,
                trace_id: id("trace_id", 16),
                span_id: id("span_id", 8),
                ..Default::default()
            });
    }
    let request = ExportLogsServiceRequest {
        resource_logs: by_service
            .into_iter()
            .map(|(service, log_records)| ResourceLogs {
                resource: resource(&service),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    request.encode_to_vec()
}

/// What waits for export, and whether a request of each signal is out.
#[derive(Default)]
pub struct Exporter {
    pub endpoint: String,
    pub spans: VecDeque<Span>,
    pub logs: VecDeque<Value>,
    pub sending_spans: bool,
    pub sending_logs: bool,
    pub dropped: u64,
}

impl Exporter {
    pub fn new(endpoint: &str) -> Exporter {
        Exporter {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            ..Default::default()
        }
    }

    pub fn add_span(&mut self, s: &Span) {
        if self.spans.len() >= MAX_PENDING {
            self.spans.pop_front();
            self.dropped += 1;
        }
        self.spans.push_back(s.clone());
    }

    pub fn add_log(&mut self, l: &Value) {
        if self.logs.len() >= MAX_PENDING {
            self.logs.pop_front();
            self.dropped += 1;
        }
        self.logs.push_back(l.clone());
    }

    /// The next request to send, if its signal has none out: (path, body, is_spans).
    pub fn next(&mut self) -> Option<(String, Vec<u8>, bool)> {
        if !self.sending_spans && !self.spans.is_empty() {
            let n = self.spans.len().min(BATCH);
            let batch: Vec<Span> = self.spans.drain(..n).collect();
            self.sending_spans = true;
            return Some((
                format!("{}/v1/traces", self.endpoint),
                traces_body(&batch),
                true,
            ));
        }
        if !self.sending_logs && !self.logs.is_empty() {
            let n = self.logs.len().min(BATCH);
            let batch: Vec<Value> = self.logs.drain(..n).collect();
            self.sending_logs = true;
            return Some((
                format!("{}/v1/logs", self.endpoint),
                logs_body(&batch),
                false,
            ));
        }
        None
    }
}

/// POSTs one OTLP/protobuf body; the error says why it was not accepted.
pub async fn post(url: String, body: Vec<u8>) -> Result<(), String> {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let resp = client
        .post(&url)
        .insert_header(("content-type", "application/x-protobuf"))
        .send_body(body)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("{url}: HTTP {}", resp.status()))
    }
}
