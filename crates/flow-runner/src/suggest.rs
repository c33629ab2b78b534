//! "Did you mean …?" for misspelt names.

/// Words longer than this get no suggestion: names are short, and the
/// comparison's cost grows with the length.
const MAX_WORD: usize = 64;

/// The candidate closest to `word`, if it is close enough to be a typo.
/// Distance is optimal string alignment: an insertion, deletion,
/// substitution, or swap of two adjacent letters each count as one edit.
///
/// The cost is linear in the number of candidates: a candidate whose
/// length is too far from the word's is skipped, and the others are
/// compared only within the few edits allowed.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word: Vec<char> = word.to_lowercase().chars().collect();
    if word.len() > MAX_WORD {
        return None;
    }
    // One edit in a short word, two in most, three in long ones: more would
    // suggest names that merely share a letter or two.
    let limit = match word.len() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        // Bytes bound characters from above: a cheap first filter.
        if c.len() + limit < word.len() || c.chars().count() > word.len() + limit {
            continue;
        }
        let lower: Vec<char> = c.to_lowercase().chars().collect();
        let within = best.map_or(limit, |(d, _)| d.saturating_sub(1));
        if let Some(d) = distance_within(&word, &lower, within)
            && best.is_none_or(|(b, _)| d < b)
        {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// The optimal string alignment distance between `a` and `b` if it is at
/// most `limit`: only the diagonal band `limit` wide is computed.
fn distance_within(a: &[char], b: &[char], limit: usize) -> Option<usize> {
    const FAR: usize = usize::MAX / 4;
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > limit {
        return None;
    }
    let mut before = vec![FAR; m + 1];
    let mut prev: Vec<usize> = (0..=m).map(|j| if j <= limit { j } else { FAR }).collect();
    let mut row = vec![FAR; m + 1];
    for i in 1..=n {
        row.fill(FAR);
        row[0] = if i <= limit { i } else { FAR };
        let mut least = row[0];
        for j in i.saturating_sub(limit).max(1)..=(i + limit).min(m) {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
            least = least.min(d);
        }
        if least > limit {
            return None;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    Some(prev[m]).filter(|&d| d <= limit)
}

/// Optimal string alignment distance between `a` and `b`.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// ` (did you mean "x"?)`, or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!(" (did you mean \"{c}\"?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_of_two_letters_is_one_edit() {
        assert_eq!(edit_distance("gne", "gen"), 1);
        assert_eq!(did_you_mean("gne", ["gen", "map"]), Some("gen"));
    }

    #[test]
    fn suggests_the_nearest_name() {
        assert_eq!(did_you_mean("htp", ["http", "exec"]), Some("http"));
        assert_eq!(
            did_you_mean("wokers", ["workers", "queue"]),
            Some("workers")
        );
        assert_eq!(did_you_mean("Map", ["map"]), Some("map"));
    }

    #[test]
    fn the_banded_distance_agrees_with_the_full_one() {
        let words = [
            "", "a", "ab", "ba", "abc", "acb", "map", "mpa", "gen", "generate", "genreate",
            "fitlre", "filter", "workers", "wokers", "xq", "abcdef", "badcfe",
        ];
        for a in words {
            for b in words {
                let (ca, cb): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
                let full = edit_distance(a, b);
                for limit in 0..5 {
                    let expected = (full <= limit).then_some(full);
                    assert_eq!(
                        distance_within(&ca, &cb, limit),
                        expected,
                        "{a} {b} {limit}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_words_get_no_suggestion() {
        let long = "x".repeat(100);
        assert_eq!(did_you_mean(&long, [long.as_str()]), None);
    }

    #[test]
    fn ties_go_to_the_first_candidate() {
        assert_eq!(did_you_mean("ab", ["ac", "ad"]), Some("ac"));
    }

    #[test]
    fn far_names_get_no_suggestion() {
        assert_eq!(did_you_mean("zzzzzz", ["generate", "write"]), None);
        assert_eq!(did_you_mean("htp", ["map"]), None);
        assert_eq!(hint("xq", ["generate"]), "");
    }
}
