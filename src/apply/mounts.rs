//! The mount table, for telling whether two trees overlap through a bind mount.
//!
//! A bind mount shows a directory a second time, elsewhere, with the same device and inode: a
//! source bind-mounted somewhere inside the target would be written (or deleted) through the
//! target. Comparing the two roots and their ancestors does not see that; the mount points that
//! lie inside one tree, compared with the other tree's root and ancestors, do.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Device and inode of a directory.
pub(super) type Identity = (u64, u64);

/// One line of `/proc/self/mountinfo`: the filesystem (`major:minor`), the directory of it the
/// mount shows (its root), and where it is mounted.
struct Mount {
    device: Vec<u8>,
    root: PathBuf,
    point: PathBuf,
}

/// The mounts of this process's mount namespace, in mount order, from `/proc/self/mountinfo`;
/// empty when it cannot be read.
fn mounts() -> Vec<Mount> {
    let Ok(table) = std::fs::read("/proc/self/mountinfo") else { return Vec::new() };
    table
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b' ').skip(2);
            let (device, root, point) = (fields.next()?, fields.next()?, fields.next()?);
            Some(Mount { device: device.to_vec(), root: unescape(root), point: unescape(point) })
        })
        .collect()
}

/// The mount points, in mount order.
fn mount_points() -> Vec<PathBuf> {
    mounts().into_iter().map(|mount| mount.point).collect()
}

/// True when a mount at or inside `tree` (a canonical path) shows `other` (a canonical path)
/// or anything below it: a bind mount of a subdirectory or of a single file of the other tree.
/// Found by the filesystem and path each mount shows, since no device and inode of the other
/// tree's root or ancestors is seen there.
pub(super) fn shows_part_of(tree: &Path, other: &Path) -> bool {
    let table = mounts();
    // The mount `other` lies on: the last (uppermost) of those with the longest mount point.
    let Some(home) = table.iter().filter(|m| other.starts_with(&m.point)).max_by_key(|m| m.point.as_os_str().len())
    else {
        return false;
    };
    let Ok(below) = other.strip_prefix(&home.point) else { return false };
    let shown = home.root.join(below);
    table
        .iter()
        .filter(|m| m.point.starts_with(tree) && m.device == home.device)
        .any(|m| m.root.starts_with(&shown) || shown.starts_with(&m.root))
}

/// Undoes the octal escapes (`\040` for a space...) of a mountinfo field.
fn unescape(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal =
            field.get(i + 1..i + 4).filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

/// True when a mount point inside `tree` (a canonical path), or `tree` itself, shows one of
/// `identities`: a bind mount of the other tree's root or of a directory above it.
pub(super) fn shows_inside(tree: &Path, identities: &[Identity]) -> bool {
    mount_points()
        .iter()
        .filter(|point| point.starts_with(tree))
        .filter_map(|point| std::fs::metadata(point).ok())
        .any(|meta| identities.contains(&(meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/a\040b\134c"), PathBuf::from("/mnt/a b\\c"));
        assert_eq!(unescape(br"/x\04"), PathBuf::from("/x\\04"));
    }
}
