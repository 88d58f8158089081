//! The run record as Prometheus metrics, in the text format node_exporter's textfile collector
//! reads (docs/cron.md). Everything is a gauge of the last run except the run counters, which
//! are carried forward from the file this run replaces, as is the last success time.

use std::fmt::Write;

use super::record::{RunRecord, summary_kinds, unix_seconds};

/// The metrics text of `record`, carrying counters and the last success time for the same job
/// forward from `previous` (the file's old content, or empty).
pub fn render(record: &RunRecord, previous: &str) -> String {
    let job = escape(&record.job);
    let labels = format!("job=\"{job}\"");
    let ended = unix_seconds(record.ended_at());
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP cutover_{name} {help}");
        let _ = writeln!(out, "# TYPE cutover_{name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "cutover_{name}{{{labels}}} {}", number(*value));
        }
    };
    let one = |value: f64| vec![(labels.clone(), value)];
    gauge(&mut out, "last_run_timestamp_seconds", "When the last run ended, in Unix seconds.", &one(ended));
    let last_success = if record.succeeded() {
        Some(ended)
    } else {
        carried(previous, "cutover_last_success_timestamp_seconds", &labels)
    };
    if let Some(when) = last_success {
        gauge(
            &mut out,
            "last_success_timestamp_seconds",
            "When the last successful run ended, in Unix seconds (exit 0, or 1 for scan, diff and plan).",
            &one(when),
        );
    }
    gauge(&mut out, "last_run_duration_seconds", "How long the last run took.", &one(record.duration.as_secs_f64()));
    gauge(
        &mut out,
        "last_run_exit_code",
        "The exit code of the last run (docs/cron.md).",
        &one(f64::from(record.exit_code)),
    );
    gauge(
        &mut out,
        "last_run_success",
        "1 when the last run succeeded, else 0.",
        &one(if record.succeeded() { 1.0 } else { 0.0 }),
    );
    if let Some(checked) = &record.checked {
        gauge(
            &mut out,
            "checked_entries",
            "Entries of the source (or scanned tree) checked.",
            &one(checked.entries as f64),
        );
        gauge(&mut out, "checked_files", "Regular files checked.", &one(checked.files as f64));
        gauge(&mut out, "checked_bytes", "Bytes of regular files checked.", &one(checked.bytes as f64));
        if let Some(matched) = &checked.matched {
            gauge(
                &mut out,
                "matched_entries",
                "Checked entries found equal in the target.",
                &one(matched.entries as f64),
            );
            gauge(&mut out, "matched_files", "Checked files found equal in the target.", &one(matched.files as f64));
            gauge(
                &mut out,
                "matched_bytes",
                "Bytes of the files found equal in the target.",
                &one(matched.bytes as f64),
            );
        }
    }
    if !record.verified.is_empty() {
        let by_side = |pick: fn(&cutover::scan::Verified) -> u64| -> Vec<(String, f64)> {
            record.verified.iter().map(|(side, v)| (format!("{labels},side=\"{side}\""), pick(v) as f64)).collect()
        };
        gauge(
            &mut out,
            "read_files",
            "Files whose bytes the last run read and hashed, by side.",
            &by_side(|v| v.verified_files),
        );
        gauge(&mut out, "read_bytes", "Bytes the last run read and hashed, by side.", &by_side(|v| v.verified_bytes));
        gauge(
            &mut out,
            "trusted_files",
            "Files the last run took from the cache without reading (unchanged metadata), by side.",
            &by_side(|v| v.trusted_files),
        );
        gauge(
            &mut out,
            "trusted_bytes",
            "Bytes of the files taken from the cache without reading, by side.",
            &by_side(|v| v.trusted_bytes),
        );
    }
    if let Some(summary) = &record.differences {
        let samples: Vec<_> =
            summary_kinds(summary).iter().map(|(kind, n)| (format!("{labels},kind=\"{kind}\""), *n as f64)).collect();
        gauge(&mut out, "differences", "Differences the last run found, by kind (docs/report.md).", &samples);
    }
    if let Some(ops) = &record.operations {
        gauge(&mut out, "planned_operations", "Operations of the plan.", &one(ops.planned as f64));
        gauge(
            &mut out,
            "unrepairable_entries",
            "Entries no operation can repair.",
            &one(ops.unrepairable.len() as f64),
        );
        if let Some(applied) = &ops.applied {
            let samples = [
                ("done", applied.done),
                ("already_done", applied.already_done),
                ("skipped", applied.skipped.len() as u64),
                ("failed", applied.failed.len() as u64),
                ("held", applied.held_deletes),
            ]
            .map(|(result, n)| (format!("{labels},result=\"{result}\""), n as f64));
            gauge(&mut out, "applied_operations", "Operations of the last apply, by result.", &samples);
            gauge(
                &mut out,
                "copied_bytes",
                "Bytes the last run copied into the target.",
                &one(applied.bytes_copied as f64),
            );
            gauge(
                &mut out,
                "deleted_bytes",
                "Bytes the last run deleted from the target.",
                &one(applied.bytes_deleted as f64),
            );
        }
        if let Some(verify) = &ops.verify {
            gauge(
                &mut out,
                "verify_remaining_differences",
                "Differences left after repair.",
                &one(verify.remaining as f64),
            );
        }
    }
    let runs = carried(previous, "cutover_runs_total", &format!("{labels},outcome=\"{}\"", record.outcome()));
    let _ = writeln!(out, "# HELP cutover_runs_total Runs of this job, by outcome, since the metrics file was made.");
    let _ = writeln!(out, "# TYPE cutover_runs_total counter");
    let mut outcomes: Vec<(String, f64)> = samples_of(previous, "cutover_runs_total")
        .filter(|(l, _)| l.starts_with(&format!("{labels},outcome=")))
        .collect();
    let this = format!("{labels},outcome=\"{}\"", record.outcome());
    outcomes.retain(|(l, _)| *l != this);
    outcomes.push((this, runs.unwrap_or(0.0) + 1.0));
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));
    for (l, v) in outcomes {
        let _ = writeln!(out, "cutover_runs_total{{{l}}} {}", number(v));
    }
    out
}

/// The value of `name{labels}` in `previous`.
fn carried(previous: &str, name: &str, labels: &str) -> Option<f64> {
    samples_of(previous, name).find(|(l, _)| l == labels).map(|(_, v)| v)
}

/// The (labels, value) samples of `name` in a metrics text written by [`render`].
fn samples_of<'a>(previous: &'a str, name: &'a str) -> impl Iterator<Item = (String, f64)> + 'a {
    previous.lines().filter_map(move |line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (labels, value) = rest.rsplit_once("} ")?;
        Some((labels.to_string(), value.trim().parse().ok()?))
    })
}

/// A label value, escaped as the text format wants.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{}", value as i64) } else { format!("{value}") }
}
