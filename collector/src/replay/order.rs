//! The order in which a replay sends its events (pure: no I/O).
//!
//! Inferences and labels fill batches of their own, each sent when full.
//! A label whose prediction (same key: model and event id) is in an
//! inference batch the collector has not yet acknowledged is held until it
//! has; any other label is free at once (its prediction was acknowledged
//! earlier, or is not in the file before it). [`super::replay`] drives an
//! [`Orderer`]: it pushes each event, takes the batches ready to send one
//! at a time with [`Orderer::next_batch`], and reports each one answered
//! with [`Orderer::acknowledged`] before it asks for the next; at the end
//! of the input it calls [`Orderer::finish`] and drains what is left.
//!
//! Memory is bounded by the batch size `B`, whatever the file's length,
//! when the driver drains after every push (as the replay does): the keys
//! of at most two inference batches are remembered (the one being filled
//! and the one in flight, so at most `2 B` keys), at most `B` labels are
//! held, and fewer than `4 B` events are kept in all. When `B` labels are
//! held, some of them waiting for the batch being filled, that batch is
//! closed early ([`Close::Held`]); the last batches at the end of the input
//! may be short too ([`Close::End`]). Every other batch is full. The order
//! depends on the input alone.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::client::Kind;

/// Why a batch was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// It reached the batch size.
    Full,
    /// Held labels reached the batch size while waiting for it.
    Held,
    /// The input ended.
    End,
}

/// Events to send in one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    pub kind: Kind,
    pub items: Vec<T>,
    pub close: Close,
}

/// Decides the batches of a replay; see the module documentation.
#[derive(Debug)]
pub struct Orderer<K, T> {
    size: usize,
    /// Inferences being gathered, with the keys among them.
    open: Vec<T>,
    open_keys: Vec<K>,
    /// Sequence number of the inference batch being gathered.
    open_seq: u64,
    /// Labels free to go.
    labels: Vec<T>,
    /// Labels waiting for the acknowledgement of an inference batch (its
    /// sequence number), in input order.
    held: Vec<(u64, T)>,
    /// How many of `held` wait for the batch being gathered.
    held_on_open: usize,
    /// Each key of an unacknowledged inference batch, and the sequence
    /// number of the latest such batch holding it.
    pending: HashMap<K, u64>,
    /// Closed, unacknowledged inference batches (sequence number, keys),
    /// oldest first.
    unacked: VecDeque<(u64, Vec<K>)>,
    /// Batches ready to send, in order.
    ready: VecDeque<Batch<T>>,
    /// The kind of the batch handed out and not yet acknowledged.
    in_flight: Option<Kind>,
    finishing: bool,
}

impl<K: Hash + Eq + Clone, T> Orderer<K, T> {
    /// Batches of `size` events (at least one).
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            open: Vec::new(),
            open_keys: Vec::new(),
            open_seq: 0,
            labels: Vec::new(),
            held: Vec::new(),
            held_on_open: 0,
            pending: HashMap::new(),
            unacked: VecDeque::new(),
            ready: VecDeque::new(),
            in_flight: None,
            finishing: false,
        }
    }

    /// An inference event; `key` is `None` when it names no prediction a
    /// label could resolve.
    pub fn push_inference(&mut self, key: Option<K>, item: T) {
        self.open.push(item);
        if let Some(key) = key {
            self.pending.insert(key.clone(), self.open_seq);
            self.open_keys.push(key);
        }
        if self.open.len() >= self.size {
            self.close_open(Close::Full);
        }
    }

    /// A label event; `key` is `None` when it names no prediction.
    pub fn push_label(&mut self, key: Option<K>, item: T) {
        match key.and_then(|k| self.pending.get(&k).copied()) {
            Some(seq) => {
                self.held.push((seq, item));
                if seq == self.open_seq {
                    self.held_on_open += 1;
                }
                if self.held.len() >= self.size && self.held_on_open > 0 {
                    self.close_open(Close::Held);
                }
            }
            None => self.free_label(item),
        }
    }

    /// The input has ended: what is gathered goes too.
    pub fn finish(&mut self) {
        self.finishing = true;
        self.close_open(Close::End);
        self.settle();
    }

    /// The next batch to send, or `None` while the last one handed out is
    /// not acknowledged or nothing is ready.
    pub fn next_batch(&mut self) -> Option<Batch<T>> {
        if self.in_flight.is_some() {
            return None;
        }
        let batch = self.ready.pop_front()?;
        self.in_flight = Some(batch.kind);
        Some(batch)
    }

    /// The collector answered the batch last handed out: the keys it held
    /// are no longer pending and the labels waiting for it are free.
    pub fn acknowledged(&mut self) {
        if self.in_flight.take() != Some(Kind::Inferences) {
            return;
        }
        let Some((seq, keys)) = self.unacked.pop_front() else {
            return;
        };
        for key in keys {
            if self.pending.get(&key) == Some(&seq) {
                self.pending.remove(&key);
            }
        }
        let (free, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|(s, _)| *s <= seq);
        self.held = still;
        for (_, item) in free {
            self.free_label(item);
        }
        self.settle();
    }

    /// Nothing gathered, held, ready or in flight.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
            && self.labels.is_empty()
            && self.held.is_empty()
            && self.ready.is_empty()
            && self.in_flight.is_none()
    }

    /// Labels held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Keys remembered now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn free_label(&mut self, item: T) {
        self.labels.push(item);
        if self.labels.len() >= self.size {
            self.ready.push_back(Batch {
                kind: Kind::Labels,
                items: std::mem::take(&mut self.labels),
                close: Close::Full,
            });
        }
    }

    fn close_open(&mut self, close: Close) {
        if self.open.is_empty() {
            return;
        }
        self.ready.push_back(Batch {
            kind: Kind::Inferences,
            items: std::mem::take(&mut self.open),
            close,
        });
        self.unacked
            .push_back((self.open_seq, std::mem::take(&mut self.open_keys)));
        self.open_seq += 1;
        self.held_on_open = 0;
    }

    /// At the end, once no label can be held any more, the last labels go.
    fn settle(&mut self) {
        if self.finishing && self.held.is_empty() && !self.labels.is_empty() {
            self.ready.push_back(Batch {
                kind: Kind::Labels,
                items: std::mem::take(&mut self.labels),
                close: Close::End,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// One event of a test input: a label or an inference, with its key.
    #[derive(Debug, Clone, Copy)]
    struct Event {
        label: bool,
        key: Option<u8>,
    }

    /// Pushes every event (its index is the item), draining after a push
    /// when `drain` says so (always when it is empty), then finishes and
    /// drains. Returns the batches in the order sent, and the largest
    /// number of held labels and of pending keys seen after a drain.
    fn run(events: &[Event], size: usize, drain: &[bool]) -> (Vec<Batch<usize>>, usize, usize) {
        let mut order = Orderer::new(size);
        let mut sent = Vec::new();
        let (mut held, mut pending) = (0, 0);
        for (i, e) in events.iter().enumerate() {
            if e.label {
                order.push_label(e.key, i);
            } else {
                order.push_inference(e.key, i);
            }
            if drain.get(i).copied().unwrap_or(true) {
                drain_all(&mut order, &mut sent);
                held = held.max(order.held());
                pending = pending.max(order.pending());
            }
        }
        order.finish();
        drain_all(&mut order, &mut sent);
        assert!(order.is_empty(), "something left behind: {order:?}");
        (sent, held, pending)
    }

    /// Sends what is ready, one batch at a time, each acknowledged at once.
    fn drain_all(order: &mut Orderer<u8, usize>, sent: &mut Vec<Batch<usize>>) {
        while let Some(batch) = order.next_batch() {
            assert!(
                order.next_batch().is_none(),
                "a second batch before the first was answered"
            );
            sent.push(batch);
            order.acknowledged();
        }
    }

    fn kinds(batches: &[Batch<usize>]) -> Vec<(Kind, Vec<usize>)> {
        batches.iter().map(|b| (b.kind, b.items.clone())).collect()
    }

    fn inference(key: u8) -> Event {
        Event {
            label: false,
            key: Some(key),
        }
    }

    fn label(key: u8) -> Event {
        Event {
            label: true,
            key: Some(key),
        }
    }

    #[test]
    fn labels_without_a_pending_prediction_go_in_full_batches_at_once() {
        let events = [label(1), label(2), inference(3), label(4), label(5)];
        let (sent, _, _) = run(&events, 2, &[]);
        assert_eq!(
            kinds(&sent),
            vec![
                (Kind::Labels, vec![0, 1]),
                (Kind::Labels, vec![3, 4]),
                (Kind::Inferences, vec![2]),
            ]
        );
        assert_eq!(sent[2].close, Close::End);
    }

    #[test]
    fn a_label_waits_for_the_batch_of_its_prediction() {
        // Batches of 3: inference 0 is in the batch still being gathered
        // when its label (line 2) comes, so that label goes after the batch.
        let events = [inference(0), inference(1), label(0), inference(2), label(9), label(8)];
        let (sent, _, _) = run(&events, 3, &[]);
        assert_eq!(
            kinds(&sent),
            vec![(Kind::Inferences, vec![0, 1, 3]), (Kind::Labels, vec![2, 4, 5])]
        );
        assert_eq!(sent[0].close, Close::Full);
        assert_eq!(sent[1].close, Close::Full);
    }

    #[test]
    fn a_label_waits_for_a_full_batch_not_yet_sent() {
        // The inference batch is full after the second event, but not sent
        // before the label comes: the label waits for its answer.
        let events = [inference(0), inference(1), label(0), label(1), inference(2)];
        let mut order = Orderer::new(2);
        for (i, e) in events.iter().enumerate().take(3) {
            if e.label {
                order.push_label(e.key, i);
            } else {
                order.push_inference(e.key, i);
            }
        }
        assert_eq!(order.held(), 1);
        let (sent, held, _) = run(&events, 2, &[true, false, true, true, true]);
        assert_eq!(held, 0, "the drain after the label freed it");
        assert_eq!(
            kinds(&sent),
            vec![
                (Kind::Inferences, vec![0, 1]),
                (Kind::Labels, vec![2, 3]),
                (Kind::Inferences, vec![4])
            ]
        );
    }

    #[test]
    fn held_labels_reaching_the_batch_size_close_the_batch_early() {
        let events = [inference(0), label(0), label(0), inference(1), label(1)];
        let (sent, held, _) = run(&events, 2, &[]);
        assert_eq!(held, 1, "the last label waits for the last batch");
        assert_eq!(
            kinds(&sent),
            vec![
                (Kind::Inferences, vec![0]),
                (Kind::Labels, vec![1, 2]),
                (Kind::Inferences, vec![3]),
                (Kind::Labels, vec![4]),
            ]
        );
        assert_eq!(sent[0].close, Close::Held);
        assert_eq!(sent[2].close, Close::End);
        assert_eq!(sent[3].close, Close::End);
    }

    #[test]
    fn a_repeated_prediction_holds_its_label_for_the_latest_batch() {
        let events = [inference(7), inference(1), inference(7), label(7)];
        let (sent, _, _) = run(&events, 2, &[false, false, false, true]);
        assert_eq!(
            kinds(&sent),
            vec![
                (Kind::Inferences, vec![0, 1]),
                (Kind::Inferences, vec![2]),
                (Kind::Labels, vec![3])
            ]
        );
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec(
            (any::<bool>(), proptest::option::weighted(0.9, 0u8..12)).prop_map(|(label, key)| Event { label, key }),
            0..80,
        )
    }

    proptest! {
        /// For any interleaving: every event is sent exactly once; no
        /// label is sent before the batch of its prediction (the latest
        /// inference of its key before it) was acknowledged; batches are
        /// full except where a hold or the end closed them; memory stays
        /// within the stated bound; the same input gives the same batches.
        #[test]
        fn order_holds_for_any_interleaving(
            events in events(),
            size in 1usize..6,
            drain in proptest::collection::vec(any::<bool>(), 0..80),
        ) {
            for drain in [&[][..], &drain[..]] {
                let (sent, held, pending) = run(&events, size, drain);

                // Exactly once.
                let mut seen: Vec<usize> = sent.iter().flat_map(|b| b.items.iter().copied()).collect();
                seen.sort_unstable();
                prop_assert_eq!(seen, (0..events.len()).collect::<Vec<_>>());

                // Kinds kept apart.
                for b in &sent {
                    for i in &b.items {
                        prop_assert_eq!(events[*i].label, b.kind == Kind::Labels);
                    }
                }

                // A label after the batch of its prediction: batches are
                // sent one at a time, each acknowledged before the next.
                let batch_of: HashMap<usize, usize> = sent
                    .iter()
                    .enumerate()
                    .flat_map(|(n, b)| b.items.iter().map(move |i| (*i, n)))
                    .collect();
                for (i, e) in events.iter().enumerate().filter(|(_, e)| e.label) {
                    let prediction = e.key.and_then(|k| {
                        (0..i).rev().find(|j| !events[*j].label && events[*j].key == Some(k))
                    });
                    if let Some(p) = prediction {
                        prop_assert!(
                            batch_of[&p] < batch_of[&i],
                            "label {} sent in batch {}, its prediction {} in batch {}",
                            i, batch_of[&i], p, batch_of[&p]
                        );
                    }
                }

                // Full batches except at flush points: the last label
                // batch, the last inference batch, and batches closed by a
                // full hold.
                let labels: Vec<&Batch<usize>> = sent.iter().filter(|b| b.kind == Kind::Labels).collect();
                for (n, b) in labels.iter().enumerate() {
                    prop_assert!(b.items.len() == size || (n + 1 == labels.len() && b.close == Close::End));
                }
                let inferences: Vec<&Batch<usize>> = sent.iter().filter(|b| b.kind == Kind::Inferences).collect();
                for (n, b) in inferences.iter().enumerate() {
                    match b.close {
                        Close::Full => prop_assert_eq!(b.items.len(), size),
                        Close::End => prop_assert_eq!(n + 1, inferences.len()),
                        Close::Held => {}
                    }
                }

                if drain.is_empty() {
                    // Each early close needs a full hold, which the drain
                    // after it empties.
                    let early = inferences.iter().filter(|b| b.close == Close::Held).count();
                    prop_assert!(early * size <= labels.iter().map(|b| b.items.len()).sum::<usize>());
                    prop_assert!(held <= size);
                    prop_assert!(pending <= 2 * size);
                }

                // Deterministic.
                prop_assert_eq!(run(&events, size, drain).0, sent);
            }
        }
    }
}
