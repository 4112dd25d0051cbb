//! What the `cluster` scenario prints (`cluster.rs` measures): the JSON line and the tables of
//! the phases that ran — calls per path (caller on B; on A through iii-cluster; on A through
//! the `iii-bridge` WebSocket), stream fan-out, the cross ÷ same ratios, and the 1 → 2 engines
//! load — and whether every call and set succeeded.

use serde_json::{json, Value};

use crate::cluster::{Calls, Opts, Results};
use crate::cluster_load::{self as load, Run, WATCHED};
use crate::cluster_stream::Fanout;
use crate::report::{self, Table};

/// Cross ÷ same: per-second rate, p50, p99.
fn ratios(cross: (f64, u64, u64), same: (f64, u64, u64)) -> [f64; 3] {
    let div = |a: f64, b: f64| a / b.max(1e-9);
    [
        div(cross.0, same.0),
        div(cross.1 as f64, same.1 as f64),
        div(cross.2 as f64, same.2 as f64),
    ]
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn opt1(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

fn opt2(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.2}"))
}

/// CPU µs per operation of each watched process, and the cores the machine was busy, as
/// table cells.
fn cpu_cells(r: &Run) -> Vec<String> {
    let mut cells: Vec<String> = (0..WATCHED.len())
        .map(|i| opt1(r.cpu.us_per(i, r.ops)))
        .collect();
    cells.push(opt2(r.cpu.machine_cores()));
    cells
}

const CPU_COLS: [&str; 5] = ["cpu A", "cpu B", "cpu redis", "cpu bench", "busy"];

fn ratio_json(q: [f64; 3]) -> Value {
    json!({"calls_per_s": r2(q[0]), "p50": r2(q[1]), "p99": r2(q[2])})
}

/// The calls table and its rows of the ratio table; `false` if a call failed.
/// `transport`: how iii-cluster carried the cross-engine calls (`link` or `redis`).
fn calls_tables(
    calls: &[Calls],
    data_bytes: usize,
    transport: &str,
    ratio_t: &mut Table,
) -> (Table, Value, bool) {
    let cross_label = format!("A (cluster {transport})");
    let mut header = vec![
        "in flight",
        "caller on",
        "calls",
        "calls/s",
        "p50",
        "p90",
        "p99",
    ];
    header.extend(["max", "errors"]);
    header.extend(CPU_COLS);
    let mut t = Table::new(
        format!(
            "cluster calls — bench::echo served by a worker on engine B, data {data_bytes} B; \
             caller on B, on A through iii-cluster (transport {transport}), on A calling {} \
             (iii-bridge: A a worker of B over one WebSocket); latency in µs; CPU µs per call of \
             engine A, engine B, redis-server, the bench; busy: cores the machine was busy",
            load::BRIDGED
        ),
        &header,
    );
    let mut ok = true;
    let mut json_rows = Vec::new();
    let mut bridge_over_redis = Vec::new();
    let k = |r: &Run| (r.per_s(), r.latency.p50_us, r.latency.p99_us);
    for c in calls {
        let sides = [
            ("B (same)", &c.same),
            (cross_label.as_str(), &c.cross),
            ("A (bridge)", &c.bridge),
        ];
        for (side, run) in sides {
            ok &= run.errors == 0;
            if let Some(e) = &run.first_error {
                eprintln!(
                    "cluster calls, caller on {side}, {} in flight: {e}",
                    run.in_flight
                );
            }
            let mut row = vec![run.in_flight.to_string(), side.into(), run.ops.to_string()];
            row.push(report::thousands(run.per_s()));
            let l = &run.latency;
            row.extend([l.p50_us, l.p90_us, l.p99_us, l.max_us].map(|v| v.to_string()));
            row.push(run.errors.to_string());
            row.extend(cpu_cells(run));
            t.row(row);
        }
        let q_cross = ratios(k(&c.cross), k(&c.same));
        let q_bridge = ratios(k(&c.bridge), k(&c.same));
        let q_b_r = ratios(k(&c.bridge), k(&c.cross));
        for (what, q) in [
            (
                format!("calls/s, call latency (cluster {transport})"),
                q_cross,
            ),
            ("calls/s, call latency (bridge)".to_string(), q_bridge),
        ] {
            let mut row = vec![what, c.same.in_flight.to_string()];
            row.extend(q.iter().map(|x| format!("{x:.2}")));
            ratio_t.row(row);
        }
        bridge_over_redis.push(format!(
            "{} in flight: calls/s {:.2}, p50 {:.2}, p99 {:.2}",
            c.same.in_flight, q_b_r[0], q_b_r[1], q_b_r[2]
        ));
        json_rows.push(json!({"in_flight": c.same.in_flight, "same": c.same.json(),
            "cross": c.cross.json(), "bridge": c.bridge.json(),
            "cross_over_same": ratio_json(q_cross), "bridge_over_same": ratio_json(q_bridge),
            "bridge_over_cross": ratio_json(q_b_r)}));
    }
    t.note(format!(
        "A (cluster link): A calls bench::echo on B over a WebSocket to B's worker listener; A \
         (cluster redis): A publishes the call on Redis, B runs it and publishes the result \
         back; A (bridge): {} on A is an iii-bridge forward alias of bench::echo on B",
        load::BRIDGED
    ));
    ratio_t.note(format!(
        "bridge ÷ cluster {transport}: {}",
        bridge_over_redis.join("; ")
    ));
    (t, Value::Array(json_rows), ok)
}

/// The stream table and its rows of the ratio table; `false` if an event was lost or doubled.
fn stream_table(stream: &[(Fanout, Fanout)], ratio_t: &mut Table) -> (Table, Value, bool) {
    let mut header = vec![
        "in flight",
        "writer on",
        "sets",
        "sets/s",
        "set p50",
        "set p99",
    ];
    header.extend(["delivered/s", "write→delivery p50", "p99", "lost", "dup"]);
    header.extend(CPU_COLS);
    let mut t = Table::new(
        "cluster stream — stream::set of fresh items, iii-stream on Redis, subscriber (a stream \
         trigger) on engine B; latency in µs; CPU µs per set",
        &header,
    );
    let mut ok = true;
    let mut json_rows = Vec::new();
    for (same, cross) in stream {
        for (side, f) in [("B (same)", same), ("A (cross)", cross)] {
            ok &= f.clean();
            let s = &f.sets;
            let mut row = vec![s.in_flight.to_string(), side.into(), s.ops.to_string()];
            row.push(report::thousands(s.per_s()));
            row.extend([s.latency.p50_us, s.latency.p99_us].map(|v| v.to_string()));
            row.push(report::thousands(f.delivered_per_s()));
            row.extend([f.delivery.p50_us, f.delivery.p99_us].map(|v| v.to_string()));
            row.extend([f.lost, f.duplicates].map(|v| v.to_string()));
            row.extend(cpu_cells(s));
            t.row(row);
        }
        let k = |f: &Fanout| (f.sets.per_s(), f.delivery.p50_us, f.delivery.p99_us);
        let q = ratios(k(cross), k(same));
        let mut row = vec![
            "sets/s, write→delivery".to_string(),
            same.sets.in_flight.to_string(),
        ];
        row.extend(q.iter().map(|x| format!("{x:.2}")));
        ratio_t.row(row);
        json_rows.push(
            json!({"in_flight": same.sets.in_flight, "same": same.json(),
            "cross": cross.json(), "cross_over_same": {"sets_per_s": r2(q[0]),
            "delivery_p50": r2(q[1]), "delivery_p99": r2(q[2])}}),
        );
    }
    (t, Value::Array(json_rows), ok)
}

/// The 1 → 2 engines table; `false` if a call failed.
fn load_table(o: &Opts, r: &Results) -> Option<(Table, Value, bool)> {
    let l = r.load.as_ref()?;
    let mut header = vec![
        "layout",
        "in flight",
        "calls",
        "calls/s",
        "p50",
        "p99",
        "errors",
    ];
    header.extend([
        "cores A",
        "cores B",
        "cores redis",
        "cores bench",
        "others",
        "busy",
    ]);
    header.extend(["top thread A", "top thread B"]);
    let mut t = Table::new(
        format!(
            "cluster load, 1 → 2 engines — {} callers × {} in flight calling an echo on their own \
             engine; latency in µs; cores = CPU seconds ÷ wall seconds ({} cores here)",
            o.load_callers.max(1),
            o.load_in_flight.max(1),
            report::machine()["cores"]
        ),
        &header,
    );
    let mut ok = true;
    let layouts = [
        ("1 engine", &l.one),
        ("1 engine, 2 callees", &l.one_split),
        ("2 engines", &l.two),
    ];
    for (label, (run, _)) in layouts {
        ok &= run.errors == 0;
        let mut row = vec![label.to_string(), run.in_flight.to_string()];
        row.push(run.ops.to_string());
        row.push(report::thousands(run.per_s()));
        row.extend([run.latency.p50_us, run.latency.p99_us].map(|v| v.to_string()));
        row.push(run.errors.to_string());
        row.extend((0..WATCHED.len()).map(|i| opt2(run.cpu.cores(i))));
        row.push(opt2(run.cpu.other_cores()));
        row.push(opt2(run.cpu.machine_cores()));
        row.extend([0, 1].map(|i| opt2(run.cpu.busiest_cores(i))));
        t.row(row);
    }
    let per_s = |run: &(Run, Vec<usize>)| run.0.per_s().max(1e-9);
    let (scale, split) = (
        per_s(&l.two) / per_s(&l.one),
        per_s(&l.one_split) / per_s(&l.one),
    );
    t.note(
        "1 engine, 2 callees: half the callers call bench::echo2, served by a second worker on A; \
         others: busy cores not used by the watched processes; busy: the whole machine; top \
         thread: the cores an engine's busiest thread used (1.00: it never waited)",
    );
    let visible = r
        .visible_on_a
        .map(|d| {
            format!(
                "; bench::echo visible on A {} ms after its worker registered on B",
                d.as_millis()
            )
        })
        .unwrap_or_default();
    t.note(format!(
        "calls/s ÷ 1 engine: 2 engines {scale:.2}, 1 engine with 2 callees {split:.2}{visible}"
    ));
    let json = json!({
        "one_engine": l.one.0.json(),
        "one_engine_two_callees": l.one_split.0.json(),
        "two_engines": l.two.0.json(),
        "two_engines_calls_per_caller": l.two.1,
        "two_over_one_calls_per_s": r2(scale),
        "one_with_two_callees_over_one_calls_per_s": r2(split),
    });
    Some((t, json, ok))
}

/// Prints the JSON line and the tables of the phases that ran; `false` if a call or set failed
/// or an event was lost or doubled.
pub fn emit(o: &Opts, r: &Results, target: Value) -> bool {
    let data_bytes = load::payload(o.payload).to_string().len();
    let mut ratio_t = Table::new(
        "cross-engine ÷ same-engine, same run",
        &["what", "in flight", "rate", "p50", "p99"],
    );
    let mut tables = Vec::new();
    let mut ok = true;
    let (mut calls_json, mut stream_json, mut load_json) = (json!([]), json!([]), Value::Null);
    if !r.calls.is_empty() {
        let (t, j, good) = calls_tables(&r.calls, data_bytes, &o.transport, &mut ratio_t);
        (calls_json, ok) = (j, ok && good);
        tables.push(t);
    }
    if !r.stream.is_empty() {
        let (t, j, good) = stream_table(&r.stream, &mut ratio_t);
        (stream_json, ok) = (j, ok && good);
        tables.push(t);
    }
    if !r.calls.is_empty() || !r.stream.is_empty() {
        tables.push(ratio_t);
    }
    if let Some((t, j, good)) = load_table(o, r) {
        (load_json, ok) = (j, ok && good);
        tables.push(t);
    }
    let result = json!({
        "scenario": "cluster",
        "target": target,
        "params": {
            "phases": o.phases,
            "concurrency": o.levels,
            "calls_per_level": o.calls,
            "warmup": o.warmup,
            "data_json_bytes": data_bytes,
            "load": {"callers": o.load_callers.max(1), "in_flight_each": o.load_in_flight.max(1),
                     "calls_each": o.load_calls},
            "cluster": {"heartbeat_ms": 200, "expiry_ms": 2000},
            "client": "iii_client::Client (callee and subscriber on their own thread; calls and \
                       sets from a fresh client per phase on the main thread; load callers on 2 threads)",
        },
        "machine": report::machine(),
        "visible_on_a_ms": r.visible_on_a.map(report::ms),
        "calls": calls_json,
        "stream": stream_json,
        "load": load_json,
        "ok": ok,
    });
    report::emit(result, &tables);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_divide_rate_and_latencies() {
        assert_eq!(ratios((50.0, 200, 900), (100.0, 100, 300)), [0.5, 2.0, 3.0]);
        assert_eq!(opt2(None), "-");
        assert_eq!(opt1(Some(1.26)), "1.3");
    }
}
