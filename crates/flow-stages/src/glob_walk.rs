//! `read`'s globs: the `glob` crate's patterns (`*`, `?`, `[…]` within a
//! name, `**` for any number of directories), walked so that no directory
//! tree can make it loop or repeat itself.
//!
//! `**` follows symbolic links to directories, as `glob` does, but enters
//! each directory (by device and inode) at most once per place in the
//! pattern: a link back to a parent ends the descent instead of repeating
//! the tree until the kernel's limit of 40 links. The files found are
//! sorted by path and each is listed once, by device and inode, so a file
//! reached through a link or a hard link is read once, under the first of
//! its paths.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One `/`-separated part of a pattern.
enum Part {
    /// A name without wildcards (or with only escaped ones, `[*]`).
    Literal(String),
    /// A name with wildcards, matched against each entry of a directory.
    Pattern(glob::Pattern),
    /// `**`: this directory and every directory under it.
    Recursive,
}

/// A file's identity: device and inode (on Unix).
pub(crate) fn identity(meta: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// The files (not directories) that `pattern` matches, sorted, each file
/// once. An error names the directory that could not be listed.
pub(crate) fn expand(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let options = glob::MatchOptions::new();
    let (root, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (PathBuf::from("/"), rest),
        None => (PathBuf::new(), pattern),
    };
    let mut parts = Vec::new();
    for part in rest.split('/').filter(|p| !p.is_empty()) {
        parts.push(if part == "**" {
            Part::Recursive
        } else if let Some(literal) = unescape(part) {
            Part::Literal(literal)
        } else {
            let p =
                glob::Pattern::new(part).map_err(|e| format!("invalid glob {pattern:?}: {e}"))?;
            Part::Pattern(p)
        });
    }
    let mut found = Vec::new();
    // (directory, part) pairs already expanded by a `**`.
    let mut entered: HashSet<((u64, u64), usize)> = HashSet::new();
    let mut todo = vec![(root, 0usize)];
    while let Some((path, i)) = todo.pop() {
        let Some(part) = parts.get(i) else {
            found.push(path);
            continue;
        };
        match part {
            Part::Literal(name) => {
                let next = path.join(name);
                if fs::symlink_metadata(&next).is_ok() {
                    todo.push((next, i + 1));
                }
            }
            Part::Pattern(p) => {
                if !dir_of(&path).is_dir() {
                    continue;
                }
                // Pushed last to first, so the walk goes in sorted order.
                for (name, child) in list(&path, pattern)?.into_iter().rev() {
                    if p.matches_with(&name, options) {
                        todo.push((child, i + 1));
                    }
                }
            }
            Part::Recursive => {
                let Ok(meta) = fs::metadata(dir_of(&path)) else {
                    continue;
                };
                if !meta.is_dir() {
                    continue;
                }
                if let Some(id) = identity(&meta)
                    && !entered.insert((id, i))
                {
                    continue;
                }
                // Sorted, so the first path to a directory reached twice is
                // the one that sorts first.
                for (_, child) in list(&path, pattern)?.into_iter().rev() {
                    if child.is_dir() {
                        todo.push((child, i));
                    }
                }
                // `**` matches no directory at all, too: taken first.
                todo.push((path, i + 1));
            }
        }
    }
    found.sort();
    found.dedup();
    let mut seen = HashSet::new();
    let mut files = Vec::with_capacity(found.len());
    for path in found {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) => {
                if identity(&meta).is_none_or(|id| seen.insert(id)) {
                    files.push(path);
                } else {
                    tracing::debug!("{}: already read under another path", path.display());
                }
            }
            // A dangling link: kept, so that opening it says what is wrong.
            Err(_) => files.push(path),
        }
    }
    Ok(files)
}

/// The directory to list for `path` (`.` for the empty relative start).
fn dir_of(path: &Path) -> &Path {
    if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    }
}

/// The entries of a directory: (name, path). Names that are not UTF-8 are
/// skipped, as `glob` skips them.
fn list(dir: &Path, pattern: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let cannot =
        |e: std::io::Error| format!("{pattern}: cannot list {}: {e}", dir_of(dir).display());
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir_of(dir)).map_err(cannot)? {
        let entry = entry.map_err(cannot)?;
        if let Ok(name) = entry.file_name().into_string() {
            let path = dir.join(&name);
            entries.push((name, path));
        }
    }
    entries.sort();
    Ok(entries)
}

/// A pattern part with no wildcard, or only escaped ones (`[*]`, `[[]`:
/// what `glob::Pattern::escape` writes), as the name it matches.
fn unescape(part: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => return None,
            '[' => {
                let inner = chars.next()?;
                if chars.next()? != ']' || inner == '!' {
                    return None;
                }
                out.push(inner);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path, found: Vec<PathBuf>) -> Vec<String> {
        found
            .iter()
            .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
            .collect()
    }

    fn touch(dir: &Path, name: &str) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, name).unwrap();
    }

    #[test]
    fn unescape_turns_escaped_wildcards_into_names() {
        assert_eq!(unescape("plain.txt").as_deref(), Some("plain.txt"));
        let escaped = glob::Pattern::escape("we[ir]d*dir?");
        assert_eq!(unescape(&escaped).as_deref(), Some("we[ir]d*dir?"));
        assert_eq!(unescape("*.txt"), None);
        assert_eq!(unescape("[ab].txt"), None);
        assert_eq!(unescape("[!a]"), None);
    }

    #[test]
    fn patterns_match_as_glob_does() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "a.csv",
            "b.csv",
            "c.txt",
            ".h.csv",
            "sub/d.csv",
            "sub/deep/e.csv",
        ] {
            touch(d, f);
        }
        fs::create_dir(d.join("dir.csv")).unwrap();
        let base = glob::Pattern::escape(&d.display().to_string());
        let got = |p: &str| names(d, expand(&format!("{base}/{p}")).unwrap());
        assert_eq!(got("*.csv"), [".h.csv", "a.csv", "b.csv"]);
        assert_eq!(got("[ab].csv"), ["a.csv", "b.csv"]);
        assert_eq!(
            got("**/*.csv"),
            [".h.csv", "a.csv", "b.csv", "sub/d.csv", "sub/deep/e.csv"]
        );
        assert_eq!(got("sub/**/*.csv"), ["sub/d.csv", "sub/deep/e.csv"]);
        assert_eq!(got("**/deep/*"), ["sub/deep/e.csv"]);
        assert_eq!(got("nothing/*"), Vec::<String>::new());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_end_and_each_file_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "data/a.jsonl");
        touch(d, "data/sub/b.jsonl");
        // Links back up the tree, twice over: a walk that follows them
        // blindly repeats the tree 2^40 times.
        std::os::unix::fs::symlink("..", d.join("data/sub/up")).unwrap();
        std::os::unix::fs::symlink(".", d.join("data/sub/here")).unwrap();
        std::os::unix::fs::symlink(d.join("data"), d.join("data/loop")).unwrap();
        std::os::unix::fs::symlink("a.jsonl", d.join("data/same.jsonl")).unwrap();
        fs::hard_link(d.join("data/a.jsonl"), d.join("data/z-hard.jsonl")).unwrap();
        let base = glob::Pattern::escape(&d.display().to_string());
        let found = expand(&format!("{base}/data/**/*.jsonl")).unwrap();
        assert_eq!(names(d, found), ["data/a.jsonl", "data/sub/b.jsonl"]);
    }
}
