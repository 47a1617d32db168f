//! `securityContext.fsGroup`: volume files get the pod's group and group access, as upstream's
//! SetVolumeOwnership (pkg/volume/volume_linux.go) does for volumes that support ownership.

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;

use super::error::VolumeError;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

/// Gives `dir` and everything below it group `gid` with group read (and write unless
/// `read_only`) access; directories also get group search and setgid so new files inherit the
/// group. Symlinks are left alone. With `on_root_mismatch`, nothing is done when `dir` already
/// has the group and mode (fsGroupChangePolicy `OnRootMismatch`).
pub fn set_ownership(
    dir: &Path,
    gid: u32,
    read_only: bool,
    on_root_mismatch: bool,
) -> Result<(), VolumeError> {
    let mask = if read_only { RO_MASK } else { RW_MASK };
    if on_root_mismatch {
        let m = fs::symlink_metadata(dir).map_err(|e| VolumeError::io("lstat", dir, e))?;
        let want = mask | EXEC_MASK | SETGID;
        if m.gid() == gid && m.mode() & want == want {
            return Ok(());
        }
    }
    walk(dir, gid, mask, true)
}

/// Like [`set_ownership`] for `dir` itself only (its contents were handled when written).
pub fn set_ownership_root(dir: &Path, gid: u32, read_only: bool) -> Result<(), VolumeError> {
    walk(dir, gid, if read_only { RO_MASK } else { RW_MASK }, false)
}

fn walk(path: &Path, gid: u32, mask: u32, recurse: bool) -> Result<(), VolumeError> {
    let meta = fs::symlink_metadata(path).map_err(|e| VolumeError::io("lstat", path, e))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    lchown(path, None, Some(gid)).map_err(|e| VolumeError::io("chown", path, e))?;
    let mut mode = meta.permissions().mode() & 0o7777 | mask;
    if meta.is_dir() {
        mode |= EXEC_MASK | SETGID;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| VolumeError::io("chmod", path, e))?;
    if recurse && meta.is_dir() {
        let entries = fs::read_dir(path).map_err(|e| VolumeError::io("read dir", path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("read dir", path, e))?;
            walk(&entry.path(), gid, mask, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_modes() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path().join("d");
        fs::create_dir(&d).expect("mkdir");
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(d.join("f"), "x").expect("write");
        fs::set_permissions(d.join("f"), fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink("/etc/passwd", d.join("l")).expect("symlink");
        set_ownership(&d, 1234, true, false).expect("ownership");
        let m = fs::metadata(&d).expect("stat");
        assert_eq!(m.gid(), 1234);
        assert_eq!(m.mode() & 0o7777, 0o2755);
        let f = fs::metadata(d.join("f")).expect("stat");
        assert_eq!((f.gid(), f.mode() & 0o7777), (1234, 0o640));
        // The symlink's target outside the volume is untouched.
        assert_ne!(fs::metadata("/etc/passwd").expect("stat").gid(), 1234);
    }
}
