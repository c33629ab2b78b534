//! The one place that knows the YAML parser: a pipeline file becomes a
//! [`Doc`], a tree of its values with the line and column of each, read
//! from saphyr's marked events in one pass with no recursion; serde reads
//! the typed form from the tree ([`parse`]), and errors found later are
//! placed by path (`stages[2].with.expr`).
//!
//! Reading is linear in the file's size and bounded whatever the file
//! holds: nesting deeper than [`MAX_DEPTH`] levels, more than
//! [`MAX_VALUES`] values, or aliases repeating more than
//! [`MAX_ALIAS_VALUES`] values in all stop it with an error naming the
//! line, before anything recursive (serde, the stage types) sees the tree.
//! Duplicate keys are errors too.
//!
//! Plain scalars are typed by the YAML 1.2 core schema (`null`, `true`,
//! `12`, `0x1f`, `1.5e3`, `.inf`); a quoted or block scalar is a string.
//! A string field takes any scalar as its text, so `queue_bytes: 1024` and
//! `name: 2024` read as written.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

use crate::interpolate::{self, InterpolateError, Substitution};

/// The deepest nesting of mappings and sequences a pipeline file may have,
/// aliases expanded. A pipeline needs about six.
pub const MAX_DEPTH: usize = 64;

/// The most values (scalars, mappings, sequences) a pipeline file may hold.
pub const MAX_VALUES: usize = 1_000_000;

/// The most values that aliases (`*name`) may repeat in all: enough to
/// share a block of options between stages, not for an alias bomb.
pub const MAX_ALIAS_VALUES: u64 = 100_000;

/// A map with more entries than this gets a hash index for lookups and
/// duplicate checks.
const INDEXED: usize = 16;

/// A line and column, both counted from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A position as stored in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct At {
    line: u32,
    column: u32,
}

impl At {
    fn of(marker: &saphyr_parser::Marker) -> Self {
        At {
            line: clamp(marker.line()),
            column: clamp(marker.col() + 1),
        }
    }

    fn pos(self) -> Pos {
        Pos {
            line: self.line as usize,
            column: self.column as usize,
        }
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

const NONE: u32 = u32::MAX;

struct Node {
    at: At,
    /// The container this node was written in (`NONE` for the root).
    parent: u32,
    /// Its index in the parent sequence, or the index of its entry in the
    /// parent map.
    slot: u32,
    is_key: bool,
    /// Levels of nesting in the node, aliases expanded.
    height: u16,
    /// Values in the node once aliases are expanded (0 while a container is
    /// still open); bounded by [`MAX_VALUES`] and [`MAX_ALIAS_VALUES`].
    size: u32,
    kind: Kind,
}

enum Kind {
    Scalar(Scalar),
    Seq(Vec<u32>),
    Map(Map),
    /// `*name`: the node the anchor named.
    Alias(u32),
}

struct Scalar {
    text: Box<str>,
    style: ScalarStyle,
    tag: Option<CoreTag>,
    one_line: bool,
    /// Typed by the core schema (a plain scalar not made a string by a
    /// `${…}` inside it).
    typed: bool,
    /// The text as written and its substitutions, when `${…}` changed it.
    written: Option<Box<(Box<str>, Vec<Substitution>)>>,
}

#[derive(Default)]
struct Map {
    entries: Vec<(u32, u32)>,
    /// Key text to entry index, for maps of more than [`INDEXED`] entries
    /// (boxed: most maps have none, and every node is as big as a map).
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Box<str>, u32>>>,
}

/// The tags of the core schema; `!` and `!!str` make a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CoreTag {
    Str,
    Int,
    Float,
    Bool,
    Null,
    Seq,
    Map,
}

/// Why a file could not be read into a tree: where, and the node it was
/// reading (for the stage and key), if any.
#[derive(Clone, Debug)]
pub struct Failure {
    pub pos: Pos,
    /// The path of the value it concerns, as [`Doc::path_of`] writes it.
    pub path: Option<String>,
    pub message: String,
}

/// Stand-ins for the braces of a `${…}` while the file is parsed: YAML
/// does not allow `{` and `}` in a plain scalar inside a flow collection
/// (`with: { count: ${N} }`), and a reference must read the same there as
/// anywhere. One character for one, so lines and columns do not move;
/// they are put back in every scalar. A file holding either character
/// itself is parsed as it is.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// `text` with the braces of every `${…}` replaced by [`OPEN`] and
/// [`CLOSE`] (only the `{` of one that is malformed or not closed on its
/// line), if it has any.
fn protect(text: &str) -> Option<String> {
    if !text.contains("${") || text.contains([OPEN, CLOSE]) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let body = &rest[i + 2..];
        let line = &body[..body.find('\n').unwrap_or(body.len())];
        out.push_str(&rest[..i + 1]);
        match reference_end(line) {
            Some(close) => {
                out.push(OPEN);
                out.push_str(&body[..close]);
                out.push(CLOSE);
                rest = &body[close + 1..];
            }
            // Malformed: its `{` alone, so that the reference's own
            // error is reported rather than a YAML one.
            None => {
                out.push(OPEN);
                rest = body;
            }
        }
    }
    out.push_str(rest);
    Some(out)
}

/// In the text after a `${`, where the `}` closing a well-formed reference
/// (`NAME}`, `NAME:-default}`, `NAME:?message}`) is.
fn reference_end(body: &str) -> Option<usize> {
    let name = body
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .unwrap_or(body.len());
    if !body.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    let after = &body[name..];
    if after.starts_with('}') {
        return Some(name);
    }
    if after.starts_with(":-") || after.starts_with(":?") {
        return after.find('}').map(|end| name + end);
    }
    None
}

/// A pipeline file as a tree of values with their positions.
pub struct Doc<'t> {
    /// The text parsed (with [`OPEN`] and [`CLOSE`] when `protected`).
    text: std::borrow::Cow<'t, str>,
    protected: bool,
    nodes: Vec<Node>,
    root: u32,
    /// Byte offsets of line starts, computed when first needed.
    lines: OnceCell<Vec<usize>>,
    failure: Option<Failure>,
    /// Repeated keys: (the repeat, the first).
    duplicates: Vec<(u32, u32)>,
    /// Keys whose entries [`parse`] skips: unknown keys, reported already.
    hidden: std::collections::HashSet<u32>,
    /// Keys [`parse`] reads as another: a misspelt required key, reported
    /// already, read as the key it was meant to be.
    renamed: HashMap<u32, &'static str>,
}

struct Frame {
    id: u32,
    /// For a map: the key waiting for its value.
    key: Option<u32>,
}

impl<'t> Doc<'t> {
    /// Reads `text`. A file that is not YAML, or breaks a bound, yields
    /// what was read before the problem and the [`Doc::failure`].
    pub fn read(text: &'t str) -> Self {
        let protected = protect(text);
        let source: &str = protected.as_deref().unwrap_or(text);
        let mut doc = Doc {
            text: std::borrow::Cow::Borrowed(""),
            protected: protected.is_some(),
            nodes: Vec::new(),
            root: NONE,
            lines: OnceCell::new(),
            failure: None,
            duplicates: Vec::new(),
            hidden: Default::default(),
            renamed: HashMap::new(),
        };
        let mut stack: Vec<Frame> = Vec::new();
        let mut anchors: HashMap<usize, u32> = HashMap::new();
        let mut documents = 0;
        let mut aliased: u64 = 0;
        for event in Parser::new_from_str(source) {
            let (event, span) = match event {
                Ok(event) => event,
                Err(e) => {
                    // Where the text stopped being YAML says more than the
                    // value it was in.
                    let at = At::of(e.marker());
                    doc.fail(at, None, format!("invalid YAML: {}", e.info()));
                    break;
                }
            };
            let at = At::of(&span.start);
            let map_start = matches!(event, Event::MappingStart(..));
            let result = match event {
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        Err((
                            None,
                            "a second YAML document starts here; a pipeline file holds one"
                                .to_string(),
                        ))
                    } else {
                        Ok(())
                    }
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(frame) = stack.pop() {
                        doc.close(frame.id);
                    }
                    Ok(())
                }
                Event::Scalar(value, style, anchor, tag) => {
                    let tag = tag.map(|t| core_tag(&t));
                    doc.add_scalar(&mut stack, at, &span, value.as_ref(), style, tag)
                        .map(|id| {
                            if anchor > 0 {
                                anchors.insert(anchor, id);
                            }
                        })
                }
                Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                    let tag = tag.map(|t| core_tag(&t));
                    doc.add_container(&mut stack, at, map_start, tag).map(|id| {
                        if anchor > 0 {
                            anchors.insert(anchor, id);
                        }
                    })
                }
                Event::Alias(anchor) => match anchors.get(&anchor) {
                    None => Err((None, "an alias to an unknown anchor".to_string())),
                    Some(&target) => doc.add_alias(&mut stack, at, target, &mut aliased),
                },
                _ => Ok(()),
            };
            if let Err((node, message)) = result {
                let node = node.or(stack.last().map(|f| f.id));
                doc.fail(at, node, message);
                break;
            }
            if doc.nodes.len() > MAX_VALUES {
                let node = stack.last().map(|f| f.id);
                let message = format!(
                    "more than {MAX_VALUES} values; a pipeline file may hold at most {MAX_VALUES}"
                );
                doc.fail(at, node, message);
                break;
            }
        }
        doc.text = match protected {
            Some(p) => std::borrow::Cow::Owned(p),
            None => std::borrow::Cow::Borrowed(text),
        };
        if doc.root == NONE {
            // An empty file: a null document.
            doc.root = doc.push(Node {
                at: At { line: 1, column: 1 },
                parent: NONE,
                slot: 0,
                is_key: false,
                size: 1,
                height: 0,
                kind: Kind::Scalar(Scalar {
                    text: "".into(),
                    style: ScalarStyle::Plain,
                    tag: None,
                    one_line: true,
                    typed: true,
                    written: None,
                }),
            });
        }
        doc
    }

    fn fail(&mut self, at: At, node: Option<u32>, message: String) {
        let path = node.map(|id| self.path_of(id));
        self.failure = Some(Failure {
            pos: at.pos(),
            path,
            message,
        });
    }

    fn push(&mut self, node: Node) -> u32 {
        let id = clamp(self.nodes.len());
        self.nodes.push(node);
        id
    }

    /// Adds a node under the innermost open container (as a key or value
    /// of a map, an element of a sequence), or as the root.
    fn attach(&mut self, stack: &mut [Frame], mut node: Node) -> u32 {
        let id = clamp(self.nodes.len());
        match stack.last_mut() {
            None => {
                self.root = id;
                node.parent = NONE;
            }
            Some(frame) => {
                node.parent = frame.id;
                let parent = &mut self.nodes[frame.id as usize].kind;
                match parent {
                    Kind::Seq(items) => {
                        node.slot = clamp(items.len());
                        items.push(id);
                    }
                    Kind::Map(map) => match frame.key.take() {
                        None => {
                            node.is_key = true;
                            node.slot = clamp(map.entries.len());
                            frame.key = Some(id);
                        }
                        Some(key) => {
                            node.slot = clamp(map.entries.len());
                            map.entries.push((key, id));
                        }
                    },
                    _ => {}
                }
            }
        }
        self.nodes.push(node);
        if self.nodes[id as usize].is_key {
            self.check_duplicate(id);
        }
        id
    }

    /// Records a key that its map has already.
    fn check_duplicate(&mut self, key: u32) {
        let Some(text) = self.key_text(key).map(Box::<str>::from) else {
            return;
        };
        let parent = self.nodes[key as usize].parent as usize;
        let slot = self.nodes[key as usize].slot;
        let Kind::Map(map) = &self.nodes[parent].kind else {
            return;
        };
        if map.index.is_none() && map.entries.len() < INDEXED {
            let first = map
                .entries
                .iter()
                .map(|&(k, _)| k)
                .find(|&k| self.key_text(k) == Some(&*text));
            if let Some(first) = first {
                self.duplicates.push((key, first));
            }
            return;
        }
        let built = map.index.is_none().then(|| {
            let mut index: HashMap<Box<str>, u32> = HashMap::with_capacity(map.entries.len() * 2);
            for (i, &(k, _)) in map.entries.iter().enumerate() {
                if let Some(t) = self.key_text(k) {
                    index.entry(t.into()).or_insert(clamp(i));
                }
            }
            index
        });
        let Kind::Map(map) = &mut self.nodes[parent].kind else {
            return;
        };
        if let Some(built) = built {
            map.index = Some(Box::new(built));
        }
        let index = map.index.as_mut().expect("built above");
        match index.get(&text) {
            Some(&entry) => {
                let first = map.entries[entry as usize].0;
                self.duplicates.push((key, first));
            }
            None => {
                index.insert(text, slot);
            }
        }
    }

    fn add_scalar(
        &mut self,
        stack: &mut [Frame],
        at: At,
        span: &Span,
        text: &str,
        style: ScalarStyle,
        tag: Option<Result<CoreTag, String>>,
    ) -> Result<u32, (Option<u32>, String)> {
        // Attached first, so that a bad tag is reported with its key.
        let (tag, bad) = match tag.transpose() {
            Ok(Some(t @ (CoreTag::Seq | CoreTag::Map))) => {
                let t = format!("{t:?}").to_lowercase();
                (None, Some(format!("a scalar tagged `!!{t}`")))
            }
            Ok(tag) => (tag, None),
            Err(message) => (None, Some(message)),
        };
        let text: Box<str> = if self.protected && text.contains([OPEN, CLOSE]) {
            text.replace(OPEN, "{").replace(CLOSE, "}").into()
        } else {
            text.into()
        };
        let node = Node {
            at,
            parent: NONE,
            slot: 0,
            is_key: false,
            size: 1,
            height: 0,
            kind: Kind::Scalar(Scalar {
                text,
                style,
                tag,
                one_line: span.start.line() == span.end.line(),
                typed: style == ScalarStyle::Plain,
                written: None,
            }),
        };
        let id = self.attach(stack, node);
        match bad {
            Some(message) => Err((Some(id), message)),
            None => Ok(id),
        }
    }

    fn add_container(
        &mut self,
        stack: &mut Vec<Frame>,
        at: At,
        map: bool,
        tag: Option<Result<CoreTag, String>>,
    ) -> Result<u32, (Option<u32>, String)> {
        let bad = match tag.transpose() {
            Err(message) => Some(message),
            Ok(None) => None,
            Ok(Some(CoreTag::Map)) if map => None,
            Ok(Some(CoreTag::Seq)) if !map => None,
            Ok(Some(t)) => Some(format!(
                "a {} tagged `!!{}`",
                if map { "map" } else { "sequence" },
                format!("{t:?}").to_lowercase()
            )),
        };
        let kind = if map {
            Kind::Map(Map::default())
        } else {
            Kind::Seq(Vec::new())
        };
        let node = Node {
            at,
            parent: NONE,
            slot: 0,
            is_key: false,
            size: 0,
            height: 0,
            kind,
        };
        let id = self.attach(stack, node);
        if let Some(message) = bad {
            return Err((Some(id), message));
        }
        if stack.len() + 1 > MAX_DEPTH {
            return Err((
                Some(id),
                format!(
                    "more than {MAX_DEPTH} levels of nesting; a pipeline file may nest at most {MAX_DEPTH}"
                ),
            ));
        }
        stack.push(Frame { id, key: None });
        Ok(id)
    }

    fn add_alias(
        &mut self,
        stack: &mut [Frame],
        at: At,
        target: u32,
        aliased: &mut u64,
    ) -> Result<(), (Option<u32>, String)> {
        let t = &self.nodes[target as usize];
        let (size, height) = (t.size, t.height);
        let node = Node {
            at,
            parent: NONE,
            slot: 0,
            is_key: false,
            size,
            height,
            kind: Kind::Alias(target),
        };
        let id = self.attach(stack, node);
        if size == 0 {
            return Err((
                Some(id),
                "an alias inside the value its anchor names (it would never end)".to_string(),
            ));
        }
        if stack.len() + height as usize > MAX_DEPTH {
            return Err((
                Some(id),
                format!(
                    "this alias nests its value more than {MAX_DEPTH} levels deep; a pipeline file may nest at most {MAX_DEPTH}"
                ),
            ));
        }
        *aliased = aliased.saturating_add(u64::from(size));
        if *aliased > MAX_ALIAS_VALUES {
            return Err((
                Some(id),
                format!(
                    "aliases repeat more than {MAX_ALIAS_VALUES} values in all; a pipeline file may repeat at most {MAX_ALIAS_VALUES}"
                ),
            ));
        }
        Ok(())
    }

    /// Sets a finished container's size and height from its children's.
    fn close(&mut self, id: u32) {
        let (mut size, mut height) = (1u32, 0u16);
        let mut add = |child: &Node| {
            size = size.saturating_add(child.size);
            height = height.max(child.height);
        };
        match &self.nodes[id as usize].kind {
            Kind::Seq(items) => items.iter().for_each(|&c| add(&self.nodes[c as usize])),
            Kind::Map(map) => map.entries.iter().for_each(|&(k, v)| {
                add(&self.nodes[k as usize]);
                add(&self.nodes[v as usize]);
            }),
            _ => {}
        }
        let node = &mut self.nodes[id as usize];
        node.size = size;
        node.height = height.saturating_add(1);
    }

    /// Why the file could not be read whole, if it could not.
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Repeated keys in maps, in file order: where each repeat is, its
    /// map's path, the key, and the line of the first.
    pub fn duplicates(&self) -> Vec<(Pos, String, String, usize)> {
        let mut found: Vec<_> = self
            .duplicates
            .iter()
            .map(|&(key, first)| {
                let node = &self.nodes[key as usize];
                let text = self.key_text(key).unwrap_or_default().to_string();
                let map = self.path_of(node.parent);
                let line = self.nodes[first as usize].at.line as usize;
                (node.at.pos(), map, text, line)
            })
            .collect();
        found.sort_by_key(|d| d.0);
        found
    }

    /// The number of values in the file, aliases expanded.
    pub fn size(&self) -> u64 {
        self.nodes
            .get(self.root as usize)
            .map_or(0, |n| u64::from(n.size))
    }

    /// Replaces `${…}` in every scalar value (never a key) with `env`;
    /// returns the references that failed, with their positions and paths.
    pub fn interpolate(&mut self, env: impl Fn(&str) -> Option<String>) -> Vec<Failure> {
        let mut failed = Vec::new();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node.is_key {
                continue;
            }
            let Kind::Scalar(scalar) = &mut node.kind else {
                continue;
            };
            match interpolate::expand(&scalar.text, &env) {
                Ok(None) => {}
                Ok(Some(expanded)) => {
                    scalar.typed &= expanded.whole;
                    let written = std::mem::replace(&mut scalar.text, expanded.text.into());
                    scalar.written = Some(Box::new((written, expanded.substitutions)));
                }
                Err(InterpolateError { offset, message }) => {
                    let id = clamp(i);
                    failed.push(Failure {
                        pos: self.inside_node(id, offset),
                        path: Some(self.path_of(id)),
                        message,
                    });
                }
            }
        }
        failed
    }

    /// The node at `path` (`stages[2].with.expr`), following aliases on the
    /// way. A key holding `.` or `[` is found too.
    fn find(&self, path: &str) -> Option<u32> {
        let mut id = self.root;
        let mut rest = path;
        loop {
            if rest.is_empty() {
                return Some(id);
            }
            id = self.deref(id);
            match &self.nodes[id as usize].kind {
                Kind::Seq(items) => {
                    let inner = rest.strip_prefix('[')?;
                    let close = inner.find(']')?;
                    let i: usize = inner[..close].parse().ok()?;
                    id = *items.get(i)?;
                    rest = &inner[close + 1..];
                }
                Kind::Map(map) => {
                    if id != self.root || rest.starts_with('.') {
                        rest = rest.strip_prefix('.')?;
                    }
                    // The rest as one key, else the shortest key that is
                    // in the map (a longer one when a key holds a `.` or
                    // a `[`), trying a bounded number of them.
                    let ends = std::iter::once(rest.len()).chain(
                        rest.match_indices(['.', '['])
                            .map(|(i, _)| i)
                            .take(MAX_DEPTH),
                    );
                    let (value, len) = ends
                        .filter(|&end| end > 0)
                        .find_map(|end| self.lookup(map, &rest[..end]).map(|v| (v, end)))?;
                    id = value;
                    rest = &rest[len..];
                }
                _ => return None,
            }
        }
    }

    fn lookup(&self, map: &Map, key: &str) -> Option<u32> {
        let found = match &map.index {
            Some(index) => index.get(key).map(|&e| map.entries[e as usize].1),
            None => map
                .entries
                .iter()
                .find(|&&(k, _)| self.key_text(k) == Some(key))
                .map(|&(_, v)| v),
        };
        // A key read as another (see `rename`) is found by that name too.
        found.or_else(|| {
            if self.renamed.is_empty() {
                return None;
            }
            map.entries
                .iter()
                .find(|&&(k, _)| self.renamed.get(&k) == Some(&key))
                .map(|&(_, v)| v)
        })
    }

    fn deref(&self, mut id: u32) -> u32 {
        while let Kind::Alias(target) = self.nodes[id as usize].kind {
            id = target;
        }
        id
    }

    fn key_text(&self, key: u32) -> Option<&str> {
        scalar_text(&self.nodes, &self.nodes[key as usize])
    }

    /// The path of a node, as serde and the checks write it:
    /// `stages[2].with.expr`.
    pub fn path_of(&self, id: u32) -> String {
        let mut parts = Vec::new();
        let mut id = id;
        while id != NONE {
            let node = &self.nodes[id as usize];
            if node.parent == NONE {
                break;
            }
            match &self.nodes[node.parent as usize].kind {
                Kind::Seq(_) => parts.push(format!("[{}]", node.slot)),
                Kind::Map(map) => {
                    let key = match map.entries.get(node.slot as usize) {
                        Some(&(k, _)) if !node.is_key => k,
                        _ => id,
                    };
                    let text = self.key_text(key).unwrap_or("?");
                    parts.push(format!(".{text}"));
                }
                _ => {}
            }
            id = node.parent;
        }
        let mut path: String = parts.into_iter().rev().collect();
        if path.starts_with('.') {
            path.remove(0);
        }
        path
    }

    /// Where the value at `path` starts.
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.find(path).map(|id| self.nodes[id as usize].at.pos())
    }

    /// Where the key of the map entry at `path` starts (the value's
    /// position for a list element).
    pub fn key(&self, path: &str) -> Option<Pos> {
        let id = self.find(path)?;
        let node = &self.nodes[id as usize];
        if node.parent != NONE
            && let Kind::Map(map) = &self.nodes[node.parent as usize].kind
            && let Some(&(k, v)) = map.entries.get(node.slot as usize)
            && v == id
        {
            return Some(self.nodes[k as usize].at.pos());
        }
        Some(node.at.pos())
    }

    /// The number of elements or entries of the sequence or map at `path`.
    pub fn len(&self, path: &str) -> Option<usize> {
        let id = self.deref(self.find(path)?);
        match &self.nodes[id as usize].kind {
            Kind::Seq(items) => Some(items.len()),
            Kind::Map(map) => Some(map.entries.len()),
            _ => None,
        }
    }

    /// The keys (those that are scalars) of the map at `path`, in order;
    /// none if it is not a map.
    pub fn keys(&self, path: &str) -> Vec<&str> {
        let Some(id) = self.find(path).map(|id| self.deref(id)) else {
            return Vec::new();
        };
        match &self.nodes[id as usize].kind {
            Kind::Map(map) => map
                .entries
                .iter()
                .filter_map(|&(k, _)| self.key_text(k))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Makes [`parse`] skip the entry `key` of the map at `path`: a key
    /// reported as unknown already, so that the rest is read and checked.
    /// Whether it was there to hide, and was not hidden already.
    pub fn hide(&mut self, path: &str, key: &str) -> bool {
        match self.key_node(path, key) {
            Some(k) => self.hidden.insert(k),
            None => false,
        }
    }

    /// Makes [`parse`] read the entry `key` of the map at `path` as `to`: a
    /// misspelt key reported already, read as the one it was meant to be.
    pub fn rename(&mut self, path: &str, key: &str, to: &'static str) {
        if let Some(k) = self.key_node(path, key) {
            self.renamed.insert(k, to);
        }
    }

    /// The node of the key `key` of the map at `path`.
    fn key_node(&self, path: &str, key: &str) -> Option<u32> {
        let id = self.deref(self.find(path)?);
        let Kind::Map(map) = &self.nodes[id as usize].kind else {
            return None;
        };
        let entry = match &map.index {
            Some(index) => index.get(key).map(|&e| map.entries[e as usize]),
            None => map
                .entries
                .iter()
                .find(|&&(k, _)| self.key_text(k) == Some(key))
                .copied(),
        };
        entry.map(|(k, _)| k)
    }

    /// Whether the value at `path` is a quoted scalar.
    pub fn quoted(&self, path: &str) -> bool {
        self.find(path).is_some_and(|id| {
            matches!(
                &self.nodes[self.deref(id) as usize].kind,
                Kind::Scalar(Scalar {
                    style: ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted,
                    ..
                })
            )
        })
    }

    /// The text of the scalar at `path`.
    pub fn text(&self, path: &str) -> Option<&str> {
        let id = self.deref(self.find(path)?);
        match &self.nodes[id as usize].kind {
            Kind::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    /// Where the character at byte `offset` of the text of the scalar at
    /// `path` sits in the file (an error inside an expression): exact for a
    /// one-line plain or quoted scalar, escapes counted as written, and for
    /// a literal (`|`) block; inside the value of a `${…}`, its `$`; else
    /// the value's position.
    pub fn inside(&self, path: &str, offset: usize) -> Option<Pos> {
        let id = self.find(path)?;
        let offset = match &self.nodes[self.deref(id) as usize].kind {
            Kind::Scalar(Scalar {
                written: Some(w), ..
            }) => interpolate::written_offset(&w.1, offset),
            _ => offset,
        };
        Some(self.inside_node(id, offset))
    }

    /// [`Doc::inside`] for a node, `offset` being in its text as written.
    fn inside_node(&self, id: u32, offset: usize) -> Pos {
        let node = &self.nodes[id as usize];
        let start = node.at.pos();
        let Kind::Scalar(scalar) = &self.nodes[self.deref(id) as usize].kind else {
            return start;
        };
        if self.deref(id) != id {
            return start;
        }
        let text: &str = match &scalar.written {
            Some(w) => &w.0,
            None => &scalar.text,
        };
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let at = match scalar.style {
            ScalarStyle::Plain if scalar.one_line => Some(Pos {
                line: start.line,
                column: start.column + before.chars().count(),
            }),
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted if scalar.one_line => {
                self.inside_quotes(start, scalar.style, before.chars().count())
            }
            ScalarStyle::Literal => Some(inside_literal(start, text, before)),
            _ => None,
        };
        at.unwrap_or(start)
    }

    /// The column of the `chars`-th character of a quoted scalar's text
    /// starting at `start` (its opening quote), counting each escape
    /// (`''`, `\"`, `\u00e9`) as the characters written.
    fn inside_quotes(&self, start: Pos, style: ScalarStyle, chars: usize) -> Option<Pos> {
        let lines = self.lines.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let from = *lines.get(start.line.checked_sub(1)?)?;
        let to = lines.get(start.line).map_or(self.text.len(), |&e| e);
        let line = &self.text[from..to];
        let mut written = line.chars().skip(start.column);
        let mut column = start.column + 1;
        for _ in 0..chars {
            let width = match (style, written.next()?) {
                (ScalarStyle::SingleQuoted, '\'') => 2,
                (ScalarStyle::DoubleQuoted, '\\') => match written.clone().next()? {
                    'x' => 4,
                    'u' => 6,
                    'U' => 10,
                    _ => 2,
                },
                _ => 1,
            };
            for _ in 1..width {
                written.next();
            }
            column += width;
        }
        Some(Pos {
            line: start.line,
            column,
        })
    }
}

fn scalar_text<'n>(nodes: &'n [Node], node: &'n Node) -> Option<&'n str> {
    let node = match node.kind {
        Kind::Alias(target) => &nodes[target as usize],
        _ => node,
    };
    match &node.kind {
        Kind::Scalar(s) => Some(&s.text),
        _ => None,
    }
}

fn core_tag(tag: &Tag) -> Result<CoreTag, String> {
    if tag.is_yaml_core_schema() {
        return match tag.suffix.as_str() {
            "str" => Ok(CoreTag::Str),
            "int" => Ok(CoreTag::Int),
            "float" => Ok(CoreTag::Float),
            "bool" => Ok(CoreTag::Bool),
            "null" => Ok(CoreTag::Null),
            "seq" => Ok(CoreTag::Seq),
            "map" => Ok(CoreTag::Map),
            other => Err(format!("unsupported tag `!!{other}`")),
        };
    }
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(CoreTag::Str);
    }
    Err(format!(
        "unsupported tag `{}{}`; a pipeline file uses plain YAML (tags of the core schema only)",
        tag.handle, tag.suffix
    ))
}

/// In a literal block, whose text starts at `start` (its first non-empty
/// line), the position of the end of `before`: every line keeps the block's
/// indentation, and the text's leading newlines are the empty lines above
/// `start`.
fn inside_literal(start: Pos, text: &str, before: &str) -> Pos {
    let leading = text.len() - text.trim_start_matches('\n').len();
    let newlines = before.matches('\n').count();
    if newlines < leading {
        return start;
    }
    let last = before.rsplit('\n').next().unwrap_or_default();
    Pos {
        line: start.line + newlines - leading,
        column: start.column + last.chars().count(),
    }
}

// Typed reading.

/// A parse failure: the path serde was at (`stages[0].workers`), the
/// message, and where the value at that path is.
#[derive(Debug)]
pub struct ParseError {
    pub path: String,
    pub message: String,
    pub pos: Option<Pos>,
}

/// Deserialises a whole document into `T`.
pub fn parse<T: DeserializeOwned>(doc: &Doc) -> Result<T, ParseError> {
    let de = De {
        doc,
        id: doc.deref(doc.root),
    };
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = match e.path().to_string() {
            p if p == "." => String::new(),
            p => p,
        };
        let message = e.into_inner().0;
        let pos = doc.value(&path);
        ParseError { path, message, pos }
    })
}

/// An error reading the tree into a type.
#[derive(Debug)]
pub struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// A scalar resolved by the core schema.
enum Resolved<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    U128(u128),
    I128(i128),
    F64(f64),
    Str(&'a str),
}

impl Resolved<'_> {
    fn invalid_type(&self, exp: &dyn de::Expected) -> DeError {
        let u = match *self {
            Resolved::Null => Unexpected::Unit,
            Resolved::Bool(b) => Unexpected::Bool(b),
            Resolved::U64(v) => Unexpected::Unsigned(v),
            Resolved::I64(v) => Unexpected::Signed(v),
            Resolved::U128(v) => {
                return de::Error::invalid_type(Unexpected::Other(&format!("integer `{v}`")), exp);
            }
            Resolved::I128(v) => {
                return de::Error::invalid_type(Unexpected::Other(&format!("integer `{v}`")), exp);
            }
            Resolved::F64(v) => Unexpected::Float(v),
            Resolved::Str(s) => Unexpected::Str(s),
        };
        de::Error::invalid_type(u, exp)
    }
}

/// The core schema's reading of a plain scalar (as serde_yaml reads it).
fn resolve_plain(v: &str) -> Resolved<'_> {
    if v.is_empty() || matches!(v, "null" | "Null" | "NULL" | "~") {
        return Resolved::Null;
    }
    match v {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        _ => {}
    }
    if let Some(n) = parse_unsigned(v, u64::from_str_radix) {
        return Resolved::U64(n);
    }
    if let Some(n) = parse_negative(v, i64::from_str_radix) {
        return Resolved::I64(n);
    }
    if let Some(n) = parse_unsigned(v, u128::from_str_radix) {
        return Resolved::U128(n);
    }
    if let Some(n) = parse_negative(v, i128::from_str_radix) {
        return Resolved::I128(n);
    }
    if !digits_but_not_number(v)
        && let Some(f) = parse_f64(v)
    {
        return Resolved::F64(f);
    }
    Resolved::Str(v)
}

fn parse_unsigned<T>(
    v: &str,
    radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    let v = v.strip_prefix('+').unwrap_or(v);
    for (prefix, base) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = v.strip_prefix(prefix) {
            if rest.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = radix(rest, base) {
                return Some(n);
            }
        }
    }
    if v.starts_with(['+', '-']) || digits_but_not_number(v) {
        return None;
    }
    radix(v, 10).ok()
}

fn parse_negative<T>(
    v: &str,
    radix: fn(&str, u32) -> Result<T, std::num::ParseIntError>,
) -> Option<T> {
    let rest = v.strip_prefix('-')?;
    for (prefix, base) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(digits) = rest.strip_prefix(prefix) {
            if digits.starts_with(['+', '-']) {
                return None;
            }
            if let Ok(n) = radix(&format!("-{digits}"), base) {
                return Some(n);
            }
        }
    }
    if rest.starts_with(['+', '-']) || digits_but_not_number(v) {
        return None;
    }
    radix(v, 10).ok()
}

fn parse_f64(v: &str) -> Option<f64> {
    let unsigned = match v.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return None,
        Some(rest) => rest,
        None => v,
    };
    match unsigned {
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // Only what YAML calls a number: not Rust's "inf" or "NaN".
    let numeric = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !numeric {
        return None;
    }
    unsigned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Leading zeros followed by digits: a string in YAML 1.2.
fn digits_but_not_number(v: &str) -> bool {
    let v = v.strip_prefix(['-', '+']).unwrap_or(v);
    v.len() > 1 && v.starts_with('0') && v[1..].bytes().all(|b| b.is_ascii_digit())
}

/// A node of the tree as a serde deserializer.
#[derive(Clone, Copy)]
struct De<'a> {
    doc: &'a Doc<'a>,
    /// Never an alias.
    id: u32,
}

impl<'a> De<'a> {
    fn at(doc: &'a Doc<'a>, id: u32) -> Self {
        De {
            doc,
            id: doc.deref(id),
        }
    }

    fn kind(&self) -> &'a Kind {
        &self.doc.nodes[self.id as usize].kind
    }

    /// The scalar's value as the core schema reads it (a string unless it
    /// is plain or carries a type tag); `None` for a collection.
    fn resolved(&self) -> Result<Option<Resolved<'a>>, DeError> {
        let Kind::Scalar(s) = self.kind() else {
            return Ok(None);
        };
        let r = match s.tag {
            Some(CoreTag::Str) => Resolved::Str(&s.text),
            None if !s.typed => Resolved::Str(&s.text),
            None => resolve_plain(&s.text),
            Some(tag) => {
                let r = resolve_plain(&s.text);
                let fits = matches!(
                    (tag, &r),
                    (CoreTag::Null, Resolved::Null)
                        | (CoreTag::Bool, Resolved::Bool(_))
                        | (
                            CoreTag::Int | CoreTag::Float,
                            Resolved::U64(_)
                                | Resolved::I64(_)
                                | Resolved::U128(_)
                                | Resolved::I128(_)
                        )
                        | (CoreTag::Float, Resolved::F64(_))
                );
                if !fits {
                    let name = format!("{tag:?}").to_lowercase();
                    return Err(DeError(format!("{:?} is not a valid !!{name}", &*s.text)));
                }
                r
            }
        };
        Ok(Some(r))
    }

    fn invalid_type(&self, exp: &dyn de::Expected) -> DeError {
        match self.kind() {
            Kind::Seq(_) => de::Error::invalid_type(Unexpected::Seq, exp),
            Kind::Map(_) => de::Error::invalid_type(Unexpected::Map, exp),
            _ => match self.resolved() {
                Ok(Some(r)) => r.invalid_type(exp),
                Ok(None) => de::Error::custom("unexpected value"),
                Err(e) => e,
            },
        }
    }

    /// A plain empty scalar, which reads as an empty sequence or map.
    fn is_empty_plain(&self) -> bool {
        matches!(self.kind(), Kind::Scalar(s) if s.typed && s.tag.is_none() && s.text.is_empty())
    }
}

struct SeqAccess<'a> {
    doc: &'a Doc<'a>,
    items: std::slice::Iter<'a, u32>,
}

impl<'a> de::SeqAccess<'a> for SeqAccess<'a> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(&id) => seed.deserialize(De::at(self.doc, id)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    doc: &'a Doc<'a>,
    entries: std::slice::Iter<'a, (u32, u32)>,
    value: Option<u32>,
}

impl<'a> de::MapAccess<'a> for MapAccess<'a> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.find(|(k, _)| !self.doc.hidden.contains(k)) {
            Some(&(k, v)) => {
                self.value = Some(v);
                if let Some(&to) = self.doc.renamed.get(&k) {
                    return seed
                        .deserialize(IntoDeserializer::<DeError>::into_deserializer(to))
                        .map(Some);
                }
                seed.deserialize(De::at(self.doc, k)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self
            .value
            .take()
            .ok_or_else(|| DeError("a value without its key".into()))?;
        seed.deserialize(De::at(self.doc, v))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

impl<'a> De<'a> {
    fn seq_access(&self) -> SeqAccess<'a> {
        let items: &'a [u32] = match self.kind() {
            Kind::Seq(items) => items,
            _ => &[],
        };
        SeqAccess {
            doc: self.doc,
            items: items.iter(),
        }
    }

    fn map_access(&self) -> MapAccess<'a> {
        let entries: &'a [(u32, u32)] = match self.kind() {
            Kind::Map(map) => &map.entries,
            _ => &[],
        };
        MapAccess {
            doc: self.doc,
            entries: entries.iter(),
            value: None,
        }
    }
}

impl<'a> de::Deserializer<'a> for De<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind() {
            Kind::Seq(_) => visitor.visit_seq(self.seq_access()),
            Kind::Map(_) => visitor.visit_map(self.map_access()),
            _ => match self.resolved()? {
                Some(Resolved::Null) | None => visitor.visit_unit(),
                Some(Resolved::Bool(b)) => visitor.visit_bool(b),
                Some(Resolved::U64(n)) => visitor.visit_u64(n),
                Some(Resolved::I64(n)) => visitor.visit_i64(n),
                Some(Resolved::U128(n)) => visitor.visit_u128(n),
                Some(Resolved::I128(n)) => visitor.visit_i128(n),
                Some(Resolved::F64(f)) => visitor.visit_f64(f),
                Some(Resolved::Str(s)) => visitor.visit_borrowed_str(s),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::Bool(b)) => visitor.visit_bool(b),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_i64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::I64(n)) => visitor.visit_i64(n),
            Some(Resolved::U64(n)) if i64::try_from(n).is_ok() => visitor.visit_i64(n as i64),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_u64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::U64(n)) => visitor.visit_u64(n),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_i128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::I64(n)) => visitor.visit_i128(n.into()),
            Some(Resolved::U64(n)) => visitor.visit_i128(n.into()),
            Some(Resolved::I128(n)) => visitor.visit_i128(n),
            Some(Resolved::U128(n)) if i128::try_from(n).is_ok() => visitor.visit_i128(n as i128),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_u128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::U64(n)) => visitor.visit_u128(n.into()),
            Some(Resolved::U128(n)) => visitor.visit_u128(n),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::F64(f)) => visitor.visit_f64(f),
            Some(Resolved::U64(n)) => visitor.visit_f64(n as f64),
            Some(Resolved::I64(n)) => visitor.visit_f64(n as f64),
            Some(Resolved::U128(n)) => visitor.visit_f64(n as f64),
            Some(Resolved::I128(n)) => visitor.visit_f64(n as f64),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_i8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    /// Any scalar reads as its text, as written.
    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind() {
            Kind::Scalar(s) => visitor.visit_borrowed_str(&s.text),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid_type(&visitor))
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        Err(self.invalid_type(&visitor))
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.resolved()? {
            Some(Resolved::Null) => visitor.visit_unit(),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind() {
            Kind::Seq(_) => visitor.visit_seq(self.seq_access()),
            _ if self.is_empty_plain() => visitor.visit_seq(self.seq_access()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.kind() {
            Kind::Map(_) => visitor.visit_map(self.map_access()),
            _ if self.is_empty_plain() => visitor.visit_map(self.map_access()),
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    /// Unit variants only: the scalar's text names the variant.
    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.kind() {
            Kind::Scalar(s) => {
                let text: &'a str = &s.text;
                visitor.visit_enum(IntoDeserializer::<DeError>::into_deserializer(text))
            }
            _ => Err(self.invalid_type(&visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "name: demo\nstages:\n  - name: gen\n    type: generate\n    with: { count: 3 }\n  - name: sq\n    type: map\n    with:\n      expr: '.a | | .b'\n";

    #[test]
    fn finds_keys_and_values_by_path() {
        let p = Doc::read(DOC);
        assert!(p.failure().is_none());
        assert_eq!(p.value("name"), Some(Pos { line: 1, column: 7 }));
        assert_eq!(p.value(""), Some(Pos { line: 1, column: 1 }));
        assert_eq!(p.value("stages[0]"), Some(Pos { line: 3, column: 5 }));
        assert_eq!(p.key("stages[1].type"), Some(Pos { line: 7, column: 5 }));
        assert_eq!(
            p.value("stages[1].type"),
            Some(Pos {
                line: 7,
                column: 11
            })
        );
        assert_eq!(
            p.value("stages[0].with.count"),
            Some(Pos {
                line: 5,
                column: 20
            })
        );
        assert_eq!(p.value("stages[2]"), None);
        assert_eq!(p.value("nothing"), None);
        assert_eq!(p.text("stages[1].name"), Some("sq"));
    }

    #[test]
    fn a_node_is_small() {
        // A million of them are most of what the largest file costs.
        assert!(
            std::mem::size_of::<Node>() <= 64,
            "{}",
            std::mem::size_of::<Node>()
        );
    }

    #[test]
    fn paths_name_nodes_as_serde_does() {
        let p = Doc::read(DOC);
        let id = p.find("stages[1].with.expr").unwrap();
        assert_eq!(p.path_of(id), "stages[1].with.expr");
        assert_eq!(p.path_of(p.root), "");
    }

    #[test]
    fn keys_with_dots_are_found() {
        let p = Doc::read("limits:\n  a.b: 1/s\n  a: 2/s\n");
        assert_eq!(p.value("limits.a.b"), Some(Pos { line: 2, column: 8 }));
        assert_eq!(p.value("limits.a"), Some(Pos { line: 3, column: 6 }));
    }

    #[test]
    fn big_maps_are_indexed() {
        let text: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        let p = Doc::read(&text);
        assert_eq!(
            p.value("k77"),
            Some(Pos {
                line: 78,
                column: 6
            })
        );
        assert!(p.duplicates().is_empty());
    }

    #[test]
    fn offsets_inside_a_quoted_scalar_map_to_columns() {
        let p = Doc::read(DOC);
        // `'.a | | .b'` starts at column 13; its text at 14; offset 5 is the second `|`.
        assert_eq!(
            p.inside("stages[1].with.expr", 5),
            Some(Pos {
                line: 9,
                column: 19
            })
        );
    }

    #[test]
    fn offsets_count_escapes_and_letters_as_written() {
        // The text is `"é" | | .b`; its second `|` (byte 7, character 6)
        // is written at column 13.
        let p = Doc::read("e: \"\\\"\u{e9}\\\" | | .b\"\ns: 'it''s | x'\n");
        assert_eq!(
            p.inside("e", 7),
            Some(Pos {
                line: 1,
                column: 13
            })
        );
        assert_eq!(p.inside("s", 3), Some(Pos { line: 2, column: 9 }));
    }

    #[test]
    fn offsets_inside_a_literal_block_map_to_its_lines() {
        let p = Doc::read("e: |\n\n  {a: 1,\n   b: | }\nx: 1\n");
        // The text is "\n{a: 1,\n b: | }\n"; the `|` is at byte 12.
        assert_eq!(p.inside("e", 12), Some(Pos { line: 4, column: 7 }));
    }

    #[test]
    fn offsets_after_a_substitution_are_as_written() {
        let mut p = Doc::read("e: '${X} | | .b'\n");
        assert!(p.interpolate(|_| Some(".a".into())).is_empty());
        assert_eq!(p.text("e"), Some(".a | | .b"));
        // The second `|` is byte 5 of the result, written at column 12.
        assert_eq!(
            p.inside("e", 5),
            Some(Pos {
                line: 1,
                column: 12
            })
        );
        // Inside the value: the `$`.
        assert_eq!(p.inside("e", 1), Some(Pos { line: 1, column: 5 }));
    }

    #[test]
    fn a_reference_reads_the_same_inside_a_flow_collection() {
        let mut p = Doc::read("a: { n: ${N}, m: [${N}, $${N}, '${N}'] }\n${K}: x\n");
        assert!(p.failure().is_none(), "{:?}", p.failure());
        assert!(p.interpolate(|_| Some("3".into())).is_empty());
        assert_eq!(p.text("a.n"), Some("3"));
        assert_eq!(p.text("a.m[1]"), Some("${N}"));
        assert_eq!(p.text("a.m[2]"), Some("3"));
        assert_eq!(p.text("${K}"), Some("x"));
        assert_eq!(
            p.value("a.m[2]"),
            Some(Pos {
                line: 1,
                column: 32
            })
        );
        // A malformed reference keeps its braces: its error is its own.
        let mut p = Doc::read("a: { n: ${N }\n");
        assert!(p.failure().is_none(), "{:?}", p.failure());
        assert_eq!(p.text("a.n"), Some("${N"));
        assert_eq!(p.interpolate(|_| None).len(), 1);
        assert_eq!(
            protect("${A:-x} $${B} ${1} ${C").as_deref(),
            Some("$\u{E000}A:-x\u{E001} $$\u{E000}B\u{E001} $\u{E000}1} $\u{E000}C")
        );
    }

    #[test]
    fn a_broken_document_still_gives_what_came_before() {
        let p = Doc::read("a: 1\nb: [\n");
        assert_eq!(p.value("a"), Some(Pos { line: 1, column: 4 }));
        assert!(p.failure().is_some());
    }

    #[test]
    fn a_syntax_error_is_kept_with_its_position() {
        let p = Doc::read("stages: [\n  - name: gen\n");
        let f = p.failure().unwrap();
        assert_eq!(f.pos, Pos { line: 2, column: 3 });
        assert_eq!(
            f.message,
            "invalid YAML: \"-\" is only valid inside a block"
        );
        assert!(Doc::read("a: 1\n").failure().is_none());
    }

    #[test]
    fn nesting_deeper_than_the_limit_stops_reading() {
        // The top-level sequence is the first level.
        let nested = |n: usize| format!("- {}1{}\n", "[".repeat(n), "]".repeat(n));
        assert!(Doc::read(&nested(MAX_DEPTH - 1)).failure().is_none());
        let f = Doc::read(&nested(MAX_DEPTH)).failure().cloned().unwrap();
        assert_eq!(
            f.pos,
            Pos {
                line: 1,
                column: 66
            }
        );
        assert_eq!(
            f.message,
            "more than 64 levels of nesting; a pipeline file may nest at most 64"
        );
    }

    #[test]
    fn alias_bombs_are_stopped() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text += &format!("a{i}: &a{i} [{refs}]\n");
        }
        let f = Doc::read(&text).failure().cloned().unwrap();
        assert!(
            f.message
                .starts_with("aliases repeat more than 100000 values"),
            "{f:?}"
        );
        assert_eq!(f.pos.line, 5);
    }

    #[test]
    fn an_alias_inside_its_own_anchor_is_an_error() {
        let f = Doc::read("a: &x [1, *x]\n").failure().cloned().unwrap();
        assert_eq!(
            f.message,
            "an alias inside the value its anchor names (it would never end)"
        );
        assert_eq!(f.path.as_deref(), Some("a[1]"));
    }

    #[test]
    fn duplicate_keys_are_found() {
        let p = Doc::read("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n");
        assert_eq!(
            p.duplicates(),
            [
                (Pos { line: 4, column: 3 }, "b".into(), "c".into(), 3),
                (Pos { line: 5, column: 1 }, "".into(), "a".into(), 1)
            ]
        );
        let text: String = (0..40).chain([7]).map(|i| format!("k{i}: {i}\n")).collect();
        assert_eq!(Doc::read(&text).duplicates().len(), 1);
    }

    #[test]
    fn a_second_document_is_an_error() {
        let f = Doc::read("a: 1\n---\nb: 2\n").failure().cloned().unwrap();
        assert_eq!(f.pos.line, 2);
    }

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc1 {
        name: String,
        count: Option<u32>,
        flag: Option<bool>,
        list: Option<Vec<String>>,
        any: Option<serde_json::Value>,
    }

    fn parse_text<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
        parse(&Doc::read(text))
    }

    #[test]
    fn typed_reading_follows_the_core_schema() {
        let d: Doc1 = parse_text(
            "name: 2024\ncount: 0x10\nflag: true\nlist: [a, 1, 'b']\nany: {a: [1, -2, 1.5, null, ~, yes, '3', .inf]}\n",
        )
        .unwrap();
        assert_eq!(d.name, "2024");
        assert_eq!(d.count, Some(16));
        assert_eq!(d.flag, Some(true));
        assert_eq!(d.list.unwrap(), ["a", "1", "b"]);
        assert_eq!(
            d.any.unwrap(),
            serde_json::json!({"a": [1, -2, 1.5, null, null, "yes", "3", null]})
        );
    }

    #[test]
    fn quoted_scalars_stay_strings() {
        let err = parse_text::<Doc1>("name: x\ncount: '3'\n").unwrap_err();
        assert_eq!(err.path, "count");
        assert_eq!(err.message, "invalid type: string \"3\", expected u32");
        assert_eq!(err.pos, Some(Pos { line: 2, column: 8 }));
    }

    #[test]
    fn parse_errors_carry_the_path_and_a_clean_message() {
        let err = parse_text::<Doc1>("name: x\ncount: many\n").unwrap_err();
        assert_eq!(err.path, "count");
        assert_eq!(err.message, "invalid type: string \"many\", expected u32");
        let err = parse_text::<Doc1>("name: x\ncuont: 1\n").unwrap_err();
        assert_eq!(err.path, "cuont");
        assert!(
            err.message.starts_with("unknown field `cuont`"),
            "{}",
            err.message
        );
        let err = parse_text::<Doc1>("count: 1\n").unwrap_err();
        assert_eq!(err.message, "missing field `name`");
        let err = parse_text::<Doc1>("").unwrap_err();
        assert_eq!(err.message, "missing field `name`");
        assert_eq!(err.pos, Some(Pos { line: 1, column: 1 }));
    }

    #[test]
    fn aliases_read_as_their_anchor() {
        let d: Doc1 = parse_text("name: &n x\nlist: [*n, *n]\nany: &m {a: 1}\n").unwrap();
        assert_eq!(d.list.unwrap(), ["x", "x"]);
    }

    #[test]
    fn tags_of_the_core_schema_are_kept() {
        let d: Doc1 = parse_text("name: x\nany: [!!str 12, !!int '12']\n").unwrap();
        assert_eq!(d.any.unwrap(), serde_json::json!(["12", 12]));
        let err = parse_text::<Doc1>("name: x\nany: !!int abc\n").unwrap_err();
        assert_eq!(err.message, "\"abc\" is not a valid !!int");
        let p = Doc::read("name: !custom x\n");
        assert!(
            p.failure()
                .unwrap()
                .message
                .starts_with("unsupported tag `!custom`")
        );
    }
}
