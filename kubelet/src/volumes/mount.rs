//! The mounts the volume manager makes itself: tmpfs for memory-backed volumes and bind mounts
//! for subPaths; and finding and removing them again through `/proc/self/mountinfo`.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::error::VolumeError;

/// One line of mountinfo, reduced to what the manager needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type (`tmpfs`, `ext4`).
    pub fs_type: String,
    /// Super block options (`rw,size=1024k`).
    pub super_options: String,
}

/// Parses `/proc/<pid>/mountinfo` text (proc(5)): field 5 is the mount point, after the `-`
/// separator come the type, the source and the super block options.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < 5 || fields.len() < sep + 4 {
            continue;
        }
        out.push(MountInfo {
            mount_point: PathBuf::from(unescape(fields[4])),
            fs_type: fields[sep + 1].to_string(),
            super_options: fields[sep + 3].to_string(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current mount table of this process's mount namespace.
pub fn mount_table() -> Result<Vec<MountInfo>, VolumeError> {
    let p = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(p).map_err(|e| VolumeError::io("read", p, e))?;
    Ok(parse_mountinfo(&text))
}

/// The mount at exactly `path`, if any (the topmost when several are stacked).
pub fn mount_at(path: &Path) -> Result<Option<MountInfo>, VolumeError> {
    Ok(mount_table()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path))
}

/// Mount points at or below `dir`, deepest first, so they can be unmounted in order.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    let mut v: Vec<PathBuf> = mount_table()?
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

/// Mounts a tmpfs on `dir` unless one is already there; `size` in bytes, none = kernel default.
pub fn ensure_tmpfs(dir: &Path, size: Option<u64>) -> Result<(), VolumeError> {
    if let Some(m) = mount_at(dir)? {
        if m.fs_type == "tmpfs" {
            return Ok(());
        }
    }
    let data = size.map(|s| format!("size={s}"));
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        data.as_deref(),
    )
    .map_err(|e| VolumeError::mount("mount tmpfs", dir, e))
}

/// Bind-mounts `source` (a path, or `/proc/self/fd/N` of an fd opened safely) onto `target`.
pub fn bind(source: &Path, target: &Path) -> Result<(), VolumeError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| VolumeError::mount("bind mount", target, e))
}

/// Detaches every mount at or below `dir` (lazily, so busy files do not block it); returns the
/// mount points still present afterwards (none when all went well).
pub fn unmount_all_under(dir: &Path) -> Result<Vec<PathBuf>, VolumeError> {
    // Stacked mounts need one pass each; a bounded number of passes avoids spinning forever on a
    // mount that keeps coming back.
    for _ in 0..16 {
        let mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            return Ok(Vec::new());
        }
        for m in &mounts {
            match umount2(m.as_path(), MntFlags::MNT_DETACH) {
                Ok(()) => tracing::debug!(path = %m.display(), "unmounted"),
                // Already gone (raced with someone else) is fine.
                Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(VolumeError::mount("unmount", m, e)),
            }
        }
    }
    mounts_under(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo() {
        let text = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
120 22 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/my\\040vol rw,relatime shared:60 - tmpfs tmpfs rw,size=1024k
121 22 0:51 / /x rw master:3 - tmpfs tmpfs rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, Path::new("/"));
        assert_eq!(m[0].fs_type, "ext4");
        assert_eq!(
            m[1].mount_point,
            Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/my vol")
        );
        assert_eq!(m[1].super_options, "rw,size=1024k");
        assert_eq!(m[2].fs_type, "tmpfs");
    }
}
