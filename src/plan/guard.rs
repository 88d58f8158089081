//! Rules that keep a plan from destroying data when run unattended: how much it may delete,
//! and which target it may be applied to. `apply` asks them before it writes anything; `plan`
//! and dry runs show the whole plan and only warn.

use std::path::Path;

use super::{Operation, Plan, TreeIdentity};

/// Limits on removals, as given by the user.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteLimits {
    /// Remove at most this many entries; the removals beyond are skipped and listed.
    pub max_delete: Option<u64>,
    /// Run even when a guard says no.
    pub force: bool,
}

/// Below this share of the target's entries also in the source, the trees look unrelated
/// (swapped arguments, a wrong directory).
const SHARED_MIN_PERCENT: u64 = 10;

/// Why a plan must not run.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the source {root} looks empty or unmounted and the plan deletes {entries} {} from the target: refusing without --force",
        if *.entries == 1 { "entry" } else { "entries" }
    )]
    EmptySource { root: String, entries: u64 },
    #[error(
        "the source {source_root} and the target {target} share only {shared} of the target's {entries} entries, and the plan deletes {deletes}: are SOURCE and TARGET swapped? Refusing without --force or --max-delete N"
    )]
    Unrelated { source_root: String, target: String, shared: u64, entries: u64, deletes: u64 },
    #[error(
        "the plan deletes {deletes} of the target's {entries} entries, more than half: refusing without --force or --max-delete N"
    )]
    MostOfTarget { deletes: u64, entries: u64 },
    #[error(
        "the plan was made for the target {planned_root} ({planned}), but {target} is {found}: refusing to apply it to another tree without --force"
    )]
    OtherTarget { planned_root: String, planned: String, target: String, found: String },
}

/// Entries the plan's removals delete, counted from the operations (the totals are not trusted).
pub fn planned_deletes(plan: &Plan) -> u64 {
    plan.operations.iter().map(|op| if let Operation::Remove { entries, .. } = op { *entries } else { 0 }).sum()
}

/// Entries deleted because the source does not have their path at all (a type change keeps
/// the path: the source's entry takes its place).
fn extra_deletes(plan: &Plan) -> u64 {
    plan.operations
        .iter()
        .map(|op| match op {
            Operation::Remove { entries, expect, .. } if expect.then.is_none() => *entries,
            _ => 0,
        })
        .sum()
}

/// Refuses a plan that deletes from an empty (unmounted?) source, deletes more than half of
/// the target, or deletes from a target that shares almost nothing with the source (swapped
/// arguments). `--force` lifts all three; an explicit `--max-delete` the last two, since it
/// bounds the damage itself. `source_empty` is whether the source directory holds nothing now.
pub fn check_deletes(plan: &Plan, source_empty: bool, limits: DeleteLimits) -> Result<(), Refusal> {
    let deletes = planned_deletes(plan);
    if deletes == 0 || limits.force {
        return Ok(());
    }
    if plan.delete && (plan.source.entries <= 1 || source_empty) {
        return Err(Refusal::EmptySource { root: plan.source.root.clone(), entries: deletes });
    }
    if limits.max_delete.is_some() {
        return Ok(());
    }
    // The root is in both trees and never deleted: it does not count.
    let entries = plan.target.entries.saturating_sub(1);
    let deletes = extra_deletes(plan);
    let shared = entries.saturating_sub(deletes);
    if deletes > 0 && shared * 100 < entries * SHARED_MIN_PERCENT {
        return Err(Refusal::Unrelated {
            source_root: plan.source.root.clone(),
            target: plan.target.root.clone(),
            shared,
            entries,
            deletes,
        });
    }
    if deletes > 0 && deletes * 2 > entries {
        return Err(Refusal::MostOfTarget { deletes, entries });
    }
    Ok(())
}

/// Refuses to apply a plan to a directory other than the one it was made for, when the plan
/// recorded which one that was (plans made from manifests, and older plans, did not).
pub fn check_target(plan: &Plan, target: &Path, force: bool) -> Result<(), Refusal> {
    let Some(planned) = &plan.target.identity else { return Ok(()) };
    if force {
        return Ok(());
    }
    let found = TreeIdentity::of(target);
    if found.as_ref() == Some(planned) {
        return Ok(());
    }
    Err(Refusal::OtherTarget {
        planned_root: plan.target.root.clone(),
        planned: planned.to_string(),
        target: target.display().to_string(),
        found: found.map_or_else(|| "not a readable directory".into(), |f| f.to_string()),
    })
}
