//! Lookup of the names a profile knows (features, outputs, categories) by
//! the bytes of an event: built once per monitor, read for every value.
//!
//! A general-purpose map hashes every byte of every name. Here names of up
//! to 16 bytes hash from their length and their first and last 8 bytes
//! (two word loads and a multiply); longer names fall back to FNV-1a over
//! all bytes, so names differing only in the middle still spread. Slots are
//! probed linearly and a hit is confirmed by comparing the whole name, so
//! collisions cost time, never correctness.

/// Names to indices; insert while building, then look up.
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    names: Vec<(String, usize)>,
    /// (hash, position in `names` + 1); 0 marks an empty slot. Its length
    /// is a power of two at least twice the number of names.
    table: Vec<(u64, u32)>,
}

fn hash(name: &[u8]) -> u64 {
    let n = name.len();
    let x = if n > 16 {
        name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        })
    } else if n >= 8 {
        let head = u64::from_le_bytes(name[..8].try_into().expect("8 bytes"));
        let tail = u64::from_le_bytes(name[n - 8..].try_into().expect("8 bytes"));
        head ^ tail.rotate_left(31) ^ (n as u64)
    } else {
        name.iter().fold(n as u64, |h, b| (h << 8) | u64::from(*b))
    };
    let x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 32)
}

impl NameIndex {
    /// Adds `name` (a name added again gets the new index).
    pub fn insert(&mut self, name: String, index: usize) {
        if let Some(i) = self.position(&name) {
            self.names[i].1 = index;
            return;
        }
        self.names.push((name, index));
        if self.table.len() < self.names.len() * 2 {
            self.rebuild((self.names.len() * 4).next_power_of_two());
        } else {
            let at = self.names.len() - 1;
            self.place(at);
        }
    }

    fn rebuild(&mut self, capacity: usize) {
        self.table = vec![(0, 0); capacity];
        for at in 0..self.names.len() {
            self.place(at);
        }
    }

    fn place(&mut self, at: usize) {
        let h = hash(self.names[at].0.as_bytes());
        let mask = self.table.len() - 1;
        let mut i = h as usize & mask;
        while self.table[i].1 != 0 {
            i = (i + 1) & mask;
        }
        self.table[i] = (h, at as u32 + 1);
    }

    fn position(&self, name: &str) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let h = hash(name.as_bytes());
        let mask = self.table.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let (eh, e) = self.table[i];
            if e == 0 {
                return None;
            }
            let at = e as usize - 1;
            if eh == h && self.names[at].0 == name {
                return Some(at);
            }
            i = (i + 1) & mask;
        }
    }

    pub fn get(&self, name: &str) -> Option<&usize> {
        self.position(name).map(|at| &self.names[at].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// (name, index) in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &usize)> {
        self.names.iter().map(|(n, i)| (n, i))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Heap bytes held (names, entries and table).
    pub fn heap_bytes(&self) -> usize {
        self.names.iter().map(|(n, _)| n.capacity()).sum::<usize>()
            + self.names.capacity() * std::mem::size_of::<(String, usize)>()
            + self.table.capacity() * std::mem::size_of::<(u64, u32)>()
    }
}

impl FromIterator<(String, usize)> for NameIndex {
    fn from_iter<I: IntoIterator<Item = (String, usize)>>(iter: I) -> Self {
        let mut index = Self::default();
        for (name, i) in iter {
            index.insert(name, i);
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Answers as a map would, for any names (short, long, sharing
        /// their ends) and any probes.
        #[test]
        fn answers_as_a_map(
            names in proptest::collection::vec("(ab|[a-c]{0,3}|x{20}[a-b]{1,2}y{20}|[a-zé]{0,24})", 0..60),
            probes in proptest::collection::vec("[a-c]{0,3}|x{20}[a-b]{1,2}y{20}", 0..30),
        ) {
            let mut map = HashMap::new();
            let mut index = NameIndex::default();
            for (i, n) in names.iter().enumerate() {
                map.insert(n.clone(), i);
                index.insert(n.clone(), i);
            }
            prop_assert_eq!(index.len(), map.len());
            for n in names.iter().chain(&probes) {
                prop_assert_eq!(index.get(n), map.get(n));
                prop_assert_eq!(index.contains_key(n), map.contains_key(n));
            }
        }
    }
}
