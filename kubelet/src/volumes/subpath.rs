//! subPath and subPathExpr mounts.
//!
//! A container can plant symlinks in a writable volume; if the kubelet then resolved a subPath
//! through them on the host, another container could be handed any host directory
//! (CVE-2017-1002101). So, as upstream's subpath_linux.go, the path is opened with the kernel
//! refusing to leave the volume (`openat2` with `RESOLVE_BENEATH`), and that very open file is
//! bind-mounted to `<pod>/volume-subpaths/<volume>/<container>/<index>`; the runtime mounts the
//! bind, which no later symlink swap can redirect.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

use super::error::VolumeError;
use super::mount;

/// Expands `$(VAR)` in a subPathExpr from `env`, as upstream's ExpandContainerVolumeMounts:
/// `$$` is a literal `$`, and a variable that is unset or empty is an error.
pub fn expand(expr: &str, env: &BTreeMap<String, String>) -> Result<String, VolumeError> {
    let mut out = String::new();
    let mut missing = std::collections::BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.get(name) {
                        Some(v) if !v.is_empty() => out.push_str(v),
                        _ => {
                            missing.insert(name.to_string());
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if !missing.is_empty() {
        return Err(VolumeError::Invalid(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(out)
}

/// Checks a (expanded) subPath: relative, without `..` elements.
pub fn validate(sub_path: &str) -> Result<(), VolumeError> {
    if sub_path.starts_with('/') {
        return Err(VolumeError::Invalid(format!(
            "error SubPath `{sub_path}` must not be an absolute path"
        )));
    }
    if sub_path.split('/').any(|p| p == "..") {
        return Err(VolumeError::Invalid(format!(
            "unable to provision SubPath `{sub_path}`: must not contain '..'"
        )));
    }
    Ok(())
}

fn open_beneath(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(
        root,
        rel,
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

/// Creates the missing directories of `sub_path` inside `volume` with the volume's own mode
/// (upstream does so, so a group given by fsGroup can write there too), never leaving it.
fn make_dirs_beneath(root: &OwnedFd, sub_path: &str, mode: u32) -> Result<(), VolumeError> {
    let parts: Vec<&str> = sub_path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut prefix = String::new();
    for part in parts {
        let parent = open_beneath(root, &prefix, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| VolumeError::mount("open subPath parent", Path::new(&prefix), e))?;
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(part);
        match open_beneath(root, &prefix, OFlag::O_PATH) {
            Ok(_) => continue,
            Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(VolumeError::mount("open subPath", Path::new(&prefix), e)),
        }
        match mkdirat(&parent, part, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(VolumeError::mount("mkdir subPath", Path::new(&prefix), e)),
        }
        // mkdirat honours the umask; set the intended mode on what was just made.
        let made = open_beneath(root, &prefix, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| VolumeError::mount("open subPath", Path::new(&prefix), e))?;
        nix::sys::stat::fchmod(&made, Mode::from_bits_truncate(mode))
            .map_err(|e| VolumeError::mount("chmod subPath", Path::new(&prefix), e))?;
    }
    Ok(())
}

/// Prepares `sub_path` of the volume at `volume` for one container mount and returns the host
/// path to give the runtime: a bind mount at `target` of what `sub_path` names inside the volume.
/// An existing bind at `target` (a restarted container) is reused.
pub fn prepare(volume: &Path, sub_path: &str, target: &Path) -> Result<PathBuf, VolumeError> {
    validate(sub_path)?;
    if mount::mount_at(target)?.is_some() {
        return Ok(target.to_path_buf());
    }
    let root: OwnedFd = fs::File::open(volume)
        .map_err(|e| VolumeError::io("open volume", volume, e))?
        .into();
    let vol_mode = fs::metadata(volume)
        .map_err(|e| VolumeError::io("stat volume", volume, e))?
        .permissions()
        .mode()
        & 0o7777;
    let outside = || {
        VolumeError::Invalid(format!(
            "subPath `{sub_path}` resolves outside the volume {}",
            volume.display()
        ))
    };
    let fd = match open_beneath(&root, sub_path, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => {
            make_dirs_beneath(&root, sub_path, vol_mode)?;
            open_beneath(&root, sub_path, OFlag::O_PATH).map_err(|e| match e {
                nix::Error::EXDEV => outside(),
                e => VolumeError::mount("open subPath", &volume.join(sub_path), e),
            })?
        }
        Err(nix::Error::EXDEV) => return Err(outside()),
        Err(e) => {
            return Err(VolumeError::mount(
                "open subPath",
                &volume.join(sub_path),
                e,
            ))
        }
    };
    let st =
        fstat(&fd).map_err(|e| VolumeError::mount("stat subPath", &volume.join(sub_path), e))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| VolumeError::io("mkdir", parent, e))?;
    }
    // The bind target must be the same kind (file or directory) as the source.
    let made = if is_dir {
        fs::create_dir(target)
    } else {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map(drop)
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(VolumeError::io("create subPath target", target, e)),
    }
    let proc_path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount::bind(&proc_path, target)?;
    Ok(target.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_upstream() {
        let env = BTreeMap::from([
            ("POD".to_string(), "p-1".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]);
        assert_eq!(expand("logs/$(POD)", &env).expect("expand"), "logs/p-1");
        assert_eq!(expand("a$$(POD)b", &env).expect("escape"), "a$(POD)b");
        assert_eq!(expand("x$y$(", &env).expect("literal"), "x$y$(");
        assert_eq!(
            expand("$(NOPE)/$(EMPTY)", &env)
                .expect_err("missing")
                .to_string(),
            "missing value for EMPTY, NOPE"
        );
    }

    #[test]
    fn validates() {
        assert!(validate("a/b").is_ok());
        assert!(validate("a/../b").is_err());
        assert!(validate("/etc").is_err());
    }
}
