//! The in-memory contents of the store: stream › group › item → JSON value, with each group's
//! items kept in insertion order (overwriting keeps the original position, deleting forgets it).
//! Empty groups and streams are dropped as soon as their last item is deleted.
//!
//! Values are shared (`Arc`), so a frozen copy for a snapshot written on another thread costs
//! the maps, not the values.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

#[derive(Debug, Default, Clone)]
struct Group {
    /// Position counter; never reused, so later inserts always sort last.
    next_position: u64,
    /// Position → item id, in list order.
    order: BTreeMap<u64, String>,
    /// Item id → (position, value).
    items: HashMap<String, (u64, Arc<Value>)>,
}

fn unshare(value: Arc<Value>) -> Value {
    Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone())
}

impl Group {
    fn insert(&mut self, item: &str, value: Value) -> Option<Value> {
        let value = Arc::new(value);
        if let Some((_, slot)) = self.items.get_mut(item) {
            return Some(unshare(std::mem::replace(slot, value)));
        }
        let position = self.next_position;
        self.next_position += 1;
        self.order.insert(position, item.to_string());
        self.items.insert(item.to_string(), (position, value));
        None
    }

    fn remove(&mut self, item: &str) -> Option<Value> {
        let (position, value) = self.items.remove(item)?;
        self.order.remove(&position);
        Some(unshare(value))
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.order.values().filter_map(|id| {
            let (_, value) = self.items.get(id)?;
            Some((id.as_str(), &**value))
        })
    }
}

/// All streams, sorted by name; groups sorted by name.
#[derive(Debug, Default, Clone)]
pub(super) struct Data {
    streams: BTreeMap<String, BTreeMap<String, Group>>,
    len: u64,
}

impl Data {
    pub(super) fn get(&self, stream: &str, group: &str, item: &str) -> Option<&Value> {
        let (_, value) = self.streams.get(stream)?.get(group)?.items.get(item)?;
        Some(&**value)
    }

    /// Stores `value`, returning the previous one.
    pub(super) fn insert(
        &mut self,
        stream: &str,
        group: &str,
        item: &str,
        value: Value,
    ) -> Option<Value> {
        let groups = self.streams.entry(stream.to_string()).or_default();
        let old = groups
            .entry(group.to_string())
            .or_default()
            .insert(item, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Deletes an item, returning its value; drops the group and stream when they become empty.
    pub(super) fn remove(&mut self, stream: &str, group: &str, item: &str) -> Option<Value> {
        let groups = self.streams.get_mut(stream)?;
        let items = groups.get_mut(group)?;
        let old = items.remove(item)?;
        self.len -= 1;
        if items.items.is_empty() {
            groups.remove(group);
            if groups.is_empty() {
                self.streams.remove(stream);
            }
        }
        Some(old)
    }

    pub(super) fn list(&self, stream: &str, group: &str) -> Vec<Value> {
        self.streams
            .get(stream)
            .and_then(|groups| groups.get(group))
            .map(|g| g.iter().map(|(_, value)| value.clone()).collect())
            .unwrap_or_default()
    }

    pub(super) fn list_groups(&self, stream: &str) -> Vec<String> {
        self.streams
            .get(stream)
            .map(|groups| groups.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub(super) fn list_all(&self) -> Vec<(String, Vec<String>)> {
        self.streams
            .iter()
            .map(|(stream, groups)| (stream.clone(), groups.keys().cloned().collect()))
            .collect()
    }

    /// Number of items in all streams.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Every item as (stream, group, item, value): streams and groups sorted, items in list order.
    pub(super) fn items(&self) -> impl Iterator<Item = (&str, &str, &str, &Value)> {
        self.streams.iter().flat_map(|(stream, groups)| {
            groups.iter().flat_map(move |(group, items)| {
                items
                    .iter()
                    .map(move |(item, value)| (stream.as_str(), group.as_str(), item, value))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn order_overwrite_and_delete() {
        let mut data = Data::default();
        assert_eq!(data.insert("s", "g", "a", json!(1)), None);
        assert_eq!(data.insert("s", "g", "b", json!(2)), None);
        assert_eq!(data.insert("s", "g", "a", json!(3)), Some(json!(1)));
        assert_eq!(data.list("s", "g"), vec![json!(3), json!(2)]);
        assert_eq!(data.remove("s", "g", "a"), Some(json!(3)));
        assert_eq!(data.insert("s", "g", "a", json!(4)), None);
        assert_eq!(data.list("s", "g"), vec![json!(2), json!(4)]);
        assert_eq!(data.len(), 2);
        let items: Vec<_> = data.items().map(|(_, _, i, _)| i.to_string()).collect();
        assert_eq!(items, ["b", "a"]);
    }

    #[test]
    fn empty_groups_and_streams_disappear() {
        let mut data = Data::default();
        data.insert("s", "g1", "a", json!(1));
        data.insert("s", "g2", "a", json!(1));
        assert_eq!(data.remove("s", "g1", "a"), Some(json!(1)));
        assert_eq!(data.list_groups("s"), ["g2"]);
        assert_eq!(data.remove("s", "g2", "a"), Some(json!(1)));
        assert!(data.list_all().is_empty());
        assert_eq!(data.remove("s", "g2", "a"), None);
        assert_eq!(data.len(), 0);
    }
}
