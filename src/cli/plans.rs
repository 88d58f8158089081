//! Plans on the command line: made into a file or into a private temporary file, loaded
//! checked, and shown to people (the dry run) or as the plan's own JSON; and what an apply run
//! did, as the `cutover-apply/1` report in human, JSON and JSONL-summary form (docs/plan.md).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use cutover::apply::source::{DirSource, record_holes};
use cutover::apply::{ApplyReport, Outcome};
use cutover::digest::ChunkSize;
use cutover::manifest::{Kind, Manifest};
use cutover::plan::{
    CheckedPlan, Operation, PlanHead, PlanOptions, PlanOutput, PlanWriter, Tally, TreeIdentity, build_plan_into,
};

use super::inputs::{Wanted, explain};
use super::render::{count, shown, size};
use super::{EXIT_DIFFERENT, EXIT_SAME, EXIT_TROUBLE, Format};

/// A plan about to be made: what it is made from, and where the holes of the source files it
/// copies are counted (a source directory).
pub(super) struct Making<'a> {
    pub(super) source: &'a Manifest,
    pub(super) target: &'a Manifest,
    pub(super) options: &'a PlanOptions,
    pub(super) identity: Option<TreeIdentity>,
    pub(super) holes: Option<DirSource>,
}

impl Making<'_> {
    /// Writes the plan to `out` as it is made.
    pub(super) fn write(self, out: &mut dyn Write) -> std::io::Result<(PlanHead, Tally, cutover::diff::Report)> {
        let holes = self.holes;
        let mut prepare = |op: &mut Operation, chunk: ChunkSize| {
            if let Some(holes) = &holes {
                record_holes(op, chunk, holes);
            }
        };
        let output = PlanOutput { identity: self.identity, prepare: &mut prepare };
        build_plan_into(self.source, self.target, self.options, output, std::io::BufWriter::new(out))
    }

    /// Makes the plan into a checked plan (its operations kept in a private temporary file),
    /// to show or apply it without holding them.
    pub(super) fn checked(self) -> Result<(CheckedPlan, cutover::diff::Report)> {
        let holes = self.holes;
        let mut prepare = |op: &mut Operation, chunk: ChunkSize| {
            if let Some(holes) = &holes {
                record_holes(op, chunk, holes);
            }
        };
        let output = PlanOutput { identity: self.identity, prepare: &mut prepare };
        Ok(CheckedPlan::build(self.source, self.target, self.options, output)?)
    }
}

/// Exit code of a plan: 2 when something could not be read or cannot be repaired, else 1 when
/// there is work, 0 when there is none.
pub(super) fn plan_verdict(head: &PlanHead, tally: &Tally, report: &cutover::diff::Report) -> u8 {
    if report.summary().trouble > 0 || !head.unrepairable.is_empty() {
        EXIT_TROUBLE
    } else if tally.totals.operations == 0 {
        EXIT_SAME
    } else {
        EXIT_DIFFERENT
    }
}

/// Reads and checks the plan `command` was given; a file that is something else is named as such.
pub(super) fn load_plan(path: &Path, command: &str) -> Result<CheckedPlan> {
    if path.as_os_str() == "-" {
        return Ok(CheckedPlan::open(std::io::stdin().lock(), Path::new("<stdin>"))?);
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    CheckedPlan::open(file, path).map_err(|e| explain(path, Wanted::Plan, command, e))
}

pub(super) fn plan_summary(out: &mut dyn Write, plan: &PlanHead) -> std::io::Result<()> {
    let t = &plan.totals;
    writeln!(
        out,
        "plan: {}, {} to copy, {} ({}) to delete",
        count(t.operations, "operation", "operations"),
        size(t.copy_bytes),
        count(t.delete_entries, "entry", "entries"),
        size(t.delete_bytes)
    )?;
    for u in &plan.unrepairable {
        writeln!(out, "cannot repair {}: {}", u.path, u.reason)?;
    }
    Ok(())
}

/// The plan in human form: the dry run.
pub fn show_plan(out: &mut dyn Write, plan: &CheckedPlan) -> std::io::Result<()> {
    let chunk = ChunkSize::new(plan.head.chunk_size).unwrap_or(ChunkSize::DEFAULT);
    for op in plan.operations() {
        let op = &op.map_err(std::io::Error::other)?;
        let path = op
            .rel()
            .map(|p| if p.is_root() { ".".into() } else { shown(p.as_bytes()) })
            .unwrap_or_else(|e| format!("<{e}>"));
        let detail = match op {
            Operation::Remove { expect, entries, bytes, .. } => {
                format!("{}, {}, {}", expect.kind, count(*entries, "entry", "entries"), size(*bytes))
            }
            Operation::Mkdir { .. } => String::new(),
            Operation::Copy { source, replaces, .. } => {
                format!("{}{}", size(source.size), if replaces.is_some() { ", replacing" } else { "" })
            }
            Operation::Patch { source, chunks, .. } => {
                let ranges: Vec<String> = chunks
                    .iter()
                    .take(8)
                    .map(|c| {
                        let r = chunk.chunk_range(c.index, source.size);
                        format!("{}+{}", r.offset, r.length)
                    })
                    .collect();
                let chunks = count(chunks.len() as u64, "chunk", "chunks");
                format!("{chunks}, {}: {}", size(op.copy_bytes(chunk)), ranges.join(" "))
            }
            Operation::Symlink { link, .. } => format!("→ {link}"),
            Operation::Link { to, to_bytes, replaces, .. } => {
                let to = cutover::plan::text_bytes(to, to_bytes.as_deref()).unwrap_or_default();
                format!("hard link to {}{}", shown(&to), if replaces.is_some() { ", replacing" } else { "" })
            }
            Operation::Mknod { kind, rdev, replaces, .. } => {
                let numbers = rdev.map(|(major, minor)| format!(" {major}:{minor}")).unwrap_or_default();
                format!("{kind}{numbers}{}", if replaces.is_some() { ", replacing" } else { "" })
            }
            Operation::Unshare { kind, .. } => format!("{kind}: an inode of its own"),
            Operation::Meta { kind, mode, mtime, owner, .. } => {
                let mut fields = Vec::new();
                if let Some(mode) = mode.filter(|_| *kind != Kind::Symlink) {
                    fields.push(format!("mode {mode:04o}"));
                }
                if mtime.is_some() {
                    fields.push("mtime".into());
                }
                if let Some((uid, gid)) = owner {
                    fields.push(format!("owner {uid}:{gid}"));
                }
                fields.join(", ")
            }
        };
        writeln!(out, "{}", format!("{:<8} {path}  {detail}", op.name()).trim_end())?;
    }
    plan_summary(out, &plan.head)
}

/// A dry run: the plan in human form, or the plan's own JSON (docs/plan.md) for `--format json`
/// and `jsonl`.
pub(super) fn show_dry_run(out: &mut dyn Write, plan: &CheckedPlan, format: Format) -> std::io::Result<()> {
    match format {
        Format::Human => show_plan(out, plan),
        Format::Json | Format::Jsonl => {
            let mut writer = PlanWriter::new(std::io::BufWriter::new(out), &plan.head)?;
            for op in plan.operations() {
                writer.push(&op.map_err(std::io::Error::other)?)?;
            }
            writer.finish(&plan.head).map(drop)
        }
    }
}

/// The `cutover-apply/1` JSON of an apply run.
pub(super) fn apply_json(report: &ApplyReport) -> serde_json::Value {
    let (skipped, failed): (Vec<_>, Vec<_>) =
        report.problems.iter().partition(|(_, _, outcome)| matches!(outcome, Outcome::Skipped(_)));
    {
        let list = |items: &[&(cutover::plan::OpPath, &str, Outcome)]| {
            items
                .iter()
                .map(|(at, op, outcome)| {
                    let (Outcome::Skipped(why) | Outcome::Failed(why)) = outcome else { unreachable!() };
                    json!({"path": at.path, "path_bytes": at.path_bytes, "op": op, "reason": why})
                })
                .collect::<Vec<_>>()
        };
        let doc = json!({
            "format": "cutover-apply/1",
            "complete": report.complete(),
            "done": report.done,
            "already_done": report.already_done,
            "skipped": list(&skipped),
            "failed": list(&failed),
            "bytes_copied": report.bytes_copied,
            "bytes_deleted": report.bytes_deleted,
            "entries_deleted": report.entries_deleted,
            "stale_temps_removed": report.stale_temps_removed,
            "interrupted": report.interrupted.map(|signal| signal.name()),
            "held_deletes": report.held_deletes.iter().map(|(at, entries)| {
                json!({"path": at.path, "path_bytes": at.path_bytes, "entries": entries})
            }).collect::<Vec<_>>(),
        });
        doc
    }
}

pub(super) fn show_apply(out: &mut dyn Write, report: &ApplyReport, format: Format) -> std::io::Result<()> {
    if format != Format::Human {
        let mut doc = apply_json(report);
        if format == Format::Jsonl {
            doc["type"] = json!("summary");
        }
        serde_json::to_writer(&mut *out, &doc)?;
        return writeln!(out);
    }
    let (skipped, failed): (Vec<_>, Vec<_>) =
        report.problems.iter().partition(|(_, _, outcome)| matches!(outcome, Outcome::Skipped(_)));
    if report.stale_temps_removed > 0 {
        writeln!(out, "removed {} temporary files left by an interrupted run", report.stale_temps_removed)?;
    }
    for (at, op, outcome) in &report.problems {
        let (label, why) = match outcome {
            Outcome::Skipped(why) => ("skipped", why),
            Outcome::Failed(why) => ("failed", why),
            _ => continue,
        };
        writeln!(out, "{label:<8} {op} {}: {why}", at.path)?;
    }
    if let Some(signal) = report.interrupted {
        writeln!(
            out,
            "stopped by {} at a safe point: no temporary file is left; running the same plan again finishes it",
            signal.name()
        )?;
    }
    for (at, entries) in &report.held_deletes {
        writeln!(
            out,
            "held     remove {}: {} beyond --max-delete; not deleted",
            at.path,
            count(*entries, "entry", "entries")
        )?;
    }
    writeln!(
        out,
        "apply: {} done, {} already done, {} skipped, {} failed; {} copied, {} ({}) deleted",
        report.done,
        report.already_done,
        skipped.len(),
        failed.len(),
        size(report.bytes_copied),
        count(report.entries_deleted, "entry", "entries"),
        size(report.bytes_deleted)
    )
}
