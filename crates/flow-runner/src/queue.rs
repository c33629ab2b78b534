//! The bounded queue in front of every processor and sink.
//!
//! Items move in batches: a producer pushes a whole `Vec` under one lock and
//! a worker takes up to a batch under one lock, so the per-item cost of a
//! hop is a move, not a lock and a wake-up. Capacity is still counted in
//! items (and, with `queue_bytes`, in payload bytes): a producer that finds
//! the queue full waits (backpressure) until a worker makes room.
//!
//! Items leave in the queue's [`Order`]: first in first out, last in first
//! out, or lowest `priority` first (first in first out among equals). LIFO
//! and priority queues hand out one item per take, so the order holds for
//! every item.
//!
//! The queue knows how many producers (upstream stages) are still running;
//! when the last one closes and the queue is drained, `take` returns `None`
//! and the stage's workers finish.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flow_core::value::{as_f64, payload_size};
use flow_core::{Expr, Item};
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

pub use crate::spec::Order;

/// How many times a producer or worker yields to the scheduler before it
/// parks: a wake-up costs microseconds, more than a batch of cheap items.
const SPINS: u32 = 4;

/// How a queue holds and hands out its items.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// At most this many items.
    pub capacity: usize,
    pub order: Order,
    /// With [`Order::Priority`]: the expression giving each item's rank.
    pub priority: Option<Expr>,
    /// At most this many bytes of payload (an item larger than this still
    /// enters an empty queue, so nothing is stuck forever).
    pub max_bytes: Option<usize>,
}

impl QueueConfig {
    /// A FIFO queue bounded by item count only.
    pub fn fifo(capacity: usize) -> Self {
        QueueConfig {
            capacity,
            order: Order::Fifo,
            priority: None,
            max_bytes: None,
        }
    }
}

/// A bounded multi-producer, multi-consumer queue of items.
pub struct Queue {
    stage: String,
    config: QueueConfig,
    state: Mutex<State>,
    /// Workers waiting for items or for the end.
    takers: Notify,
    /// Producers waiting for room.
    putters: Notify,
    /// The number of queued items, readable without the lock (progress).
    depth: AtomicUsize,
    /// Items abandoned here: queued when the run stopped, or pushed after.
    abandoned: AtomicU64,
    /// Items whose priority expression gave no number (for throttling the
    /// warning about them).
    unranked: AtomicU64,
}

struct State {
    items: Store,
    bytes: usize,
    producers: usize,
    halted: bool,
    /// Takes so far: each take's ticket, for stages that keep input order.
    tickets: u64,
    waiting_takers: usize,
    waiting_putters: usize,
    peak: usize,
    full_since: Option<Instant>,
    full_for: Duration,
    /// Between the high water mark (full) and the low one (below half).
    high_water: bool,
}

/// The items of a queue, in its order.
enum Store {
    Fifo(VecDeque<Item>),
    Lifo(Vec<Item>),
    Priority { heap: BinaryHeap<Ranked>, seq: u64 },
}

/// An item in a priority queue: lower rank first, then earlier arrival.
struct Ranked {
    rank: f64,
    seq: u64,
    item: Item,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        // BinaryHeap pops the greatest: the lowest rank, then the oldest.
        other
            .rank
            .total_cmp(&self.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Ranked {}

impl Store {
    fn new(order: Order, capacity: usize) -> Self {
        let reserve = capacity.min(4096);
        match order {
            Order::Fifo => Store::Fifo(VecDeque::with_capacity(reserve)),
            Order::Lifo => Store::Lifo(Vec::with_capacity(reserve)),
            Order::Priority => Store::Priority {
                heap: BinaryHeap::with_capacity(reserve),
                seq: 0,
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Fifo(q) => q.len(),
            Store::Lifo(v) => v.len(),
            Store::Priority { heap, .. } => heap.len(),
        }
    }

    fn push(&mut self, item: Item, rank: f64) {
        match self {
            Store::Fifo(q) => q.push_back(item),
            Store::Lifo(v) => v.push(item),
            Store::Priority { heap, seq } => {
                *seq += 1;
                heap.push(Ranked {
                    rank,
                    seq: *seq,
                    item,
                });
            }
        }
    }

    /// Moves up to `max` items into `buf` (one for LIFO and priority).
    fn take(&mut self, max: usize, buf: &mut Vec<Item>) {
        match self {
            Store::Fifo(q) => {
                let n = max.min(q.len());
                buf.extend(q.drain(..n));
            }
            Store::Lifo(v) => buf.extend(v.pop()),
            Store::Priority { heap, .. } => buf.extend(heap.pop().map(|r| r.item)),
        }
    }

    fn drain(&mut self) -> Vec<Item> {
        match self {
            Store::Fifo(q) => q.drain(..).collect(),
            Store::Lifo(v) => std::mem::take(v),
            Store::Priority { heap, .. } => heap.drain().map(|r| r.item).collect(),
        }
    }
}

/// What a queue saw over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueStats {
    pub capacity: usize,
    pub peak: usize,
    /// Total time the queue was at capacity.
    pub full_for: Duration,
    /// Items queued now.
    pub depth: usize,
}

impl Queue {
    /// A FIFO queue for `stage`'s input holding at most `capacity` items,
    /// fed by `producers` upstream stages.
    #[cfg(test)]
    pub fn new(stage: &str, capacity: usize, producers: usize) -> Self {
        Self::with_config(stage, QueueConfig::fifo(capacity), producers)
    }

    /// A queue in the order and with the bounds of `config`.
    pub fn with_config(stage: &str, config: QueueConfig, producers: usize) -> Self {
        assert!(config.capacity > 0, "validation rejects a zero capacity");
        Queue {
            stage: stage.to_string(),
            state: Mutex::new(State {
                items: Store::new(config.order, config.capacity),
                bytes: 0,
                producers,
                halted: false,
                tickets: 0,
                waiting_takers: 0,
                waiting_putters: 0,
                peak: 0,
                full_since: None,
                full_for: Duration::ZERO,
                high_water: false,
            }),
            config,
            takers: Notify::new(),
            putters: Notify::new(),
            depth: AtomicUsize::new(0),
            abandoned: AtomicU64::new(0),
            unranked: AtomicU64::new(0),
        }
    }

    /// The most items one take hands out: one for LIFO and priority queues,
    /// so their order holds item by item.
    pub fn take_limit(&self, wanted: usize) -> usize {
        match self.config.order {
            Order::Fifo => wanted,
            Order::Lifo | Order::Priority => 1,
        }
    }

    /// Moves every item of `items` into the queue, waiting for room as
    /// often as needed. Returns how long it waited (backpressure). A halted
    /// queue discards what it is given.
    pub async fn push(&self, items: &mut Vec<Item>) -> Duration {
        let mut ranks = self.ranks(items);
        let mut waited = Duration::ZERO;
        let mut spins = 0;
        while !items.is_empty() {
            if spins < SPINS {
                // Give the workers (often on this very thread) a moment to
                // make room before paying for a park and a wake-up.
                match self.try_push(items, &mut ranks, None) {
                    Step::Ready => spins = 0,
                    Step::Closed => return waited,
                    Step::Wait => {
                        spins += 1;
                        tokio::task::yield_now().await;
                    }
                }
                continue;
            }
            let mut notified = pin!(self.putters.notified());
            match self.try_push(items, &mut ranks, Some(notified.as_mut())) {
                Step::Ready => spins = 0,
                Step::Closed => return waited,
                Step::Wait => {
                    let started = Instant::now();
                    let _waiting = Waiting(self, Side::Putter);
                    notified.await;
                    waited += started.elapsed();
                }
            }
        }
        waited
    }

    /// Takes up to `max` items into `buf` (see [`Queue::take_limit`]),
    /// waiting while the queue is empty. Returns the take's ticket (takes
    /// are numbered in queue order), or `None` once the queue is finished
    /// (every producer closed and nothing left) or halted. Cancel-safe: a
    /// dropped call takes nothing.
    pub async fn take(&self, max: usize, buf: &mut Vec<Item>) -> Option<u64> {
        let mut spins = 0;
        loop {
            if spins < SPINS {
                match self.try_take(max, buf, None) {
                    Taken::Items(ticket) => return Some(ticket),
                    Taken::Closed => return None,
                    Taken::Wait => {
                        spins += 1;
                        tokio::task::yield_now().await;
                    }
                }
                continue;
            }
            let mut notified = pin!(self.takers.notified());
            match self.try_take(max, buf, Some(notified.as_mut())) {
                Taken::Items(ticket) => return Some(ticket),
                Taken::Closed => return None,
                Taken::Wait => {
                    let _waiting = Waiting(self, Side::Taker);
                    notified.await;
                }
            }
        }
    }

    /// The priority rank of each item, computed before taking the lock. An
    /// item whose expression gives no number goes last (with a warning).
    fn ranks(&self, items: &[Item]) -> VecDeque<f64> {
        let Some(expr) = self
            .config
            .priority
            .as_ref()
            .filter(|_| self.config.order == Order::Priority)
        else {
            return VecDeque::new();
        };
        items
            .iter()
            .map(|item| match expr.first(item.value.clone()) {
                Ok(Some(v)) if as_f64(&v).is_some() => as_f64(&v).unwrap_or(f64::INFINITY),
                other => {
                    let why = match other {
                        Err(e) => e.to_string(),
                        _ => "it gave no number".to_string(),
                    };
                    let n = self.unranked.fetch_add(1, Ordering::Relaxed);
                    // The first three, then at 1,024, 2,048, 4,096…: a
                    // million unranked items make a dozen lines, not a million.
                    if n < 3 || (n + 1).is_power_of_two() && n >= 1023 {
                        tracing::warn!(stage = %self.stage, "priority of an item: {why}; it goes last ({} so far)", n + 1);
                    }
                    f64::INFINITY
                }
            })
            .collect()
    }

    /// Moves what fits; with a `waiter`, registers it if nothing fits.
    fn try_push(
        &self,
        items: &mut Vec<Item>,
        ranks: &mut VecDeque<f64>,
        waiter: Option<Pin<&mut Notified<'_>>>,
    ) -> Step {
        let mut s = self.lock();
        if s.halted {
            drop(s);
            self.abandon(items.drain(..));
            return Step::Closed;
        }
        let moved = self.move_in(&mut s, items, ranks);
        if moved == 0 {
            // Full by count, or by bytes with room for more items.
            self.note_full(&mut s);
            if let Some(w) = waiter {
                s.waiting_putters += 1;
                w.enable();
            }
            return Step::Wait;
        }
        self.after_push(&mut s, !items.is_empty());
        let wake_taker = s.waiting_takers > 0;
        // Room left and other producers waiting: pass the turn on.
        let wake_putter = s.items.len() < self.config.capacity && s.waiting_putters > 0;
        drop(s);
        if wake_taker {
            self.takers.notify_one();
        }
        if wake_putter {
            self.putters.notify_one();
        }
        Step::Ready
    }

    /// Moves as many items as the bounds allow, in order; returns how many.
    fn move_in(&self, s: &mut State, items: &mut Vec<Item>, ranks: &mut VecDeque<f64>) -> usize {
        let room = self.config.capacity - s.items.len();
        let fits = match self.config.max_bytes {
            None => room.min(items.len()),
            Some(max) => {
                let mut n = 0;
                let mut bytes = s.bytes;
                for item in items.iter().take(room) {
                    let size = payload_size(&item.value);
                    // An empty queue takes any one item, however large.
                    if bytes + size > max && !(s.items.len() == 0 && n == 0) {
                        break;
                    }
                    bytes += size;
                    n += 1;
                }
                s.bytes = bytes;
                n
            }
        };
        match &mut s.items {
            Store::Fifo(q) => q.extend(items.drain(..fits)),
            store => {
                for item in items.drain(..fits) {
                    store.push(item, ranks.pop_front().unwrap_or(0.0));
                }
            }
        }
        fits
    }

    /// Takes what there is; with a `waiter`, registers it if there is none.
    fn try_take(
        &self,
        max: usize,
        buf: &mut Vec<Item>,
        waiter: Option<Pin<&mut Notified<'_>>>,
    ) -> Taken {
        let mut s = self.lock();
        if s.halted {
            return Taken::Closed;
        }
        if s.items.len() == 0 {
            if s.producers == 0 {
                return Taken::Closed;
            }
            if let Some(w) = waiter {
                s.waiting_takers += 1;
                w.enable();
            }
            return Taken::Wait;
        }
        let before = buf.len();
        s.items.take(self.take_limit(max), buf);
        if self.config.max_bytes.is_some() {
            let taken: usize = buf[before..].iter().map(|i| payload_size(&i.value)).sum();
            s.bytes = s.bytes.saturating_sub(taken);
        }
        let ticket = s.tickets;
        s.tickets += 1;
        self.after_take(&mut s);
        let wake_putter = s.waiting_putters > 0;
        // Items left and other workers idle: wake one of them.
        let wake_taker = s.items.len() > 0 && s.waiting_takers > 0;
        drop(s);
        if wake_putter {
            self.putters.notify_one();
        }
        if wake_taker {
            self.takers.notify_one();
        }
        Taken::Items(ticket)
    }

    /// One producer is done. When none is left, idle workers learn that the
    /// queue is finished once it is drained.
    pub fn close_producer(&self) {
        let mut s = self.lock();
        s.producers = s.producers.saturating_sub(1);
        let finished = s.producers == 0;
        drop(s);
        if finished {
            self.takers.notify_waiters();
        }
    }

    /// Stops the queue at once (the run is abandoning its work): waiting
    /// workers and producers return, queued items are abandoned (counted,
    /// and their sources learn they failed), and so is whatever is pushed
    /// from now on.
    pub fn halt(&self) {
        let mut s = self.lock();
        s.halted = true;
        let left = s.items.drain();
        s.bytes = 0;
        self.depth.store(0, Ordering::Relaxed);
        drop(s);
        self.abandon(left.into_iter());
        self.takers.notify_waiters();
        self.putters.notify_waiters();
    }

    /// Abandons items meant for this queue that never got in or out of it.
    pub fn abandon(&self, items: impl Iterator<Item = Item>) {
        let n = discard(items);
        self.abandoned.fetch_add(n, Ordering::Relaxed);
    }

    /// Items abandoned in (or on their way into) this queue.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Items queued now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> QueueStats {
        let s = self.lock();
        let open = s.full_since.map_or(Duration::ZERO, |t| t.elapsed());
        QueueStats {
            capacity: self.config.capacity,
            peak: s.peak,
            full_for: s.full_for + open,
            depth: s.items.len(),
        }
    }

    /// `refused`: some of the pushed items did not fit.
    fn after_push(&self, s: &mut State, refused: bool) {
        let len = s.items.len();
        self.depth.store(len, Ordering::Relaxed);
        s.peak = s.peak.max(len);
        let full = refused
            || len >= self.config.capacity
            || self.config.max_bytes.is_some_and(|m| s.bytes >= m);
        if full {
            self.note_full(s);
        }
    }

    /// The queue takes no more items (by count or by bytes) until a worker
    /// takes some.
    fn note_full(&self, s: &mut State) {
        if s.full_since.is_none() {
            s.full_since = Some(Instant::now());
            if !s.high_water {
                s.high_water = true;
                let len = s.items.len();
                tracing::debug!(stage = %self.stage, depth = len, capacity = self.config.capacity, "input queue full (high water mark): producers wait");
            }
        }
    }

    fn after_take(&self, s: &mut State) {
        let len = s.items.len();
        self.depth.store(len, Ordering::Relaxed);
        if let Some(since) = s.full_since.take() {
            s.full_for += since.elapsed();
        }
        let below_half = len < self.config.capacity.div_ceil(2)
            && self
                .config
                .max_bytes
                .is_none_or(|m| s.bytes < m.div_ceil(2));
        if s.high_water && below_half {
            s.high_water = false;
            tracing::debug!(stage = %self.stage, depth = len, capacity = self.config.capacity, "input queue below half (low water mark)");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // No user code runs under the lock but the queue's own, so a
        // poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Items thrown away unprocessed: their sources must not count them done.
/// Returns how many.
fn discard(items: impl Iterator<Item = Item>) -> u64 {
    let mut n = 0;
    for item in items {
        item.lineage.mark(flow_core::Outcome::Abandoned);
        n += 1;
    }
    n
}

/// The outcome of one attempt at a push.
enum Step {
    /// Items moved.
    Ready,
    /// The queue is halted.
    Closed,
    /// Nothing could move: wait (registered, when a waiter was given).
    Wait,
}

/// The outcome of one attempt at a take.
enum Taken {
    /// Items moved, under this ticket.
    Items(u64),
    /// The queue is finished or halted.
    Closed,
    /// Nothing to take: wait (registered, when a waiter was given).
    Wait,
}

enum Side {
    Taker,
    Putter,
}

/// Unregisters a waiter however its wait ends (woken or cancelled).
struct Waiting<'a>(&'a Queue, Side);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        match self.1 {
            Side::Taker => s.waiting_takers -= 1,
            Side::Putter => s.waiting_putters -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::value::int;
    use std::sync::Arc;

    fn items(range: std::ops::Range<i64>) -> Vec<Item> {
        range.map(|i| Item::new(int(i))).collect()
    }

    fn ints(items: &[Item]) -> Vec<i64> {
        items
            .iter()
            .map(|i| flow_core::value::as_f64(&i.value).unwrap() as i64)
            .collect()
    }

    #[tokio::test]
    async fn items_come_out_in_the_order_they_went_in() {
        let q = Queue::new("s", 10, 1);
        q.push(&mut items(0..5)).await;
        q.close_producer();
        let mut got = Vec::new();
        while q.take(2, &mut got).await.is_some() {}
        assert_eq!(ints(&got), [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn take_respects_its_maximum() {
        let q = Queue::new("s", 10, 1);
        q.push(&mut items(0..5)).await;
        let mut got = Vec::new();
        assert!(q.take(3, &mut got).await.is_some());
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait_until_a_worker_takes() {
        let q = Arc::new(Queue::new("s", 2, 1));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move {
                q.push(&mut items(0..5)).await;
                q.close_producer();
            })
        };
        // The producer can place only two items; it must be parked now.
        tokio::task::yield_now().await;
        while q.depth() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!producer.is_finished());
        assert_eq!(q.stats().peak, 2);
        let mut got = Vec::new();
        while q.take(1, &mut got).await.is_some() {
            assert!(q.depth() <= 2);
        }
        producer.await.unwrap();
        assert_eq!(ints(&got), [0, 1, 2, 3, 4]);
        assert_eq!(q.stats().peak, 2);
    }

    #[tokio::test]
    async fn queue_finishes_only_when_every_producer_closed_and_it_is_drained() {
        let q = Queue::new("s", 10, 2);
        q.push(&mut items(0..1)).await;
        q.close_producer();
        let mut got = Vec::new();
        assert!(q.take(10, &mut got).await.is_some());
        let pending = tokio::time::timeout(Duration::from_millis(20), q.take(10, &mut got)).await;
        assert!(pending.is_err(), "one producer is still open");
        q.close_producer();
        assert!(q.take(10, &mut got).await.is_none());
    }

    #[tokio::test]
    async fn idle_workers_wake_when_the_last_producer_closes() {
        let q = Arc::new(Queue::new("s", 4, 1));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.take(1, &mut Vec::new()).await.is_some() })
            })
            .collect();
        tokio::task::yield_now().await;
        q.close_producer();
        for w in workers {
            assert!(!w.await.unwrap());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_producers_and_workers_move_every_item_exactly_once() {
        let q = Arc::new(Queue::new("s", 3, 4));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                tokio::spawn(async move {
                    for chunk in 0..50 {
                        let base = p * 1000 + chunk * 10;
                        q.push(&mut items(base..base + 10)).await;
                    }
                    q.close_producer();
                })
            })
            .collect();
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while q.take(2, &mut got).await.is_some() {}
                    ints(&got)
                })
            })
            .collect();
        for p in producers {
            p.await.unwrap();
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.unwrap());
        }
        all.sort();
        let expected: Vec<i64> = (0..4).flat_map(|p| p * 1000..p * 1000 + 500).collect();
        assert_eq!(all, expected);
    }

    fn queue(order: Order, priority: Option<&str>, capacity: usize) -> Queue {
        let config = QueueConfig {
            capacity,
            order,
            priority: priority.map(|p| Expr::compile(p).unwrap()),
            max_bytes: None,
        };
        Queue::with_config("s", config, 1)
    }

    async fn drain_one_by_one(q: &Queue) -> Vec<i64> {
        q.close_producer();
        let mut got = Vec::new();
        while q.take(usize::MAX, &mut got).await.is_some() {}
        ints(&got)
    }

    #[tokio::test]
    async fn lifo_queue_returns_newest_first() {
        let q = queue(Order::Lifo, None, 10);
        q.push(&mut items(0..5)).await;
        assert_eq!(drain_one_by_one(&q).await, [4, 3, 2, 1, 0]);
    }

    #[tokio::test]
    async fn priority_queue_returns_lowest_rank_first_and_fifo_among_equals() {
        let q = queue(Order::Priority, Some(". % 3"), 10);
        q.push(&mut items(0..7)).await;
        // ranks: 0 1 2 0 1 2 0 -> the zeros in arrival order, then the ones...
        assert_eq!(drain_one_by_one(&q).await, [0, 3, 6, 1, 4, 2, 5]);
    }

    #[tokio::test]
    async fn items_without_a_numeric_priority_go_last() {
        let q = queue(Order::Priority, Some("if . == 1 then \"x\" else . end"), 10);
        q.push(&mut items(0..3)).await;
        assert_eq!(drain_one_by_one(&q).await, [0, 2, 1]);
    }

    #[tokio::test]
    async fn lifo_and_priority_queues_hand_out_one_item_per_take() {
        for order in [Order::Lifo, Order::Priority] {
            let q = queue(order, Some("."), 10);
            q.push(&mut items(0..5)).await;
            let mut got = Vec::new();
            q.take(100, &mut got).await;
            assert_eq!(got.len(), 1);
        }
    }

    #[tokio::test]
    async fn ordered_queues_keep_their_bound_and_backpressure() {
        let q = Arc::new(queue(Order::Priority, Some("-."), 3));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(&mut items(0..6)).await })
        };
        while q.depth() < 3 {
            tokio::task::yield_now().await;
        }
        assert!(!producer.is_finished());
        let mut got = Vec::new();
        while got.len() < 6 {
            q.take(1, &mut got).await;
            assert!(q.depth() <= 3);
        }
        producer.await.unwrap();
        assert_eq!(q.stats().peak, 3);
    }

    #[tokio::test]
    async fn a_byte_bound_holds_back_large_items() {
        let config = QueueConfig {
            max_bytes: Some(2500),
            ..QueueConfig::fifo(100)
        };
        let q = Arc::new(Queue::with_config("s", config, 1));
        let big = |n| Item::new(flow_core::value::bytes(vec![n; 1000]));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(&mut (0..4).map(big).collect()).await })
        };
        while q.depth() < 2 {
            tokio::task::yield_now().await;
        }
        // Two items of 1000 bytes fit in 2500; the third waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.depth(), 2);
        assert!(!producer.is_finished());
        let mut got = Vec::new();
        while got.len() < 4 {
            q.take(1, &mut got).await;
            assert!(q.depth() <= 2, "the byte bound let {} items in", q.depth());
        }
        producer.await.unwrap();
    }

    #[tokio::test]
    async fn a_queue_that_its_byte_bound_holds_back_counts_as_full() {
        let config = QueueConfig {
            max_bytes: Some(2500),
            ..QueueConfig::fifo(100)
        };
        let q = Arc::new(Queue::with_config("s", config, 1));
        let big = |n| Item::new(flow_core::value::bytes(vec![n; 1000]));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move { q.push(&mut (0..3).map(big).collect()).await })
        };
        while q.depth() < 2 {
            tokio::task::yield_now().await;
        }
        // Two of 100 places are taken, but the third item waits: full.
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.take(1, &mut Vec::new()).await;
        assert!(
            q.stats().full_for >= Duration::from_millis(20),
            "{:?}",
            q.stats()
        );
        producer.await.unwrap();
    }

    #[tokio::test]
    async fn an_item_larger_than_the_byte_bound_still_enters_an_empty_queue() {
        let config = QueueConfig {
            max_bytes: Some(10),
            ..QueueConfig::fifo(100)
        };
        let q = Queue::with_config("s", config, 1);
        q.push(&mut vec![Item::new(flow_core::value::bytes(vec![1; 50]))])
            .await;
        assert_eq!(q.depth(), 1);
    }

    #[tokio::test]
    async fn takes_are_numbered_in_queue_order() {
        let q = Queue::new("s", 10, 1);
        q.push(&mut items(0..5)).await;
        let mut got = Vec::new();
        assert_eq!(q.take(2, &mut got).await, Some(0));
        assert_eq!(q.take(2, &mut got).await, Some(1));
        assert_eq!(q.take(2, &mut got).await, Some(2));
    }

    #[tokio::test]
    async fn halting_releases_waiters_and_fails_queued_items() {
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = failed.clone();
        let lineage = flow_core::Lineage::with_hook(move |o| {
            f.store(o == flow_core::Outcome::Abandoned, Ordering::SeqCst)
        });
        let q = Queue::new("s", 1, 1);
        q.push(&mut vec![Item {
            value: int(1),
            lineage,
        }])
        .await;
        q.halt();
        assert!(failed.load(Ordering::SeqCst));
        assert!(q.take(1, &mut Vec::new()).await.is_none());
        q.push(&mut items(0..3)).await; // returns at once
    }
}
