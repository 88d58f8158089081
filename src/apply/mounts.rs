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

/// The mount points of this process's mount namespace, from `/proc/self/mountinfo`; empty
/// when it cannot be read.
fn mount_points() -> Vec<PathBuf> {
    let Ok(table) = std::fs::read("/proc/self/mountinfo") else { return Vec::new() };
    table.split(|&b| b == b'\n').filter_map(|line| line.split(|&b| b == b' ').nth(4)).map(unescape).collect()
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
