//! A map of things with deadlines (transactions) and a heap of those deadlines, so that
//! the next wake-up and the due entries are found without visiting every entry.
//!
//! Every change to an entry goes through [`TimedMap::insert`] or the guard that
//! [`TimedMap::get_mut`] returns; when the guard drops with a new deadline, the deadline
//! is pushed on the heap. Entries on the heap go stale (the entry was removed, or its
//! deadline moved): they are skipped when they come up. So [`TimedMap::next_deadline`]
//! may be earlier than needed (a wake-up with nothing due), never later.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

/// What has a deadline.
pub(crate) trait Deadline {
    /// When the entry next needs to run, if ever.
    fn deadline(&self) -> Option<Instant>;
}

/// A map whose entries' deadlines are kept in a heap.
#[derive(Debug)]
pub(crate) struct TimedMap<K: Ord, V> {
    map: HashMap<K, V>,
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Eq + Hash + Ord + Clone, V: Deadline> TimedMap<K, V> {
    pub(crate) fn new() -> Self {
        TimedMap { map: HashMap::new(), heap: BinaryHeap::new() }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        if let Some(t) = value.deadline() {
            self.heap.push(Reverse((t, key.clone())));
        }
        self.map.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key)
    }

    pub(crate) fn retain(&mut self, f: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(f);
    }

    /// The entry, for a change whose new deadline is recorded when the guard drops.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<Entry<'_, K, V>> {
        let value = self.map.get_mut(key)?;
        let before = value.deadline();
        Some(Entry { key: key.clone(), value, heap: &mut self.heap, before })
    }

    /// The earliest deadline on the heap (perhaps stale, so perhaps early).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the keys of the entries due at `now` off the heap (each once, stale ones
    /// dropped). The caller runs each through [`TimedMap::get_mut`], which puts its
    /// next deadline back.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<K> {
        let mut keys = Vec::new();
        while let Some(Reverse((t, _))) = self.heap.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((t, key))) = self.heap.pop() else { break };
            let live = self.map.get(&key).and_then(Deadline::deadline).is_some_and(|d| d <= now && d == t);
            if live {
                keys.push(key);
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A changed entry: its new deadline goes on the heap when this drops.
pub(crate) struct Entry<'a, K: Ord + Clone, V: Deadline> {
    key: K,
    value: &'a mut V,
    heap: &'a mut BinaryHeap<Reverse<(Instant, K)>>,
    before: Option<Instant>,
}

impl<K: Ord + Clone, V: Deadline> Deref for Entry<'_, K, V> {
    type Target = V;
    fn deref(&self) -> &V {
        self.value
    }
}

impl<K: Ord + Clone, V: Deadline> DerefMut for Entry<'_, K, V> {
    fn deref_mut(&mut self) -> &mut V {
        self.value
    }
}

impl<K: Ord + Clone, V: Deadline> Drop for Entry<'_, K, V> {
    fn drop(&mut self) {
        let after = self.value.deadline();
        if after != self.before {
            if let Some(t) = after {
                self.heap.push(Reverse((t, self.key.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct T(Option<Instant>);
    impl Deadline for T {
        fn deadline(&self) -> Option<Instant> {
            self.0
        }
    }

    #[test]
    fn due_entries_come_up_once_and_moved_deadlines_are_followed() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let mut m: TimedMap<u32, T> = TimedMap::new();
        m.insert(1, T(at(10)));
        m.insert(2, T(at(20)));
        m.insert(3, T(None));
        assert_eq!(m.next_deadline(), at(10));
        // 1 moves later, 2 earlier: the heap follows both.
        m.get_mut(&1).unwrap().0 = at(30);
        m.get_mut(&2).unwrap().0 = at(5);
        assert_eq!(m.next_deadline(), at(5));
        assert_eq!(m.due(t0 + Duration::from_millis(12)), vec![2]);
        // 2 was not rescheduled: a stale 10 ms entry of 1 is dropped, nothing is due.
        assert_eq!(m.due(t0 + Duration::from_millis(25)), Vec::<u32>::new());
        m.remove(&1);
        assert_eq!(m.due(t0 + Duration::from_millis(40)), Vec::<u32>::new());
        assert_eq!(m.next_deadline(), None);
        assert_eq!(m.len(), 2);
    }
}
