//! "Did you mean …?" for misspelt names.

/// The candidate closest to `word`, if it is close enough to be a typo.
/// Distance is optimal string alignment: an insertion, deletion,
/// substitution, or swap of two adjacent letters each count as one edit.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    // One edit in a short word, two in most, three in long ones: more would
    // suggest names that merely share a letter or two.
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
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
    fn far_names_get_no_suggestion() {
        assert_eq!(did_you_mean("zzzzzz", ["generate", "write"]), None);
        assert_eq!(did_you_mean("htp", ["map"]), None);
        assert_eq!(hint("xq", ["generate"]), "");
    }
}
