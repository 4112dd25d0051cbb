//! The telemetry kept in memory: the most recent spans, logs and SDK metrics in ring buffers
//! of configured sizes (the oldest go first), recent call durations for the percentiles of
//! `engine::metrics::list`, and the queries of `engine::traces::*` and `engine::logs::*`
//! (`MODULES.md` §6.3).

use std::collections::{HashMap, HashSet, VecDeque};

use serde_json::{json, Value};

use super::otlp::Span;

/// Call durations kept for percentiles.
const DURATIONS: usize = 2000;

/// See the module docs.
pub struct Stores {
    pub spans: VecDeque<Span>,
    pub max_spans: usize,
    /// (arrival, log): retention counts from arrival, whatever clock the sender had.
    pub logs: VecDeque<(u64, Value)>,
    pub max_logs: usize,
    pub metrics: VecDeque<Value>,
    pub max_metrics: usize,
    pub durations_ms: VecDeque<f64>,
}

fn push<T>(q: &mut VecDeque<T>, max: usize, item: T) {
    if max == 0 {
        return;
    }
    while q.len() >= max {
        q.pop_front();
    }
    q.push_back(item);
}

/// Is this one of the engine's own functions (hidden unless `include_internal`)?
pub fn internal(s: &Span) -> bool {
    s.name.starts_with("engine::")
        || s.attribute("iii.function.kind") == Some("internal")
        || s.attribute("iii.function.id")
            .is_some_and(|f| f.starts_with("engine::"))
}

impl Stores {
    pub fn new(max_spans: usize, max_logs: usize, max_metrics: usize) -> Stores {
        Stores {
            spans: VecDeque::new(),
            max_spans,
            logs: VecDeque::new(),
            max_logs,
            metrics: VecDeque::new(),
            max_metrics,
            durations_ms: VecDeque::new(),
        }
    }

    pub fn add_span(&mut self, s: Span) {
        push(&mut self.spans, self.max_spans, s);
    }

    pub fn add_log(&mut self, l: Value) {
        let arrived = super::now_ms();
        push(&mut self.logs, self.max_logs, (arrived, l));
    }

    pub fn add_metric(&mut self, m: Value) {
        push(&mut self.metrics, self.max_metrics, m);
    }

    pub fn add_duration(&mut self, ms: f64) {
        push(&mut self.durations_ms, DURATIONS, ms);
    }

    /// Forgets logs that arrived before `cutoff_ms`.
    pub fn expire_logs(&mut self, cutoff_ms: u64) {
        while self.logs.front().is_some_and(|(t, _)| *t < cutoff_ms) {
            self.logs.pop_front();
        }
    }

    /// `engine::traces::list`: root spans (a span whose parent is not stored counts as one), one
    /// per trace, unless `search_all_spans`.
    pub fn traces_list(&self, q: &Value) -> Value {
        let offset = q["offset"].as_u64().unwrap_or(0) as usize;
        let limit = q["limit"].as_u64().unwrap_or(100) as usize;
        let all = q["search_all_spans"].as_bool().unwrap_or(false);
        let include_internal = q["include_internal"].as_bool().unwrap_or(false);
        let ids: HashSet<&str> = self.spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut wanted_traces: Option<HashSet<String>> = None;
        if let Some(t) = q["trace_id"].as_str() {
            wanted_traces = Some([t.to_string()].into());
        }
        if let Some(ts) = q["trace_ids"].as_array() {
            let set = wanted_traces.get_or_insert_with(HashSet::new);
            set.extend(ts.iter().filter_map(|t| t.as_str().map(str::to_string)));
        }
        let text = |k: &str| q[k].as_str().map(str::to_lowercase);
        let (service, name, status) = (text("service_name"), text("name"), text("status"));
        let pairs = |k: &str| -> Vec<(String, String)> {
            q[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        p.get(0)?.as_str()?.to_string(),
                        p.get(1)?.as_str()?.to_string(),
                    ))
                })
                .collect()
        };
        let (with, without) = (pairs("attributes"), pairs("exclude_attributes"));
        let ms = |k: &str| q[k].as_f64();
        let mut hits: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| all || s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
            .filter(|s| include_internal || !internal(s))
            .filter(|s| {
                wanted_traces
                    .as_ref()
                    .is_none_or(|t| t.contains(&s.trace_id))
            })
            .filter(|s| {
                service
                    .as_ref()
                    .is_none_or(|v| s.service_name.to_lowercase() == *v)
            })
            .filter(|s| {
                name.as_ref()
                    .is_none_or(|v| s.name.to_lowercase().contains(v))
            })
            .filter(|s| {
                status
                    .as_ref()
                    .is_none_or(|v| s.status.contains(v.as_str()))
            })
            .filter(|s| ms("min_duration_ms").is_none_or(|m| s.duration_ms() >= m))
            .filter(|s| ms("max_duration_ms").is_none_or(|m| s.duration_ms() <= m))
            .filter(|s| ms("start_time").is_none_or(|t| s.start_ns as f64 / 1e6 >= t))
            .filter(|s| ms("end_time").is_none_or(|t| s.start_ns as f64 / 1e6 <= t))
            .filter(|s| with.iter().all(|(k, v)| s.attribute(k) == Some(v)))
            .filter(|s| !without.iter().any(|(k, v)| s.attribute(k) == Some(v)))
            .collect();
        if !all {
            // One row per trace: while a trace's spans are still arriving (SDKs export in
            // batches), several of them can lack their parent for a moment; the earliest
            // stands for the trace.
            hits.sort_by_key(|s| s.start_ns);
            let mut seen = HashSet::new();
            hits.retain(|s| seen.insert(s.trace_id.as_str()));
        }
        let by = q["sort_by"].as_str().unwrap_or("start_time");
        hits.sort_by(|a, b| match by {
            "duration" | "duration_ms" => a.duration_ms().total_cmp(&b.duration_ms()),
            "service_name" => a.service_name.cmp(&b.service_name),
            "name" => a.name.cmp(&b.name),
            _ => a.start_ns.cmp(&b.start_ns),
        });
        if q["sort_order"].as_str() != Some("asc") {
            hits.reverse();
        }
        let total = hits.len();
        let spans: Vec<Value> = hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(Span::to_json)
            .collect();
        json!({"spans": spans, "total": total, "offset": offset, "limit": limit})
    }

    /// `engine::traces::tree`: the trace's spans nested under their parents.
    pub fn tree(&self, trace_id: &str) -> Value {
        let spans: Vec<&Span> = self
            .spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let mut children: HashMap<&str, Vec<&Span>> = HashMap::new();
        let mut roots = Vec::new();
        for s in &spans {
            match s.parent_span_id.as_deref().filter(|p| ids.contains(p)) {
                Some(p) => children.entry(p).or_default().push(s),
                None => roots.push(*s),
            }
        }
        fn node(s: &Span, children: &HashMap<&str, Vec<&Span>>, depth: usize) -> Value {
            let mut v = s.to_json();
            let mut kids: Vec<&&Span> = children
                .get(s.span_id.as_str())
                .map(|k| k.iter().collect())
                .unwrap_or_default();
            kids.sort_by_key(|k| k.start_ns);
            v["children"] = if depth > 64 {
                json!([])
            } else {
                Value::Array(
                    kids.into_iter()
                        .map(|k| node(k, children, depth + 1))
                        .collect(),
                )
            };
            v
        }
        roots.sort_by_key(|s| s.start_ns);
        json!({"roots": roots.into_iter().map(|r| node(r, &children, 0)).collect::<Vec<_>>()})
    }

    /// `engine::logs::list`, newest first.
    pub fn logs_list(&self, q: &Value) -> Value {
        let offset = q["offset"].as_u64().unwrap_or(0) as usize;
        let limit = q["limit"].as_u64().unwrap_or(100) as usize;
        let ns = |k: &str| q[k].as_f64().map(|ms| (ms * 1e6) as u64);
        let (from, to) = (ns("start_time"), ns("end_time"));
        let severity_min = q["severity_min"].as_u64();
        let severity_text = q["severity_text"].as_str().map(str::to_lowercase);
        let hits: Vec<&Value> = self
            .logs
            .iter()
            .rev()
            .map(|(_, l)| l)
            .filter(|l| {
                let t = l["timestamp_unix_nano"].as_u64().unwrap_or(0);
                from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e)
            })
            .filter(|l| q["trace_id"].as_str().is_none_or(|t| l["trace_id"] == t))
            .filter(|l| q["span_id"].as_str().is_none_or(|t| l["span_id"] == t))
            .filter(|l| {
                severity_min.is_none_or(|m| l["severity_number"].as_u64().unwrap_or(0) >= m)
            })
            .filter(|l| {
                severity_text
                    .as_ref()
                    .is_none_or(|t| l["severity_text"].as_str().unwrap_or("").to_lowercase() == *t)
            })
            .collect();
        let total = hits.len();
        let logs: Vec<Value> = hits.into_iter().skip(offset).take(limit).cloned().collect();
        json!({"logs": logs, "total": total, "timestamp": super::now_ms()})
    }

    /// p50/p95/p99/min/max/avg of recent call durations.
    pub fn performance(&self) -> Value {
        let mut d: Vec<f64> = self.durations_ms.iter().copied().collect();
        if d.is_empty() {
            return json!({"avg_duration_ms": 0.0, "p50_duration_ms": 0.0, "p95_duration_ms": 0.0,
                          "p99_duration_ms": 0.0, "min_duration_ms": 0.0, "max_duration_ms": 0.0});
        }
        d.sort_by(f64::total_cmp);
        let at = |p: f64| d[((d.len() as f64 - 1.0) * p).round() as usize];
        json!({
            "avg_duration_ms": d.iter().sum::<f64>() / d.len() as f64,
            "p50_duration_ms": at(0.5),
            "p95_duration_ms": at(0.95),
            "p99_duration_ms": at(0.99),
            "min_duration_ms": d[0],
            "max_duration_ms": d[d.len() - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_from_otlp_are_listed() {
        let trace = "0af7651916cd43dd8448eb211c80319c";
        let doc = json!({"resourceLogs": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
            "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
                {"timeUnixNano": "1700000000000000000", "observedTimeUnixNano": "1700000000000000001",
                 "severityNumber": 17, "severityText": "ERROR", "body": {"stringValue": "card declined"},
                 "attributes": [{"key": "order", "value": {"intValue": 42}}], "traceId": trace, "spanId": "0000000000000001"}]}]}]});
        let mut s = Stores::new(10, 10, 10);
        for l in super::super::otlp::logs(&doc) {
            s.add_log(l);
        }
        let out = s.logs_list(&json!({}));
        assert_eq!(out["total"], 1, "{out}");
    }
}
