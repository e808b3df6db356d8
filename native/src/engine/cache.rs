//! A least-recently-used cache bounded in entries and estimated bytes: the twin
//! of `attribution.cache.BoundedCache`. A process holds a fixed budget whatever
//! the length of the log; what does not fit is read again from the database.

use std::collections::HashMap;
use std::hash::Hash;

/// Items are kept in a slab with an intrusive doubly linked list (most recent at
/// the head): get, put and eviction are O(1).
pub struct BoundedCache<K, V> {
    map: HashMap<K, usize>,
    slots: Vec<Slot<K, V>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    entries: usize,
    bytes: usize,
    pub max_entries: usize,
    pub max_bytes: usize,
}

struct Slot<K, V> {
    key: K,
    value: V,
    entries: usize,
    bytes: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedCache { map: HashMap::new(), slots: Vec::new(), free: Vec::new(), head: NONE, tail: NONE, entries: 0,
                       bytes: 0, max_entries, max_bytes }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NONE { self.head = next } else { self.slots[prev].next = next }
        if next == NONE { self.tail = prev } else { self.slots[next].prev = prev }
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NONE;
        self.slots[i].next = self.head;
        if self.head != NONE {
            self.slots[self.head].prev = i;
        }
        self.head = i;
        if self.tail == NONE {
            self.tail = i;
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        let i = *self.map.get(key)?;
        self.unlink(i);
        self.push_front(i);
        Some(self.slots[i].value.clone())
    }

    pub fn drop_key(&mut self, key: &K) {
        if let Some(i) = self.map.remove(key) {
            self.unlink(i);
            self.entries -= self.slots[i].entries;
            self.bytes -= self.slots[i].bytes;
            self.free.push(i);
        }
    }

    /// Keep `value` (estimated `entries` and `bytes`); an item larger than the
    /// whole budget is not kept (the caller has it).
    pub fn put(&mut self, key: K, value: V, entries: usize, bytes: usize) {
        self.drop_key(&key);
        if entries > self.max_entries || bytes > self.max_bytes {
            return;
        }
        while self.tail != NONE && (self.entries + entries > self.max_entries || self.bytes + bytes > self.max_bytes) {
            let old = self.slots[self.tail].key.clone();
            self.drop_key(&old);
        }
        let slot = Slot { key: key.clone(), value, entries, bytes, prev: NONE, next: NONE };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.push_front(i);
        self.map.insert(key, i);
        self.entries += entries;
        self.bytes += bytes;
    }

    /// (rows, entries, estimated bytes).
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.map.len(), self.entries, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_go_first() {
        let mut c = BoundedCache::new(2, 100);
        c.put("a", 1, 1, 10);
        c.put("b", 2, 1, 10);
        assert_eq!(c.get(&"a"), Some(1));
        c.put("c", 3, 1, 10);
        assert_eq!((c.get(&"a"), c.get(&"b"), c.get(&"c")), (Some(1), None, Some(3)));
        c.put("huge", 4, 1, 1000);
        assert_eq!(c.get(&"huge"), None);
        assert_eq!(c.stats(), (2, 2, 20));
    }
}
