//! A plan cut into parts that separate processes carry out at once (`apply --shard I/N`).
//!
//! Each operation acting on an entry belongs to one shard, by a hash of its path
//! ([`crate::shard::Shard::owner_of_path`]), with three rules that keep every dependency
//! inside one shard:
//!
//! - everything at or below a path whose type changes into a directory (a removal whose
//!   `then` is a directory) goes with that path: its removal, its `mkdir`, its contents and
//!   their metadata run in one shard, in plan order;
//! - a hard link goes with the first name of its inode (which the plan makes right first);
//! - a plan that unshares hard links puts all of its owned operations in shard 1, since
//!   writing one name of a shared inode changes the others.
//!
//! The other `mkdir`s and every directory's `meta` are done by every shard: `mkdir` before
//! its own operations (a directory that a concurrent shard has just made counts as done), and
//! the directories' metadata after them, so whichever shard finishes last leaves every
//! directory's mode and mtime as planned after the last write into it.

use std::collections::HashSet;

use super::{Found, Operation, Plan, Totals};
use crate::digest::ChunkSize;
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::shard::Shard;

/// The operations of `plan` that shard `shard` carries out, in plan order, as a plan of their
/// own (its totals are this part's; its checksum, and so its journal, differ from the whole's).
pub fn shard_plan(mut plan: Plan, shard: Shard) -> Plan {
    let all = std::mem::take(&mut plan.operations);
    let to_dir: HashSet<RelPath> = all
        .iter()
        .filter(|op| matches!(op, Operation::Remove { expect: Found { then: Some(Kind::Dir), .. }, .. }))
        .filter_map(|op| op.rel().ok())
        .collect();
    let unshares = all.iter().any(|op| matches!(op, Operation::Unshare { .. }));
    let anchor = |path: RelPath| -> (RelPath, bool) {
        if !to_dir.is_empty() {
            let mut top = None;
            let mut at = path.clone();
            loop {
                if to_dir.contains(&at) {
                    top = Some(at.clone());
                }
                if at.is_root() {
                    break;
                }
                at = at.parent();
            }
            if let Some(top) = top {
                return (top, true);
            }
        }
        (path, false)
    };
    let operations: Vec<Operation> = all
        .into_iter()
        .filter(|op| {
            let Ok(path) = op.rel() else { return shard.index() == 1 };
            let (key, below_change) = anchor(path);
            let shared = matches!(op, Operation::Mkdir { .. } | Operation::Meta { kind: Kind::Dir, .. });
            if shared && !below_change {
                return true;
            }
            if unshares {
                return shard.index() == 1;
            }
            let key = match op {
                Operation::Link { to, to_bytes, .. } if !below_change => {
                    RelPath::from_report(to, to_bytes.as_deref()).map(|to| anchor(to).0).unwrap_or(key)
                }
                _ => key,
            };
            shard.owns_path(key.as_bytes())
        })
        .collect();
    let chunk = ChunkSize::new(plan.chunk_size).unwrap_or(ChunkSize::DEFAULT);
    plan.totals = Totals::of(&operations, chunk);
    plan.operations = operations;
    plan
}
