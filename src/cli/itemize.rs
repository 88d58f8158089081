//! What `apply` and `repair` do, operation by operation, as they do it: `-i` lines on standard
//! output, `--format jsonl` lines on standard output, and `--log FILE` lines appended to a
//! file (docs/plan.md, "What apply did"). All three are views of one [`Event`] stream.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use cutover::apply::{ApplyReport, Event, Outcome};
use cutover::manifest::Kind;
use cutover::plan::{CheckedPlan, OpPath, Operation};

use super::Format;
use super::render::shown;

/// The format id of the start line of a `--log` run.
pub const LOG_FORMAT: &str = "cutover-log/1";

#[derive(Debug, clap::Args)]
pub struct ItemizeArg {
    /// Print one line per operation as it is done: its result, the operation, the bytes it
    /// wrote or removed, and the path (docs/plan.md, "What apply did").
    #[arg(short = 'i', long)]
    pub itemize: bool,
    /// Append the same as JSON Lines to FILE (created if missing): a start line, one line per
    /// operation as it is done, an end line.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
}

impl ItemizeArg {
    /// Refuses options that contradict each other, before anything is read.
    pub fn check(&self, format: Format, quiet: bool) -> Result<()> {
        if self.itemize && format == Format::Json {
            bail!(
                "-i prints a line per operation, and --format json prints one JSON document: use --format jsonl, or --log FILE"
            );
        }
        if self.itemize && quiet {
            bail!("-i prints a line per operation and -q prints nothing: give one of them");
        }
        Ok(())
    }
}

/// How one operation ended, in the word the lines use.
fn result_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::AlreadyDone => "already",
        Outcome::Skipped(_) => "skipped",
        Outcome::Failed(_) => "failed",
    }
}

/// One line's worth: the operation's place, name and path, and how it ended.
struct Item<'a> {
    index: Option<usize>,
    op: &'static str,
    at: &'a OpPath,
    dir: bool,
    bytes: u64,
    result: &'static str,
    reason: Option<&'a str>,
}

impl Item<'_> {
    /// `done    copy         1048576 data/disk.img`: fixed columns, the path last.
    fn text(&self) -> String {
        let mut path = match self.at.rel() {
            Ok(rel) if rel.is_root() => ".".to_string(),
            Ok(rel) => shown(rel.as_bytes()),
            Err(_) => shown(self.at.path.as_bytes()),
        };
        if self.dir && path != "." {
            path.push('/');
        }
        format!("{:<7} {:<7} {:>12} {path}", self.result, self.op, self.bytes)
    }

    fn json(&self) -> Value {
        let mut line = json!({
            "op": self.op,
            "path": self.at.path,
            "bytes": self.bytes,
            "result": self.result,
        });
        if let Some(index) = self.index {
            line["index"] = json!(index);
        }
        if let Some(bytes) = &self.at.path_bytes {
            line["path_bytes"] = json!(bytes);
        }
        if let Some(reason) = self.reason {
            line["reason"] = json!(reason);
        }
        line
    }
}

/// Whether `op` makes, changes or removes a directory.
fn is_dir(op: &Operation) -> bool {
    match op {
        Operation::Mkdir { .. } => true,
        Operation::Remove { expect, .. } => expect.kind == Kind::Dir,
        Operation::Meta { kind, .. } => *kind == Kind::Dir,
        _ => false,
    }
}

/// Where the lines of a run go.
pub struct Items {
    lines: bool,
    jsonl: bool,
    log: Option<(PathBuf, RefCell<std::fs::File>)>,
    /// A write to the log failed (said once, at the end: the run itself goes on).
    log_failed: RefCell<Option<std::io::Error>>,
    /// Standard output went away (`| head`): the run goes on, and exits 2.
    stdout_failed: Cell<bool>,
}

impl Items {
    /// Opens the log (appending) and checks that the options fit together.
    pub fn open(arg: &ItemizeArg, format: Format, quiet: bool, start: Value) -> Result<Items> {
        arg.check(format, quiet)?;
        let log = match &arg.log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(path)
                    .with_context(|| format!("{}: cannot open the log for appending", path.display()))?;
                Some((path.clone(), RefCell::new(file)))
            }
            None => None,
        };
        let items = Items {
            lines: arg.itemize && format == Format::Human,
            jsonl: format == Format::Jsonl && !quiet,
            log,
            log_failed: RefCell::new(None),
            stdout_failed: Cell::new(false),
        };
        items.to_log(&start);
        Ok(items)
    }

    /// An operation's outcome, as apply reports it.
    pub fn event(&self, event: &Event<'_>) {
        let reason = match event.outcome {
            Outcome::Skipped(why) | Outcome::Failed(why) => Some(why.as_str()),
            _ => None,
        };
        self.item(&Item {
            index: Some(event.index),
            op: event.op.name(),
            at: event.op.at(),
            dir: is_dir(event.op),
            bytes: event.bytes,
            result: result_word(event.outcome),
            reason,
        });
    }

    /// What apply decided outside any one operation, at its end: removals `--max-delete`
    /// held back, and a batch that could not be made durable or journaled.
    pub fn after(&self, plan: &CheckedPlan, report: &ApplyReport) {
        let key = |at: &'_ OpPath| (at.path.clone(), at.path_bytes.clone());
        // The plan's removals, by path, with their place and whether they remove a directory
        // (read again from the plan, only when some were held).
        let removals: std::collections::HashMap<_, (usize, bool)> = match report.held_deletes.is_empty() {
            true => Default::default(),
            false => (plan.operations().enumerate())
                .filter_map(|(i, op)| op.ok().map(|op| (i, op)))
                .filter(|(_, op)| matches!(op, Operation::Remove { .. }))
                .map(|(i, op)| (key(op.at()), (i, is_dir(&op))))
                .collect(),
        };
        for (at, _) in &report.held_deletes {
            let found = removals.get(&key(at)).copied();
            let (index, dir) = (found.map(|(i, _)| i), found.is_some_and(|(_, dir)| dir));
            let reason = Some("beyond --max-delete");
            self.item(&Item { index, op: "remove", at, dir, bytes: 0, result: "held", reason });
        }
        for (at, op, outcome) in &report.problems {
            if let ("sync" | "journal", Outcome::Failed(why)) = (*op, outcome) {
                let item = Item { index: None, op, at, dir: false, bytes: 0, result: "failed", reason: Some(why) };
                self.item(&item);
            }
        }
    }

    fn item(&self, item: &Item<'_>) {
        if self.lines {
            self.to_stdout(&item.text());
        }
        if self.jsonl || self.log.is_some() {
            let json = item.json();
            if self.jsonl {
                self.to_stdout(&json.to_string());
            }
            self.to_log(&json);
        }
    }

    fn to_stdout(&self, line: &str) {
        if self.stdout_failed.get() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            self.stdout_failed.set(true);
        }
    }

    /// One line, in one `write` on a file opened for appending, so lines of runs that share a
    /// log never interleave within a line.
    fn to_log(&self, line: &Value) {
        let Some((_, file)) = &self.log else { return };
        if self.log_failed.borrow().is_some() {
            return;
        }
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        if let Err(e) = file.borrow_mut().write_all(&bytes) {
            *self.log_failed.borrow_mut() = Some(e);
        }
    }

    /// Writes the end line and syncs the log. An error when the log or standard output could
    /// not take every line: the run's record is then incomplete, and the run exits 2.
    pub fn finish(&self, end: Value) -> Result<()> {
        self.to_log(&end);
        if let Some((path, file)) = &self.log {
            if let Some(e) = self.log_failed.borrow_mut().take() {
                return Err(e).with_context(|| format!("{}: cannot write the log", path.display()));
            }
            file.borrow().sync_data().with_context(|| format!("{}: cannot write the log", path.display()))?;
        }
        if self.stdout_failed.get() {
            bail!("standard output closed before every operation was listed");
        }
        Ok(())
    }
}

/// The start line of a run in the log.
/// `id` is the plan's (that of bundles and journals), `operations` how many it may carry out.
pub fn start_line(command: &str, id: &str, operations: u64, source: &str, target: &str) -> Value {
    json!({
        "type": "start",
        "format": LOG_FORMAT,
        "command": command,
        "plan": id,
        "source": source,
        "target": target,
        "operations": operations,
        "host": rustix::system::uname().nodename().to_string_lossy(),
        "pid": std::process::id(),
        "started": super::record::now_rfc3339(),
    })
}

/// The end line of a run in the log: what apply did, or why it did nothing.
pub fn end_line(report: Result<&ApplyReport, String>) -> Value {
    let mut line = json!({"type": "end", "ended": super::record::now_rfc3339()});
    match report {
        Ok(report) => {
            let (skipped, failed) = report.problems.iter().fold((0, 0), |(s, f), (_, _, outcome)| match outcome {
                Outcome::Skipped(_) => (s + 1, f),
                _ => (s, f + 1),
            });
            line["complete"] = json!(report.complete());
            line["done"] = json!(report.done);
            line["already_done"] = json!(report.already_done);
            line["skipped"] = json!(skipped);
            line["failed"] = json!(failed);
            line["held_deletes"] = json!(report.held_deletes.len());
            line["bytes_copied"] = json!(report.bytes_copied);
            line["bytes_deleted"] = json!(report.bytes_deleted);
            line["entries_deleted"] = json!(report.entries_deleted);
            line["interrupted"] = json!(report.interrupted.map(|s| s.name()));
        }
        Err(error) => {
            line["complete"] = json!(false);
            line["error"] = json!(error);
        }
    }
    line
}
