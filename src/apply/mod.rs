//! Stage 5: carry out a plan ([`CheckedPlan`]), one batch of operations at a time.
//!
//! Every operation re-checks its precondition right before writing and verifies its
//! postcondition right after; an operation whose postcondition already holds is skipped, which
//! makes a re-run after a crash finish the job. Writes go through [`target::TargetRoot`], which
//! never leaves the target root nor follows a symlink inside it. Source bytes come from a
//! [`source::SourceData`] and are checked against the plan's hashes before they are written.
//!
//! A run holds its target's lock ([`LockedTarget`]) throughout, keeps its journal in the state
//! directory ([`crate::state`]), and stops between operations, or between chunks of one, when
//! a signal asks it to ([`crate::interrupt`]).

mod attrs;
mod journal;
mod locked;
mod mounts;
mod ops;
pub mod source;
mod sparse;
pub mod target;

use crate::digest::ChunkSize;
use crate::interrupt::Signal;
use crate::plan::{CheckedPlan, OpPath, Operation, Plan};

use self::journal::Journal;
pub use self::locked::LockedTarget;
use self::source::SourceData;

/// Limits for unattended runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyOptions<'a> {
    /// Remove at most this many entries: the removals beyond are skipped and listed, the rest
    /// of the plan is carried out (as rsync's `--max-delete`).
    pub max_delete: Option<u64>,
    /// Run even when a safety check says no.
    pub force: bool,
    /// Told of each operation as soon as its outcome is final (`-i`, `--log`, progress).
    pub observer: Option<Observer<'a>>,
}

/// One operation's outcome, as it happens: `bytes` is what it wrote to the target (copy,
/// patch) or removed from it (remove). An operation cut short by a signal is not told.
#[derive(Clone, Copy, Debug)]
pub struct Event<'e> {
    pub index: usize,
    pub op: &'e Operation,
    pub outcome: &'e Outcome,
    pub bytes: u64,
}

/// A callback for [`Event`]s.
#[derive(Clone, Copy)]
pub struct Observer<'a>(pub &'a dyn Fn(Event<'_>));

impl std::fmt::Debug for Observer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl ApplyOptions<'_> {
    fn observe(&self, index: usize, op: &Operation, outcome: &Outcome, bytes: u64) {
        if let Some(Observer(tell)) = self.observer {
            tell(Event { index, op, outcome, bytes });
        }
    }
}

/// How one operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The postcondition already held (a previous run did it).
    AlreadyDone,
    /// The precondition no longer held: the target or the source changed since the plan.
    /// Nothing was written.
    Skipped(String),
    /// Something went wrong while writing or the result did not verify.
    Failed(String),
}

/// What an apply run did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    pub done: u64,
    pub already_done: u64,
    /// Skipped and failed operations with their reasons.
    pub problems: Vec<(OpPath, &'static str, Outcome)>,
    pub bytes_copied: u64,
    pub bytes_deleted: u64,
    pub entries_deleted: u64,
    /// Temporary files left by an earlier, interrupted run and removed now.
    pub stale_temps_removed: u64,
    /// The run stopped early, at a safe point, because of this signal.
    pub interrupted: Option<Signal>,
    /// Removals not carried out because they would have passed `--max-delete`, with the
    /// entries each would have deleted.
    pub held_deletes: Vec<(OpPath, u64)>,
}

impl ApplyReport {
    /// True when every operation's postcondition now holds.
    pub fn complete(&self) -> bool {
        self.problems.is_empty() && self.held_deletes.is_empty() && self.interrupted.is_none()
    }
}

/// A run that must not start.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Refused(#[from] crate::plan::Refusal),
    #[error(
        "the source {source_root} and the target {target} overlap: one lies inside the other or is mounted inside it, so writing the target would change the source"
    )]
    Overlap { source_root: String, target: String },
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Journal(String),
    #[error("the plan: {0}")]
    BadPlan(String),
}

/// The id that ties bundles and journals to a whole plan in memory: the first 32 hex digits of
/// its checksum ([`CheckedPlan::id`] for a plan read from a file).
pub fn plan_id(plan: &Plan) -> String {
    crate::plan::plan_checksum(plan)[..32].to_string()
}

/// Carries out `plan` on the locked `target`, reading source bytes from `source`.
///
/// The plan was checked whole when it was opened; its operations are read here one batch at a
/// time (at most [`BATCH_OPS`] of them), which is all this holds of them.
pub fn apply(
    plan: &CheckedPlan,
    source: &mut dyn SourceData,
    target: &LockedTarget,
    options: &ApplyOptions<'_>,
) -> Result<ApplyReport, ApplyError> {
    // From here a signal is only noted; the loop below stops at the next safe point.
    let _deferred = crate::interrupt::defer();
    let head = &plan.head;
    let limits = crate::plan::DeleteLimits { max_delete: options.max_delete, force: options.force };
    crate::plan::check_deletes(head, &plan.tally, source.looks_empty(), limits)?;
    crate::plan::check_target(head, target.path(), options.force)?;
    if source.overlaps(target.path()) {
        return Err(ApplyError::Overlap {
            source_root: head.source.root.clone(),
            target: target.path().display().to_string(),
        });
    }
    let root = target.root();
    let chunk = ChunkSize::new(head.chunk_size).map_err(ApplyError::BadPlan)?;
    let stale_temps_removed = target.clean_stale(Some(&plan.id))?;
    let mut journal = Journal::open(target.state(), &plan.id, target::temp_nonce()).map_err(ApplyError::Journal)?;
    let mut report = ApplyReport { stale_temps_removed, ..ApplyReport::default() };
    let exclude = crate::exclude::Excludes::new(&head.exclude).map_err(ApplyError::BadPlan)?;
    let mut delete_budget = options.max_delete;
    let mut stop = false;
    let mut batches = Batches { operations: plan.operations(), next: 0, chunk };
    loop {
        let (start, batch) = match batches.next_batch() {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(why) => {
                let root = OpPath { path: ".".into(), path_bytes: None };
                report.problems.push((root, "plan", Outcome::Failed(why.to_string())));
                break;
            }
        };
        let ops = start..start + batch.len();
        let dirs = batch.iter().filter_map(temp_dir);
        if let Err(why) = journal.begin_batch(ops.clone(), dirs.collect::<Vec<_>>().iter().map(|d| &d[..])) {
            report.problems.push((batch[0].at().clone(), "journal", Outcome::Failed(why)));
            break;
        }
        let mut attempted = false;
        for (index, op) in ops.clone().zip(&batch) {
            if let Some(signal) = crate::interrupt::pending() {
                report.interrupted = Some(signal);
                stop = true;
                break;
            }
            if let (Operation::Remove { entries, .. }, Some(budget)) = (op, delete_budget) {
                // Whole removals only; once one does not fit, none after it runs (as rsync stops).
                if *entries > budget {
                    delete_budget = Some(0);
                    report.held_deletes.push((op.at().clone(), *entries));
                    continue;
                }
            }
            attempted = true;
            let deleted_before = report.entries_deleted;
            let bytes_before = report.bytes_copied + report.bytes_deleted;
            let mut run = ops::Run {
                root,
                source: &mut *source,
                chunk,
                journal: &mut journal,
                report: &mut report,
                exclude: &exclude,
                plan,
            };
            let outcome = run.operation(index, op);
            let bytes = report.bytes_copied + report.bytes_deleted - bytes_before;
            // What was deleted counts, not what was planned: a removal a previous run of the
            // plan did already deletes nothing now.
            if let Some(budget) = delete_budget.as_mut() {
                *budget = budget.saturating_sub(report.entries_deleted - deleted_before);
            }
            if matches!(outcome, Outcome::Done | Outcome::AlreadyDone)
                && let Err(why) = journal.finish_op(index)
            {
                let outcome = Outcome::Failed(why);
                options.observe(index, op, &outcome, bytes);
                report.problems.push((op.at().clone(), op.name(), outcome));
                continue;
            }
            // Cut short at a safe point by a signal: neither done nor a problem; the next run
            // of the plan does it (the journal says whether it had begun writing in place).
            if let Some(signal) = crate::interrupt::pending()
                && !matches!(outcome, Outcome::Done | Outcome::AlreadyDone)
            {
                report.interrupted = Some(signal);
                stop = true;
                break;
            }
            // Each operation's outcome is known here, and only here.
            options.observe(index, op, &outcome, bytes);
            match outcome {
                Outcome::Done => report.done += 1,
                Outcome::AlreadyDone => report.already_done += 1,
                other => report.problems.push((op.at().clone(), op.name(), other)),
            }
        }
        // One sync makes the whole batch durable; only then does the journal say so.
        let synced = if attempted { root.sync_filesystem().map_err(|e| e.to_string()) } else { Ok(()) };
        let ended = journal.end_batch(synced.is_ok());
        if let Some(why) = synced.err().or(ended.err()) {
            let why = format!(
                "{why}: the writes of operations {} to {} may not be durable; running the same plan again redoes what a crash would lose",
                ops.start,
                ops.end - 1
            );
            let root = OpPath { path: ".".into(), path_bytes: None };
            report.problems.push((root, "sync", Outcome::Failed(why)));
            break;
        }
        if stop {
            break;
        }
    }
    // Held removals never started, so the journal has nothing to finish for them.
    if report.problems.is_empty() && report.interrupted.is_none() {
        journal.finish().map_err(ApplyError::Journal)?;
    }
    Ok(report)
}

/// Operations per batch: the writes of a batch are made durable by one `syncfs` of the target,
/// and the journal records a batch begun before its first write and synced after.
const BATCH_OPS: usize = 2048;
/// Bytes written per batch, at most (one operation may pass it alone).
const BATCH_BYTES: u64 = 128 << 20;

/// The plan's operations cut into batches of consecutive operations, at most [`BATCH_OPS`]
/// operations and about [`BATCH_BYTES`] bytes to write each, read as they are needed.
struct Batches<'a> {
    operations: crate::plan::Operations<'a>,
    /// The index of the next operation.
    next: usize,
    chunk: ChunkSize,
}

impl Batches<'_> {
    /// The next batch and the index of its first operation.
    fn next_batch(&mut self) -> Result<Option<(usize, Vec<Operation>)>, crate::plan::PlanError> {
        let (start, mut batch, mut bytes) = (self.next, Vec::new(), 0u64);
        for op in self.operations.by_ref() {
            let op = op?;
            bytes += match &op {
                Operation::Copy { source, .. } => source.size,
                Operation::Patch { chunks, .. } => chunks.len() as u64 * self.chunk.bytes(),
                _ => 0,
            };
            batch.push(op);
            if batch.len() >= BATCH_OPS || bytes >= BATCH_BYTES {
                break;
            }
        }
        self.next += batch.len();
        Ok((!batch.is_empty()).then_some((start, batch)))
    }
}

/// The directory where operation `op` may make a temporary file (beside its path).
fn temp_dir(op: &Operation) -> Option<Vec<u8>> {
    match op {
        Operation::Remove { .. } | Operation::Mkdir { .. } => None,
        _ => op.rel().ok().map(|path| path.parent().as_bytes().to_vec()),
    }
}
