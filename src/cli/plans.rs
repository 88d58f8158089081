//! Plans on the command line: made into a file or into a private temporary file, loaded
//! checked, and shown to people (the dry run) or as the plan's own JSON.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use cutover::apply::source::{DirSource, record_holes};
use cutover::digest::ChunkSize;
use cutover::manifest::{Kind, Manifest};
use cutover::plan::{
    CheckedPlan, Operation, PlanHead, PlanOptions, PlanOutput, PlanWriter, Tally, TreeIdentity, build_plan_into,
};

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

pub(super) fn load_plan(path: &Path) -> Result<CheckedPlan> {
    if path.as_os_str() == "-" {
        return Ok(CheckedPlan::open(std::io::stdin().lock(), Path::new("<stdin>"))?);
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    Ok(CheckedPlan::open(file, path)?)
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
                format!("{}, {entries} entries, {}", expect.kind, size(*bytes))
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
                format!("{} chunks, {}: {}", chunks.len(), size(op.copy_bytes(chunk)), ranges.join(" "))
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
