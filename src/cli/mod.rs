//! The command line: argument types, loading each side, exit codes. Only this layer knows
//! about clap, terminals and process exit codes; the library gets plain values.

mod html;
mod inputs;
mod itemize;
mod manual;
mod metrics;
mod plans;
mod progress;
mod record;
mod render;
mod repair;
mod shard;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use cutover::diff::{DiffOptions, Report};
use cutover::digest::ChunkSize;
use cutover::exclude::Excludes;
use cutover::manifest::{EntryStream, Header, Manifest, MetaSet, read_manifest, read_manifest_from, write_manifest};
use cutover::scan::{Cache, Progress, ScanOptions, Scrub, b3sum_lines, scan_pair, scan_with_progress};
use std::sync::Arc;

/// Exit codes, as GNU diff: 0 identical or success, 1 differences, 2 trouble; then 3 when
/// another run holds the target's lock. A run stopped by a signal exits 128 + its number.
pub const EXIT_SAME: u8 = 0;
pub const EXIT_DIFFERENT: u8 = 1;
pub const EXIT_TROUBLE: u8 = 2;
pub const EXIT_LOCKED: u8 = 3;
/// `--max-delete` held back some removals; everything else was done (rsync's RERR_DEL_LIMIT).
pub const EXIT_DELETE_LIMIT: u8 = 25;

#[derive(Debug, Parser)]
#[command(
    name = "cutover",
    version,
    about = "Prove a data migration is complete, show where it is not, repair only what differs."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How many threads read and hash at once; default: one per CPU, or 16 when a tree is on a
    /// network filesystem (NFS, SMB, FUSE, Ceph, Lustre...). More helps wherever each read waits
    /// on the storage, as rclone's --checkers does.
    #[arg(short = 'j', long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    jobs: Option<u16>,
    /// Print nothing but errors: no summary, no warnings, no progress (files asked for, and
    /// data sent to standard output with `-o -` or `--b3sum`, are still written). The exit
    /// code tells the verdict.
    #[arg(short, long, global = true, conflicts_with = "progress")]
    quiet: bool,
    /// Show progress on standard error also when it is not a terminal: a plain line every few
    /// seconds and one at the end of each phase, for logs. On a terminal progress is shown
    /// anyway.
    #[arg(long, global = true)]
    progress: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan a directory: print its root hash, write a manifest (-o) or b3sum lines (--b3sum).
    Scan(ScanArgs),
    /// Compare a target tree with a source tree (each a directory or a manifest file).
    Diff(DiffArgs),
    /// Write a repair plan that makes the target equal to the source.
    Plan(repair::PlanArgs),
    /// Carry out a plan: copy only what differs, re-checking before and verifying after.
    Apply(repair::ApplyArgs),
    /// Collect the source bytes a plan needs into one file, for applying on another host.
    Bundle(repair::BundleArgs),
    /// Plan, apply and verify in one step (both trees local); exit 0 only if they end identical.
    Repair(repair::RepairArgs),
    /// Combine the parts of a sharded scan (`scan --shard I/N`) into one manifest.
    Merge(shard::MergeArgs),
    /// Print the manual page (roff) to standard output: `cutover man | man -l -`.
    Man,
    /// Print a completion script for SHELL to standard output.
    Completions(manual::CompletionsArgs),
}

#[derive(Debug, clap::Args)]
struct ScanArgs {
    /// The directory to scan.
    dir: PathBuf,
    /// Write the manifest here ('-' for standard output).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Print `HASH  path` lines that `b3sum --check` accepts when run inside DIR (b3sum cannot
    /// name files whose names are not UTF-8: those are warned about, and the exit code is 2).
    #[arg(long, conflicts_with = "output")]
    b3sum: bool,
    /// Record extended attributes too (needed to compare them with `diff --meta xattr`).
    #[arg(long)]
    xattrs: bool,
    /// Trust files unchanged since the manifest FILE (same device, inode, size, mtime and
    /// ctime) without reading them. Without -o, FILE is then replaced by the new manifest; a
    /// missing FILE is a first run.
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    #[command(flatten)]
    verify: VerifyArg,
    #[command(flatten)]
    scan: ScanArg,
    /// Scan one part of the tree (every directory, and the files this shard owns) and write it
    /// with -o, for `cutover merge`.
    #[command(flatten)]
    shard: shard::ShardArg,
    #[command(flatten)]
    record: record::RecordArg,
}

/// How much of what a cache vouches for is read again anyway.
#[derive(Debug, clap::Args)]
pub struct VerifyArg {
    /// Re-read a rotating 1/N of the files the cache vouches for, so that every file is read
    /// at least once every N runs (bit rot changes no metadata).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub scrub: Option<u64>,
    /// Read every file: trust nothing from the cache (it is still replaced).
    #[arg(long, conflicts_with_all = ["scrub", "changed_from"])]
    pub full: bool,
    /// Look again only at the paths listed in FILE ('-': standard input), one per line,
    /// relative to the tree's root, and at the directories above them; take every other entry
    /// from the cache as it is, without even a stat (for a change log you trust).
    #[arg(long, value_name = "FILE")]
    pub changed_from: Option<PathBuf>,
    /// The --changed-from list is separated by NUL bytes, not newlines.
    #[arg(short = '0', long = "from0", requires = "changed_from")]
    pub from0: bool,
}

impl VerifyArg {
    /// The paths of `--changed-from`, read once (it may be standard input).
    pub fn changed_paths(&self) -> Result<Option<Vec<cutover::path::RelPath>>> {
        let Some(file) = &self.changed_from else { return Ok(None) };
        let bytes = if file.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
        } else {
            std::fs::read(file)
        };
        let bytes = bytes.with_context(|| format!("{}: cannot read", file.display()))?;
        let separator = if self.from0 { b'\0' } else { b'\n' };
        let mut paths = Vec::new();
        for (number, line) in bytes.split(|&b| b == separator).enumerate() {
            let mut line = line;
            while let Some(rest) = line.strip_prefix(b"./") {
                line = rest;
            }
            while line.len() > 1 && line.ends_with(b"/") {
                line = &line[..line.len() - 1];
            }
            if line.is_empty() || line == b"." {
                continue;
            }
            let path = cutover::path::RelPath::parse(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}: entry {}: '{}' is not a path relative to the tree's root: {e}",
                    file.display(),
                    number + 1,
                    render::shown(line)
                )
            })?;
            paths.push(path);
        }
        Ok(Some(paths))
    }

    /// The scrub that follows the one `cache` (a manifest) recorded.
    pub fn scrub(&self, cache: &Manifest) -> Scrub {
        match (self.full, self.scrub) {
            (true, _) => Scrub::Full,
            (false, Some(of)) => Scrub::next(of, cache.header.scrub),
            (false, None) => Scrub::Off,
        }
    }
}

/// A warning on stderr, unless `-q`.
pub(crate) fn warn(text: impl std::fmt::Display) {
    if !progress::quiet() {
        eprintln!("cutover: warning: {text}");
    }
}

/// The state of the trees `[source, target]` in the state directory `dir` (`--state DIR`),
/// which must lie outside both.
pub(crate) fn tree_states(dir: &Path, trees: [&Path; 2]) -> Result<[cutover::state::TreeState; 2]> {
    let state = cutover::state::StateDir::at(dir);
    let one = |tree: &Path| -> Result<cutover::state::TreeState> {
        state.check_outside(tree)?;
        let canonical = std::fs::canonicalize(tree).with_context(|| format!("{}: cannot resolve", tree.display()))?;
        Ok(state.tree(&canonical)?)
    };
    Ok([one(trees[0])?, one(trees[1])?])
}

/// The last manifest stored in `state` as a cache for a scan with `options`, or `None`
/// (first run; a damaged or unusable one is said on stderr and not used).
pub(crate) fn state_cache(
    state: &cutover::state::TreeState,
    options: &ScanOptions,
    verify: &VerifyArg,
    changed: Option<&[cutover::path::RelPath]>,
) -> Option<Arc<Cache>> {
    let manifest = match state.last_manifest()? {
        Ok(manifest) => manifest,
        Err(e) => {
            warn(format_args!("{e}; not used as a cache: every file of {} is read", state.tree().display()));
            return None;
        }
    };
    let scrub = verify.scrub(&manifest);
    Cache::new(Arc::new(manifest), options, scrub)
        .map_err(|why| warn(format_args!("the last manifest of {}: {why}", state.tree().display())))
        .ok()
        .map(|cache| Arc::new(with_changed(cache, changed)))
}

/// The manifest at `path` as a cache for a scan with `options`, or `None`, saying why on
/// stderr: a missing file is a first run (said nothing about), an unreadable one or one of
/// other settings is not used.
/// `cache` narrowed to a change log, when there is one.
fn with_changed(cache: Cache, changed: Option<&[cutover::path::RelPath]>) -> Cache {
    match changed {
        Some(paths) => cache.only_changed(paths.to_vec()),
        None => cache,
    }
}

pub(crate) fn load_cache(
    path: &Path,
    options: &ScanOptions,
    verify: &VerifyArg,
    changed: Option<&[cutover::path::RelPath]>,
) -> Option<Arc<Cache>> {
    let manifest = match read_manifest(path) {
        Ok(manifest) => manifest,
        Err(cutover::manifest::ManifestError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return None;
        }
        Err(e) => {
            warn(format_args!("{e}; not used as a cache: every file is read"));
            return None;
        }
    };
    let scrub = verify.scrub(&manifest);
    match Cache::new(Arc::new(manifest), options, scrub) {
        Ok(cache) => Some(Arc::new(with_changed(cache, changed))),
        Err(why) => {
            warn(format_args!("{}: {why}", path.display()));
            None
        }
    }
}

/// How directories are scanned: shared by every command that scans.
#[derive(Debug, clap::Args)]
pub struct ScanArg {
    /// Chunk size: a power of two from 1K to 1G (suffixes K, M, G); default 1M.
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size)]
    pub chunk_size: Option<ChunkSize>,
    /// Leave out paths matching PATTERN, with everything below them (rsync-style: `*.tmp`,
    /// `/build`, `cache/*.db`, `tmp/` for directories only; `*` stays within a name, `**` does
    /// not). Repeatable. Applies to both sides; a manifest records its patterns.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Read exclude patterns from FILE, one per line (blank lines and lines starting with #
    /// are skipped).
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<PathBuf>,
    /// Stay on each root's filesystem, as rsync's -x: below a directory where another one is
    /// mounted nothing is compared, on either side, or repaired. A manifest records it.
    #[arg(short = 'x', long)]
    one_file_system: bool,
}

impl ScanArg {
    /// The exclude patterns given, or `None` when none were. Files named by `--exclude-from`
    /// (`-` is standard input) are read here, once.
    fn excludes(&self) -> Result<Option<Excludes>> {
        let mut patterns = self.exclude.clone();
        for file in &self.exclude_from {
            let bytes = if file.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
            } else {
                std::fs::read(file)
            };
            let bytes = bytes.with_context(|| format!("{}: cannot read", file.display()))?;
            let text = String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8 text", file.display()))?;
            // As rsync reads such files: blank lines and `#` or `;` comments are skipped.
            let rules = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with(['#', ';']));
            patterns.extend(rules.map(String::from));
        }
        if patterns.is_empty() && self.exclude_from.is_empty() {
            return Ok(None);
        }
        Excludes::new(&patterns).map(Some).map_err(anyhow::Error::msg)
    }

    /// Options for scanning a directory, with the excludes `asked` (from [`ScanArg::excludes`]).
    /// Compared with a manifest that has `theirs`, the chunk size and excludes not given are
    /// the manifest's, so that both sides line up.
    fn options(&self, xattrs: bool, asked: Option<&Excludes>, theirs: Option<&Header>) -> ScanOptions {
        ScanOptions {
            chunk_size: self.chunk_size.or(theirs.map(|h| h.chunk_size)).unwrap_or(ChunkSize::DEFAULT),
            xattrs,
            exclude: asked.or(theirs.map(|h| &h.exclude)).cloned().unwrap_or_default(),
            one_file_system: self.one_file_system || theirs.is_some_and(|h| h.one_file_system),
            cache: None,
            shard: None,
        }
    }
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The reference tree (old system): a directory, a manifest file, or '-' for a manifest on stdin.
    source: PathBuf,
    /// The copy to check: a directory, a manifest file, or '-'.
    target: PathBuf,
    /// When a side is the parts of a sharded scan, all of them in a row: `diff src.*.part
    /// dst.*.part` (or a quoted pattern per side, expanded by cutover).
    #[arg(value_name = "PART")]
    more: Vec<PathBuf>,
    #[command(flatten)]
    meta: MetaArg,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Also write the report as one self-contained HTML page (docs/report.md).
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Keep the last manifest of both directories in DIR and use it as a cache: files
    /// unchanged since (same device, inode, size, mtime and ctime) are trusted, not read.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    #[command(flatten)]
    verify: VerifyArg,
    #[command(flatten)]
    scan: ScanArg,
    #[command(flatten)]
    record: record::RecordArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
    Jsonl,
}

fn parse_chunk_size(text: &str) -> Result<ChunkSize, String> {
    let (digits, shift) = match text.trim().to_ascii_uppercase() {
        t if t.ends_with('K') || t.ends_with("KIB") => (t.trim_end_matches("IB").trim_end_matches('K').to_string(), 10),
        t if t.ends_with('M') || t.ends_with("MIB") => (t.trim_end_matches("IB").trim_end_matches('M').to_string(), 20),
        t if t.ends_with('G') || t.ends_with("GIB") => (t.trim_end_matches("IB").trim_end_matches('G').to_string(), 30),
        t => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a size like 4096, 64K or 1M"))?;
    ChunkSize::new(n.checked_shl(shift).filter(|v| v >> shift == n).unwrap_or(u64::MAX))
}

pub(crate) fn parse_meta(text: &str) -> Result<MetaSet, String> {
    MetaSet::parse(text)
}

/// Which metadata to compare (and repair).
#[derive(Debug, clap::Args)]
pub struct MetaArg {
    /// Metadata to compare: none, all, or a list of mode,mtime,owner,xattr.
    #[arg(long, default_value = "mode", value_parser = parse_meta)]
    meta: MetaSet,
    /// Compare what `rsync -a` keeps: modes, mtimes, and owners when run as root, besides
    /// content, symlinks and special files (add `--meta xattr` for extended attributes).
    #[arg(short, long)]
    archive: bool,
}

impl MetaArg {
    pub(crate) fn set(&self) -> MetaSet {
        if self.archive { self.meta.or(MetaSet::archive(rustix::process::geteuid().is_root())) } else { self.meta }
    }
}

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    if let Err(err) = cutover::interrupt::install() {
        eprintln!("cutover: error: cannot handle signals: {err}");
        return ExitCode::from(EXIT_TROUBLE);
    }
    let cli = Cli::parse();
    progress::configure(cli.quiet, cli.progress);
    let jobs = cli
        .jobs
        .map(usize::from)
        .or_else(|| cli.command.trees().into_iter().any(on_network_filesystem).then_some(REMOTE_JOBS));
    if let Some(jobs) = jobs
        && let Err(err) = rayon::ThreadPoolBuilder::new().num_threads(jobs).build_global()
    {
        eprintln!("cutover: error: cannot start {jobs} threads: {err}");
        return ExitCode::from(EXIT_TROUBLE);
    }
    let keep = cli.command.record_arg().cloned();
    let mut record = record::RunRecord::start(cli.command.name(), keep.as_ref().and_then(|k| k.job.as_deref()));
    let result = match cli.command {
        Command::Scan(args) => run_scan(args, &mut record),
        Command::Diff(args) => run_diff(args, &mut record),
        Command::Plan(args) => repair::run_plan(args, &mut record),
        Command::Apply(args) => repair::run_apply(args, &mut record),
        Command::Bundle(args) => repair::run_bundle(args),
        Command::Repair(args) => repair::run_repair(args, &mut record),
        Command::Merge(args) => shard::run_merge(args, &mut record),
        Command::Man => manual::run_man(Cli::command()),
        Command::Completions(args) => manual::run_completions(args, Cli::command()),
    };
    let (code, error) = exit_code(result);
    record.finish(code, error);
    match keep {
        Some(keep) => ExitCode::from(keep_record(&keep, &record)),
        None => ExitCode::from(code),
    }
}

/// The exit code of a run's outcome, and its error as said on stderr (which this prints).
fn exit_code(result: Result<u8>) -> (u8, Option<String>) {
    let stopped = cutover::interrupt::pending();
    match result {
        Ok(code) => (code, None),
        Err(err) if let Some(signal) = stopped => {
            eprintln!("cutover: stopped by {}: {err:#}", signal.name());
            (signal.exit_code(), Some(format!("stopped by {}: {err:#}", signal.name())))
        }
        Err(err) if is_locked(&err) => {
            eprintln!("cutover: error: {err:#}");
            (EXIT_LOCKED, Some(format!("{err:#}")))
        }
        // The reader went away: say nothing more, but never claim success (`diff` keeps its
        // verdict itself, see `run_diff`).
        Err(err) if is_broken_pipe(&err) => (EXIT_TROUBLE, Some(format!("{err:#}"))),
        Err(err) => {
            eprintln!("cutover: error: {err:#}");
            (EXIT_TROUBLE, Some(format!("{err:#}")))
        }
    }
}

/// Writes the run record and metrics asked for; the run's exit code, or 2 when one of them
/// could not be written (a record a cron job cannot find is a failed run).
fn keep_record(keep: &record::RecordArg, record: &record::RunRecord) -> u8 {
    let mut code = record.exit_code;
    if let Some(path) = &keep.report {
        let written = write_output(path, |out| {
            serde_json::to_writer_pretty(&mut *out, &record.to_json())?;
            Ok(writeln!(out)?)
        });
        if let Err(err) = written {
            eprintln!("cutover: error: the run record: {err:#}");
            code = code.max(EXIT_TROUBLE);
        }
    }
    if let Some(path) = &keep.metrics {
        let previous = std::fs::read_to_string(path).unwrap_or_default();
        let text = metrics::render(record, &previous);
        if let Err(err) = write_output(path, |out| Ok(out.write_all(text.as_bytes())?)) {
            eprintln!("cutover: error: the metrics: {err:#}");
            code = code.max(EXIT_TROUBLE);
        }
    }
    code
}

/// Threads when a tree is on a network filesystem and `-j` is not given. Each read there waits
/// on a round trip, so reads in flight, not CPUs, set the pace.
const REMOTE_JOBS: usize = 16;

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Scan(_) => "scan",
            Command::Diff(_) => "diff",
            Command::Plan(_) => "plan",
            Command::Apply(_) => "apply",
            Command::Bundle(_) => "bundle",
            Command::Repair(_) => "repair",
            Command::Merge(_) => "merge",
            Command::Man => "man",
            Command::Completions(_) => "completions",
        }
    }

    /// Where this run's record and metrics go, for the commands that keep them.
    fn record_arg(&self) -> Option<&record::RecordArg> {
        match self {
            Command::Scan(args) => Some(&args.record),
            Command::Diff(args) => Some(&args.record),
            Command::Plan(args) => Some(args.record()),
            Command::Apply(args) => Some(args.record()),
            Command::Repair(args) => Some(args.record()),
            Command::Bundle(_) | Command::Merge(_) | Command::Man | Command::Completions(_) => None,
        }
    }

    /// The trees named on the command line (directories, or manifest files: those are local
    /// reads and never count as remote unless they sit on a network filesystem themselves).
    fn trees(&self) -> Vec<&Path> {
        match self {
            Command::Scan(args) => vec![&args.dir],
            Command::Diff(args) => vec![&args.source, &args.target],
            Command::Plan(args) => args.trees(),
            Command::Apply(args) => args.trees(),
            Command::Bundle(args) => args.trees(),
            Command::Repair(args) => args.trees(),
            Command::Merge(args) => args.trees(),
            Command::Man | Command::Completions(_) => vec![],
        }
    }
}

/// Whether `path` lies on a filesystem where every read crosses a network (by `statfs` magic).
fn on_network_filesystem(path: &Path) -> bool {
    const NETWORK: [u32; 11] = [
        0x6969,      // NFS
        0x517b,      // SMB
        0xfe53_4d42, // SMB2
        0xff53_4d42, // CIFS
        0x6573_5546, // FUSE: sshfs, s3fs, rclone mount, gcsfuse...
        0x00c3_6400, // Ceph
        0x0bd0_0bd0, // Lustre
        0x5346_414f, // AFS
        0x0116_1970, // GFS2
        0x0102_1997, // 9P
        0x7461_636f, // OCFS2
    ];
    rustix::fs::statfs(path).is_ok_and(|fs| NETWORK.contains(&(fs.f_type as u32)))
}

fn is_locked(err: &anyhow::Error) -> bool {
    use cutover::apply::ApplyError;
    use cutover::state::{StateError, lock::Busy};
    err.chain().any(|cause| {
        cause.is::<Busy>()
            || matches!(cause.downcast_ref(), Some(StateError::Busy(_)))
            || matches!(cause.downcast_ref(), Some(ApplyError::State(StateError::Busy(_))))
    })
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run_scan(args: ScanArgs, record: &mut record::RunRecord) -> Result<u8> {
    record.root("dir", &args.dir);
    let mut options = args.scan.options(args.xattrs, args.scan.excludes()?.as_ref(), None);
    options.shard = args.shard.shard()?;
    if let Some(shard) = options.shard
        && (args.output.is_none() || args.b3sum)
    {
        bail!("--shard {shard} scans part of the tree: write that part with -o PART (then `cutover merge` the parts)");
    }
    let changed = args.verify.changed_paths()?;
    options.cache = args.cache.as_deref().and_then(|path| load_cache(path, &options, &args.verify, changed.as_deref()));
    if let (Some(output), false) = (&args.output, args.b3sum) {
        return scan_to_file(&args, output, &options, record);
    }
    let totals = options.cache.as_ref().map(|cache| progress::Totals::of_tree(cache.manifest()));
    let manifest = progress::with_progress(progress::SCANNING, totals, |p| scan_with_progress(&args.dir, &options, p))?;
    // With --cache, say what was read and what trusted (everything read on a first run).
    let verified = match &options.cache {
        Some(cache) => Some(cache.verified()),
        None => args.cache.as_ref().map(|_| cutover::scan::Verified::all_read(&manifest)),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // b3sum lines that b3sum cannot check (names that are not UTF-8).
    let mut b3sum_trouble = false;
    if args.b3sum {
        for line in b3sum_lines(&manifest) {
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        let unnamed: Vec<_> = manifest
            .entries
            .iter()
            .filter(|e| e.kind == cutover::manifest::Kind::File && std::str::from_utf8(e.path.as_bytes()).is_err())
            .collect();
        for entry in &unnamed {
            eprintln!(
                "cutover: {}: the name is not valid UTF-8; its b3sum line shows U+FFFD and b3sum --check cannot find the file",
                render::shown(entry.path.as_bytes())
            );
        }
        b3sum_trouble = !unnamed.is_empty();
    } else if let Some(output) = &args.output {
        // `-o /dev/stdout` and the like are standard output too: the summary must not follow the
        // manifest into it.
        let to_stdout = output.as_os_str() == "-" || is_stdout(output);
        drop(out);
        write_output(output, |out| Ok(write_manifest(&manifest, out)?))?;
        let mut summary: Box<dyn Write> = match (progress::quiet(), to_stdout) {
            (true, _) => Box::new(std::io::sink()),
            (false, true) => Box::new(std::io::stderr()),
            (false, false) => Box::new(stdout.lock()),
        };
        render::scan_summary(&mut summary, &manifest, &args.dir)?;
        render::verified_summary(&mut summary, manifest.header.scrub, verified)?;
    } else if !progress::quiet() {
        render::scan_summary(&mut out, &manifest, &args.dir)?;
        render::verified_summary(&mut out, manifest.header.scrub, verified)?;
    }
    // `--cache FILE` alone: FILE becomes this scan's manifest, for the next run.
    if args.output.is_none()
        && let Some(cache) = &args.cache
    {
        write_output(cache, |out| Ok(write_manifest(&manifest, out)?))?;
    }
    record.checked = Some(record::Checked::of_tree(&manifest));
    record.verified = verified.map(|v| vec![("dir", v)]).unwrap_or_default();
    let problems = report_problems(&manifest);
    Ok(if b3sum_trouble { EXIT_TROUBLE } else { problems })
}

/// `scan DIR -o FILE`: entries go to the manifest as the walk completes them (through a spool
/// beside FILE, or in the temp directory for standard output), so memory does not grow with the
/// tree.
fn scan_to_file(args: &ScanArgs, output: &Path, options: &ScanOptions, record: &mut record::RunRecord) -> Result<u8> {
    // `-o /dev/stdout` and the like are standard output too: the summary must not follow the
    // manifest into it.
    let to_stdout = output.as_os_str() == "-" || is_stdout(output);
    let beside = output.parent().filter(|_| !to_stdout && !output.is_dir()).unwrap_or(Path::new("."));
    let spool = cutover::manifest::spool_file(beside)
        .or_else(|_| cutover::manifest::spool_file(&std::env::temp_dir()))
        .context("cannot create a spool file for the manifest")?;
    let totals = options.cache.as_ref().map(|cache| progress::Totals::of_tree(cache.manifest()));
    let (writer, tally) = progress::with_progress(progress::SCANNING, totals, |p| {
        cutover::scan::scan_streaming(&args.dir, options, p, spool)
    })?;
    let scrubbed = writer.header().scrub;
    write_output(output, |out| Ok(writer.finish(out)?))?;
    let verified = match &options.cache {
        Some(cache) => Some(cache.verified()),
        None => args.cache.as_ref().map(|_| cutover::scan::Verified {
            verified_files: tally.files,
            verified_bytes: tally.bytes,
            trusted_files: 0,
            trusted_bytes: 0,
        }),
    };
    let stdout = std::io::stdout();
    let mut summary: Box<dyn Write> = match (progress::quiet(), to_stdout) {
        (true, _) => Box::new(std::io::sink()),
        (false, true) => Box::new(std::io::stderr()),
        (false, false) => Box::new(stdout.lock()),
    };
    match options.shard {
        Some(shard) => render::part_counts(&mut summary, shard, tally.entries, tally.files, tally.bytes, &args.dir)?,
        None => render::scan_counts(&mut summary, tally.root, tally.entries, tally.files, tally.bytes, &args.dir)?,
    }
    render::verified_summary(&mut summary, scrubbed, verified)?;
    record.checked = Some(record::Checked {
        entries: tally.entries,
        files: tally.files,
        bytes: tally.bytes,
        directories: tally.directories,
        matched: None,
    });
    record.verified = verified.map(|v| vec![("dir", v)]).unwrap_or_default();
    for (path, problem) in &tally.problems {
        eprintln!("cutover: {}: {problem}", render::shown(path.as_bytes()));
    }
    if tally.problems.is_empty() {
        Ok(EXIT_SAME)
    } else {
        eprintln!("cutover: {} could not be hashed", render::count(tally.problems.len() as u64, "entry", "entries"));
        Ok(EXIT_TROUBLE)
    }
}

/// Writes an output file (`-` is standard output) as `>` would, except that a regular file (or
/// a new one) is written beside its final name, fsynced and renamed into place: a killed run
/// never leaves half a file under that name, and a failed one leaves no temp behind. The temp
/// is created exclusively (never through something planted under its name) with the mode of
/// the file it replaces. A path that exists and is not a regular file (a symlink,
/// `/dev/stdout`, a FIFO, `>(...)`) is written through as it is: renaming over it would
/// replace the link or node itself. Where no temp can be made beside it (a read-only
/// directory, a name at the length limit), an existing file is written in place, as `>` does.
pub(crate) fn write_output<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    if path.as_os_str() == "-" {
        return write_through(Box::new(std::io::stdout().lock()), write).context("writing to standard output");
    }
    let existing = std::fs::symlink_metadata(path).ok();
    if existing.as_ref().is_some_and(|meta| !meta.file_type().is_file()) {
        return write_in_place(path, write);
    }
    // A file we could not write with `>` is not replaced behind its back either.
    if existing.is_some()
        && let Err(e) = rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
    {
        return Err(std::io::Error::from(e)).with_context(|| format!("{}: cannot write", path.display()));
    }
    // In a sticky directory, a file of someone else's may be writable but not replaceable.
    if existing.as_ref().is_some_and(|meta| !may_replace(path, meta)) {
        return write_in_place(path, write);
    }
    // A signal while the temp exists stops the writing at its next write and takes the error
    // path below, which removes the temp.
    let deferred = cutover::interrupt::defer();
    let Some((tmp, file)) = create_temp(path, existing.as_ref()) else {
        drop(deferred);
        return write_in_place(path, write);
    };
    let cannot_write = || format!("{}: cannot write", path.display());
    let mut out = std::io::BufWriter::new(cutover::interrupt::Stoppable(file));
    let written = write(&mut out).with_context(cannot_write).and_then(|value| {
        let file = out.into_inner().map_err(|e| e.into_error()).with_context(cannot_write)?.0;
        file.sync_all().with_context(cannot_write)?;
        cutover::interrupt::stop_point().with_context(cannot_write)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot rename {} into place", path.display(), tmp.display()))?;
        Ok(value)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether this process may rename over the existing file `path`: always, except in a sticky
/// directory (`/tmp`) when it owns neither the file nor the directory and is not root.
fn may_replace(path: &Path, file: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let uid = rustix::process::geteuid();
    if uid.is_root() || file.uid() == uid.as_raw() {
        return true;
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::metadata(parent).is_ok_and(|dir| dir.mode() & 0o1000 == 0 || dir.uid() == uid.as_raw())
}

/// A new temp file beside `path` (`NAME.tmp-PID-N`), created exclusively, with the permission
/// bits (not setuid, setgid or sticky) and, when run as root, the owner of the file it will
/// replace; `None` when the directory will not take one.
fn create_temp(path: &Path, replaces: Option<&std::fs::Metadata>) -> Option<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let mode = replaces.map_or(0o666, |meta| meta.permissions().mode() & 0o777);
    for attempt in 0..100 {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".tmp-{}-{attempt}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        match std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp) {
            Ok(file) => {
                // The umask may have taken bits the replaced file had. Owner first: a change
                // of owner clears permission bits on some systems.
                if let Some(meta) = replaces {
                    if rustix::process::geteuid().is_root() {
                        let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
                    }
                    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
                }
                return Some((tmp, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Opens `path` for writing as `>` does (following a symlink, truncating) and writes it.
fn write_in_place<T>(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path);
    let file = file.with_context(|| format!("{}: cannot open for writing", path.display()))?;
    write_through(Box::new(file), write).with_context(|| format!("{}: cannot write", path.display()))
}

fn write_through<T>(out: Box<dyn Write + '_>, write: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    let mut out = std::io::BufWriter::new(out);
    let value = write(&mut out)?;
    out.flush()?;
    Ok(value)
}

/// Whether `path` names the file that is this process's standard output.
fn is_stdout(path: &Path) -> bool {
    let (Ok(named), Ok(stdout)) = (rustix::fs::stat(path), rustix::fs::fstat(std::io::stdout())) else { return false };
    (named.st_dev, named.st_ino) == (stdout.st_dev, stdout.st_ino)
}

/// Prints every entry that could not be hashed; EXIT_TROUBLE when there was one.
fn report_problems(manifest: &Manifest) -> u8 {
    let mut count = 0u64;
    for (entry, problem) in manifest.problems() {
        count += 1;
        eprintln!("cutover: {}: {problem}", render::shown(entry.path.as_bytes()));
    }
    if count > 0 {
        eprintln!("cutover: {} could not be hashed", render::count(count, "entry", "entries"));
        EXIT_TROUBLE
    } else {
        EXIT_SAME
    }
}

/// Reads a manifest named on the command line (`-` is standard input) for `command`; a file
/// that is something else is named as such.
fn load_manifest(path: &Path, command: &str) -> Result<Manifest> {
    if path.as_os_str() == "-" {
        let stdin = Path::new("<stdin>");
        return shard::whole(read_manifest_from(std::io::stdin().lock(), stdin)?, stdin);
    }
    std::fs::metadata(path).with_context(|| format!("{}: cannot access", path.display()))?;
    let manifest = read_manifest(path).map_err(|e| inputs::explain(path, inputs::Wanted::Side, command, e))?;
    shard::whole(manifest, path)
}

fn is_dir(path: &Path) -> bool {
    path.as_os_str() != "-" && path.is_dir()
}

/// Loads both sides, each a directory, a manifest file, '-', or a manifest read already (the
/// parts of a sharded scan, merged). A directory compared with a manifest is scanned at the
/// manifest's chunk size and with its excludes (unless given), so their chunks and their scope
/// line up. Directories are scanned with extended attributes when `meta` compares them.
pub(crate) fn load_sides(
    [source_side, target_side]: [shard::Side; 2],
    scan: &ScanArg,
    meta: MetaSet,
    command: &str,
    progress: &dyn Progress,
) -> Result<(Manifest, Manifest)> {
    let (source, target) = (source_side.path(), target_side.path());
    let load = |side: shard::Side| match side {
        shard::Side::Path(path) => load_manifest(&path, command),
        shard::Side::Read(manifest, _) => Ok(*manifest),
    };
    let is_dir = |side: &shard::Side| matches!(side, shard::Side::Path(path) if is_dir(path));
    let xattrs = meta.xattr;
    let stdin_users =
        [source.as_os_str(), target.as_os_str()].into_iter().chain(scan.exclude_from.iter().map(|p| p.as_os_str()));
    if stdin_users.filter(|p| *p == "-").count() > 1 {
        bail!("only one of the two sides and --exclude-from can be read from standard input");
    }
    let asked = scan.excludes()?;
    let (source, target) = match (is_dir(&source_side), is_dir(&target_side)) {
        // Walked together: a file on both sides is read in one pass and equal bytes hashed once.
        (true, true) => scan_pair(source, target, &scan.options(xattrs, asked.as_ref(), None), progress)?,
        (true, false) => {
            let source = source.to_path_buf();
            let target = load(target_side)?;
            let options = scan.options(xattrs, asked.as_ref(), Some(&target.header));
            (scan_with_progress(&source, &options, progress)?, target)
        }
        (false, true) => {
            let target = target.to_path_buf();
            let source = load(source_side)?;
            let options = scan.options(xattrs, asked.as_ref(), Some(&source.header));
            (source, scan_with_progress(&target, &options, progress)?)
        }
        (false, false) => (load(source_side)?, load(target_side)?),
    };
    check_same_scope(&source.header, &target.header, asked.as_ref(), scan.one_file_system)?;
    Ok((source, target))
}

/// Refuses to compare trees scanned with different excludes: what one left out would show as
/// missing or extra.
fn check_same_scope(source: &Header, target: &Header, asked: Option<&Excludes>, one_file_system: bool) -> Result<()> {
    let (a, b) = (source.one_file_system, target.one_file_system);
    let how = |on: bool| if on { "staying on one filesystem (-x)" } else { "across mount points" };
    if a != b {
        bail!("{} was scanned {} and {} {}: scan both the same way", source.root, how(a), target.root, how(b));
    }
    if one_file_system && !a {
        bail!("the manifests were scanned across mount points, which -x cannot undo: scan again with -x");
    }
    let shown = |h: &Header| quoted_list(&h.exclude.texts());
    if !source.exclude.same_patterns(&target.exclude) {
        bail!(
            "the two sides were scanned with different excludes ({} {}, {} {}): scan them with the same --exclude patterns",
            source.root,
            shown(source),
            target.root,
            shown(target)
        );
    }
    if let Some(asked) = asked
        && !asked.same_patterns(&source.exclude)
    {
        bail!(
            "the manifest was scanned with excludes {} and cannot be compared under {}: scan again with those",
            shown(source),
            quoted_list(&asked.texts())
        );
    }
    Ok(())
}

/// Patterns for a message: `'*.tmp', 'cache/'`, or `none`.
fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(|item| format!("'{}'", render::shown(item.as_ref().as_bytes()))).collect::<Vec<_>>().join(", ")
}

fn run_diff(args: DiffArgs, record: &mut record::RunRecord) -> Result<u8> {
    record.root("source", &args.source);
    record.root("target", &args.target);
    if let Some(dir) = &args.state {
        return run_incremental_diff(&args, dir, record);
    }
    let two_files = [&args.source, &args.target]
        .iter()
        .all(|side| side.as_os_str() != "-" && !is_dir(side) && !shard::is_pattern(side));
    if args.more.is_empty() && two_files {
        return run_manifest_diff(&args, record);
    }
    let named: Vec<PathBuf> = [&args.source, &args.target].into_iter().chain(&args.more).cloned().collect();
    let sides = shard::sides(&named)?;
    let (source, target) = progress::with_progress(progress::SCANNING, None, |p| {
        load_sides(sides, &args.scan, args.meta.set(), "diff", p)
    })?;
    let report = cutover::diff::diff(&source, &target, &DiffOptions { meta: args.meta.set() });
    record.comparison(&source, &report);
    show_diff(&args, &report)
}

/// `diff A.manifest B.manifest`: both read as streams and merged in path order, so memory
/// stays bounded by the largest directory and the differences found, not by the trees.
fn run_manifest_diff(args: &DiffArgs, record: &mut record::RunRecord) -> Result<u8> {
    let open = |path: &Path| -> Result<EntryStream> {
        std::fs::metadata(path).with_context(|| format!("{}: cannot access", path.display()))?;
        EntryStream::open(path).map_err(|e| inputs::explain(path, inputs::Wanted::Side, "diff", e))
    };
    let (source, target) = (open(&args.source)?, open(&args.target)?);
    let (source_header, target_header) = (source.header().clone(), target.header().clone());
    shard::refuse_part(&source_header, &args.source)?;
    shard::refuse_part(&target_header, &args.target)?;
    let asked = args.scan.excludes()?;
    check_same_scope(&source_header, &target_header, asked.as_ref(), args.scan.one_file_system)?;
    let options = DiffOptions { meta: args.meta.set() };
    let (report, tally) = cutover::diff::diff_streams((&source_header, source), (&target_header, target), &options)?;
    record.tallied_comparison(&tally, &report);
    show_diff(args, &report)
}

/// `diff SRC DST --state DIR`: both directories scanned with the last run's manifests as
/// caches, which are then replaced by this run's.
fn run_incremental_diff(args: &DiffArgs, dir: &Path, record: &mut record::RunRecord) -> Result<u8> {
    if !is_dir(&args.source) || !is_dir(&args.target) || !args.more.is_empty() {
        bail!("--state needs two directories: it keeps their manifests from one run to the next");
    }
    let states = tree_states(dir, [&args.source, &args.target])?;
    let asked = args.scan.excludes()?;
    let options = args.scan.options(args.meta.set().xattr, asked.as_ref(), None);
    let changed = args.verify.changed_paths()?;
    let caches = states.each_ref().map(|state| state_cache(state, &options, &args.verify, changed.as_deref()));
    let (source, target) = progress::with_progress(progress::SCANNING, cache_totals(&caches), |p| {
        cutover::scan::scan_pair_cached(&args.source, &args.target, &options, caches.clone(), p)
    })?;
    states[0].store_manifest(&source)?;
    states[1].store_manifest(&target)?;
    let mut report = cutover::diff::diff(&source, &target, &DiffOptions { meta: args.meta.set() });
    let counts = |cache: &Option<Arc<Cache>>, manifest: &Manifest| {
        Some(cache.as_ref().map_or_else(|| cutover::scan::Verified::all_read(manifest), |cache| cache.verified()))
    };
    report.source.verified = counts(&caches[0], &source);
    report.target.verified = counts(&caches[1], &target);
    record.comparison(&source, &report);
    show_diff(args, &report)
}

/// Writes the diff report as asked and gives its exit code.
fn show_diff(args: &DiffArgs, report: &Report) -> Result<u8> {
    if let Some(path) = &args.html {
        let title = format!("cutover diff {} {}", args.source.display(), args.target.display());
        html::write_page(path, &title, &[html::Section { heading: "Differences", report }])?;
    }
    if !progress::quiet() {
        warn_uncompared(args.meta.set(), report);
        for hint in cutover::diff::tree_hints(report) {
            eprintln!("cutover: hint: {hint}");
        }
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = render::report(&mut out, report, args.format).and_then(|()| out.flush());
        // A reader that stopped early (`| head`) still gets the verdict in the exit code.
        if let Err(e) = written
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(e.into());
        }
    }
    Ok(diff_exit_code(report))
}

/// The files both caches hold, for the ETA of a scan of both trees; `None` without both.
pub(crate) fn cache_totals(caches: &[Option<Arc<Cache>>; 2]) -> Option<progress::Totals> {
    progress::Totals::sum(caches.iter().map(|c| c.as_ref().map(|c| progress::Totals::of_tree(c.manifest()))))
}

/// Says which requested metadata could not be compared because a manifest did not record it.
pub(crate) fn warn_uncompared(asked: MetaSet, report: &Report) {
    if progress::quiet() {
        return;
    }
    for (path, side) in &report.not_entered {
        let whose = if *side == "both" { "on both sides".to_string() } else { format!("in the {side}") };
        eprintln!(
            "cutover: note: {}: another filesystem is mounted here {whose} (-x): nothing below it was compared",
            render::shown(path.as_bytes())
        );
    }
    let missing: Vec<_> = asked.names().into_iter().filter(|name| !report.compared.names().contains(name)).collect();
    if !missing.is_empty() {
        eprintln!("cutover: note: not compared, a manifest did not record it: {}", missing.join(", "));
    }
}

fn diff_exit_code(report: &Report) -> u8 {
    let summary = report.summary();
    if summary.trouble > 0 {
        EXIT_TROUBLE
    } else if report.identical() {
        EXIT_SAME
    } else {
        EXIT_DIFFERENT
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::on_network_filesystem;

    /// A directory mounted read-only through FUSE by `rclone mount`, unmounted on drop.
    struct FuseMount<'a> {
        child: Child,
        at: &'a Path,
    }

    impl<'a> FuseMount<'a> {
        /// Mounts `dir` at `at`, or `None` where rclone or FUSE is missing.
        fn new(dir: &Path, at: &'a Path) -> Option<FuseMount<'a>> {
            let child = Command::new("rclone")
                .args(["mount", "--read-only"])
                .arg(dir)
                .arg(at)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let mut mount = FuseMount { child, at };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if mount.child.try_wait().ok()?.is_some() {
                    return None;
                }
                if std::fs::read_dir(at).is_ok_and(|mut names| names.next().is_some()) {
                    return Some(mount);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        }
    }

    impl Drop for FuseMount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("fusermount3").arg("-u").arg(self.at).status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn a_tree_behind_fuse_counts_as_remote_and_a_local_one_does_not() {
        let local = tempfile::tempdir().unwrap();
        std::fs::write(local.path().join("file"), "x").unwrap();
        assert!(!on_network_filesystem(local.path()));
        let mount_point = tempfile::tempdir().unwrap();
        let Some(_mount) = FuseMount::new(local.path(), mount_point.path()) else {
            eprintln!("skipped the FUSE half: `rclone mount` could not mount (rclone, fuse3 or /dev/fuse missing)");
            return;
        };
        assert!(on_network_filesystem(mount_point.path()));
        assert!(on_network_filesystem(&mount_point.path().join("file")));
    }
}
