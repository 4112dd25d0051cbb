//! One queue's live jobs in memory and the order they go out in: [`Job`] (the record kept in
//! the store) and [`Lanes`] (waiting, delayed, in flight, parked, and for FIFO queues the
//! message groups). Plain data, no I/O: the queue actor persists and delivers.
//!
//! * Standard queue: jobs wait in arrival order; any number up to the queue's concurrency are
//!   in flight; a failed job waits out its backoff in `delayed` while others go on, and when
//!   the backoff is over it is the next one out.
//! * FIFO queue: jobs of one message group go out one at a time in arrival order. Only a
//!   group's head is ever waiting, delayed or in flight; a failed head is retried before
//!   anything behind it (the group waits out the backoff), and when it is done or
//!   dead-lettered the next job of the group takes its place. Groups run in parallel up to the
//!   concurrency.
//! * Parked: a job whose function is not registered right now waits without using an attempt
//!   until it is (then it goes out ahead of the jobs behind it).
//!
//! A job's `lease_until` is set while it is in flight: after an engine crash, a job that was
//! being delivered waits until then before it goes out again, so a delivery still running in a
//! worker is not doubled.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::ErrorBody;

/// A job, as stored (`jobs` group of its queue's stream, keyed by `id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// Arrival order within the engine's queues.
    pub seq: u64,
    pub function_id: String,
    pub data: Value,
    /// The `messageReceiptId` its enqueue was answered with.
    #[serde(default)]
    pub receipt: Option<String>,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// FIFO message group.
    #[serde(default)]
    pub group: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Not before this time (a retry's backoff).
    #[serde(default)]
    pub not_before: u64,
    /// Being delivered until at most this time.
    #[serde(default)]
    pub lease_until: Option<u64>,
    #[serde(default)]
    pub last_error: Option<ErrorBody>,
    #[serde(default)]
    pub traceparent: Option<String>,
    #[serde(default)]
    pub baggage: Option<String>,
}

impl Job {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// When it may go out next.
    fn due(&self) -> u64 {
        self.not_before.max(self.lease_until.unwrap_or(0))
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Lanes {
    fifo: bool,
    jobs: HashMap<String, Job>,
    waiting: VecDeque<String>,
    /// (due, seq, id)
    delayed: BTreeSet<(u64, u64, String)>,
    in_flight: HashSet<String>,
    parked: Vec<String>,
    /// FIFO: each group's jobs in arrival order; the head is the only one out.
    groups: HashMap<String, VecDeque<String>>,
}

impl Lanes {
    pub fn new(fifo: bool) -> Lanes {
        Lanes {
            fifo,
            ..Lanes::default()
        }
    }

    pub fn fifo(&self) -> bool {
        self.fifo
    }

    /// Adds a job behind every job already there (callers add in `seq` order).
    pub fn add(&mut self, job: Job, now: u64) {
        let id = job.id.clone();
        let group = job.group.clone().unwrap_or_default();
        self.jobs.insert(id.clone(), job);
        if self.fifo {
            let members = self.groups.entry(group).or_default();
            members.push_back(id.clone());
            if members.len() > 1 {
                return;
            }
        }
        self.place(id, now);
    }

    /// A job that may go out: waiting now, or delayed until it is due.
    fn place(&mut self, id: String, now: u64) {
        let Some(job) = self.jobs.get(&id) else {
            return;
        };
        let due = job.due();
        if due > now {
            self.delayed.insert((due, job.seq, id));
        } else {
            self.waiting.push_back(id);
        }
    }

    /// Takes the next waiting job and counts it in flight.
    pub fn next(&mut self) -> Option<&mut Job> {
        let id = self.waiting.pop_front()?;
        self.in_flight.insert(id.clone());
        self.jobs.get_mut(&id)
    }

    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.get_mut(id)
    }

    /// Delayed jobs whose time has come are next out (earliest first). Did any move?
    pub fn due(&mut self, now: u64) -> bool {
        let mut ready = Vec::new();
        while let Some(first) = self.delayed.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, _, id)) = self.delayed.pop_first() {
                ready.push(id);
            }
        }
        for id in ready.iter().rev() {
            self.waiting.push_front(id.clone());
        }
        !ready.is_empty()
    }

    /// The earliest time a delayed job is due.
    pub fn next_due(&self) -> Option<u64> {
        self.delayed.first().map(|d| d.0)
    }

    /// A job in flight is finished (done, skipped or dead-lettered): it leaves, and in a FIFO
    /// queue the next job of its group may go out.
    pub fn remove(&mut self, id: &str, now: u64) -> Option<Job> {
        self.in_flight.remove(id);
        let job = self.jobs.remove(id)?;
        if self.fifo {
            let group = job.group.clone().unwrap_or_default();
            if let Some(members) = self.groups.get_mut(&group) {
                members.retain(|m| m != id);
                match members.front().cloned() {
                    Some(next) => self.place(next, now),
                    None => {
                        self.groups.remove(&group);
                    }
                }
            }
        }
        Some(job)
    }

    /// A job in flight failed and is retried at `due` (its group waits for it).
    pub fn retry(&mut self, id: &str, due: u64) {
        self.in_flight.remove(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.not_before = due;
            job.lease_until = None;
            self.delayed.insert((due, job.seq, id.to_string()));
        }
    }

    /// A job taken by [`Lanes::next`] waits for its function to be registered.
    pub fn park(&mut self, id: &str) {
        self.in_flight.remove(id);
        if let Some(job) = self.jobs.get_mut(id) {
            job.lease_until = None;
            self.parked.push(id.to_string());
        }
    }

    /// Parked jobs whose function `registered` says is there now go out next, in order.
    pub fn unpark(&mut self, registered: impl Fn(&str) -> bool) -> bool {
        if self.parked.is_empty() {
            return false;
        }
        let jobs = &self.jobs;
        let (mut back, keep): (Vec<String>, Vec<String>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|id| jobs.get(id).is_some_and(|j| registered(&j.function_id)));
        self.parked = keep;
        back.sort_by_key(|id| jobs.get(id).map(|j| j.seq));
        for id in back.iter().rev() {
            self.waiting.push_front(id.clone());
        }
        !back.is_empty()
    }

    /// Drops every job that is not in flight; returns them.
    pub fn purge(&mut self) -> Vec<Job> {
        self.waiting.clear();
        self.delayed.clear();
        self.parked.clear();
        let in_flight = &self.in_flight;
        for members in self.groups.values_mut() {
            members.retain(|id| in_flight.contains(id));
        }
        self.groups.retain(|_, m| !m.is_empty());
        let gone: Vec<String> = self
            .jobs
            .keys()
            .filter(|id| !in_flight.contains(*id))
            .cloned()
            .collect();
        gone.iter().filter_map(|id| self.jobs.remove(id)).collect()
    }

    /// Every job, for rebuilding the lanes in another mode.
    pub fn take_all(&mut self) -> Vec<Job> {
        let mut jobs: Vec<Job> = std::mem::take(&mut self.jobs).into_values().collect();
        jobs.sort_by_key(|j| j.seq);
        *self = Lanes::new(self.fifo);
        jobs
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub fn delayed(&self) -> usize {
        self.delayed.len()
    }

    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Jobs not in flight (waiting, delayed, parked, or behind their group's head).
    pub fn depth(&self) -> usize {
        self.jobs.len() - self.in_flight.len()
    }
}

#[cfg(test)]
mod tests;
