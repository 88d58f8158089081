//! What a sharded scan reads: every directory, and of the other names only those its shard
//! owns (see [`crate::shard`]). A name with more than one hard link belongs to the shard of its
//! inode, so all names of an inode are grouped in one part, as a whole scan groups them.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, FileType};

use super::walk::{Walker, kind_of};
use crate::manifest::{Entry, Kind};
use crate::path::RelPath;

impl Walker<'_> {
    /// The names of the directory `dir` (at `path`) this shard visits: subdirectories, names
    /// whose path it owns, and names of other paths whose inode it owns (a stat tells).
    pub(super) fn owned(
        &self,
        dir: &OwnedFd,
        path: &RelPath,
        names: Vec<(CString, FileType)>,
    ) -> Vec<(CString, FileType)> {
        let Some(shard) = self.shard() else { return names };
        let mut full = Vec::with_capacity(path.as_bytes().len() + 64);
        names
            .into_iter()
            .filter(|(name, listed)| {
                if *listed == FileType::Directory {
                    return true;
                }
                full.clear();
                if !path.is_root() {
                    full.extend_from_slice(path.as_bytes());
                    full.push(b'/');
                }
                full.extend_from_slice(name.to_bytes());
                if shard.owns_path(&full) {
                    // Kept; if it turns out to have hard links, `owns` decides by its inode.
                    return true;
                }
                match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) if kind_of(&stat) == Kind::Dir => true,
                    #[allow(clippy::unnecessary_cast)] // st_nlink and st_ino are not u64 everywhere
                    Ok(stat) => stat.st_nlink as u64 > 1 && shard.owns_inode(stat.st_ino as u64),
                    // It vanished, or cannot be looked at: the shard of its path records that.
                    Err(_) => false,
                }
            })
            .collect()
    }

    /// Whether this shard records `entry`, now that its stat is known.
    pub(super) fn owns(&self, entry: &Entry) -> bool {
        let Some(shard) = self.shard() else { return true };
        if entry.kind == Kind::Dir {
            return true;
        }
        match entry.inode.as_ref().and_then(|info| info.key) {
            Some((_, ino)) => shard.owns_inode(ino),
            None => shard.owns_path(entry.path.as_bytes()),
        }
    }
}
