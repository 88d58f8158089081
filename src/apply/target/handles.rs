//! Directory handles kept between calls on a [`TargetRoot`](super::TargetRoot).
//!
//! apply works in path order, so one operation after another mostly lands in the directory the
//! previous one used, or next to it. The chain of directories resolved last is remembered, with
//! an open handle for some of its levels, and the next directory is resolved from the deepest
//! level it shares with that chain: one `openat` per directory the chain does not hold yet, not
//! one per component per call. A walk down or back up a deep tree therefore costs a bounded
//! number of opens per level.
//!
//! Descriptors stay bounded whatever the depth: a handle is kept for the deepest [`WINDOW`]
//! levels, and above them for every `spacing`-th level, a checkpoint from which a level whose
//! handle was dropped is reached again; `spacing` grows with the depth so that there are never
//! more than [`WINDOW`] checkpoints.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::TargetError;

/// Handles kept for the deepest levels of the chain; at most as many checkpoints above them.
const WINDOW: usize = 64;

/// The directories resolved last: `path` (relative to the root, never empty while `levels`
/// is not) and, for each of its components, where it ends in `path` and its handle if kept.
#[derive(Debug, Default)]
pub(super) struct Chain {
    path: Vec<u8>,
    levels: Vec<Level>,
    /// The depth the kept handles were chosen for (see [`keeps`]).
    depth: usize,
}

#[derive(Debug)]
struct Level {
    end: usize,
    fd: Option<Arc<OwnedFd>>,
}

/// The distance between checkpoints for a chain `depth` levels deep.
fn spacing(depth: usize) -> usize {
    let mut spacing = WINDOW;
    while depth / spacing > WINDOW {
        spacing *= 2;
    }
    spacing
}

/// Whether level `i` (0-based) of a chain `depth` levels deep keeps its handle.
fn keeps(i: usize, depth: usize) -> bool {
    i + WINDOW >= depth || (i + 1).is_multiple_of(spacing(depth))
}

impl Chain {
    /// How many levels of the chain are leading components of `dir`.
    fn shared_levels(&self, dir: &[u8]) -> usize {
        let common = self.path.iter().zip(dir).take_while(|(a, b)| a == b).count();
        let mut shared = self.levels.partition_point(|level| level.end < common);
        if self.levels.get(shared).is_some_and(|l| l.end == common && dir.get(common).is_none_or(|&b| b == b'/')) {
            shared += 1;
        }
        shared
    }

    /// Forgets every handle (a kept directory turned out to be gone).
    pub fn clear(&mut self) {
        *self = Chain::default();
    }

    /// The handle of the directory `dir` (a valid relative path, not empty), opening what the
    /// chain does not hold with `open(handle, component, dir up to that component)`, starting
    /// from `root`.
    pub fn resolve(
        &mut self,
        root: BorrowedFd<'_>,
        dir: &[u8],
        mut open: impl FnMut(BorrowedFd<'_>, &[u8], &[u8]) -> Result<OwnedFd, TargetError>,
    ) -> Result<Arc<OwnedFd>, TargetError> {
        let shared = self.shared_levels(dir);
        self.levels.truncate(shared);
        self.path.truncate(self.levels.last().map_or(0, |level| level.end));
        if let Some(Level { fd: Some(fd), end }) = self.levels.last()
            && *end == dir.len()
        {
            return Ok(fd.clone());
        }
        let depth = shared + dir[self.path.len()..].split(|&b| b == b'/').filter(|c| !c.is_empty()).count();
        self.drop_unkept(depth);
        let start = self.levels.iter().rposition(|level| level.fd.is_some());
        let mut at = start.map_or(0, |i| self.levels[i].end + 1);
        let mut handle = start.and_then(|i| self.levels[i].fd.clone());
        let mut index = start.map_or(0, |i| i + 1);
        while at < dir.len() {
            let end = dir[at..].iter().position(|&b| b == b'/').map_or(dir.len(), |i| at + i);
            let parent = handle.as_ref().map_or(root, |fd| fd.as_fd());
            let fd = Arc::new(open(parent, &dir[at..end], &dir[..end])?);
            if index < self.levels.len() {
                self.levels[index].fd = Some(fd.clone());
            } else {
                self.path.extend_from_slice(&dir[self.path.len()..end]);
                self.levels.push(Level { end, fd: Some(fd.clone()) });
            }
            if index > 0 && !keeps(index - 1, depth) {
                self.levels[index - 1].fd = None;
            }
            handle = Some(fd);
            index += 1;
            at = end + 1;
        }
        handle.ok_or_else(|| TargetError::BadPath { path: String::from_utf8_lossy(dir).into(), why: "empty path" })
    }

    /// Drops the handles a chain `depth` levels deep does not keep, looking only where that can
    /// have changed since the last call, so a walk pays a bounded cost per level.
    fn drop_unkept(&mut self, depth: usize) {
        let sweep = if spacing(depth) != spacing(self.depth) {
            0..self.levels.len()
        } else {
            self.depth.saturating_sub(WINDOW).min(self.levels.len())
                ..depth.saturating_sub(WINDOW).min(self.levels.len())
        };
        for i in sweep {
            if !keeps(i, depth) {
                self.levels[i].fd = None;
            }
        }
        self.depth = depth;
    }

    /// Handles held now (for tests of the bound).
    #[cfg(test)]
    pub fn open_handles(&self) -> usize {
        self.levels.iter().filter(|level| level.fd.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves `dir` with handles that are copies of `root`, counting the opens.
    fn resolve(chain: &mut Chain, root: &OwnedFd, dir: &[u8], opens: &mut usize) {
        chain
            .resolve(root.as_fd(), dir, |at, _, _| {
                *opens += 1;
                Ok(rustix::io::dup(at).unwrap())
            })
            .unwrap();
    }

    #[test]
    fn a_walk_down_and_back_up_a_deep_chain_opens_each_level_a_bounded_number_of_times() {
        let root = rustix::fs::open(".", rustix::fs::OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
        let depth = 20_000;
        let mut chain = Chain::default();
        let mut opens = 0;
        let mut path = b"d".to_vec();
        for _ in 1..depth {
            resolve(&mut chain, &root, &path, &mut opens);
            assert!(chain.open_handles() <= 2 * WINDOW, "{} handles", chain.open_handles());
            path.extend_from_slice(b"/d");
        }
        assert_eq!(opens, depth - 1, "one open per level on the way down");
        opens = 0;
        while let Some(cut) = path.iter().rposition(|&b| b == b'/') {
            path.truncate(cut);
            resolve(&mut chain, &root, &path, &mut opens);
            assert!(chain.open_handles() <= 2 * WINDOW, "{} handles", chain.open_handles());
        }
        assert!(opens <= 4 * depth, "{opens} opens on the way up");
        // Siblings share their parent's handle.
        opens = 0;
        resolve(&mut chain, &root, b"a/b", &mut opens);
        resolve(&mut chain, &root, b"a/b", &mut opens);
        resolve(&mut chain, &root, b"a/c", &mut opens);
        resolve(&mut chain, &root, b"a", &mut opens);
        resolve(&mut chain, &root, b"ab", &mut opens);
        assert_eq!(opens, 4, "a, a/b, a/c, ab");
    }
}
