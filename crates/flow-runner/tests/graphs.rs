//! Random pipeline graphs: whatever the shape (fan-in, fan-out, diamonds,
//! worker pools, tiny queues), every item reaches every sink once per path
//! that leads there from its source, and every completion hook fires once.

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
        let sources = self.counts.len();
        let mut paths: Vec<Vec<u64>> = Vec::with_capacity(self.len());
        // Inputs always come earlier, so index order is topological.
        for k in 0..self.len() {
            let mut to_k = vec![0u64; sources];
            if k < sources {
                to_k[k] = 1;
            }
            for &j in self.inputs(k) {
                to_k.iter_mut()
                    .zip(&paths[j])
                    .for_each(|(n, via)| *n += via);
            }
            paths.push(to_k);
        }
        paths
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
            let (type_name, with) = if self.is_read(k) {
                ("t_pass", format!("{{ worker: {worker} }}"))
            } else {
                ("t_sink", format!("{{ id: $ID, worker: {worker} }}"))
            };
            let _ = writeln!(
                y,
                "  - name: {}\n    type: {type_name}\n    inputs: [{}]\n    workers: {}\n    queue: {}\n    with: {with}",
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
fn graph(counts: Vec<i64>, raw: Vec<RawNode>, adopt: Vec<usize>) -> Graph {
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
    Graph { counts, stages }
}

fn graphs() -> impl Strategy<Value = Graph> {
    let node = (any::<u16>(), 1..=4usize, 1..=8usize, any::<bool>());
    (
        prop::collection::vec(0..=300i64, 1..=3),
        prop::collection::vec(node, 1..=6),
        prop::collection::vec(any::<usize>(), 3),
    )
        .prop_map(|(counts, raw, adopt)| graph(counts, raw, adopt))
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
    prop_assert_eq!(report.status, Status::Ok, "{:?}\n{}", report, yaml);
    prop_assert_eq!(report.exit_code(), 0);

    let paths = g.paths();
    let sources = g.counts.len();
    for (k, from) in paths.iter().enumerate().skip(sources) {
        let name = g.name(k);
        let reached: u64 = from.iter().zip(&g.counts).map(|(n, &c)| n * c as u64).sum();
        let s = stage(&report, &name);
        prop_assert_eq!(s.items_in, reached, "items into {}\n{}", name, yaml);
        if g.is_read(k) {
            prop_assert_eq!(s.items_out, reached, "items out of {}\n{}", name, yaml);
            continue;
        }
        let mut expected: HashMap<Tag, u64> = HashMap::new();
        for (s, (&n, &count)) in from.iter().zip(&g.counts).enumerate() {
            if n > 0 {
                for i in 0..count {
                    expected.insert((g.name(s), i), n);
                }
            }
        }
        let mut got: HashMap<Tag, u64> = HashMap::new();
        for tag in tags(&id, &name) {
            *got.entry(tag).or_default() += 1;
        }
        prop_assert_eq!(got, expected, "items at sink {}\n{}", name, yaml);
    }

    let hooks = hooks(&id);
    let emitted: i64 = g.counts.iter().sum();
    prop_assert_eq!(hooks.len() as i64, emitted);
    for (tag, outcomes) in &hooks {
        prop_assert_eq!(
            outcomes.as_slice(),
            &[Outcome::Delivered],
            "hook of {:?}",
            tag
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
