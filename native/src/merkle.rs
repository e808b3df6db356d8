//! The right edge of a platform's RFC 9162 tree: the twin of
//! `projections.merkle.Frontier` (AUDIT.md §1).
//!
//! One perfect subtree hash per set bit of `size`, largest first. Appending a
//! leaf merges equal subtrees like binary addition and reports each perfect
//! subtree it completes (level ≥ 1, index), which a writer stores.

use sha2::{Digest, Sha256};

pub const HASH_BYTES: usize = 32;
pub type Hash = [u8; HASH_BYTES];

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    pub size: u64,
    edge: Vec<Hash>,
}

impl Frontier {
    /// Append a leaf hash; the (level, index, hash) of every subtree it completes.
    pub fn append(&mut self, leaf: Hash) -> Vec<(u32, u64, Hash)> {
        let mut completed = Vec::new();
        let (mut h, mut level, mut idx, mut carry) = (leaf, 0u32, self.size, self.size);
        while carry & 1 == 1 {
            let left = self.edge.pop().expect("an edge hash per set bit");
            h = node_hash(&left, &h);
            level += 1;
            idx >>= 1;
            carry >>= 1;
            completed.push((level, idx, h));
        }
        self.edge.push(h);
        self.size += 1;
        completed
    }

    /// The edge as stored with the head: its hashes concatenated, largest first.
    pub fn edge(&self) -> Vec<u8> {
        self.edge.concat()
    }

    pub fn restore(size: u64, edge: &[u8]) -> Result<Frontier, String> {
        if edge.len() != HASH_BYTES * size.count_ones() as usize {
            return Err("edge does not match the tree size".into());
        }
        Ok(Frontier { size, edge: edge.chunks(HASH_BYTES).map(|c| c.try_into().unwrap()).collect() })
    }

    pub fn root(&self) -> Hash {
        match self.edge.split_last() {
            None => Sha256::digest(b"").into(),
            Some((last, rest)) => rest.iter().rev().fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}
