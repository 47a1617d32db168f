//! Termination-message files: each container start gets a fresh empty file
//! `<pod>/containers/<name>/<restart count>-<8 hex>` mounted at its `terminationMessagePath`,
//! as upstream's kuberuntime does; the status reads the newest one back.

use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::error::VolumeError;

/// Upstream reads at most this many bytes of a termination message (the last ones).
pub const MAX_TERMINATION_MESSAGE_BYTES: u64 = 4096;

/// Creates a new empty, world-writable file in `dir` for the start with `restart_count` (any
/// container user must be able to write its message) and returns its path.
pub fn create_file(dir: &Path, restart_count: u32) -> Result<PathBuf, VolumeError> {
    fs::create_dir_all(dir).map_err(|e| VolumeError::io("mkdir", dir, e))?;
    loop {
        let p = dir.join(format!("{restart_count:08}-{:08x}", super::random_u32()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&p)
        {
            Ok(_) => {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o666))
                    .map_err(|e| VolumeError::io("chmod", &p, e))?;
                return Ok(p);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(VolumeError::io("create termination log", &p, e)),
        }
    }
}

/// The file of the latest start in `dir`: the highest restart count in its name, then the
/// newest birth (or modification) time. The count decides because two files created within
/// one clock tick carry the same timestamp.
pub fn newest(dir: &Path) -> Option<PathBuf> {
    let entries = fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            if !meta.is_file() {
                return None;
            }
            let count = e
                .file_name()
                .to_str()
                .and_then(|n| n.split_once('-'))
                .and_then(|(c, _)| c.parse::<u32>().ok())
                .unwrap_or(0);
            let t = meta.created().or_else(|_| meta.modified()).ok()?;
            Some(((count, t), e.path()))
        })
        .max()
        .map(|(_, p)| p)
}

/// The last [`MAX_TERMINATION_MESSAGE_BYTES`] of `path`, as text.
pub fn read_tail(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len > MAX_TERMINATION_MESSAGE_BYTES {
        f.seek(SeekFrom::Start(len - MAX_TERMINATION_MESSAGE_BYTES))?;
    }
    let mut buf = Vec::new();
    f.take(MAX_TERMINATION_MESSAGE_BYTES)
        .read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The message for the file at `path`: `None` when there is no such file, and an explanation
/// (upstream's wording) when it cannot be read.
pub fn message(path: &Path) -> Option<String> {
    match read_tail(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => Some(format!(
            "Error on reading termination log {}: {e}",
            path.display()
        )),
    }
}
