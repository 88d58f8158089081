//! The run record: one value per run of scan, diff, plan, apply or repair, filled in as the run
//! goes and finished with its exit code (or its error) whatever happened. `--report` renders it
//! as JSON (`cutover-run/1`, docs/report.md), `--metrics` as Prometheus text
//! ([`super::metrics`]); both forms read only this value.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use cutover::apply::{ApplyReport, Outcome};
use cutover::diff::{Report, Summary};
use cutover::manifest::{Kind, Manifest};
use cutover::path::RelPath;
use cutover::plan::PlanHead;

/// The format id of the JSON run record.
pub const FORMAT: &str = "cutover-run/1";

/// Where a run's record goes; shared by every command that keeps one.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArg {
    /// Write a JSON record of this run to FILE at its end, also when it fails (docs/report.md).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write Prometheus metrics of this run to FILE (node_exporter's textfile format), carrying
    /// the last success time forward from the FILE already there (docs/cron.md).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// The job label of the metrics and the record (default: the command's name).
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
}

/// How many entries, files and bytes were checked, and how many of them matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    /// `None` for a scan, which compares nothing.
    pub matched: Option<Matched>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matched {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
}

impl Checked {
    /// The entries of one tree (a scan).
    pub fn of_tree(manifest: &Manifest) -> Checked {
        let mut checked = Checked::default();
        for entry in &manifest.entries {
            checked.count(entry.kind, entry.size);
        }
        checked
    }

    /// The source's entries, compared against the target in `report`: an entry matched when
    /// neither it nor a directory above it is named by a difference. One pass in path order:
    /// a differing entry's whole subtree is skipped by index, so a deep tree costs no more.
    pub fn of_comparison(source: &Manifest, report: &Report) -> Checked {
        let differing: HashSet<&RelPath> = report.differences.iter().map(|d| &d.path).collect();
        let mut checked = Checked { matched: Some(Matched::default()), ..Checked::default() };
        let mut matched = Matched::default();
        let mut differs_until = 0;
        for (index, entry) in source.entries.iter().enumerate() {
            checked.count(entry.kind, entry.size);
            if index >= differs_until && differing.contains(&entry.path) {
                differs_until = source.subtree_end(index);
            }
            if index >= differs_until {
                matched.entries += 1;
                if entry.kind == Kind::File {
                    matched.files += 1;
                    matched.bytes += entry.size;
                }
            }
        }
        checked.matched = Some(matched);
        checked
    }

    /// The source's entries as a streamed comparison counted them.
    pub fn of_tally(tally: &cutover::diff::Tally) -> Checked {
        Checked {
            entries: tally.entries,
            files: tally.files,
            bytes: tally.bytes,
            directories: tally.directories,
            matched: Some(Matched {
                entries: tally.matched_entries,
                files: tally.matched_files,
                bytes: tally.matched_bytes,
            }),
        }
    }

    fn count(&mut self, kind: Kind, size: u64) {
        self.entries += 1;
        match kind {
            Kind::File => {
                self.files += 1;
                self.bytes += size;
            }
            Kind::Dir => self.directories += 1,
            _ => {}
        }
    }
}

/// What a plan holds and what applying it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operations {
    pub planned: u64,
    pub copy_bytes: u64,
    pub delete_entries: u64,
    pub delete_bytes: u64,
    /// Entries no operation can repair, with the reason.
    pub unrepairable: Vec<(String, String)>,
    /// Filled in by apply and repair (not by plan or a dry run).
    pub applied: Option<Applied>,
    /// Filled in by repair: the comparison made after applying.
    pub verify: Option<Verify>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub done: u64,
    pub already_done: u64,
    /// (path, operation, reason).
    pub skipped: Vec<(String, String, String)>,
    pub failed: Vec<(String, String, String)>,
    pub bytes_copied: u64,
    pub bytes_deleted: u64,
    pub entries_deleted: u64,
    pub held_deletes: u64,
    pub interrupted: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verify {
    pub identical: bool,
    pub remaining: u64,
    pub differences: Summary,
}

impl Operations {
    pub fn of_plan(plan: &PlanHead) -> Operations {
        Operations {
            planned: plan.totals.operations,
            copy_bytes: plan.totals.copy_bytes,
            delete_entries: plan.totals.delete_entries,
            delete_bytes: plan.totals.delete_bytes,
            unrepairable: plan.unrepairable.iter().map(|u| (u.path.clone(), u.reason.clone())).collect(),
            applied: None,
            verify: None,
        }
    }
}

impl Applied {
    pub fn of(report: &ApplyReport) -> Applied {
        let mut applied = Applied {
            done: report.done,
            already_done: report.already_done,
            bytes_copied: report.bytes_copied,
            bytes_deleted: report.bytes_deleted,
            entries_deleted: report.entries_deleted,
            held_deletes: report.held_deletes.len() as u64,
            interrupted: report.interrupted.map(|s| s.name()),
            ..Applied::default()
        };
        for (at, op, outcome) in &report.problems {
            let item = |why: &str| (at.path.clone(), op.to_string(), why.to_string());
            match outcome {
                Outcome::Skipped(why) => applied.skipped.push(item(why)),
                Outcome::Failed(why) => applied.failed.push(item(why)),
                _ => {}
            }
        }
        applied
    }
}

impl Verify {
    pub fn of(report: &Report) -> Verify {
        Verify {
            identical: report.identical(),
            remaining: report.differences.len() as u64,
            differences: report.summary(),
        }
    }
}

/// One run, as it went.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub command: &'static str,
    pub job: String,
    pub arguments: Vec<String>,
    pub host: String,
    pub started: SystemTime,
    clock: Instant,
    pub ended: Option<SystemTime>,
    pub duration: Duration,
    /// (role, path): `dir` for scan, `source` and `target`, `plan`, `bundle`.
    pub roots: Vec<(&'static str, String)>,
    /// What was compared: names, kinds and content always, then the metadata fields.
    pub compared: Option<Vec<&'static str>>,
    pub checked: Option<Checked>,
    /// Files and bytes read (verified) and taken from a cache (trusted), by side (`dir`,
    /// `source`, `target`); empty when no cache was used.
    pub verified: Vec<(&'static str, cutover::scan::Verified)>,
    /// The differences found (diff, plan and repair before it repairs).
    pub differences: Option<Summary>,
    pub operations: Option<Operations>,
    pub exit_code: u8,
    pub error: Option<String>,
}

impl RunRecord {
    pub fn start(command: &'static str, job: Option<&str>) -> RunRecord {
        RunRecord {
            command,
            job: job.unwrap_or(command).to_string(),
            arguments: std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect(),
            host: rustix::system::uname().nodename().to_string_lossy().into_owned(),
            started: SystemTime::now(),
            clock: Instant::now(),
            ended: None,
            duration: Duration::ZERO,
            roots: Vec::new(),
            compared: None,
            checked: None,
            verified: Vec::new(),
            differences: None,
            operations: None,
            exit_code: 0,
            error: None,
        }
    }

    pub fn root(&mut self, role: &'static str, path: &Path) {
        self.roots.retain(|(r, _)| *r != role);
        self.roots.push((role, path.display().to_string()));
    }

    /// A comparison of `source` against the target, as `report` found it.
    pub fn comparison(&mut self, source: &Manifest, report: &Report) {
        self.comparison_with(Checked::of_comparison(source, report), report);
    }

    fn comparison_with(&mut self, checked: Checked, report: &Report) {
        let mut compared = vec!["names", "kinds", "content"];
        compared.extend(report.compared_names());
        self.compared = Some(compared);
        self.checked = Some(checked);
        self.differences = Some(report.summary());
        self.verified = [("source", report.source.verified), ("target", report.target.verified)]
            .into_iter()
            .filter_map(|(side, verified)| Some((side, verified?)))
            .collect();
    }

    /// [`RunRecord::comparison`] of a comparison that counted the source as it streamed by.
    pub fn tallied_comparison(&mut self, tally: &cutover::diff::Tally, report: &Report) {
        self.comparison_with(Checked::of_tally(tally), report);
    }

    /// Ends the run with its exit code and, when it failed, the error said on stderr.
    pub fn finish(&mut self, exit_code: u8, error: Option<String>) {
        self.ended = Some(SystemTime::now());
        self.duration = self.clock.elapsed();
        self.exit_code = exit_code;
        self.error = error;
    }

    /// Whether the run did its job: it exited 0, or (for the commands that only look) 1,
    /// which means it completed and found differences.
    pub fn succeeded(&self) -> bool {
        self.exit_code == super::EXIT_SAME
            || (self.exit_code == super::EXIT_DIFFERENT && matches!(self.command, "scan" | "diff" | "plan"))
    }

    /// A word for the exit code.
    pub fn outcome(&self) -> &'static str {
        match self.exit_code {
            super::EXIT_SAME => "ok",
            super::EXIT_DIFFERENT => "different",
            super::EXIT_TROUBLE => "trouble",
            super::EXIT_LOCKED => "locked",
            super::EXIT_DELETE_LIMIT => "delete-limit",
            _ => "interrupted",
        }
    }

    pub fn ended_at(&self) -> SystemTime {
        self.ended.unwrap_or(self.started)
    }

    /// The record as one `cutover-run/1` JSON document.
    pub fn to_json(&self) -> Value {
        let roots: serde_json::Map<String, Value> =
            self.roots.iter().map(|(role, path)| (role.to_string(), json!(path))).collect();
        json!({
            "format": FORMAT,
            "tool": format!("cutover {}", env!("CARGO_PKG_VERSION")),
            "version": env!("CARGO_PKG_VERSION"),
            "host": self.host,
            "command": self.command,
            "arguments": self.arguments,
            "job": self.job,
            "started": rfc3339(self.started),
            "ended": rfc3339(self.ended_at()),
            "duration_seconds": self.duration.as_secs_f64(),
            "roots": roots,
            "compared": self.compared,
            "checked": self.checked.as_ref().map(checked_json),
            "verified": (!self.verified.is_empty()).then(|| {
                self.verified.iter().map(|(side, v)| (side.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()
            }),
            "differences": self.differences.as_ref().map(summary_json),
            "operations": self.operations.as_ref().map(operations_json),
            "exit_code": self.exit_code,
            "outcome": self.outcome(),
            "success": self.succeeded(),
            "error": self.error,
        })
    }
}

pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    cutover::time::rfc3339(since.as_secs() as i64, since.subsec_millis())
}

fn checked_json(c: &Checked) -> Value {
    json!({
        "entries": c.entries,
        "files": c.files,
        "directories": c.directories,
        "bytes": c.bytes,
        "matched": c.matched.as_ref().map(|m| json!({"entries": m.entries, "files": m.files, "bytes": m.bytes})),
    })
}

/// The kinds of difference with their counts, in the order docs/report.md lists them.
pub fn summary_kinds(s: &Summary) -> [(&'static str, u64); 7] {
    [
        ("missing", s.missing),
        ("extra", s.extra),
        ("content", s.content),
        ("type", s.type_),
        ("metadata", s.metadata),
        ("hardlink", s.hardlink),
        ("trouble", s.trouble),
    ]
}

fn summary_json(s: &Summary) -> Value {
    let mut doc: serde_json::Map<String, Value> =
        summary_kinds(s).iter().map(|(k, n)| (k.to_string(), json!(n))).collect();
    doc.insert("total".into(), json!(summary_kinds(s).iter().map(|(_, n)| n).sum::<u64>()));
    doc.insert("missing_bytes".into(), json!(s.missing_bytes));
    doc.insert("extra_bytes".into(), json!(s.extra_bytes));
    doc.insert("divergent_bytes".into(), json!(s.divergent_bytes));
    Value::Object(doc)
}

fn operations_json(o: &Operations) -> Value {
    let items = |list: &[(String, String, String)]| {
        list.iter().map(|(path, op, why)| json!({"path": path, "op": op, "reason": why})).collect::<Vec<_>>()
    };
    json!({
        "planned": o.planned,
        "copy_bytes": o.copy_bytes,
        "delete_entries": o.delete_entries,
        "delete_bytes": o.delete_bytes,
        "unrepairable": o.unrepairable.iter().map(|(path, why)| json!({"path": path, "reason": why})).collect::<Vec<_>>(),
        "applied": o.applied.as_ref().map(|a| json!({
            "done": a.done,
            "already_done": a.already_done,
            "skipped": items(&a.skipped),
            "failed": items(&a.failed),
            "bytes_copied": a.bytes_copied,
            "bytes_deleted": a.bytes_deleted,
            "entries_deleted": a.entries_deleted,
            "held_deletes": a.held_deletes,
            "interrupted": a.interrupted,
        })),
        "verify": o.verify.as_ref().map(|v| json!({
            "identical": v.identical,
            "remaining": v.remaining,
            "differences": summary_json(&v.differences),
        })),
    })
}

/// The time now, as the record writes times.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}
