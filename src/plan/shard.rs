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
//! The other `mkdir`s are done by every shard before its own operations (a directory that a
//! concurrent shard has just made counts as done). The other directories' `meta` operations
//! are done by the shard that finishes last, alone, after every write into them.

use std::collections::HashSet;

use super::{CheckedPlan, Found, Operation, Plan, PlanError, Totals, write_plan};
use crate::digest::ChunkSize;
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::shard::Shard;

/// The operations of `plan` that shard `shard` carries out, in plan order, as a plan of their
/// own (its totals are this part's; its checksum, and so its journal, differ from the whole's),
/// and the metadata of the directories, which every shard's operations may write into: the
/// shard that finishes last sets them ([`crate::apply::LockedTarget::finish_shard`]).
pub fn shard_plan(mut plan: Plan, shard: Shard) -> (Plan, Plan) {
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
    // A hard link joins the group of its own place with that of its inode's first name.
    let mut groups = Groups::default();
    for op in &all {
        if let Operation::Link { to, to_bytes, .. } = op
            && let (Ok(path), Ok(to)) = (op.rel(), RelPath::from_report(to, to_bytes.as_deref()))
        {
            groups.join(anchor(path).0, anchor(to).0);
        }
    }
    let mut last = Vec::new();
    let operations: Vec<Operation> = all
        .into_iter()
        .filter_map(|op| {
            let Ok(path) = op.rel() else { return (shard.index() == 1).then_some(op) };
            let (key, below_change) = anchor(path);
            match op {
                Operation::Mkdir { .. } if !below_change => return Some(op),
                Operation::Meta { kind: Kind::Dir, .. } if !below_change => {
                    last.push(op);
                    return None;
                }
                _ => {}
            }
            let mine = if unshares { shard.index() == 1 } else { shard.owns_path(groups.find(key).as_bytes()) };
            mine.then_some(op)
        })
        .collect();
    let chunk = ChunkSize::new(plan.head.chunk_size).unwrap_or(ChunkSize::DEFAULT);
    let mut finish = Plan { head: plan.head.clone(), operations: last };
    finish.head.totals = Totals::of(&finish.operations, chunk);
    plan.head.totals = Totals::of(&operations, chunk);
    plan.operations = operations;
    (plan, finish)
}

/// [`shard_plan`] for a plan read as a stream, giving checked plans again: the whole plan is
/// held in memory while it is cut, so a sharded apply's memory grows with the plan.
pub fn shard_checked(plan: CheckedPlan, shard: Shard) -> Result<(CheckedPlan, CheckedPlan), PlanError> {
    let (part, finish) = shard_plan(plan.into_plan()?, shard);
    Ok((reopen(&part, shard)?, reopen(&finish, shard)?))
}

fn reopen(plan: &Plan, shard: Shard) -> Result<CheckedPlan, PlanError> {
    let name = format!("<shard {shard} of the plan>");
    let mut bytes = Vec::new();
    write_plan(plan, &mut bytes).map_err(|cause| PlanError::Io { file: name.clone(), cause })?;
    CheckedPlan::open(&bytes[..], std::path::Path::new(&name))
}

/// Paths that must go to one shard together, each group named by its least path.
#[derive(Debug, Default)]
struct Groups {
    parent: std::collections::HashMap<RelPath, RelPath>,
}

impl Groups {
    fn find(&self, mut path: RelPath) -> RelPath {
        while let Some(up) = self.parent.get(&path) {
            path = up.clone();
        }
        path
    }

    fn join(&mut self, a: RelPath, b: RelPath) {
        let (a, b) = (self.find(a), self.find(b));
        match a.cmp(&b) {
            std::cmp::Ordering::Less => self.parent.insert(b, a),
            std::cmp::Ordering::Greater => self.parent.insert(a, b),
            std::cmp::Ordering::Equal => None,
        };
    }
}
