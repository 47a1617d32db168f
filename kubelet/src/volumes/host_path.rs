//! hostPath `type` checks, as upstream's hostpath plugin (`checkType`): the `*OrCreate` types
//! create what is missing, the others only check what is there.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::error::VolumeError;

/// Checks (and for `DirectoryOrCreate` / `FileOrCreate` creates) `path` as `type_` says;
/// `""` checks nothing.
pub fn check(path: &Path, type_: &str) -> Result<(), VolumeError> {
    let shown = path.display().to_string();
    match type_ {
        "" => return Ok(()),
        "DirectoryOrCreate" if !exists(path) => {
            // Parents too, mode 0755 (less the umask), like upstream's MkdirAll.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)
                .map_err(|e| VolumeError::io("create hostPath directory", path, e))?;
        }
        "FileOrCreate" if !exists(path) => {
            // Upstream creates the file only, not its parent directory.
            match fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(VolumeError::io("create hostPath file", path, e)),
            }
        }
        _ => {}
    }
    let (want, expected): (fn(&fs::FileType) -> bool, &'static str) = match type_ {
        "DirectoryOrCreate" | "Directory" => (|t| t.is_dir(), "directory"),
        "FileOrCreate" | "File" => (|t| t.is_file(), "file"),
        "Socket" => (|t| t.is_socket(), "socket file"),
        "CharDevice" => (|t| t.is_char_device(), "character device"),
        "BlockDevice" => (|t| t.is_block_device(), "block device"),
        other => {
            return Err(VolumeError::Invalid(format!(
                "{other} is an invalid volume type"
            )))
        }
    };
    // Symlinks are followed, as the runtime's bind mount will follow them.
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(VolumeError::HostPathMissing(shown))
        }
        Err(e) => return Err(VolumeError::io("stat hostPath", path, e)),
    };
    if !want(&meta.file_type()) {
        return Err(VolumeError::HostPathType {
            path: shown,
            expected,
        });
    }
    Ok(())
}

fn exists(path: &Path) -> bool {
    fs::metadata(path).is_ok()
}
