//! The pipeline's graph: the search for a cycle.

/// A cycle reachable from `start`, by a depth-first search with colours
/// (0 unseen, 1 on the path, 2 done), without recursion: a chain of every
/// stage is as deep as it goes.
pub(super) fn find_cycle(
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
