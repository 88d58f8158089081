//! Sharded runs on the command line: `--shard I/N|auto`, `cutover merge`, and the sides of
//! `diff` and `plan` given as the parts of a sharded scan (docs/scale-out.md).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cutover::apply::source::SourceData;
use cutover::apply::{ApplyOptions, ApplyReport, LockedTarget, apply};
use cutover::digest::ByteRange;
use cutover::manifest::{Manifest, merge_parts, read_manifest, read_manifest_from, write_manifest};
use cutover::path::RelPath;
use cutover::plan::CheckedPlan;
use cutover::shard::Shard;

use super::record::RunRecord;
use super::{is_dir, render, report_problems, write_output};

/// Which part of the job this process does.
#[derive(Debug, Clone, clap::Args)]
pub struct ShardArg {
    /// Do part I of N (1-based), e.g. 2/4; `auto` takes it from the scheduler: a Kubernetes
    /// Indexed Job (JOB_COMPLETION_INDEX), a Slurm job array (SLURM_ARRAY_TASK_*) or GNU
    /// parallel (PARALLEL_SEQ).
    #[arg(long, value_name = "I/N|auto")]
    shard: Option<String>,
    /// The number of shards, for `--shard auto` under Kubernetes or GNU parallel (a Slurm array
    /// knows its size).
    #[arg(long, value_name = "N", requires = "shard", value_parser = clap::value_parser!(u32).range(1..=i64::from(cutover::shard::MAX_SHARDS)))]
    shards: Option<u32>,
}

impl ShardArg {
    pub fn shard(&self) -> Result<Option<Shard>> {
        let Some(text) = &self.shard else { return Ok(None) };
        let shard = if text == "auto" {
            Shard::from_env(|name| std::env::var(name).ok(), self.shards).map_err(anyhow::Error::msg)?
        } else {
            let shard = Shard::parse(text).map_err(anyhow::Error::msg)?;
            if self.shards.is_some_and(|n| n != shard.count()) {
                bail!("--shard {shard} and --shards {} disagree", self.shards.unwrap_or_default());
            }
            shard
        };
        Ok(Some(shard))
    }
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The parts written by `scan --shard I/N -o PART`, all of them, in any order (a quoted
    /// pattern such as 'scan.*.part' is expanded by cutover).
    #[arg(required = true, value_name = "PART")]
    parts: Vec<PathBuf>,
    /// Write the whole manifest here ('-' for standard output).
    #[arg(short, long, value_name = "FILE", required = true)]
    output: PathBuf,
}

impl MergeArgs {
    pub fn trees(&self) -> Vec<&Path> {
        Vec::new()
    }
}

pub fn run_merge(args: MergeArgs, record: &mut RunRecord) -> Result<u8> {
    let mut files = Vec::new();
    for arg in &args.parts {
        files.extend(expand(arg)?);
    }
    let manifest = merge_files(&files)?;
    let to_stdout = args.output.as_os_str() == "-";
    write_output(&args.output, |out| Ok(write_manifest(&manifest, out)?))?;
    let mut summary: Box<dyn Write> = match (super::progress::quiet(), to_stdout) {
        (true, _) => Box::new(std::io::sink()),
        (false, true) => Box::new(std::io::stderr()),
        (false, false) => Box::new(std::io::stdout().lock()),
    };
    render::scan_summary(&mut summary, &manifest, Path::new(&manifest.header.root))?;
    record.checked = Some(super::record::Checked::of_tree(&manifest));
    Ok(report_problems(&manifest))
}

/// Reads and merges the parts in `files`.
fn merge_files(files: &[PathBuf]) -> Result<Manifest> {
    let mut parts = Vec::with_capacity(files.len());
    for file in files {
        parts.push((file.display().to_string(), read_file(file)?));
    }
    Ok(merge_parts(parts)?)
}

fn read_file(path: &Path) -> Result<Manifest> {
    if path.as_os_str() == "-" {
        return Ok(read_manifest_from(std::io::stdin().lock(), Path::new("<stdin>"))?);
    }
    std::fs::metadata(path).with_context(|| format!("{}: cannot access", path.display()))?;
    Ok(read_manifest(path)?)
}

/// A manifest named on the command line as one file: a part of a sharded scan alone is refused,
/// as it holds only some of the tree's files.
pub fn whole(manifest: Manifest, path: &Path) -> Result<Manifest> {
    refuse_part(&manifest.header, path)?;
    Ok(manifest)
}

/// Refuses the manifest at `path` (its `header`) when it is one part of a sharded scan, whose
/// directory hashes cover only its own shard's files.
pub fn refuse_part(header: &cutover::manifest::Header, path: &Path) -> Result<()> {
    if let Some(shard) = header.shard {
        bail!(
            "{}: part {shard} of a sharded scan, which holds only some of the tree's files: give all {} parts, or merge them first (cutover merge)",
            path.display(),
            shard.count()
        );
    }
    Ok(())
}

/// One side of a comparison as given: a directory, `-` or a manifest file to read later, or a
/// manifest read (and merged from parts) already.
#[derive(Debug)]
pub enum Side {
    Path(PathBuf),
    Read(Box<Manifest>, PathBuf),
}

impl Side {
    /// The path given (the first part, for parts).
    pub fn path(&self) -> &Path {
        match self {
            Side::Path(path) | Side::Read(_, path) => path,
        }
    }
}

/// Splits `args` into the source and the target. Each side is one directory or manifest, or
/// the parts of a sharded scan: a part of N takes the next N-1 arguments with it, and a pattern
/// that is no file's name ('src.*.part') is expanded to the files it matches.
pub fn sides(args: &[PathBuf]) -> Result<[Side; 2]> {
    let mut rest = args.iter();
    let mut take = |which: &str| -> Result<Side> {
        let arg = rest.next().with_context(|| format!("the {which} is missing"))?;
        if is_pattern(arg) {
            let files = expand(arg)?;
            if let [file] = &files[..] {
                return Ok(Side::Read(Box::new(whole(read_file(file)?, file)?), file.clone()));
            }
            return Ok(Side::Read(Box::new(merge_files(&files)?), arg.clone()));
        }
        if arg.as_os_str() == "-" || is_dir(arg) || args.len() == 2 {
            return Ok(Side::Path(arg.clone()));
        }
        let manifest = read_file(arg)?;
        let Some(shard) = manifest.header.shard else { return Ok(Side::Read(Box::new(manifest), arg.clone())) };
        let mut parts = vec![(arg.display().to_string(), manifest)];
        for _ in 1..shard.count() {
            let Some(next) = rest.next() else {
                bail!(
                    "{}: part {shard} of a sharded scan: the {which} needs all {} parts, and only {} follow it",
                    arg.display(),
                    shard.count(),
                    parts.len() - 1
                );
            };
            parts.push((next.display().to_string(), read_file(next)?));
        }
        Ok(Side::Read(Box::new(merge_parts(parts)?), arg.clone()))
    };
    let source = take("source")?;
    let target = take("target")?;
    if let Some(extra) = rest.next() {
        bail!("{}: one argument too many after the source and the target", extra.display());
    }
    Ok([source, target])
}

pub fn is_pattern(path: &Path) -> bool {
    let text = path.as_os_str().as_encoded_bytes();
    text.iter().any(|b| matches!(b, b'*' | b'?' | b'[')) && std::fs::symlink_metadata(path).is_err()
}

/// The files a pattern names (`*`, `?` and `[...]` in its last component), sorted; the path
/// itself when it is no pattern.
fn expand(path: &Path) -> Result<Vec<PathBuf>> {
    if !is_pattern(path) {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let pattern = path.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default();
    let listing =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list {}", path.display(), dir.display()))?;
    let mut files = Vec::new();
    for item in listing {
        let item = item.with_context(|| format!("{}: cannot list {}", path.display(), dir.display()))?;
        let name = item.file_name();
        if !name.as_encoded_bytes().starts_with(b".") && matches(&pattern, name.as_encoded_bytes()) {
            files.push(if path.parent().is_some_and(|p| !p.as_os_str().is_empty()) {
                dir.join(&name)
            } else {
                PathBuf::from(&name)
            });
        }
    }
    if files.is_empty() {
        bail!("{}: no file matches", path.display());
    }
    files.sort();
    Ok(files)
}

/// Shell-style matching of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| matches(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && matches(rest, &name[1..]),
        Some((b'[', rest)) if rest.contains(&b']') => {
            let Some((&c, tail)) = name.split_first() else { return false };
            let (negated, set) = match rest.split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, rest),
            };
            let close = set.iter().skip(1).position(|&b| b == b']').map_or(0, |p| p + 1);
            let (class, after) = (&set[..close], &set[close + 1..]);
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && matches(after, tail)
        }
        Some((&literal, rest)) => name.first() == Some(&literal) && matches(rest, &name[1..]),
    }
}

/// After a shard's own operations: when it is the last shard still working, the directories'
/// metadata (`finish`), which no other shard will write into any more.
pub fn finish_shard(
    mut report: ApplyReport,
    finish: &CheckedPlan,
    target: &mut LockedTarget,
    options: &ApplyOptions,
) -> Result<ApplyReport> {
    if !report.complete() || finish.tally.totals.operations == 0 || !target.finish_shard()? {
        return Ok(report);
    }
    let more = apply(finish, &mut NoData, target, options)?;
    report.done += more.done;
    report.already_done += more.already_done;
    report.problems.extend(more.problems);
    report.stale_temps_removed += more.stale_temps_removed;
    report.interrupted = report.interrupted.or(more.interrupted);
    Ok(report)
}

/// The source of a plan that reads none: directory metadata only.
struct NoData;

impl SourceData for NoData {
    fn read(
        &mut self,
        _op: usize,
        path: &RelPath,
        _range: ByteRange,
        _sink: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        Err(format!("{}: no source data where only directory metadata is set", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_as_the_shell_does() {
        assert!(matches(b"src.*.part", b"src.3.part"));
        assert!(!matches(b"src.*.part", b"dst.3.part"));
        assert!(matches(b"p?", b"p1"));
        assert!(matches(b"p[1-4]", b"p3"));
        assert!(!matches(b"p[!1-4]", b"p3"));
        assert!(!matches(b"p[1-4]", b"p5"));
    }
}
