//! `files`: a sink that writes one file per item (downloaded images, pages).

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flow_core::value::{self, to_json};
use flow_core::{
    BuildContext, ConfigError, Expr, Output, Processor, Stage, StageError, StageKind, StageOptions,
    StageType, Value, async_trait,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::limits::InvalidUtf8;

/// Writes one file per item under `dir`, named by the `name` expression,
/// holding what the item has in `field`: binary data as it is, a string as
/// its text, any other value as JSON. An item that is not an object is
/// written whole.
///
/// A name may hold subdirectories (`"\(.site)/\(.id).png"`, created as
/// needed) but never leaves `dir`: an empty name, an absolute path, any
/// `..` part, a part longer than 255 bytes, or a path that passes through a
/// symbolic link under `dir` (a link to a directory, anywhere below `dir`)
/// fails the item with a permanent error naming the problem. `dir` itself
/// may be a link. A link at the name itself is replaced by the file, never
/// written through. Each file is written to a temporary file in its
/// directory (`.flow-….tmp`, a short name) and renamed into place, so a
/// reader never sees half a file. `dir` is created when the run starts,
/// not by `flow validate`.
///
/// Two items of one run naming the same file are a mistake by default
/// (`duplicates: fail`): the second fails with a permanent error and the
/// first file stays. A file that was there before the run is replaced. To
/// know the names it wrote, the stage keeps each one for the run (about
/// its length plus 50 bytes per file); `duplicates: replace` keeps none
/// and lets a later item replace an earlier one.
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
    /// What an item naming a file that an earlier item of this run wrote
    /// does: `fail` (the default: a permanent error, the earlier file
    /// stays) or `replace` (the later item's file replaces it).
    #[serde(default)]
    pub duplicates: Duplicates,
    /// A name that is binary and not valid UTF-8: `error` (the default:
    /// the item fails) or `replace` (each invalid sequence becomes U+FFFD).
    #[serde(default)]
    pub invalid_utf8: InvalidUtf8,
}

fn default_field() -> String {
    "body".into()
}

/// What a second item naming the same file does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    /// It fails with a permanent error.
    #[default]
    Fail,
    /// Its file replaces the earlier one.
    Replace,
}

/// The longest name a file or directory may have, in bytes (`NAME_MAX` on
/// Linux and the BSDs).
const NAME_MAX: usize = 255;

impl StageOptions for FilesOptions {
    fn build(self, ctx: &BuildContext) -> Result<Stage, ConfigError> {
        Ok(self.build_durable(ctx)?.0)
    }

    /// In a durable run, the checkpoint keeps the names written (with
    /// `duplicates: fail`), so that a resumed run still refuses a second
    /// item naming a file an item before the checkpoint wrote. The files
    /// themselves stay: an item replayed after a crash writes its file
    /// again, whole, under the same name.
    fn build_durable(
        self,
        ctx: &BuildContext,
    ) -> Result<(Stage, Option<Arc<dyn flow_core::Durable>>), ConfigError> {
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
            utf8: self.invalid_utf8,
            written: (self.duplicates == Duplicates::Fail).then(|| Mutex::new(HashSet::new())),
        });
        let durable = Arc::new(DurableNames(target.clone())) as Arc<dyn flow_core::Durable>;
        let stage = Stage::processor(move |_| {
            // Made here, when a worker starts, so that validating a pipeline
            // creates nothing; a directory that cannot be made stops the run.
            std::fs::create_dir_all(&target.dir).map_err(|e| {
                StageError::permanent(format!("cannot create {}: {e}", target.dir.display()))
            })?;
            Ok(FilesWorker(target.clone()))
        });
        Ok((stage, Some(durable)))
    }
}

/// What a durable run saves of a `files` stage: the names written.
struct DurableNames(Arc<Target>);

impl flow_core::Durable for DurableNames {
    fn snapshot(&self) -> Result<serde_json::Value, StageError> {
        let Some(written) = &self.0.written else {
            return Ok(serde_json::json!({ "written": null }));
        };
        let written = written.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<&str> = written.iter().filter_map(|p| p.to_str()).collect();
        names.sort_unstable();
        Ok(serde_json::json!({ "written": names }))
    }

    fn restore(&self, state: serde_json::Value) -> Result<(), StageError> {
        let (Some(written), Some(names)) = (&self.0.written, state["written"].as_array()) else {
            return Ok(());
        };
        let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
        written.extend(names.iter().filter_map(|n| n.as_str()).map(PathBuf::from));
        Ok(())
    }
}

flow_core::inventory::submit! {
    StageType::new::<FilesOptions>(
        "files",
        StageKind::Sink,
        "Writes one file per item (bytes, text or JSON) under a directory.",
        "- name: save\n  type: files\n  with: { dir: out/titles, name: '\"\\(.id).txt\"', field: title, duplicates: replace }\n",
    )
}

/// Where and what to write, shared by the workers.
struct Target {
    dir: PathBuf,
    name: Expr,
    field: Value,
    utf8: InvalidUtf8,
    /// With `duplicates: fail`: the names written (or being written) in
    /// this run, relative to `dir`.
    written: Option<Mutex<HashSet<PathBuf>>>,
}

struct FilesWorker(Arc<Target>);

#[async_trait]
impl Processor for FilesWorker {
    async fn process(&mut self, input: &Value, _out: &mut Output) -> Result<(), StageError> {
        let target = &self.0;
        let name = target.file_name(input)?;
        let relative = inside_dir(&name).map_err(StageError::permanent)?;
        let contents = target.contents(input)?;
        let claim = Claim::take(target, &relative, &name)?;
        let dir = target.dir.clone();
        // File system calls block: off the async workers, in one hop.
        let written =
            tokio::task::spawn_blocking(move || write_under(&dir, &relative, contents)).await;
        let result = match written {
            Ok(result) => result,
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(join) => Err(StageError::retryable(format!("file thread: {join}"))),
        };
        if result.is_ok() {
            claim.keep();
        }
        result
    }
}

/// A name taken in the set of names written, given back if its file is not
/// written (so a retry may take it again).
struct Claim<'a> {
    target: &'a Target,
    name: Option<PathBuf>,
}

impl<'a> Claim<'a> {
    fn take(target: &'a Target, relative: &Path, name: &str) -> Result<Self, StageError> {
        let Some(written) = &target.written else {
            return Ok(Claim { target, name: None });
        };
        let mut written = written.lock().unwrap_or_else(|e| e.into_inner());
        if !written.insert(relative.to_path_buf()) {
            return Err(StageError::permanent(format!(
                "file name {} was already written by an earlier item of this run \
                 (duplicates: fail)",
                shown(name)
            )));
        }
        Ok(Claim {
            target,
            name: Some(relative.to_path_buf()),
        })
    }

    fn keep(mut self) {
        self.name = None;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let (Some(name), Some(written)) = (self.name.take(), &self.target.written) {
            written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        }
    }
}

impl Target {
    /// The text of the `name` expression's first output.
    fn file_name(&self, input: &Value) -> Result<String, StageError> {
        match self.name.first(input.clone())? {
            Some(Value::TStr(b) | Value::BStr(b)) => match self.utf8.decode(&b) {
                Ok(name) => Ok(name.into_owned()),
                Err(at) => Err(StageError::permanent(format!(
                    "file name {} is not valid UTF-8 (at byte {}; invalid_utf8: error)",
                    shown(&String::from_utf8_lossy(&b)),
                    at + 1
                ))),
            },
            Some(n @ Value::Num(_)) => Ok(to_json(&n)),
            Some(other) => Err(StageError::permanent(format!(
                "file name expression `{}` gave {}, not a string",
                self.name.code(),
                crate::limits::quote_record(to_json(&other).as_bytes())
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

/// A name for a message: quoted, its first 200 characters.
fn shown(name: &str) -> String {
    let mut cut: String = name.chars().take(200).collect();
    if cut.len() < name.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// `name` as a path that stays inside the directory it is joined to, or
/// why it would not.
fn inside_dir(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() {
        return Err("the file name is empty".into());
    }
    if name.contains('\0') {
        return Err(format!(
            "file name {} contains a NUL character",
            shown(name)
        ));
    }
    let mut path = PathBuf::new();
    for part in Path::new(name).components() {
        match part {
            Component::Normal(p) => {
                let len = p.as_encoded_bytes().len();
                if len > NAME_MAX {
                    let start: String = p.to_string_lossy().chars().take(40).collect();
                    return Err(format!(
                        "file name {} has a part of {len} bytes ({start:?}…); \
                         a file or directory name may have at most {NAME_MAX}",
                        shown(name)
                    ));
                }
                path.push(p)
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "file name {} would leave `dir`: `..` is not allowed",
                    shown(name)
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "file name {} is absolute: names are relative to `dir`",
                    shown(name)
                ));
            }
        }
    }
    let last = name.rsplit(['/', std::path::MAIN_SEPARATOR]).next();
    if path.as_os_str().is_empty() || matches!(last, Some("" | ".")) {
        return Err(format!(
            "file name {} names a directory, not a file",
            shown(name)
        ));
    }
    Ok(path)
}

/// A temporary file's name: short (a long file name must still fit beside
/// it) and unique within this process; one left by another process is
/// skipped over.
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".flow-{:x}-{:x}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Why a path under `dir` cannot be written, as a permanent error.
fn refused(relative: &Path, walked: &Path, why: &str) -> StageError {
    StageError::permanent(format!(
        "cannot write {}: {} under `dir` {why}",
        shown(&relative.display().to_string()),
        shown(&walked.display().to_string())
    ))
}

/// Writes `contents` to `relative` under `dir`: each directory is opened
/// (or made) one level at a time, relative to the one before and without
/// following a link, so no link under `dir` (even one made while the item
/// is written) leads outside it; the file is written to a temporary file
/// in its directory and renamed into place, which replaces a link of that
/// name instead of writing through it.
#[cfg(unix)]
fn write_under(dir: &Path, relative: &Path, contents: Contents) -> Result<(), StageError> {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    fn c_name(s: &std::ffi::OsStr) -> CString {
        CString::new(s.as_bytes()).expect("names were checked for NUL")
    }
    let last_error = io::Error::last_os_error;
    // SAFETY (each libc call below): the names are NUL-terminated C
    // strings that outlive the call, and the descriptors are open ones we
    // own.
    let open_dir = |at: i32, name: &CString, follow: bool| -> io::Result<OwnedFd> {
        let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        if !follow {
            flags |= libc::O_NOFOLLOW;
        }
        let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
        if fd < 0 {
            Err(last_error())
        } else {
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    };
    let mut at =
        open_dir(libc::AT_FDCWD, &c_name(dir.as_os_str()), true).map_err(|e| io_error(dir, e))?;
    let parts: Vec<&std::ffi::OsStr> = relative.iter().collect();
    let (file_name, parents) = parts.split_last().expect("a checked name has a part");
    let mut walked = PathBuf::new();
    for part in parents {
        walked.push(part);
        let name = c_name(part);
        let mut opened = open_dir(at.as_raw_fd(), &name, false);
        if matches!(&opened, Err(e) if e.raw_os_error() == Some(libc::ENOENT)) {
            let made = unsafe { libc::mkdirat(at.as_raw_fd(), name.as_ptr(), 0o777) };
            if made != 0 {
                let e = last_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(io_error(&dir.join(&walked), e));
                }
            }
            opened = open_dir(at.as_raw_fd(), &name, false);
        }
        at = match opened {
            Ok(fd) => fd,
            Err(e) => {
                let is_link = e.raw_os_error() == Some(libc::ELOOP)
                    || std::fs::symlink_metadata(dir.join(&walked))
                        .is_ok_and(|m| m.file_type().is_symlink());
                return Err(if is_link {
                    refused(
                        relative,
                        &walked,
                        "is a symbolic link; names may not pass through links",
                    )
                } else if e.raw_os_error() == Some(libc::ENOTDIR) {
                    refused(relative, &walked, "is not a directory")
                } else {
                    io_error(&dir.join(&walked), e)
                });
            }
        };
    }
    let target = c_name(file_name);
    let path = || dir.join(relative);
    let (temp, file) = loop {
        let temp = CString::new(temp_name()).expect("no NUL");
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd =
            unsafe { libc::openat(at.as_raw_fd(), temp.as_ptr(), flags, 0o666 as libc::c_uint) };
        if fd >= 0 {
            break (
                temp,
                std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
        let e = last_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(io_error(&path(), e));
        }
    };
    let written = (&file).write_all(contents.as_bytes()).and_then(|()| {
        drop(file);
        let moved = unsafe {
            libc::renameat(
                at.as_raw_fd(),
                temp.as_ptr(),
                at.as_raw_fd(),
                target.as_ptr(),
            )
        };
        if moved == 0 {
            Ok(())
        } else {
            Err(last_error())
        }
    });
    written.map_err(|e| {
        unsafe { libc::unlinkat(at.as_raw_fd(), temp.as_ptr(), 0) };
        io_error(&path(), e)
    })
}

/// Writes `contents` to `relative` under `dir`, refusing a path through a
/// link (checked before each directory is made and used).
#[cfg(not(unix))]
fn write_under(dir: &Path, relative: &Path, contents: Contents) -> Result<(), StageError> {
    let mut walked = PathBuf::new();
    let parts: Vec<_> = relative.iter().collect();
    let (file_name, parents) = parts.split_last().expect("a checked name has a part");
    for part in parents {
        walked.push(part);
        let at = dir.join(&walked);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(
                    relative,
                    &walked,
                    "is a symbolic link; names may not pass through links",
                ));
            }
            Ok(m) if !m.is_dir() => return Err(refused(relative, &walked, "is not a directory")),
            Ok(_) => {}
            Err(_) => match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&at, e)),
            },
        }
    }
    let parent = dir.join(&walked);
    let path = parent.join(file_name);
    let temp = parent.join(temp_name());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, &path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_error(&path, e)
    })
}

/// An I/O error naming the path, retryable or not as [`StageError`] judges
/// the error kind; a path that is (or is under) something other than a
/// directory will not change by trying again.
fn io_error(path: &Path, e: io::Error) -> StageError {
    use io::ErrorKind::*;
    let message = format!("{}: {e}", path.display());
    match e.kind() {
        NotADirectory | IsADirectory | DirectoryNotEmpty | InvalidFilename => {
            StageError::permanent(message)
        }
        kind => io::Error::new(kind, message).into(),
    }
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
        let with =
            serde_json::json!({ "dir": "out", "name": r#""same.txt""#, "duplicates": "replace" });
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
    async fn messages_quote_at_most_200_characters_of_a_name() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let huge = format!("../{}", "x/".repeat(500_000));
        let err = write(&mut w, named(&huge, "x")).await.unwrap_err();
        assert_eq!(
            err.message(),
            format!(
                "file name \"../{}…\" would leave `dir`: `..` is not allowed",
                "x/".repeat(98) + "x"
            )
        );
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

    fn named(name: &str, body: &str) -> Value {
        value::object([("name", value::string(name)), ("body", value::string(body))])
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_name_through_a_link_under_dir_fails_and_writes_nothing_outside() {
        let base = tempfile::tempdir().unwrap();
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("file"), "not a dir").unwrap();
        let out = base.path().join("out");
        std::fs::create_dir_all(out.join("real/deeper")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("escape")).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("real/deeper/down")).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), out.join("to-file")).unwrap();
        std::os::unix::fs::symlink("real", out.join("inside")).unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let cases = [
            ("escape/x.txt", r#""escape" under `dir` is a symbolic link"#),
            (
                "escape/new/x.txt",
                r#""escape" under `dir` is a symbolic link"#,
            ),
            (
                "real/deeper/down/x.txt",
                r#""real/deeper/down" under `dir` is a symbolic link"#,
            ),
            (
                "to-file/x.txt",
                r#""to-file" under `dir` is a symbolic link"#,
            ),
            // Even a link that stays inside `dir` is refused: links are not followed.
            ("inside/x.txt", r#""inside" under `dir` is a symbolic link"#),
        ];
        for (name, why) in cases {
            let err = write(&mut w, named(name, "x")).await.unwrap_err();
            assert!(!err.is_retryable(), "{name}: {err}");
            assert_eq!(
                err.message(),
                format!("cannot write {name:?}: {why}; names may not pass through links"),
            );
        }
        assert_eq!(listing(&outside), ["file"], "nothing written outside dir");
        assert_eq!(listing(&out.join("real/deeper")), ["down"]);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_link_at_the_name_itself_is_replaced_not_written_through() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("target.txt");
        std::fs::write(&target, "keep me").unwrap();
        let out = base.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&target, out.join("x.txt")).unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        write(&mut w, named("x.txt", "new")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        let meta = std::fs::symlink_metadata(out.join("x.txt")).unwrap();
        assert!(meta.is_file(), "the link was replaced by a file");
        assert_eq!(std::fs::read_to_string(out.join("x.txt")).unwrap(), "new");
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn dir_itself_may_be_a_link() {
        let base = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", base.path().join("out")).unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        write(&mut w, named("a/b.txt", "x")).await.unwrap();
        let written = base.path().join("real/a/b.txt");
        assert_eq!(std::fs::read_to_string(written).unwrap(), "x");
    }

    #[tokio::test]
    async fn a_part_in_the_way_that_is_a_file_fails_permanently() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        write(&mut w, named("a", "a file")).await.unwrap();
        let err = write(&mut w, named("a/b.txt", "x")).await.unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert_eq!(
            err.message(),
            r#"cannot write "a/b.txt": "a" under `dir` is not a directory"#
        );
    }

    #[tokio::test]
    async fn a_second_item_naming_the_same_file_fails_by_default() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let Stage::Workers(make) = build(base.path(), with).unwrap() else {
            panic!("files has workers")
        };
        // Two workers share what was written.
        let mut workers: Vec<Box<dyn Processor>> = (0..2)
            .map(|i| match make(i).unwrap() {
                Worker::Processor(p) => p,
                Worker::Transform(_) => unreachable!(),
            })
            .collect();
        write(&mut workers[0], named("a/b.txt", "first"))
            .await
            .unwrap();
        for (i, same) in ["a/b.txt", "a/./b.txt", "a//b.txt"].iter().enumerate() {
            let err = write(&mut workers[i % 2], named(same, "second"))
                .await
                .unwrap_err();
            assert!(!err.is_retryable(), "{err}");
            assert_eq!(
                err.message(),
                format!(
                    "file name {same:?} was already written by an earlier item of this run (duplicates: fail)"
                )
            );
        }
        let file = base.path().join("out/a/b.txt");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "first");
        write(&mut workers[1], named("a/c.txt", "other"))
            .await
            .unwrap();
    }

    /// A resumed durable run starts from the names the checkpoint saved:
    /// a name written before it is still refused, others are free.
    #[tokio::test]
    async fn a_durable_run_saves_the_names_written_and_a_resumed_run_refuses_them() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let options = |with: &serde_json::Value| {
            serde_json::from_value::<FilesOptions>(with.clone()).unwrap()
        };
        let start = |with: &serde_json::Value| {
            let (stage, durable) = options(with).build_durable(&ctx(base.path())).unwrap();
            let Stage::Workers(make) = stage else {
                panic!("files has workers")
            };
            let Worker::Processor(p) = make(0).unwrap() else {
                panic!("files writes off the async workers")
            };
            (p, durable.expect("files keeps state in a durable run"))
        };
        let (mut first, durable) = start(&with);
        write(&mut first, named("b.txt", "1")).await.unwrap();
        write(&mut first, named("a/c.txt", "2")).await.unwrap();
        let saved = durable.snapshot().unwrap();
        assert_eq!(
            saved,
            serde_json::json!({ "written": ["a/c.txt", "b.txt"] })
        );

        let (mut second, durable) = start(&with);
        durable.restore(saved).unwrap();
        let err = write(&mut second, named("b.txt", "3")).await.unwrap_err();
        assert!(err.message().contains("already written"), "{err}");
        write(&mut second, named("d.txt", "4")).await.unwrap();
        let file = base.path().join("out/b.txt");
        assert_eq!(std::fs::read_to_string(file).unwrap(), "1");

        // With `duplicates: replace` nothing is kept, and nothing refused.
        let with = serde_json::json!({ "dir": "out", "name": ".name", "duplicates": "replace" });
        let (mut third, durable) = start(&with);
        assert_eq!(
            durable.snapshot().unwrap(),
            serde_json::json!({ "written": null })
        );
        durable
            .restore(serde_json::json!({ "written": ["b.txt"] }))
            .unwrap();
        write(&mut third, named("b.txt", "5")).await.unwrap();
    }

    #[tokio::test]
    async fn a_name_that_failed_to_be_written_may_be_written_again() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        // A directory in the way: the rename fails.
        let blocker = base.path().join("out/x.txt");
        std::fs::create_dir_all(blocker.join("inside")).unwrap();
        let err = write(&mut w, named("x.txt", "x")).await.unwrap_err();
        assert!(err.message().contains("x.txt"), "{err}");
        assert_eq!(
            listing(&base.path().join("out")),
            ["x.txt"],
            "no temp file left"
        );
        std::fs::remove_dir_all(&blocker).unwrap();
        write(&mut w, named("x.txt", "x")).await.unwrap();
        assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "x");
    }

    #[tokio::test]
    async fn long_names_are_written_up_to_255_bytes_a_part() {
        let base = tempfile::tempdir().unwrap();
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let longest = "n".repeat(255);
        let name = format!("{longest}/{longest}");
        write(&mut w, named(&name, "x")).await.unwrap();
        let out = base.path().join("out");
        assert_eq!(
            listing(&out.join(&longest)),
            std::slice::from_ref(&longest),
            "no temp file left"
        );
        let too_long = format!("{}é", "n".repeat(254));
        let err = write(&mut w, named(&format!("ok/{too_long}"), "x"))
            .await
            .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.message().contains(&format!(
                "has a part of 256 bytes (\"{}\"…); a file or directory name may have at most 255",
                "n".repeat(40)
            )),
            "{err}"
        );
        assert_eq!(listing(&out), [longest]);
    }

    #[tokio::test]
    async fn a_binary_name_that_is_not_utf8_fails_unless_replaced() {
        let base = tempfile::tempdir().unwrap();
        let item = value::object([
            ("name", value::bytes(b"bad\xff.txt".to_vec())),
            ("body", value::string("x")),
        ]);
        let with = serde_json::json!({ "dir": "out", "name": ".name" });
        let mut w = worker(base.path(), with);
        let err = write(&mut w, item.clone()).await.unwrap_err();
        assert_eq!(
            err.message(),
            "file name \"bad\u{fffd}.txt\" is not valid UTF-8 (at byte 4; invalid_utf8: error)"
        );
        let with = serde_json::json!({ "dir": "out", "name": ".name", "invalid_utf8": "replace" });
        let mut w = worker(base.path(), with);
        write(&mut w, item).await.unwrap();
        assert_eq!(listing(&base.path().join("out")), ["bad\u{fffd}.txt"]);
    }
}
