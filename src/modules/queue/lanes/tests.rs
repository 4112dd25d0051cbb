//! The order jobs go out in: standard and FIFO queues, retries, parking, purge.

use serde_json::json;

use super::{Job, Lanes};

fn job(seq: u64, group: Option<&str>) -> Job {
    Job {
        id: format!("j{seq}"),
        seq,
        function_id: "f".into(),
        data: json!({"n": seq}),
        receipt: None,
        attempts: 0,
        group: group.map(str::to_string),
        created_at: 0,
        not_before: 0,
        lease_until: None,
        last_error: None,
        traceparent: None,
        baggage: None,
    }
}

fn next_id(l: &mut Lanes) -> Option<String> {
    l.next().map(|j| j.id.clone())
}

#[test]
fn standard_goes_out_in_arrival_order_and_a_due_retry_is_next() {
    let mut l = Lanes::new(false);
    for s in 1..=3 {
        l.add(job(s, None), 0);
    }
    assert_eq!(next_id(&mut l).as_deref(), Some("j1"));
    l.retry("j1", 100);
    assert_eq!(next_id(&mut l).as_deref(), Some("j2"));
    assert_eq!(l.next_due(), Some(100));
    assert!(!l.due(99));
    assert!(l.due(100));
    assert_eq!(next_id(&mut l).as_deref(), Some("j1"));
    assert_eq!(next_id(&mut l).as_deref(), Some("j3"));
    assert_eq!(l.in_flight(), 3);
    l.remove("j2", 0);
    assert_eq!(l.len(), 2);
}

#[test]
fn fifo_holds_a_group_behind_its_head_through_retries() {
    let mut l = Lanes::new(true);
    l.add(job(1, Some("a")), 0);
    l.add(job(2, Some("a")), 0);
    l.add(job(3, Some("b")), 0);
    assert_eq!(next_id(&mut l).as_deref(), Some("j1"));
    assert_eq!(next_id(&mut l).as_deref(), Some("j3"));
    assert_eq!(next_id(&mut l), None, "j2 waits behind j1");
    l.retry("j1", 50);
    l.remove("j3", 0);
    assert_eq!(next_id(&mut l), None, "group a waits out j1's backoff");
    l.due(50);
    assert_eq!(next_id(&mut l).as_deref(), Some("j1"));
    l.remove("j1", 60);
    assert_eq!(next_id(&mut l).as_deref(), Some("j2"));
}

#[test]
fn a_leased_job_waits_for_its_lease_after_a_restart() {
    let mut l = Lanes::new(false);
    let mut j = job(1, None);
    j.lease_until = Some(500);
    l.add(j, 100);
    l.add(job(2, None), 100);
    assert_eq!(next_id(&mut l).as_deref(), Some("j2"));
    assert_eq!(next_id(&mut l), None);
    l.due(500);
    assert_eq!(next_id(&mut l).as_deref(), Some("j1"));
}

#[test]
fn parked_jobs_come_back_in_order_ahead_of_the_rest() {
    let mut l = Lanes::new(false);
    for s in 1..=4 {
        l.add(job(s, None), 0);
    }
    next_id(&mut l);
    l.park("j1");
    next_id(&mut l);
    l.park("j2");
    assert!(!l.unpark(|_| false));
    assert_eq!(l.parked(), 2);
    assert!(l.unpark(|f| f == "f"));
    let order: Vec<String> = std::iter::from_fn(|| next_id(&mut l)).collect();
    assert_eq!(order, ["j1", "j2", "j3", "j4"]);
}

#[test]
fn purge_keeps_what_is_in_flight() {
    let mut l = Lanes::new(true);
    l.add(job(1, Some("a")), 0);
    l.add(job(2, Some("a")), 0);
    l.add(job(3, Some("b")), 0);
    next_id(&mut l);
    let gone = l.purge();
    assert_eq!(gone.len(), 2);
    assert_eq!(l.len(), 1);
    l.remove("j1", 0);
    assert_eq!(l.len(), 0);
    assert_eq!(next_id(&mut l), None);
}
