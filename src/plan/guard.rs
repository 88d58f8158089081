//! Rules that keep a plan from destroying data when run unattended: how much it may delete,
//! and which target it may be applied to. `apply` asks them before it writes anything; `plan`
//! and dry runs show the whole plan and only warn.

use std::path::Path;

use super::{PlanHead, Tally, TreeIdentity};

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

/// Refuses a plan that deletes from an empty (unmounted?) source, deletes more than half of
/// the target, or deletes from a target that shares almost nothing with the source (swapped
/// arguments). `--force` lifts all three; an explicit `--max-delete` the last two, since it
/// bounds the damage itself. `tally` counts the plan's operations (the totals a file states are
/// not trusted). `source_empty` is whether the source directory holds nothing now.
pub fn check_deletes(plan: &PlanHead, tally: &Tally, source_empty: bool, limits: DeleteLimits) -> Result<(), Refusal> {
    let deletes = tally.deletes();
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
    let deletes = tally.extra_deletes;
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
pub fn check_target(plan: &PlanHead, target: &Path, force: bool) -> Result<(), Refusal> {
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
