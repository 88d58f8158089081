//! The repair half of the command line: plan, apply, bundle, repair.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

use cutover::apply::source::{BundleSource, DirSource, SourceData, roots_overlap, write_bundle};
use cutover::apply::{ApplyOptions, ApplyReport, Event, LockedTarget, Observer, apply};
use cutover::diff::{DiffOptions, diff};
use cutover::digest::ChunkSize;
use cutover::plan::{CheckedPlan, DeleteLimits, Operation, PlanHead, PlanOptions, Tally, TreeIdentity, check_deletes};
use cutover::scan::{Cache, Scrub, scan_pair_cached};
use cutover::state::StateDir;

use super::inputs::{Wanted, explain};
use super::itemize::{ItemizeArg, Items};
use super::plans::{Making, apply_json, load_plan, plan_summary, plan_verdict, show_apply, show_dry_run, show_plan};
use super::progress::{self, APPLYING, SCANNING, Totals, VERIFYING};
use super::record::{Applied, Operations, RecordArg, RunRecord, Verify};
use super::render::{count, size};
use super::{EXIT_DELETE_LIMIT, EXIT_DIFFERENT, EXIT_SAME, EXIT_TROUBLE, Format, MetaArg, ScanArg};

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The reference tree: a directory, a manifest file, or '-'.
    source: PathBuf,
    /// The tree to repair: a directory, a manifest file, or '-'.
    target: PathBuf,
    /// When a side is the parts of a sharded scan, all of them in a row: `plan src.*.part
    /// dst.*.part` (or a quoted pattern per side, expanded by cutover).
    #[arg(value_name = "PART")]
    more: Vec<PathBuf>,
    /// Write the plan here ('-' for standard output); without it the plan is only shown.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    repair: RepairChoice,
    #[command(flatten)]
    limits: Limits,
    /// Show the plan in human form and write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    scan: ScanArg,
    #[command(flatten)]
    record: RecordArg,
}

#[derive(Debug, clap::Args)]
pub struct RepairChoice {
    /// Also remove entries that exist only in the target.
    #[arg(long)]
    delete: bool,
    #[command(flatten)]
    meta: MetaArg,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The plan file ('-' for standard input).
    plan: PathBuf,
    /// Source root (default: the one recorded in the plan).
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    source: Option<PathBuf>,
    /// Target root (default: the one recorded in the plan).
    #[arg(long, value_name = "DIR")]
    target: Option<PathBuf>,
    /// Take source bytes from a bundle made by `cutover bundle` ('-' for standard input).
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    #[command(flatten)]
    limits: Limits,
    /// Where cutover keeps its lock holder info and journals (default: $CUTOVER_STATE_DIR, else
    /// $XDG_STATE_HOME/cutover, else ~/.local/state/cutover). Nothing is kept in the target.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Show what the plan would do and change nothing (with `--format json`: the plan itself).
    #[arg(long)]
    dry_run: bool,
    /// Output format: `jsonl` streams one line per operation as it is done, then a summary line.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Carry out one part of the plan, while the other shards run theirs at once (on this
    /// host or others); together they leave the target as one apply does. With --bundle,
    /// the bundle of the same shard (`bundle --shard I/N`).
    #[command(flatten)]
    shard: super::shard::ShardArg,
    #[command(flatten)]
    items: ItemizeArg,
    #[command(flatten)]
    record: RecordArg,
}

#[derive(Debug, clap::Args)]
pub struct Limits {
    /// Delete at most N entries: the removals beyond are listed and skipped, the rest is done,
    /// and the run exits 25.
    #[arg(long, value_name = "N")]
    max_delete: Option<u64>,
    /// Proceed even when the source looks empty or unmounted, the plan deletes most of the
    /// target, or the plan was made for another target directory.
    #[arg(long)]
    force: bool,
}

impl Limits {
    fn delete_limits(&self) -> DeleteLimits {
        DeleteLimits { max_delete: self.max_delete, force: self.force }
    }

    /// What `apply` would refuse or hold back, said on stderr: `plan` and dry runs still show
    /// the whole plan.
    fn warn(&self, plan: &PlanHead, tally: &Tally) {
        if let Err(refusal) = check_deletes(plan, tally, false, self.delete_limits()) {
            super::warn(format_args!("apply will refuse this plan: {refusal}"));
        } else if let Some(limit) = self.max_delete
            && tally.deletes() > limit
        {
            super::warn(format_args!(
                "the plan deletes {}: with --max-delete {limit}, apply stops removing at {limit} and lists the rest",
                count(tally.deletes(), "entry", "entries")
            ));
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The plan file.
    plan: PathBuf,
    /// Source root (default: the one recorded in the plan).
    #[arg(long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// Where to write the bundle ('-' for standard output).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Bundle only what shard I of N of `apply --shard I/N` needs.
    #[command(flatten)]
    shard: super::shard::ShardArg,
}

#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The reference directory.
    source: PathBuf,
    /// The directory to make equal to it.
    target: PathBuf,
    #[command(flatten)]
    repair: RepairChoice,
    #[command(flatten)]
    limits: Limits,
    /// Where cutover keeps its lock holder info and journals (default: $CUTOVER_STATE_DIR, else
    /// $XDG_STATE_HOME/cutover, else ~/.local/state/cutover). Nothing is kept in the target.
    /// Given here, it also keeps the last manifest of both trees: files unchanged since (same
    /// device, inode, size, mtime and ctime) are trusted, not read.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    #[command(flatten)]
    verify: super::VerifyArg,
    /// Show the plan and change nothing (with `--format json`: the plan itself, as `plan -o` writes it).
    #[arg(long)]
    dry_run: bool,
    /// Output format: `jsonl` streams one line per operation as it is done, then a summary line.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(flatten)]
    items: ItemizeArg,
    /// Also write an HTML page of the differences found and of what remained at verify.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    scan: ScanArg,
    #[command(flatten)]
    record: RecordArg,
}

impl PlanArgs {
    pub(super) fn trees(&self) -> Vec<&Path> {
        vec![&self.source, &self.target]
    }

    pub(super) fn record(&self) -> &RecordArg {
        &self.record
    }
}

impl ApplyArgs {
    /// The roots named on the command line (those recorded in the plan are not read yet).
    pub(super) fn trees(&self) -> Vec<&Path> {
        self.source.iter().chain(&self.target).map(PathBuf::as_path).collect()
    }

    pub(super) fn record(&self) -> &RecordArg {
        &self.record
    }
}

impl BundleArgs {
    pub(super) fn trees(&self) -> Vec<&Path> {
        self.source.iter().map(PathBuf::as_path).collect()
    }
}

impl RepairArgs {
    pub(super) fn trees(&self) -> Vec<&Path> {
        vec![&self.source, &self.target]
    }

    pub(super) fn record(&self) -> &RecordArg {
        &self.record
    }
}

pub fn run_plan(args: PlanArgs, record: &mut RunRecord) -> Result<u8> {
    record.root("source", &args.source);
    record.root("target", &args.target);
    let named: Vec<PathBuf> = [&args.source, &args.target].into_iter().chain(&args.more).cloned().collect();
    let sides = super::shard::sides(&named)?;
    let (source, target) = progress::with_progress(SCANNING, None, |p| {
        super::load_sides(sides, &args.scan, args.repair.meta.set(), "plan", p)
    })?;
    let options = PlanOptions { delete: args.repair.delete, meta: args.repair.meta.set(), ..PlanOptions::default() };
    let identity = (args.target.as_os_str() != "-" && args.target.is_dir()).then(|| TreeIdentity::of(&args.target));
    let holes = match args.source.as_os_str() != "-" && args.source.is_dir() {
        true => Some(DirSource::open(&args.source).map_err(anyhow::Error::msg)?),
        false => None,
    };
    let made = Making { source: &source, target: &target, options: &options, identity: identity.flatten(), holes };
    let (head, tally, report) = match (&args.output, args.dry_run) {
        (Some(path), false) => {
            let (head, tally, report) = super::write_output(path, |out| Ok(made.write(out)?))?;
            if path.as_os_str() != "-" && !progress::quiet() {
                plan_summary(&mut std::io::stderr(), &head)?;
            }
            (head, tally, report)
        }
        _ => {
            let (plan, report) = made.checked()?;
            if !progress::quiet() {
                show_plan(&mut std::io::stdout().lock(), &plan)?;
            }
            (plan.head, plan.tally, report)
        }
    };
    record.comparison(&source, &report);
    super::warn_uncompared(args.repair.meta.set(), &report);
    args.limits.warn(&head, &tally);
    record.operations = Some(Operations::of_plan(&head));
    Ok(plan_verdict(&head, &tally, &report))
}

pub fn run_apply(args: ApplyArgs, record: &mut RunRecord) -> Result<u8> {
    args.items.check(args.format, progress::quiet())?;
    record.root("plan", &args.plan);
    if args.plan.as_os_str() == "-" && args.bundle.as_ref().is_some_and(|b| b.as_os_str() == "-") {
        bail!("the plan and the bundle cannot both come from standard input");
    }
    let plan = load_plan(&args.plan, "apply")?;
    let whole_id = plan.id.clone();
    let shard = args.shard.shard()?;
    let (plan, finish) = match shard {
        Some(shard) => {
            let (part, finish) = cutover::plan::shard_checked(plan, shard)?;
            (part, Some(finish))
        }
        None => (plan, None),
    };
    record.root("source", args.source.as_deref().unwrap_or(Path::new(&plan.head.source.root)));
    record.root("target", args.target.as_deref().unwrap_or(Path::new(&plan.head.target.root)));
    if let Some(bundle) = &args.bundle {
        record.root("bundle", bundle);
    }
    record.operations = Some(Operations::of_plan(&plan.head));
    if args.dry_run {
        if !progress::quiet() {
            show_dry_run(&mut std::io::stdout().lock(), &plan, args.format)?;
        }
        return Ok(if plan.tally.totals.operations == 0 { EXIT_SAME } else { EXIT_DIFFERENT });
    }
    let target = args.target.clone().unwrap_or_else(|| PathBuf::from(&plan.head.target.root));
    // Locked before the source is opened, so a second run is refused at once.
    let state = StateDir::locate(args.state.as_deref())?;
    if args.bundle.is_none() {
        state.check_outside(args.source.as_deref().unwrap_or(Path::new(&plan.head.source.root)))?;
    }
    let mut target = match shard {
        Some(shard) => {
            LockedTarget::open_shard(&target, &state, "apply --shard", (&whole_id, shard.count()), &plan.id)?
        }
        None => LockedTarget::open(&target, &state, "apply")?,
    };
    let source_root = args.source.clone().unwrap_or_else(|| PathBuf::from(&plan.head.source.root));
    let source_name = match &args.bundle {
        Some(bundle) => format!("bundle {}", bundle.display()),
        None => source_root.display().to_string(),
    };
    // A shard's directory metadata (`finish`) may follow its own operations: numbered after them.
    let finish_ops = finish.as_ref().map_or(0, |finish| finish.tally.totals.operations);
    let start = super::itemize::start_line(
        "apply",
        &plan.id,
        plan.tally.totals.operations + finish_ops,
        &source_name,
        &target.path().display().to_string(),
    );
    let items = Items::open(&args.items, args.format, progress::quiet(), start)?;
    let report = observed(&plan, finish.as_ref(), &items, &args.limits, |options| {
        let report = match &args.bundle {
            Some(bundle) => {
                let chunk = ChunkSize::new(plan.head.chunk_size).map_err(anyhow::Error::msg)?;
                let id = plan.id.clone();
                if bundle.as_os_str() == "-" {
                    let mut source = BundleSource::open(std::io::stdin().lock(), "<stdin>", &id, chunk)
                        .map_err(anyhow::Error::msg)?;
                    apply(&plan, &mut source, &target, options)?
                } else {
                    let file =
                        std::fs::File::open(bundle).with_context(|| format!("{}: cannot open", bundle.display()))?;
                    let name = bundle.display().to_string();
                    let reader = std::io::BufReader::with_capacity(1 << 20, file);
                    let mut source = BundleSource::open(reader, &name, &id, chunk)
                        .map_err(|why| explain(bundle, Wanted::Bundle, "--bundle", anyhow::Error::msg(why)))?;
                    apply(&plan, &mut source, &target, options)?
                }
            }
            None => {
                let mut source = DirSource::open(&source_root).map_err(anyhow::Error::msg)?;
                apply(&plan, &mut source, &target, options)?
            }
        };
        let Some(finish) = &finish else { return Ok(report) };
        // The finishing operations are told numbered after the shard's own.
        let offset = plan.tally.totals.operations as usize;
        let shifted = |event: Event<'_>| {
            if let Some(Observer(tell)) = options.observer {
                tell(Event { index: event.index + offset, ..event });
            }
        };
        let options = ApplyOptions { observer: Some(Observer(&shifted)), ..*options };
        super::shard::finish_shard(report, finish, &mut target, &options)
    });
    let report = report.and_then(|report| {
        items.finish(super::itemize::end_line(Ok(&report)))?;
        Ok(report)
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => {
            let _ = items.finish(super::itemize::end_line(Err(format!("{e:#}"))));
            return Err(e);
        }
    };
    if let Some(operations) = record.operations.as_mut() {
        operations.applied = Some(Applied::of(&report));
    }
    if !progress::quiet() {
        show_apply(&mut std::io::stdout().lock(), &report, args.format)?;
    }
    Ok(match report.interrupted {
        Some(signal) => signal.exit_code(),
        None => apply_verdict(&report),
    })
}

/// Runs `apply` (called with the options to give it) with each operation's outcome told to
/// `items` and to the progress meter as it happens; then the held removals and batch failures.
/// `finish` is what a shard may run after its own operations (directory metadata).
fn observed(
    plan: &CheckedPlan,
    finish: Option<&CheckedPlan>,
    items: &Items,
    limits: &Limits,
    apply: impl FnOnce(&ApplyOptions<'_>) -> Result<ApplyReport>,
) -> Result<ApplyReport> {
    let finish_ops = finish.map_or(0, |finish| finish.tally.totals.operations);
    let totals = Totals { items: plan.tally.totals.operations + finish_ops, bytes: plan.tally.totals.copy_bytes };
    progress::with_progress(APPLYING, Some(totals), |meter| {
        let tell = |event: Event<'_>| {
            items.event(&event);
            let written = if matches!(event.op, Operation::Remove { .. }) { 0 } else { event.bytes };
            meter.add(written);
        };
        let options =
            ApplyOptions { max_delete: limits.max_delete, force: limits.force, observer: Some(Observer(&tell)) };
        let report = apply(&options)?;
        items.after(plan, &report);
        Ok(report)
    })
}

/// 0 when every postcondition holds, 25 when only `--max-delete` held removals back, else 2.
fn apply_verdict(report: &ApplyReport) -> u8 {
    if !report.problems.is_empty() {
        EXIT_TROUBLE
    } else if !report.held_deletes.is_empty() {
        EXIT_DELETE_LIMIT
    } else {
        EXIT_SAME
    }
}

pub fn run_bundle(args: BundleArgs) -> Result<u8> {
    let plan = load_plan(&args.plan, "bundle")?;
    let plan = match args.shard.shard()? {
        Some(shard) => cutover::plan::shard_checked(plan, shard)?.0,
        None => plan,
    };
    let root = args.source.clone().unwrap_or_else(|| PathBuf::from(&plan.head.source.root));
    let mut source: Box<dyn SourceData> = Box::new(DirSource::open(&root).map_err(anyhow::Error::msg)?);
    let bytes =
        super::write_output(&args.output, |out| write_bundle(&plan, source.as_mut(), out).map_err(anyhow::Error::msg))?;
    if progress::quiet() {
        return Ok(EXIT_SAME);
    }
    eprintln!(
        "bundle: {} of source data for {}",
        size(bytes),
        count(plan.tally.totals.operations, "operation", "operations")
    );
    Ok(EXIT_SAME)
}

pub fn run_repair(args: RepairArgs, record: &mut RunRecord) -> Result<u8> {
    args.items.check(args.format, progress::quiet())?;
    record.root("source", &args.source);
    record.root("target", &args.target);
    create_missing_target(&args.source, &args.target, args.dry_run)?;
    for dir in [&args.source, &args.target] {
        if !dir.is_dir() {
            bail!(
                "{}: not a directory (repair needs both trees; use plan + bundle + apply across hosts)",
                dir.display()
            );
        }
    }
    if roots_overlap(&args.source, &args.target) {
        bail!(
            "{} and {} overlap: one lies inside the other or is mounted inside it, so repairing the target would change the source",
            args.source.display(),
            args.target.display()
        );
    }
    // Held from before the scan to after the verify; what earlier runs left in the target is
    // removed first, so it is neither planned for nor reported.
    let locked = match args.dry_run {
        false => {
            let state = StateDir::locate(args.state.as_deref())?;
            state.check_outside(&args.source)?;
            Some(LockedTarget::open(&args.target, &state, "repair")?)
        }
        true => None,
    };
    let stale_temps = locked.as_ref().map(|l| l.clean_stale(None)).transpose()?.unwrap_or(0);
    let scan_options = args.scan.options(args.repair.meta.set().xattr, args.scan.excludes()?.as_ref(), None);
    // `--state DIR` given: the last run's manifests of both trees are this one's caches.
    let states = match (&args.state, args.dry_run) {
        (Some(dir), false) => Some(super::tree_states(dir, [&args.source, &args.target])?),
        _ => None,
    };
    let changed = args.verify.changed_paths()?;
    let caches = match &states {
        Some(states) => {
            states.each_ref().map(|state| super::state_cache(state, &scan_options, &args.verify, changed.as_deref()))
        }
        None => [None, None],
    };
    let totals = super::cache_totals(&caches);
    let (source, target) = progress::with_progress(SCANNING, totals, |p| {
        scan_pair_cached(&args.source, &args.target, &scan_options, caches, p)
    })?;
    let options = PlanOptions { delete: args.repair.delete, meta: args.repair.meta.set(), ..PlanOptions::default() };
    let made = Making {
        source: &source,
        target: &target,
        options: &options,
        identity: TreeIdentity::of(&args.target),
        holes: Some(DirSource::open(&args.source).map_err(anyhow::Error::msg)?),
    };
    let (plan, report) = made.checked()?;
    record.comparison(&source, &report);
    let mut data = DirSource::open(&args.source).map_err(anyhow::Error::msg)?;
    record.operations = Some(Operations::of_plan(&plan.head));
    super::warn_uncompared(args.repair.meta.set(), &report);
    if args.dry_run {
        args.limits.warn(&plan.head, &plan.tally);
        super::html::write_repair_page(args.html.as_deref(), [&args.source, &args.target], &report, None)?;
        if !progress::quiet() {
            show_dry_run(&mut std::io::stdout().lock(), &plan, args.format)?;
        }
        return Ok(plan_verdict(&plan.head, &plan.tally, &report));
    }
    let locked = locked.context("the target is not locked")?;
    let start = super::itemize::start_line(
        "repair",
        &plan.id,
        plan.tally.totals.operations,
        &args.source.display().to_string(),
        &args.target.display().to_string(),
    );
    let items = Items::open(&args.items, args.format, progress::quiet(), start)?;
    let applied = observed(&plan, None, &items, &args.limits, |options| Ok(apply(&plan, &mut data, &locked, options)?));
    let ended = super::itemize::end_line(applied.as_ref().map_err(|e| format!("{e:#}")));
    let logged = items.finish(ended);
    let mut applied = applied?;
    logged?;
    applied.stale_temps_removed += stale_temps;
    if let Some(operations) = record.operations.as_mut() {
        operations.applied = Some(Applied::of(&applied));
    }
    if let Some(signal) = applied.interrupted {
        if !progress::quiet() {
            show_apply(&mut std::io::stdout().lock(), &applied, args.format)?;
        }
        return Ok(signal.exit_code());
    }
    let verify_totals = Totals::sum([&source, &target].map(|first| Some(Totals::of_tree(first))));
    // Both sides again: a source that changed during the repair must not pass as verified.
    // Each side's first scan is the cache: what apply wrote (or anyone changed since) has a
    // new ctime and is read again; what nobody touched is trusted by the same rule as
    // `scan --cache`.
    let verify_caches = [source, target]
        .map(|first| Cache::new(std::sync::Arc::new(first), &scan_options, Scrub::Off).ok().map(std::sync::Arc::new));
    let (source_after, target_after) = progress::with_progress(VERIFYING, verify_totals, |p| {
        scan_pair_cached(&args.source, &args.target, &scan_options, verify_caches.clone(), p)
    })?;
    if let Some(states) = &states {
        states[0].store_manifest(&source_after)?;
        states[1].store_manifest(&target_after)?;
    }
    let verify = diff(&source_after, &target_after, &DiffOptions { meta: args.repair.meta.set() });
    let remaining = verify.differences.len();
    if let Some(operations) = record.operations.as_mut() {
        operations.verify = Some(Verify::of(&verify));
    }
    super::html::write_repair_page(args.html.as_deref(), [&args.source, &args.target], &report, Some(&verify))?;
    // Everything is decided before anything is printed, so a closed pipe cannot cut a repair short.
    let printed = (|| -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if progress::quiet() {
            return Ok(());
        }
        if args.format != Format::Human {
            let mut doc = apply_json(&applied);
            if args.format == Format::Jsonl {
                doc["type"] = json!("summary");
            }
            doc["unrepairable"] = json!(plan.head.unrepairable);
            let found = verify.to_json();
            doc["verify"] = json!({
                "identical": verify.identical(),
                "remaining": remaining,
                "compared": found["compared"],
                "summary": found["summary"],
                "differences": found["differences"],
            });
            serde_json::to_writer(&mut out, &doc)?;
            writeln!(out)?;
        } else {
            show_apply(&mut out, &applied, args.format)?;
            for u in &plan.head.unrepairable {
                writeln!(out, "cannot repair {}: {}", u.path, u.reason)?;
            }
            if remaining == 0 {
                writeln!(
                    out,
                    "verified: the target is identical to the source: {}",
                    super::render::checked_text(&verify)
                )?;
            } else {
                writeln!(
                    out,
                    "verify: {} {} (run `cutover diff` to see them)",
                    count(remaining as u64, "difference", "differences"),
                    if remaining == 1 { "remains" } else { "remain" }
                )?;
            }
        }
        out.flush()
    })();
    match printed {
        // The report could not be delivered whole: as for every command but `diff`, say so.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(EXIT_TROUBLE),
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    let trouble = !applied.problems.is_empty() || !plan.head.unrepairable.is_empty() || verify.summary().trouble > 0;
    Ok(if trouble {
        EXIT_TROUBLE
    } else if !applied.held_deletes.is_empty() {
        EXIT_DELETE_LIMIT
    } else if remaining > 0 {
        EXIT_DIFFERENT
    } else {
        EXIT_SAME
    })
}

/// `repair SRC NEWDIR` creates NEWDIR when its parent exists, as `rsync -a` does (a dry run
/// only says it would), unless that parent is the source or lies inside it.
fn create_missing_target(source: &Path, target: &Path, dry_run: bool) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(());
    }
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (Ok(parent), Ok(source_dir)) = (std::fs::canonicalize(parent), std::fs::metadata(source)) else {
        return Ok(());
    };
    let mut lineage = parent.ancestors().filter_map(|dir| std::fs::metadata(dir).ok());
    if lineage.any(|dir| (dir.dev(), dir.ino()) == (source_dir.dev(), source_dir.ino())) {
        bail!(
            "{}: does not exist, and creating it would write inside the source {}",
            target.display(),
            source.display()
        );
    }
    if dry_run {
        bail!("{}: does not exist yet; repair without --dry-run creates it and copies everything", target.display());
    }
    match std::fs::create_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("{}: cannot create the target directory", target.display()))
        }
        _ => Ok(()),
    }
}
