//! A least-recently-used cache bounded in entries and estimated bytes: the twin
//! of `attribution.cache.BoundedCache`. A process holds a fixed budget whatever
//! the length of the log; what does not fit is read again from the database.
//!
//! Keys are (generation, key): a platform's generation changes when what is
//! cached of it may be stale, and its old rows age out unread. Lookups take the
//! key borrowed (`&str` for a `String` key), so a hit allocates nothing.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Items live in a slab with an intrusive doubly linked list (most recent at
/// the head): get, put and eviction are O(1).
pub struct BoundedCache<K, V> {
    table: HashTable<usize>,
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
    generation: u64,
    key: K,
    hash: u64,
    value: Option<V>,
    entries: usize,
    bytes: usize,
    prev: usize,
    next: usize,
}

const NONE: usize = usize::MAX;

fn hash_of<Q: Hash + ?Sized>(generation: u64, key: &Q) -> u64 {
    FxBuildHasher.hash_one((generation, key))
}

impl<K: Hash + Eq, V: Clone> BoundedCache<K, V> {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedCache { table: HashTable::new(), slots: Vec::new(), free: Vec::new(), head: NONE, tail: NONE, entries: 0,
                       bytes: 0, max_entries, max_bytes }
    }

    fn find<Q: Hash + Eq + ?Sized>(&self, generation: u64, key: &Q) -> Option<usize>
    where K: Borrow<Q> {
        let h = hash_of(generation, key);
        self.table.find(h, |&i| self.slots[i].generation == generation && self.slots[i].key.borrow() == key).copied()
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

    pub fn get<Q: Hash + Eq + ?Sized>(&mut self, generation: u64, key: &Q) -> Option<V>
    where K: Borrow<Q> {
        let i = self.find(generation, key)?;
        self.unlink(i);
        self.push_front(i);
        self.slots[i].value.clone()
    }

    fn remove_slot(&mut self, i: usize) {
        let h = self.slots[i].hash;
        if let Ok(entry) = self.table.find_entry(h, |&j| j == i) {
            entry.remove();
        }
        self.unlink(i);
        self.entries -= self.slots[i].entries;
        self.bytes -= self.slots[i].bytes;
        self.slots[i].value = None;
        self.free.push(i);
    }

    /// Keep `value` (estimated `entries` and `bytes`); an item larger than the
    /// whole budget is not kept (the caller has it).
    pub fn put(&mut self, generation: u64, key: K, value: V, entries: usize, bytes: usize) {
        if let Some(i) = self.find(generation, &key) {
            self.remove_slot(i);
        }
        if entries > self.max_entries || bytes > self.max_bytes {
            return;
        }
        while self.tail != NONE && (self.entries + entries > self.max_entries || self.bytes + bytes > self.max_bytes) {
            self.remove_slot(self.tail);
        }
        let hash = hash_of(generation, &key);
        let slot = Slot { generation, key, hash, value: Some(value), entries, bytes, prev: NONE, next: NONE };
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
        let slots = &self.slots;
        self.table.insert_unique(hash, i, |&j| slots[j].hash);
        self.entries += entries;
        self.bytes += bytes;
    }

    /// (rows, entries, estimated bytes, budget bytes).
    pub fn stats(&self) -> (usize, usize, usize, usize) {
        (self.table.len(), self.entries, self.bytes, self.max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_go_first() {
        let mut c: BoundedCache<String, i32> = BoundedCache::new(2, 100);
        c.put(1, "a".into(), 1, 1, 10);
        c.put(1, "b".into(), 2, 1, 10);
        assert_eq!(c.get(1, "a"), Some(1));
        c.put(1, "c".into(), 3, 1, 10);
        assert_eq!((c.get(1, "a"), c.get(1, "b"), c.get(1, "c")), (Some(1), None, Some(3)));
        assert_eq!(c.get(2, "a"), None); // another generation
        c.put(1, "huge".into(), 4, 1, 1000);
        assert_eq!(c.get(1, "huge"), None);
        assert_eq!(c.stats(), (2, 2, 20, 100));
    }
}
