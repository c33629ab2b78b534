//! The pipeline's graph. Its edges are computed in one place, [`edges`],
//! from each stage's inputs and `on_error`; the checks, the [`Plan`], the
//! run and `flow graph` all take them from there. Also here: each stage's
//! neighbours, and the search for a cycle.
//!
//! [`Plan`]: super::Plan

use std::collections::HashSet;

/// What happens to an item whose processing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Count it as dropped, log it, go on.
    Drop,
    /// Stop the run (exit code 1).
    Fail,
    /// Send `{"item", "error"}` to this stage.
    DeadLetter(usize),
}

/// One edge of the pipeline's graph: items of `from` go to `to`'s input
/// queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The index of the stage the items come from.
    pub from: usize,
    /// The index of the stage whose input queue they go to.
    pub to: usize,
    pub kind: EdgeKind,
}

/// Which items an [`Edge`] carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// `to` names `from` in its inputs: `from`'s output.
    Output,
    /// `to` names `from.port` in its inputs: what `from` emits to its
    /// named port of that index (in the order its type declared them).
    Port(u32),
    /// `from`'s `on_error` names `to`: `from`'s failed items.
    Error,
}

impl EdgeKind {
    /// Whether the edge carries failed items (a dead-letter route) rather
    /// than output.
    pub fn is_error(&self) -> bool {
        matches!(self, EdgeKind::Error)
    }
}

/// What a stage's edges are computed from.
pub trait Wiring {
    /// The indices of the stages it reads from, in the order listed.
    fn inputs(&self) -> &[usize];
    /// For each of [`Wiring::inputs`], the named port it reads, if any.
    fn input_ports(&self) -> &[Option<u32>];
    /// What happens to its failed items.
    fn on_error(&self) -> OnError;
}

/// The edges of the graph of `stages`, whose indices they hold, in a
/// stable order: stage by stage in file order, an edge from each of the
/// stage's inputs in the order listed, then the edge of its `on_error`
/// route, if it has one.
///
/// Everything that follows the graph takes its edges from here, so a new
/// kind of edge is added here alone.
pub fn edges<S: Wiring>(stages: &[S]) -> Vec<Edge> {
    let mut edges = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        let ports = s
            .input_ports()
            .iter()
            .copied()
            .chain(std::iter::repeat(None));
        edges.extend(s.inputs().iter().zip(ports).map(|(&from, port)| Edge {
            from,
            to: i,
            kind: port.map_or(EdgeKind::Output, EdgeKind::Port),
        }));
        if let OnError::DeadLetter(to) = s.on_error() {
            edges.push(Edge {
                from: i,
                to,
                kind: EdgeKind::Error,
            });
        }
    }
    edges
}

/// For each of `n` stages, the distinct stages that the `edges` out of it
/// lead to, in the edges' order.
pub(super) fn successors<'e>(
    n: usize,
    edges: impl IntoIterator<Item = &'e Edge>,
) -> Vec<Vec<usize>> {
    neighbours(n, edges, |e| (e.from, e.to))
}

/// For each of `n` stages, the distinct stages that the `edges` into it
/// come from, in the edges' order.
pub(super) fn predecessors<'e>(
    n: usize,
    edges: impl IntoIterator<Item = &'e Edge>,
) -> Vec<Vec<usize>> {
    neighbours(n, edges, |e| (e.to, e.from))
}

/// For each of `n` stages, the distinct other ends of its `edges`, with
/// `ends` giving an edge's stage and its other end.
fn neighbours<'e>(
    n: usize,
    edges: impl IntoIterator<Item = &'e Edge>,
    ends: impl Fn(&Edge) -> (usize, usize),
) -> Vec<Vec<usize>> {
    let mut lists = vec![Vec::new(); n];
    let mut seen = HashSet::new();
    for e in edges {
        let (at, other) = ends(e);
        if seen.insert((at, other)) {
            lists[at].push(other);
        }
    }
    lists
}

/// A cycle in the graph of `n` stages joined by `edges` (of every kind),
/// as its stages in order: the first found by a depth-first search from
/// each stage in file order, following the edges in their order.
pub(super) fn find_cycle(n: usize, edges: &[Edge]) -> Option<Vec<usize>> {
    let next = successors(n, edges);
    let mut colour = vec![0u8; n];
    let mut path = Vec::new();
    (0..n).find_map(|start| {
        if colour[start] == 0 {
            cycle_from(start, &next, &mut colour, &mut path)
        } else {
            None
        }
    })
}

/// A cycle reachable from `start`, by a depth-first search with colours
/// (0 unseen, 1 on the path, 2 done), without recursion: a chain of every
/// stage is as deep as it goes.
fn cycle_from(
    start: usize,
    next: &[Vec<usize>],
    colour: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    // The path, each node with the index of its next edge to follow.
    let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
    colour[start] = 1;
    path.push(start);
    while let Some(&mut (at, ref mut edge)) = stack.last_mut() {
        match next[at].get(*edge) {
            Some(&to) => {
                *edge += 1;
                match colour[to] {
                    1 => {
                        let first = path
                            .iter()
                            .position(|&k| k == to)
                            .expect("grey nodes are on the path");
                        return Some(path[first..].to_vec());
                    }
                    0 => {
                        colour[to] = 1;
                        path.push(to);
                        stack.push((to, 0));
                    }
                    _ => {}
                }
            }
            None => {
                colour[at] = 2;
                path.pop();
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct S(Vec<usize>, OnError);

    impl Wiring for S {
        fn inputs(&self) -> &[usize] {
            &self.0
        }

        fn input_ports(&self) -> &[Option<u32>] {
            &[]
        }

        fn on_error(&self) -> OnError {
            self.1
        }
    }

    fn edge(from: usize, to: usize, kind: EdgeKind) -> Edge {
        Edge { from, to, kind }
    }

    #[test]
    fn edges_go_stage_by_stage_inputs_first() {
        // src -> work -> out, which reads src too; work's failures go to dlq.
        let stages = [
            S(vec![], OnError::Fail),
            S(vec![0], OnError::DeadLetter(3)),
            S(vec![1, 0], OnError::Drop),
            S(vec![], OnError::Drop),
        ];
        let edges = edges(&stages);
        assert_eq!(
            edges,
            [
                edge(0, 1, EdgeKind::Output),
                edge(1, 3, EdgeKind::Error),
                edge(1, 2, EdgeKind::Output),
                edge(0, 2, EdgeKind::Output),
            ]
        );
        assert_eq!(
            successors(4, &edges),
            [vec![1, 2], vec![3, 2], vec![], vec![]]
        );
        assert_eq!(
            predecessors(4, &edges),
            [vec![], vec![0], vec![1, 0], vec![1]]
        );
        assert_eq!(find_cycle(4, &edges), None);
    }

    #[test]
    fn neighbours_are_distinct() {
        // b reads a, and a's failures go to b too.
        let stages = [S(vec![], OnError::DeadLetter(1)), S(vec![0], OnError::Drop)];
        let edges = edges(&stages);
        assert_eq!(edges.len(), 2);
        assert_eq!(successors(2, &edges), [vec![1], vec![]]);
        assert_eq!(predecessors(2, &edges), [vec![], vec![0]]);
    }

    #[test]
    fn cycles_follow_dead_letter_routes_too() {
        // a -> b -> c, and c's failures go back to b.
        let stages = [
            S(vec![], OnError::Fail),
            S(vec![0], OnError::Drop),
            S(vec![1], OnError::DeadLetter(1)),
        ];
        assert_eq!(find_cycle(3, &edges(&stages)), Some(vec![1, 2]));
    }
}
