//! `files`: a sink that writes one file per item (downloaded images, pages).

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flow_core::value::{self, to_json};
use flow_core::{
    BuildContext, ConfigError, Expr, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// Writes one file per item under `dir`, named by the `name` expression,
/// holding what the item has in `field`: binary data as it is, a string as
/// its text, any other value as JSON. An item that is not an object is
/// written whole.
///
/// A name may hold subdirectories (`"\(.site)/\(.id).png"`, created as
/// needed) but never leaves `dir`: an empty name, an absolute path or any
/// `..` part fails the item with a permanent error. An existing file of the
/// same name is replaced. Each file is written to a temporary file next to
/// it and renamed into place, so a reader never sees half a file. `dir` is
/// created when the run starts, not by `flow validate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesOptions {
    /// The directory the files go in, relative to the pipeline file's
    /// directory; created if missing.
    pub dir: String,
    /// A jq expression giving each file's name (a string, or a number),
    /// relative to `dir`, e.g. `"\(.id).png"`.
    pub name: String,
    /// The field of an object item whose value is written.
    #[serde(default = "default_field")]
    pub field: String,
}

fn default_field() -> String {
    "body".into()
}

impl StageOptions for FilesOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        if self.dir.is_empty() {
            return Err(ConfigError::new("dir", "must not be empty"));
        }
        if self.field.is_empty() {
            return Err(ConfigError::new("field", "must not be empty"));
        }
        let name = Expr::compile(&self.name).map_err(|e| ConfigError::expr("name", e))?;
        let target = Arc::new(Target {
            dir: ctx.resolve_path(&self.dir),
            name,
            field: value::string(self.field),
        });
        Ok(Stage::processor(move |_| {
            // Made here, when a worker starts, so that validating a pipeline
            // creates nothing; a directory that cannot be made stops the run.
            std::fs::create_dir_all(&target.dir).map_err(|e| {
                StageError::permanent(format!("cannot create {}: {e}", target.dir.display()))
            })?;
            Ok(FilesWorker(target.clone()))
        }))
    }
}

flow_core::inventory::submit! {
    StageType::new::<FilesOptions>(
        "files",
        StageKind::Sink,
        "Writes one file per item (bytes, text or JSON) under a directory.",
        "- name: save\n  type: files\n  with: { dir: out/titles, name: '\"\\(.id).txt\"', field: title }\n",
    )
}

/// Where and what to write, shared by the workers.
struct Target {
    dir: PathBuf,
    name: Expr,
    field: Value,
}

struct FilesWorker(Arc<Target>);

#[async_trait]
impl Processor for FilesWorker {
    async fn process(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        let target = &self.0;
        let name = target.file_name(input)?;
        let relative = inside_dir(&name).map_err(StageError::permanent)?;
        let contents = target.contents(input)?;
        let path = target.dir.join(relative);
        // File system calls block: off the async workers, in one hop.
        match tokio::task::spawn_blocking(move || write_atomically(&path, contents)).await {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(StageError::retryable(format!("file thread: {join}"))),
        }
    }
}

impl Target {
    /// The text of the `name` expression's first output.
    fn file_name(&self, input: &Value) -> Result<String, StageError> {
        match self.name.first(input.clone())? {
            Some(Value::TStr(b) | Value::BStr(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Some(n @ Value::Num(_)) => Ok(to_json(&n)),
            Some(other) => Err(StageError::permanent(format!(
                "file name expression `{}` gave {}, not a string",
                self.name.code(),
                to_json(&other)
            ))),
            None => Err(StageError::permanent(format!(
                "file name expression `{}` gave no name",
                self.name.code()
            ))),
        }
    }

    /// The bytes to write: from `field` of an object, else the item itself.
    fn contents(&self, input: &Value) -> Result<Contents, StageError> {
        let v = match input {
            Value::Obj(map) => map.get(&self.field).ok_or_else(|| {
                StageError::permanent(format!(
                    "no field `{}` in the item to write",
                    value::to_text(&self.field)
                ))
            })?,
            other => other,
        };
        Ok(match v {
            // The value moves to the writing thread; its bytes are shared.
            Value::TStr(_) | Value::BStr(_) => Contents::Shared(v.clone()),
            other => Contents::Json(to_json(other).into_bytes()),
        })
    }
}

/// A file's contents, ready to move to a blocking thread.
enum Contents {
    /// A string or binary value, written as it is.
    Shared(Value),
    /// Any other value, as JSON text.
    Json(Vec<u8>),
}

impl Contents {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Contents::Shared(Value::TStr(b) | Value::BStr(b)) => b,
            Contents::Shared(_) => unreachable!("only strings are shared"),
            Contents::Json(b) => b,
        }
    }
}

/// `name` as a path that stays inside the directory it is joined to, or
/// why it would not.
fn inside_dir(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("the file name is empty".into());
    }
    if name.contains('\0') {
        return Err(format!("file name {name:?} contains a NUL character"));
    }
    let mut path = PathBuf::new();
    for part in Path::new(name).components() {
        match part {
            Component::Normal(p) => path.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "file name {name:?} would leave `dir`: `..` is not allowed"
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "file name {name:?} is absolute: names are relative to `dir`"
                ));
            }
        }
    }
    let last = name.rsplit(['/', std::path::MAIN_SEPARATOR]).next();
    if path.as_os_str().is_empty() || matches!(last, Some("" | ".")) {
        return Err(format!("file name {name:?} names a directory, not a file"));
    }
    Ok(path)
}

/// Writes `contents` to a temporary file beside `path`, then renames it to
/// `path` (replacing a file there): the file appears whole or not at all.
fn write_atomically(path: &Path, contents: Contents) -> Result<(), StageError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let parent = path.parent().expect("a joined file name has a parent");
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let file_name = path.file_name().expect("checked: the name ends in a file");
    let temp = parent.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_error(path, e)
    })
}

/// An I/O error naming the path, retryable or not as [`StageError`] judges
/// the error kind.
fn io_error(path: &Path, e: io::Error) -> StageError {
    io::Error::new(e.kind(), format!("{}: {e}", path.display())).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_core::Worker;

    fn ctx(dir: &Path) -> BuildContext {
        BuildContext {
            stage: "save".into(),
            workers: 1,
            base_dir: dir.to_path_buf(),
            timeout: None,
        }
    }

    fn build(base: &Path, with: serde_json::Value) -> Result<Stage, ConfigError> {
        serde_json::from_value::<FilesOptions>(with)
            .unwrap()
            .build(&ctx(base))
    }

    fn worker(base: &Path, with: serde_json::Value) -> Box<dyn Processor> {
        let Stage::Workers(make) = build(base, with).unwrap() else {
            panic!("files is a sink with workers")
        };
        match make(0).unwrap() {
            Worker::Processor(p) => p,
            Worker::Transform(_) => panic!("files writes off the async workers"),
        }
    }

    async fn write(w: &mut Box<dyn Processor>, item: Value) -> Result<(), StageError> {
        let mut out = Output::new();
        w.process(&item, &mut out).await?;
        assert!(out.is_empty(), "a sink emits nothing");
        Ok(())
    }

    fn item(id: i64, body: Value) -> Value {
        value::object([("id", value::int(id)), ("body", body)])
    }

    /// The names in `dir`, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn writes_bytes_as_they_are_strings_as_text_and_the_rest_as_json() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": r#""\(.id).dat""# });
        let mut w = worker(base.path(), with);
        let binary = vec![0u8, 159, 146, 150, 255];
        write(&mut w, item(1, value::bytes(binary.clone())))
            .await
            .unwrap();
        write(&mut w, item(2, value::string("héllo\n")))
            .await
            .unwrap();
        let json = value::parse_json(br#"{"a":[1,2]}"#).unwrap();
        write(&mut w, item(3, json)).await.unwrap();

        let out = base.path().join("out");
        assert_eq!(
            listing(&out),
            ["1.dat", "2.dat", "3.dat"],
            "no temp files left"
        );
        assert_eq!(std::fs::read(out.join("1.dat")).unwrap(), binary);
        assert_eq!(
            std::fs::read_to_string(out.join("2.dat")).unwrap(),
            "héllo\n"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("3.dat")).unwrap(),
            r#"{"a":[1,2]}"#
        );
    }

    #[tokio::test]
    async fn another_field_or_the_whole_item_can_be_written() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "t", "name": ".id", "field": "title" });
        let mut w = worker(base.path(), with);
        let record = value::object([("id", value::int(7)), ("title", value::string("Hi"))]);
        write(&mut w, record).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(base.path().join("t/7")).unwrap(),
            "Hi"
        );

        let with = serde_json::json!({ "dir": "b", "name": r#""blob""# });
        let mut w = worker(base.path(), with);
        write(&mut w, value::bytes(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            std::fs::read(base.path().join("b/blob")).unwrap(),
            [1, 2, 3]
        );
    }

    #[tokio::test]
    async fn an_existing_file_is_replaced_whole() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": r#""same.txt""# });
        let mut w = worker(base.path(), with);
        write(
            &mut w,
            item(1, value::string("a much longer first version")),
        )
        .await
        .unwrap();
        write(&mut w, item(2, value::string("second")))
            .await
            .unwrap();
        let out = base.path().join("out");
        assert_eq!(
            std::fs::read_to_string(out.join("same.txt")).unwrap(),
            "second"
        );
        assert_eq!(listing(&out), ["same.txt"]);
    }

    #[tokio::test]
    async fn names_may_hold_subdirectories_inside_dir() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": r#""a/./b/\(.id).txt""# });
        let mut w = worker(base.path(), with);
        write(&mut w, item(5, value::string("x"))).await.unwrap();
        let file = base.path().join("out/a/b/5.txt");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "x");
    }

    #[tokio::test]
    async fn names_that_would_leave_dir_fail_the_item_permanently() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let cases = [
            ("../escape.txt", "`..` is not allowed"),
            ("a/../../escape.txt", "`..` is not allowed"),
            ("..", "`..` is not allowed"),
            ("/tmp/escape.txt", "is absolute"),
            ("", "is empty"),
            ("sub/", "names a directory"),
            (".", "names a directory"),
            ("a\0b", "NUL"),
        ];
        for (name, why) in cases {
            let it = value::object([("name", value::string(name)), ("body", value::string("x"))]);
            let err = write(&mut w, it).await.unwrap_err();
            assert!(!err.is_retryable(), "{name:?}: {err}");
            assert!(err.message().contains(why), "{name:?}: {err}");
        }
        assert!(listing(&base.path().join("out")).is_empty());
        assert_eq!(listing(base.path()), ["out"], "nothing written beside dir");
    }

    #[tokio::test]
    async fn items_without_a_name_or_the_field_fail_permanently() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let no_name = item(1, value::string("x"));
        let err = write(&mut w, no_name).await.unwrap_err();
        assert!(err.message().contains("gave null, not a string"), "{err}");

        let with = serde_json::json!({ "dir": "out", "name": "empty" });
        let mut w = worker(base.path(), with);
        let err = write(&mut w, item(1, value::string("x")))
            .await
            .unwrap_err();
        assert!(err.message().contains("gave no name"), "{err}");

        let with = serde_json::json!({ "dir": "out", "name": r#""x""# });
        let mut w = worker(base.path(), with);
        let no_body = value::object([("id", value::int(1))]);
        let err = write(&mut w, no_body).await.unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.message().contains("no field `body`"), "{err}");
    }

    #[test]
    fn dir_is_made_when_a_worker_starts_not_when_the_stage_is_built() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "deep/er/out", "name": ".id" });
        let Stage::Workers(make) = build(base.path(), with).unwrap() else {
            panic!("files has workers")
        };
        assert!(
            !base.path().join("deep").exists(),
            "validation makes nothing"
        );
        make(0).unwrap();
        assert!(base.path().join("deep/er/out").is_dir());
    }

    #[test]
    fn a_dir_that_cannot_be_made_stops_the_worker_from_starting() {
        let base = tempfile::tempdir().unwrap();
        std::fs::write(base.path().join("taken"), "a file").unwrap();
        let with = serde_json::json!({ "dir": "taken/out", "name": ".id" });
        let Stage::Workers(make) = build(base.path(), with).unwrap() else {
            panic!("files has workers")
        };
        let err = make(0).err().expect("a file is in the way");
        assert!(err.message().contains("cannot create"), "{err}");
    }

    #[test]
    fn options_are_checked_when_the_stage_is_built() {
        let base = tempfile::tempdir().unwrap();
        let bad = [
            (serde_json::json!({ "dir": "", "name": ".id" }), "dir"),
            (serde_json::json!({ "dir": "o", "name": ".id | |" }), "name"),
            (
                serde_json::json!({ "dir": "o", "name": ".id", "field": "" }),
                "field",
            ),
        ];
        for (with, key) in bad {
            let err = build(base.path(), with.clone()).err().expect("rejected");
            assert_eq!(err.key, key, "{with}: {err}");
        }
    }
}
