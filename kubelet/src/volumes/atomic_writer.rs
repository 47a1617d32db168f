//! Atomic projection of a set of files into a volume directory, in upstream's layout
//! (pkg/volume/util/atomic_writer.go), so applications watching `..data` see the same thing.
//!
//! The real files live in a hidden `..<UTC timestamp>.<random>` directory; `..data` is a
//! symlink to it; each user-visible top-level name is a symlink `name -> ..data/name`. An update
//! writes a whole new timestamped directory, points a `..data_tmp` symlink at it and renames that
//! over `..data` (one atomic step), then removes stale names and the old directory. A reader
//! therefore sees either the old or the new set of files, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::VolumeError;

const DATA_DIR: &str = "..data";
const NEW_DATA_DIR: &str = "..data_tmp";
const MAX_FILE_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// One file of a payload: its bytes and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits (`0o644`).
    pub mode: u32,
}

/// Relative path (no `..`) → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Applied to the new timestamped directory before it becomes visible (fsGroup ownership).
pub type SetPerms<'a> = &'a dyn Fn(&Path) -> Result<(), VolumeError>;

/// Makes `target` show exactly `payload`; returns whether anything was written.
///
/// `target` must exist. Not safe to call concurrently on one directory: the caller serialises.
pub fn write(
    target: &Path,
    payload: &Payload,
    set_perms: Option<SetPerms<'_>>,
) -> Result<bool, VolumeError> {
    let payload = validate(payload)?;
    let data_link = target.join(DATA_DIR);
    let old_ts = match fs::read_link(&data_link) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(VolumeError::io("readlink", &data_link, e)),
    };
    remove_stale_timestamp_dirs(target, old_ts.as_deref())?;

    let mut to_remove = BTreeSet::new();
    if let Some(old) = &old_ts {
        let old_dir = target.join(old);
        to_remove = paths_to_remove(&payload, &old_dir)?;
        if !payload_differs(&payload, &old_dir)? && to_remove.is_empty() {
            return Ok(false);
        }
    }

    let ts_dir = new_timestamp_dir(target)?;
    let result = write_new_version(target, &payload, &ts_dir, set_perms);
    if let Err(e) = result {
        // Never leave a half-written version behind: the next call starts clean.
        let _ = fs::remove_dir_all(&ts_dir);
        let _ = fs::remove_file(target.join(NEW_DATA_DIR));
        return Err(e);
    }

    for p in &to_remove {
        // Only top-level names are symlinks in the target; deeper paths vanish with the old dir.
        if p.contains('/') {
            continue;
        }
        let visible = target.join(p);
        match fs::remove_file(&visible) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(VolumeError::io("remove stale file", &visible, e)),
        }
    }
    if let Some(old) = old_ts {
        let old_dir = target.join(&old);
        if old_dir != ts_dir {
            match fs::remove_dir_all(&old_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(VolumeError::io("remove old data dir", &old_dir, e)),
            }
        }
    }
    Ok(true)
}

fn write_new_version(
    target: &Path,
    payload: &Payload,
    ts_dir: &Path,
    set_perms: Option<SetPerms<'_>>,
) -> Result<(), VolumeError> {
    for (rel, file) in payload {
        let full = ts_dir.join(rel);
        if let Some(parent) = full.parent() {
            create_dirs(ts_dir, parent)?;
        }
        fs::write(&full, &file.data).map_err(|e| VolumeError::io("write", &full, e))?;
        // The mode must not depend on the kubelet's umask.
        fs::set_permissions(&full, fs::Permissions::from_mode(file.mode & 0o7777))
            .map_err(|e| VolumeError::io("chmod", &full, e))?;
    }
    if let Some(f) = set_perms {
        f(ts_dir)?;
    }
    for rel in payload.keys() {
        let top = rel.split('/').next().unwrap_or(rel);
        let visible = target.join(top);
        match fs::symlink_metadata(&visible) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                symlink(Path::new(DATA_DIR).join(top), &visible)
                    .map_err(|e| VolumeError::io("symlink", &visible, e))?;
            }
            Err(e) => return Err(VolumeError::io("lstat", &visible, e)),
        }
    }
    let tmp_link = target.join(NEW_DATA_DIR);
    match fs::remove_file(&tmp_link) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(VolumeError::io("remove", &tmp_link, e)),
    }
    let ts_name = ts_dir.file_name().unwrap_or_else(|| OsStr::new(""));
    symlink(ts_name, &tmp_link).map_err(|e| VolumeError::io("symlink", &tmp_link, e))?;
    let data_link = target.join(DATA_DIR);
    fs::rename(&tmp_link, &data_link).map_err(|e| VolumeError::io("rename", &data_link, e))
}

/// Creates `dir` and its parents below `base` with mode 0755 whatever the umask.
fn create_dirs(base: &Path, dir: &Path) -> Result<(), VolumeError> {
    if dir == base || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(base, parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(VolumeError::io("mkdir", dir, e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .map_err(|e| VolumeError::io("chmod", dir, e))
}

/// Checks every path and returns the payload keyed by cleaned paths.
fn validate(payload: &Payload) -> Result<Payload, VolumeError> {
    let mut out = Payload::new();
    for (path, file) in payload {
        out.insert(clean_path(path)?, file.clone());
    }
    Ok(out)
}

/// Upstream's rules: not empty, relative, no `..` element, not starting with `..`, and
/// within the file system's name and path limits. Returns the path without `.` or `//`.
pub(crate) fn clean_path(path: &str) -> Result<String, VolumeError> {
    let bad = |why: &str| {
        Err(VolumeError::Invalid(format!(
            "invalid path {path:?}: {why}"
        )))
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.starts_with('/') {
        return bad("must be relative");
    }
    if path.len() > MAX_PATH {
        return bad("too long");
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return bad("must not be empty");
    }
    if parts.contains(&"..") {
        return bad("must not contain '..'");
    }
    if parts.iter().any(|p| p.len() > MAX_FILE_NAME) {
        return bad("file name too long");
    }
    if parts[0].starts_with("..") {
        return bad("must not start with '..'");
    }
    Ok(parts.join("/"))
}

/// True when any file is missing or differs (content or mode) in the current version.
fn payload_differs(payload: &Payload, old_dir: &Path) -> Result<bool, VolumeError> {
    for (rel, file) in payload {
        let p = old_dir.join(rel);
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(VolumeError::io("lstat", &p, e)),
        };
        if !meta.is_file() || meta.permissions().mode() & 0o7777 != file.mode & 0o7777 {
            return Ok(true);
        }
        let on_disk = fs::read(&p).map_err(|e| VolumeError::io("read", &p, e))?;
        if on_disk != file.data {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Paths of the current version that the new payload no longer has (ancestors of new paths
/// are kept, so non-empty directories are never scheduled for removal).
fn paths_to_remove(payload: &Payload, old_dir: &Path) -> Result<BTreeSet<String>, VolumeError> {
    let mut existing = BTreeSet::new();
    walk(old_dir, "", &mut existing)?;
    let mut keep = BTreeSet::new();
    for rel in payload.keys() {
        let mut p = rel.as_str();
        loop {
            keep.insert(p.to_string());
            match p.rsplit_once('/') {
                Some((parent, _)) => p = parent,
                None => break,
            }
        }
    }
    Ok(existing.difference(&keep).cloned().collect())
}

fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> Result<(), VolumeError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VolumeError::io("read dir", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("read dir", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let ft = entry
            .file_type()
            .map_err(|e| VolumeError::io("lstat", &entry.path(), e))?;
        if ft.is_dir() {
            walk(&entry.path(), &rel, out)?;
        }
        out.insert(rel);
    }
    Ok(())
}

/// Removes `..<timestamp>` directories left by an interrupted write (not the live one).
fn remove_stale_timestamp_dirs(target: &Path, live: Option<&Path>) -> Result<(), VolumeError> {
    let entries = fs::read_dir(target).map_err(|e| VolumeError::io("read dir", target, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| VolumeError::io("read dir", target, e))?;
        let name = entry.file_name();
        let s = name.to_string_lossy();
        if !s.starts_with("..") || s == DATA_DIR || s == NEW_DATA_DIR {
            continue;
        }
        if live.is_some_and(|l| l.as_os_str() == name) {
            continue;
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            let p = entry.path();
            fs::remove_dir_all(&p).map_err(|e| VolumeError::io("remove stale data dir", &p, e))?;
        }
    }
    Ok(())
}

fn new_timestamp_dir(target: &Path) -> Result<PathBuf, VolumeError> {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y_%m_%d_%H_%M_%S")
        .to_string();
    loop {
        let dir = target.join(format!("..{stamp}.{}", super::random_u32()));
        match fs::create_dir(&dir) {
            Ok(()) => {
                // 0755 lets group and others traverse, whatever the umask.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(|e| VolumeError::io("chmod", &dir, e))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VolumeError::io("mkdir", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn layout_and_modes() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = Payload::from([
            ("a".to_string(), file("A", 0o644)),
            ("sub/b".to_string(), file("B", 0o400)),
        ]);
        assert!(write(t.path(), &p, None).expect("write"));
        let data = fs::read_link(t.path().join("..data")).expect("..data");
        let ts = data.to_string_lossy().into_owned();
        assert!(ts.starts_with("..") && ts.len() > 22, "{ts}");
        assert_eq!(
            fs::read_link(t.path().join("a")).expect("a link"),
            Path::new("..data/a")
        );
        assert_eq!(
            fs::read_link(t.path().join("sub")).expect("sub link"),
            Path::new("..data/sub")
        );
        assert_eq!(fs::read_to_string(t.path().join("sub/b")).expect("b"), "B");
        let mode = |p: &str| {
            fs::metadata(t.path().join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("sub/b"), 0o400);
        assert_eq!(mode(&ts), 0o755);
        assert_eq!(
            names(t.path()),
            BTreeSet::from(["..data".into(), ts, "a".into(), "sub".into()])
        );
        // Same payload again: nothing written, same version.
        assert!(!write(t.path(), &p, None).expect("rewrite"));
        assert_eq!(
            fs::read_link(t.path().join("..data")).expect("..data"),
            data
        );
    }

    #[test]
    fn update_swaps_whole_version_and_prunes() {
        let t = tempfile::tempdir().expect("tempdir");
        let v1 = Payload::from([
            ("a".to_string(), file("a1", 0o644)),
            ("b".to_string(), file("b1", 0o644)),
        ]);
        write(t.path(), &v1, None).expect("v1");
        let old_ts = fs::read_link(t.path().join("..data")).expect("link");
        // A reader that opened files of v1 keeps reading v1 after the swap.
        let mut held_a = fs::File::open(t.path().join("a")).expect("open a");
        let mut held_b = fs::File::open(t.path().join("b")).expect("open b");

        let v2 = Payload::from([
            ("a".to_string(), file("a2", 0o644)),
            ("c".to_string(), file("c2", 0o600)),
        ]);
        assert!(write(t.path(), &v2, None).expect("v2"));
        let new_ts = fs::read_link(t.path().join("..data")).expect("link");
        assert_ne!(old_ts, new_ts);
        assert!(!t.path().join(&old_ts).exists(), "old version removed");
        let mut s = String::new();
        held_a.read_to_string(&mut s).expect("read held a");
        held_b.read_to_string(&mut s).expect("read held b");
        assert_eq!(s, "a1b1");
        assert_eq!(fs::read_to_string(t.path().join("a")).expect("a"), "a2");
        assert_eq!(fs::read_to_string(t.path().join("c")).expect("c"), "c2");
        assert!(
            fs::symlink_metadata(t.path().join("b")).is_err(),
            "b pruned"
        );

        // A mode change alone is an update too.
        let v3 = Payload::from([
            ("a".to_string(), file("a2", 0o600)),
            ("c".to_string(), file("c2", 0o600)),
        ]);
        assert!(write(t.path(), &v3, None).expect("v3"));
    }

    #[test]
    fn rejects_bad_paths_and_cleans_stale_dirs() {
        for bad in ["", "/abs", "../x", "a/../b", "..hidden", "./..x"] {
            assert!(clean_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(clean_path("a//./b").expect("clean"), "a/b");
        assert_eq!(clean_path("a..b/..c").expect("dots"), "a..b/..c");

        let t = tempfile::tempdir().expect("tempdir");
        fs::create_dir(t.path().join("..2020_01_01_00_00_00.1")).expect("stale");
        let p = Payload::from([("k".to_string(), file("v", 0o644))]);
        write(t.path(), &p, None).expect("write");
        assert!(!t.path().join("..2020_01_01_00_00_00.1").exists());
        assert_eq!(names(t.path()).len(), 3, "{:?}", names(t.path()));
    }

    #[test]
    fn empty_payload_makes_empty_volume() {
        let t = tempfile::tempdir().expect("tempdir");
        write(t.path(), &Payload::new(), None).expect("write");
        let ts = fs::read_link(t.path().join("..data")).expect("link");
        assert_eq!(
            names(t.path()),
            BTreeSet::from(["..data".into(), ts.to_string_lossy().into_owned()])
        );
    }
}
