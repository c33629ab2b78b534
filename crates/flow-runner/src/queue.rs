//! The bounded queue in front of every processor and sink.
//!
//! Items move in batches: a producer pushes a whole `Vec` under one lock and
//! a worker takes up to a batch under one lock, so the per-item cost of a
//! hop is a move, not a lock and a wake-up. Capacity is still counted in
//! items: a producer that finds the queue full waits (backpressure) until a
//! worker makes room.
//!
//! The queue knows how many producers (upstream stages) are still running;
//! when the last one closes and the queue is drained, `take` returns
//! `false` and the stage's workers finish.

use std::collections::VecDeque;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flow_core::Item;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// How many times a producer or worker yields to the scheduler before it
/// parks: a wake-up costs microseconds, more than a batch of cheap items.
const SPINS: u32 = 4;

/// A bounded multi-producer, multi-consumer queue of items.
pub struct Queue {
    stage: String,
    capacity: usize,
    state: Mutex<State>,
    /// Workers waiting for items or for the end.
    takers: Notify,
    /// Producers waiting for room.
    putters: Notify,
    /// The number of queued items, readable without the lock (progress).
    depth: AtomicUsize,
}

struct State {
    items: VecDeque<Item>,
    producers: usize,
    halted: bool,
    waiting_takers: usize,
    waiting_putters: usize,
    peak: usize,
    full_since: Option<Instant>,
    full_for: Duration,
    /// Between the high water mark (full) and the low one (below half).
    high_water: bool,
}

/// What a queue saw over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QueueStats {
    pub capacity: usize,
    pub peak: usize,
    /// Total time the queue was at capacity.
    pub full_for: Duration,
}

impl Queue {
    /// A queue for `stage`'s input holding at most `capacity` items, fed by
    /// `producers` upstream stages.
    pub fn new(stage: &str, capacity: usize, producers: usize) -> Self {
        assert!(capacity > 0, "validation rejects a zero capacity");
        Queue {
            stage: stage.to_string(),
            capacity,
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(4096)),
                producers,
                halted: false,
                waiting_takers: 0,
                waiting_putters: 0,
                peak: 0,
                full_since: None,
                full_for: Duration::ZERO,
                high_water: false,
            }),
            takers: Notify::new(),
            putters: Notify::new(),
            depth: AtomicUsize::new(0),
        }
    }

    /// Moves every item of `items` into the queue, in order, waiting for
    /// room as often as needed. Returns how long it waited (backpressure).
    /// A halted queue discards what it is given.
    pub async fn push(&self, items: &mut Vec<Item>) -> Duration {
        let mut waited = Duration::ZERO;
        let mut spins = 0;
        while !items.is_empty() {
            if spins < SPINS {
                // Give the workers (often on this very thread) a moment to
                // make room before paying for a park and a wake-up.
                match self.try_push(items, None) {
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
            match self.try_push(items, Some(notified.as_mut())) {
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

    /// Takes up to `max` items into `buf`, waiting while the queue is empty.
    /// Returns `false` once the queue is finished (every producer closed and
    /// nothing left) or halted. Cancel-safe: a dropped call takes nothing.
    pub async fn take(&self, max: usize, buf: &mut Vec<Item>) -> bool {
        let mut spins = 0;
        loop {
            if spins < SPINS {
                match self.try_take(max, buf, None) {
                    Step::Ready => return true,
                    Step::Closed => return false,
                    Step::Wait => {
                        spins += 1;
                        tokio::task::yield_now().await;
                    }
                }
                continue;
            }
            let mut notified = pin!(self.takers.notified());
            match self.try_take(max, buf, Some(notified.as_mut())) {
                Step::Ready => return true,
                Step::Closed => return false,
                Step::Wait => {
                    let _waiting = Waiting(self, Side::Taker);
                    notified.await;
                }
            }
        }
    }

    /// Moves what fits; with a `waiter`, registers it if nothing fits.
    fn try_push(&self, items: &mut Vec<Item>, waiter: Option<Pin<&mut Notified<'_>>>) -> Step {
        let mut s = self.lock();
        if s.halted {
            drop(s);
            discard(items.drain(..));
            return Step::Closed;
        }
        let room = self.capacity - s.items.len();
        if room == 0 {
            if let Some(w) = waiter {
                s.waiting_putters += 1;
                w.enable();
            }
            return Step::Wait;
        }
        let n = room.min(items.len());
        s.items.extend(items.drain(..n));
        self.after_push(&mut s);
        let wake_taker = s.waiting_takers > 0;
        // Room left and other producers waiting: pass the turn on.
        let wake_putter = s.items.len() < self.capacity && s.waiting_putters > 0;
        drop(s);
        if wake_taker {
            self.takers.notify_one();
        }
        if wake_putter {
            self.putters.notify_one();
        }
        Step::Ready
    }

    /// Takes what there is; with a `waiter`, registers it if there is none.
    fn try_take(
        &self,
        max: usize,
        buf: &mut Vec<Item>,
        waiter: Option<Pin<&mut Notified<'_>>>,
    ) -> Step {
        let mut s = self.lock();
        if s.halted {
            return Step::Closed;
        }
        if s.items.is_empty() {
            if s.producers == 0 {
                return Step::Closed;
            }
            if let Some(w) = waiter {
                s.waiting_takers += 1;
                w.enable();
            }
            return Step::Wait;
        }
        let n = max.min(s.items.len());
        buf.extend(s.items.drain(..n));
        self.after_take(&mut s);
        let wake_putter = s.waiting_putters > 0;
        // Items left and other workers idle: wake one of them.
        let wake_taker = !s.items.is_empty() && s.waiting_takers > 0;
        drop(s);
        if wake_putter {
            self.putters.notify_one();
        }
        if wake_taker {
            self.takers.notify_one();
        }
        Step::Ready
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

    /// Stops the queue at once (the run is stopping on an error): waiting
    /// workers and producers return, queued items are discarded as failed.
    pub fn halt(&self) {
        let mut s = self.lock();
        s.halted = true;
        let left: Vec<Item> = s.items.drain(..).collect();
        self.depth.store(0, Ordering::Relaxed);
        drop(s);
        discard(left.into_iter());
        self.takers.notify_waiters();
        self.putters.notify_waiters();
    }

    /// Items queued now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> QueueStats {
        let s = self.lock();
        let open = s.full_since.map_or(Duration::ZERO, |t| t.elapsed());
        QueueStats {
            capacity: self.capacity,
            peak: s.peak,
            full_for: s.full_for + open,
        }
    }

    fn after_push(&self, s: &mut State) {
        let len = s.items.len();
        self.depth.store(len, Ordering::Relaxed);
        s.peak = s.peak.max(len);
        if len >= self.capacity && s.full_since.is_none() {
            s.full_since = Some(Instant::now());
            if !s.high_water {
                s.high_water = true;
                tracing::debug!(stage = %self.stage, capacity = self.capacity, "input queue full (high water mark): producers wait");
            }
        }
    }

    fn after_take(&self, s: &mut State) {
        let len = s.items.len();
        self.depth.store(len, Ordering::Relaxed);
        if len < self.capacity
            && let Some(since) = s.full_since.take()
        {
            s.full_for += since.elapsed();
        }
        if s.high_water && len < self.capacity.div_ceil(2) {
            s.high_water = false;
            tracing::debug!(stage = %self.stage, depth = len, "input queue below half (low water mark)");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic never happens while the lock is held (no user code runs
        // under it), so a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Items thrown away unprocessed: their sources must not count them done.
fn discard(items: impl Iterator<Item = Item>) {
    for item in items {
        item.lineage.mark_failed();
    }
}

/// The outcome of one attempt at a push or a take.
enum Step {
    /// Items moved.
    Ready,
    /// The queue is finished or halted.
    Closed,
    /// Nothing could move: wait (registered, when a waiter was given).
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
        while q.take(2, &mut got).await {}
        assert_eq!(ints(&got), [0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn take_respects_its_maximum() {
        let q = Queue::new("s", 10, 1);
        q.push(&mut items(0..5)).await;
        let mut got = Vec::new();
        assert!(q.take(3, &mut got).await);
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
        while q.take(1, &mut got).await {
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
        assert!(q.take(10, &mut got).await);
        let pending = tokio::time::timeout(Duration::from_millis(20), q.take(10, &mut got)).await;
        assert!(pending.is_err(), "one producer is still open");
        q.close_producer();
        assert!(!q.take(10, &mut got).await);
    }

    #[tokio::test]
    async fn idle_workers_wake_when_the_last_producer_closes() {
        let q = Arc::new(Queue::new("s", 4, 1));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                tokio::spawn(async move { q.take(1, &mut Vec::new()).await })
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
                    while q.take(2, &mut got).await {}
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

    #[tokio::test]
    async fn halting_releases_waiters_and_fails_queued_items() {
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = failed.clone();
        let lineage = flow_core::Lineage::with_hook(move |o| {
            f.store(o == flow_core::Outcome::Failed, Ordering::SeqCst)
        });
        let q = Queue::new("s", 1, 1);
        q.push(&mut vec![Item {
            value: int(1),
            lineage,
        }])
        .await;
        q.halt();
        assert!(failed.load(Ordering::SeqCst));
        assert!(!q.take(1, &mut Vec::new()).await);
        q.push(&mut items(0..3)).await; // returns at once
    }
}
