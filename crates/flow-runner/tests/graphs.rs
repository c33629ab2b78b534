//! Random pipeline graphs: whatever the shape (fan-in, fan-out, diamonds,
//! worker pools, tiny queues, a stage that drops some items), every item
//! reaches every sink once per path that leads there from its source
//! (avoiding the dropping stage, for a dropped item), and every source item
//! gets exactly one outcome: dropped if it failed anywhere, else delivered.

mod common;

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Tag, hooks, run_pipeline, stage, tags};
use flow_core::Outcome;
use flow_runner::Status;
use proptest::prelude::*;

/// A random DAG: sources first, then processors and sinks, each reading a
/// few earlier stages. A stage nobody reads is a sink.
#[derive(Clone, Debug)]
struct Graph {
    /// Items per source.
    counts: Vec<i64>,
    /// The stages after the sources.
    stages: Vec<Node>,
    /// A processor (by index in the whole graph) that fails and drops the
    /// items whose index is a multiple of the modulus.
    fail: Option<(usize, i64)>,
}

#[derive(Clone, Debug)]
struct Node {
    /// Indices (in the whole graph) of the stages it reads.
    inputs: Vec<usize>,
    workers: usize,
    queue: usize,
    processor: bool,
}

impl Graph {
    fn len(&self) -> usize {
        self.counts.len() + self.stages.len()
    }

    fn name(&self, k: usize) -> String {
        match k < self.counts.len() {
            true => format!("s{k}"),
            false => format!("p{k}"),
        }
    }

    fn inputs(&self, k: usize) -> &[usize] {
        match k.checked_sub(self.counts.len()) {
            None => &[],
            Some(j) => &self.stages[j].inputs,
        }
    }

    fn is_read(&self, k: usize) -> bool {
        self.stages.iter().any(|n| n.inputs.contains(&k))
    }

    /// `paths[k][s]`: how many distinct paths lead from source `s` to
    /// stage `k`.
    fn paths(&self) -> Vec<Vec<u64>> {
        self.paths_through(None)
    }

    /// [`Graph::paths`] for an item that stage `blocked` drops: paths into
    /// it still count, none lead on from it.
    fn paths_through(&self, blocked: Option<usize>) -> Vec<Vec<u64>> {
        let sources = self.counts.len();
        let mut paths: Vec<Vec<u64>> = Vec::with_capacity(self.len());
        let mut onward: Vec<Vec<u64>> = Vec::with_capacity(self.len());
        // Inputs always come earlier, so index order is topological.
        for k in 0..self.len() {
            let mut to_k = vec![0u64; sources];
            if k < sources {
                to_k[k] = 1;
            }
            for &j in self.inputs(k) {
                to_k.iter_mut()
                    .zip(&onward[j])
                    .for_each(|(n, via)| *n += via);
            }
            onward.push(if blocked == Some(k) {
                vec![0; sources]
            } else {
                to_k.clone()
            });
            paths.push(to_k);
        }
        paths
    }

    /// Whether item `i` of source `s` fails (at the failing stage), given
    /// the graph's [`Graph::paths`].
    fn fails(&self, paths: &[Vec<u64>], s: usize, i: i64) -> bool {
        self.fail
            .is_some_and(|(f, m)| i % m == 0 && paths[f][s] > 0)
    }

    fn yaml(&self) -> String {
        let mut y = String::from("stages:\n");
        for (s, count) in self.counts.iter().enumerate() {
            let _ = writeln!(
                y,
                "  - name: {}\n    type: t_source\n    with: {{ id: $ID, count: {count}, hook: true, batch: {} }}",
                self.name(s),
                // Vary how items are batched between stages too.
                1 + (count % 97),
            );
        }
        for (j, node) in self.stages.iter().enumerate() {
            let k = self.counts.len() + j;
            let inputs: Vec<String> = node.inputs.iter().map(|&i| self.name(i)).collect();
            let worker = if node.processor {
                "processor"
            } else {
                "transform"
            };
            let (type_name, with) = if let Some((_, m)) = self.fail.filter(|(f, _)| *f == k) {
                ("t_fail", format!("{{ worker: {worker}, fail_mod: {m} }}"))
            } else if self.is_read(k) {
                ("t_pass", format!("{{ worker: {worker} }}"))
            } else {
                ("t_sink", format!("{{ id: $ID, worker: {worker} }}"))
            };
            let _ = writeln!(
                y,
                "  - name: {}\n    type: {type_name}\n    inputs: [{}]\n    workers: {}\n    queue: {}\n    on_error: drop\n    with: {with}",
                self.name(k),
                inputs.join(", "),
                node.workers,
                node.queue,
            );
        }
        y
    }
}

/// One stage after the sources: `(input mask, workers, queue, processor)`.
type RawNode = (u16, usize, usize, bool);

/// Builds a valid graph: a node with no chosen input reads the stage just
/// before it, and a source that nobody reads is given to a later stage.
fn graph(
    counts: Vec<i64>,
    raw: Vec<RawNode>,
    adopt: Vec<usize>,
    fail: Option<(usize, i64)>,
) -> Graph {
    let sources = counts.len();
    let mut stages: Vec<Node> = raw
        .into_iter()
        .enumerate()
        .map(|(j, (mask, workers, queue, processor))| {
            let k = sources + j;
            let mut inputs: Vec<usize> = (0..k).filter(|&i| mask & (1 << i) != 0).collect();
            if inputs.is_empty() {
                inputs.push(k - 1);
            }
            Node {
                inputs,
                workers,
                queue,
                processor,
            }
        })
        .collect();
    for (s, pick) in adopt.into_iter().enumerate().take(sources) {
        if !stages.iter().any(|n| n.inputs.contains(&s)) {
            let j = pick % stages.len();
            stages[j].inputs.push(s);
        }
    }
    let mut g = Graph {
        counts,
        stages,
        fail: None,
    };
    let processors: Vec<usize> = (sources..g.len()).filter(|&k| g.is_read(k)).collect();
    g.fail = fail
        .filter(|_| !processors.is_empty())
        .map(|(pick, m)| (processors[pick % processors.len()], m));
    g
}

fn graphs() -> impl Strategy<Value = Graph> {
    let node = (any::<u16>(), 1..=4usize, 1..=8usize, any::<bool>());
    (
        prop::collection::vec(0..=300i64, 1..=3),
        prop::collection::vec(node, 1..=6),
        prop::collection::vec(any::<usize>(), 3),
        prop::option::of((any::<usize>(), 2..=5i64)),
    )
        .prop_map(|(counts, raw, adopt, fail)| graph(counts, raw, adopt, fail))
}

/// Tells the cases apart in the shared recorders.
static CASE: AtomicUsize = AtomicUsize::new(0);

fn check(g: &Graph) -> Result<(), TestCaseError> {
    let id = format!("graph-{}", CASE.fetch_add(1, Ordering::Relaxed));
    let yaml = g.yaml();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime starts");
    let report = runtime.block_on(run_pipeline(&id, &yaml));
    let items = || {
        g.counts
            .iter()
            .enumerate()
            .flat_map(|(s, &count)| (0..count).map(move |i| (s, i)))
    };
    let paths = g.paths();
    let fails = |s: usize, i: i64| g.fails(&paths, s, i);
    let any_fails = items().any(|(s, i)| fails(s, i));
    let expected_status = if any_fails {
        Status::Partial
    } else {
        Status::Ok
    };
    prop_assert_eq!(report.status, expected_status, "{:?}\n{}", report, yaml);

    // Paths to each stage of an item that goes through, and of one that
    // the failing stage drops (into it, not on from it).
    let dropped_paths = g.paths_through(g.fail.map(|(f, _)| f));
    let paths_of = |s: usize, i: i64| {
        if fails(s, i) { &dropped_paths } else { &paths }
    };
    let sources = g.counts.len();
    for (k, here) in paths.iter().enumerate().skip(sources) {
        let name = g.name(k);
        let reached: u64 = items().map(|(s, i)| paths_of(s, i)[k][s]).sum();
        let st = stage(&report, &name);
        prop_assert_eq!(st.items_in, reached, "items into {}\n{}", name, yaml);
        if g.is_read(k) {
            let failed: u64 = match g.fail {
                Some((f, _)) if f == k => items()
                    .filter(|&(s, i)| fails(s, i))
                    .map(|(s, _)| here[s])
                    .sum(),
                _ => 0,
            };
            prop_assert_eq!(st.dropped, failed, "dropped at {}\n{}", name, yaml);
            prop_assert_eq!(
                st.items_out,
                reached - failed,
                "items out of {}\n{}",
                name,
                yaml
            );
            continue;
        }
        let mut expected: HashMap<Tag, u64> = HashMap::new();
        for (s, i) in items() {
            let n = paths_of(s, i)[k][s];
            if n > 0 {
                expected.insert((g.name(s), i), n);
            }
        }
        let mut got: HashMap<Tag, u64> = HashMap::new();
        for tag in tags(&id, &name) {
            *got.entry(tag).or_default() += 1;
        }
        prop_assert_eq!(got, expected, "items at sink {}\n{}", name, yaml);
    }

    // Every source item: exactly one outcome, the right one.
    let hooks = hooks(&id);
    let emitted: i64 = g.counts.iter().sum();
    prop_assert_eq!(hooks.len() as i64, emitted);
    for (s, i) in items() {
        let tag = (g.name(s), i);
        let expected = if fails(s, i) {
            Outcome::Dropped
        } else {
            Outcome::Delivered
        };
        prop_assert_eq!(
            hooks[&tag].as_slice(),
            &[expected],
            "hook of {:?}\n{}",
            tag,
            yaml
        );
    }
    prop_assert!(common::early(&id).is_empty(), "{:?}", common::early(&id));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_item_reaches_each_sink_once_per_path_from_its_source(g in graphs()) {
        check(&g)?;
    }
}
