//! The consistency of a tree read from outside, checked entry by entry in manifest order, so a
//! manifest streamed from disk is held to the same rules as one read whole.

use super::{DirNode, Entry, Kind, link_digest};
use crate::digest::Digest;
use crate::path::RelPath;

/// What a hard link points at: the first name of its inode, as its own record says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    pub path: RelPath,
    pub kind: Kind,
    /// That first name is itself marked as a hard link (which it must not be).
    pub is_link: bool,
}

/// An open directory: what its close must check.
#[derive(Debug)]
struct Open {
    path: RelPath,
    digest: Option<Digest>,
    has_problem: bool,
    not_entered: bool,
    node: DirNode,
}

/// Checks a pre-order list of entries as it goes: every entry sits inside a directory listed
/// before it, every non-directory has a digest or a problem, chunk CVs merge to the file root,
/// hard links point at an earlier first name of the same kind, and every directory hash is the
/// hash of its children as listed (checked when the directory's last descendant has passed).
/// Memory: one node hash per open directory, so the depth of the tree.
#[derive(Debug, Default)]
pub struct TreeCheck {
    open: Vec<Open>,
}

/// The offending path and what is wrong with it.
pub type Inconsistency = (RelPath, String);

impl TreeCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next entry, with the entry its hard link points at when it is one.
    pub fn add(&mut self, entry: &Entry, link: Option<&LinkTarget>) -> Result<(), Inconsistency> {
        while let Some(dir) = self.open.last() {
            if entry.path.is_inside(&dir.path) {
                break;
            }
            close(self.open.pop().expect("checked by last()"))?;
        }
        match self.open.last_mut() {
            Some(dir) if dir.not_entered => {
                return Err((entry.path.clone(), "listed below a directory that was not entered".into()));
            }
            Some(dir) if entry.path.parent() == dir.path => dir.node.add(entry),
            None if entry.path.is_root() => {}
            _ => return Err((entry.path.clone(), "its parent directory is not listed before it".into())),
        }
        if entry.digest.is_some() && entry.problem.is_some() {
            return Err((entry.path.clone(), "has both a digest and a problem".into()));
        }
        if entry.kind != Kind::Dir && entry.digest.is_none() && entry.problem.is_none() {
            return Err((entry.path.clone(), "must have either a digest or a problem".into()));
        }
        let own = match entry.kind {
            Kind::Symlink => entry.link.as_deref().map(link_digest),
            Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => Some(Digest::default()),
            Kind::File | Kind::Dir => None,
        };
        if let (Some(digest), Some(own)) = (entry.digest, own)
            && digest != own
        {
            let what = if entry.kind == Kind::Symlink { "the BLAKE3 of its target" } else { "32 zero bytes" };
            return Err((entry.path.clone(), format!("its digest is not {what}")));
        }
        if let (Some(digest), true) = (entry.digest, entry.chunks.len() >= 2)
            && crate::digest::root_from_chunks(&entry.chunks) != digest
        {
            return Err((entry.path.clone(), "chunk hashes do not merge to the file hash".into()));
        }
        if entry.rdev().is_some() && !matches!(entry.kind, Kind::CharDevice | Kind::BlockDevice) {
            return Err((entry.path.clone(), format!("a device number on a {}", entry.kind)));
        }
        if let Some(to) = link {
            check_hard_link(entry, to).map_err(|what| (entry.path.clone(), what))?;
        }
        if entry.kind == Kind::Dir {
            self.open.push(Open {
                path: entry.path.clone(),
                digest: entry.digest,
                has_problem: entry.problem.is_some(),
                not_entered: entry.not_entered,
                node: DirNode::new(),
            });
        }
        Ok(())
    }

    /// After the last entry: the directories still open are complete.
    pub fn finish(&mut self) -> Result<(), Inconsistency> {
        while let Some(top) = self.open.pop() {
            close(top)?;
        }
        Ok(())
    }
}

fn close(dir: Open) -> Result<(), Inconsistency> {
    if !dir.has_problem && dir.digest != dir.node.finish() {
        return Err((dir.path, "directory hash does not match its entries".into()));
    }
    Ok(())
}

/// Checks that a tree read from outside is internally consistent (see [`TreeCheck`]). Returns
/// the first offending path and what is wrong with it.
pub fn check_tree(entries: &[Entry]) -> Result<(), Inconsistency> {
    let mut check = TreeCheck::new();
    for entry in entries {
        let link = match entry.hard_link() {
            None => None,
            Some(first) => {
                let Ok(index) = entries.binary_search_by(|e| e.path.cmp(first)) else {
                    let shown = first.display();
                    let shown = crate::path::Quoted(&shown);
                    return Err((entry.path.clone(), format!("a hard link to {shown}, which is not in the manifest")));
                };
                let to = &entries[index];
                Some(LinkTarget { path: to.path.clone(), kind: to.kind, is_link: to.hard_link().is_some() })
            }
        };
        check.add(entry, link.as_ref())?;
    }
    check.finish()
}

/// A hard link names an earlier entry of the same kind, not a directory, that is itself the
/// first name of its inode.
fn check_hard_link(entry: &Entry, to: &LinkTarget) -> Result<(), String> {
    let shown = to.path.display();
    let shown = crate::path::Quoted(&shown);
    if to.path >= entry.path {
        return Err(format!("a hard link to {shown}, which is not an earlier entry"));
    }
    if entry.kind == Kind::Dir || to.kind != entry.kind {
        return Err(format!("a hard link from a {} to a {} ({shown})", entry.kind, to.kind));
    }
    if to.is_link {
        return Err(format!("a hard link to {shown}, which is itself a hard link to an earlier name"));
    }
    Ok(())
}
