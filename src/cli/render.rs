//! Human-readable output, and the dispatch to the JSON forms.

use std::io::{self, Write};
use std::path::Path;

use cutover::diff::{Change, Difference, HardLinkChange, MetaChange, Report, mtime_text, rdev_text};
use cutover::manifest::{Kind, Manifest};

use super::Format;

/// A path for a terminal: valid UTF-8 as is, control characters and invalid bytes escaped, so a
/// name holding a newline cannot forge a line of output.
pub fn shown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return ".".into();
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `n` and the word that fits it: "1 file", "3 files".
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

/// `n` with thousands separated by commas: "86,629".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `n` grouped and the word that fits it: "1 file", "86,629 files".
pub fn counted(n: u64, one: &str, many: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{} {many}", grouped(n)) }
}

/// What a comparison checked, for the line that says it found nothing:
/// `86,629 files, 1.4 GiB in 5,822 directories compared (names, kinds, content, mode; not
/// compared: mtime, owner)`.
pub fn checked_text(report: &Report) -> String {
    let c = report.checked;
    let mut what = vec!["names", "kinds", "content"];
    what.extend(report.compared_names());
    let not = report.not_compared_names();
    let not = if not.is_empty() { String::new() } else { format!("; not compared: {}", not.join(", ")) };
    format!(
        "{}, {} in {} compared ({}{not})",
        counted(c.files, "file", "files"),
        size(c.bytes),
        counted(c.directories, "directory", "directories"),
        what.join(", ")
    )
}

/// Bytes as a short binary-prefixed size.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

pub fn scan_summary(out: &mut dyn Write, manifest: &Manifest, dir: &Path) -> io::Result<()> {
    let files = manifest.entries.iter().filter(|e| e.kind == Kind::File);
    let (files, bytes) = files.fold((0u64, 0u64), |(n, b), e| (n + 1, b + e.size));
    if let Some(shard) = manifest.header.shard {
        return part_counts(out, shard, manifest.entries.len() as u64, files, bytes, dir);
    }
    scan_counts(out, manifest.root_digest(), manifest.entries.len() as u64, files, bytes, dir)
}

/// The summary of one part of a sharded scan, which has no root hash of its own.
pub fn part_counts(
    out: &mut dyn Write,
    shard: cutover::shard::Shard,
    entries: u64,
    files: u64,
    bytes: u64,
    dir: &Path,
) -> io::Result<()> {
    let what = format!("{}, {}, {}", count(entries, "entry", "entries"), count(files, "file", "files"), size(bytes));
    let n = shard.count();
    writeln!(out, "part {shard} of {}: {what} (merge all {n} parts for the root hash)", dir.display())
}

/// The summary of a scan from its counts: the root hash, then entries, files and bytes.
pub fn scan_counts(
    out: &mut dyn Write,
    root: Option<cutover::digest::Digest>,
    entries: u64,
    files: u64,
    bytes: u64,
    dir: &Path,
) -> io::Result<()> {
    let root = root.map_or_else(|| "(incomplete: some entries could not be hashed)".to_string(), |d| d.to_hex());
    writeln!(out, "{root}  {}", dir.display())?;
    writeln!(out, "{}, {}, {}", count(entries, "entry", "entries"), count(files, "file", "files"), size(bytes))
}

/// With a cache (`verified` is `Some`): how many files were read and how many trusted.
pub fn verified_summary(
    out: &mut dyn Write,
    scrubbed: Option<(u64, u64)>,
    verified: Option<cutover::scan::Verified>,
) -> io::Result<()> {
    let Some(v) = verified else { return Ok(()) };
    let scrub = match scrubbed {
        Some((slice, of)) => format!(" (scrub slice {} of {of})", slice + 1),
        None => String::new(),
    };
    writeln!(
        out,
        "verified from data: {}, {}; trusted from metadata: {}, {}{scrub}",
        count(v.verified_files, "file", "files"),
        size(v.verified_bytes),
        count(v.trusted_files, "file", "files"),
        size(v.trusted_bytes)
    )
}

pub fn report(out: &mut dyn Write, report: &Report, format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report.to_json())?;
            writeln!(out)
        }
        Format::Jsonl => {
            for difference in &report.differences {
                serde_json::to_writer(&mut *out, &difference.to_json())?;
                writeln!(out)?;
            }
            serde_json::to_writer(&mut *out, &report.summary_line_json())?;
            writeln!(out)
        }
        Format::Human => human(out, report),
    }
}

fn meta_text(changes: &[MetaChange]) -> String {
    changes
        .iter()
        .map(|c| match c {
            MetaChange::Mode { source, target } => format!("mode {source:04o}→{target:04o}"),
            MetaChange::Mtime { source, target } => format!("mtime {}→{}", mtime_text(*source), mtime_text(*target)),
            MetaChange::Owner { source, target } => {
                format!("owner {}:{}→{}:{}", source.0, source.1, target.0, target.1)
            }
            MetaChange::Xattr { names } => {
                format!("xattr {}", names.iter().map(|name| shown(name.as_bytes())).collect::<Vec<_>>().join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A difference's path for people, with a trailing `/` on a missing or extra directory.
pub fn path_text(d: &Difference) -> String {
    let mut path = shown(d.path.as_bytes());
    if let Change::Missing { kind: Kind::Dir, .. } | Change::Extra { kind: Kind::Dir, .. } = d.change {
        path.push('/');
    }
    path
}

/// What the human form says about a difference, between the parentheses after its path.
pub fn detail(d: &Difference) -> String {
    let text = match &d.change {
        Change::Missing { kind, files, bytes } | Change::Extra { kind, files, bytes } => {
            if *kind == Kind::Dir {
                format!("directory: {}, {}", count(*files, "file", "files"), size(*bytes))
            } else if *kind == Kind::File {
                size(*bytes)
            } else {
                kind.name().to_string()
            }
        }
        Change::Content { source_size, target_size, ranges, metadata } => {
            let divergent: u64 = ranges.iter().map(|r| r.length).sum();
            let mut text = if source_size == target_size {
                format!("{} differ in {} of {}", ranges.len(), size(divergent), size(*source_size))
            } else {
                format!("size {}→{}, {} differ in {}", source_size, target_size, ranges.len(), size(divergent))
            };
            text = text.replacen(" differ", if ranges.len() == 1 { " range" } else { " ranges" }, 1) + ":";
            for r in ranges.iter().take(8) {
                text.push_str(&format!(" {}+{}", r.offset, r.length));
            }
            if ranges.len() > 8 {
                text.push_str(&format!(" … ({} more)", ranges.len() - 8));
            }
            if !metadata.is_empty() {
                text.push_str(&format!("; {}", meta_text(metadata)));
            }
            text
        }
        Change::LinkTarget { source, target, metadata } => {
            let mut text = format!("symlink → {} (target has → {})", shown(source), shown(target));
            if !metadata.is_empty() {
                text.push_str(&format!("; {}", meta_text(metadata)));
            }
            text
        }
        Change::Device { kind, source, target, metadata } => {
            let mut text = format!("{kind} {} (target has {})", rdev_text(*source), rdev_text(*target));
            if !metadata.is_empty() {
                text.push_str(&format!("; {}", meta_text(metadata)));
            }
            text
        }
        Change::HardLink { metadata } => {
            let mut text = d.hard_link.as_ref().map(hard_link_text).unwrap_or_default();
            if !metadata.is_empty() {
                text.push_str(&format!("; {}", meta_text(metadata)));
            }
            return text;
        }
        Change::Type { source, target } => format!("{source} in source, {target} in target"),
        Change::Metadata { changes } => meta_text(changes),
        Change::Trouble { side, problem } => format!("{} {}", side.name(), shown(problem.to_string().as_bytes())),
    };
    match &d.hard_link {
        Some(link) => format!("{text}; {}", hard_link_text(link)),
        None => text,
    }
}

/// Which earlier name shares the inode on each side, in words.
fn hard_link_text(link: &HardLinkChange) -> String {
    let side = |first: &Option<cutover::path::RelPath>| match first {
        Some(first) => format!("a hard link to {}", shown(first.as_bytes())),
        None => "not a hard link to an earlier name".to_string(),
    };
    format!("{} in the source, {} in the target", side(&link.source), side(&link.target))
}

fn human(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    for d in &report.differences {
        let (path, detail) = (path_text(d), detail(d));
        write!(out, "{:<10} {path}  ({detail})", d.change.kind())?;
        if let Some(hint) = &d.hint {
            // The hint quotes the other name, which must not forge a line either.
            write!(out, "  hint: {}", shown(hint.as_bytes()))?;
        }
        writeln!(out)?;
    }
    let s = report.summary();
    for (side, info) in [("source", &report.source), ("target", &report.target)] {
        if let Some(v) = info.verified {
            writeln!(
                out,
                "{side}: verified from data: {}, {}; trusted from metadata: {}, {}",
                count(v.verified_files, "file", "files"),
                size(v.verified_bytes),
                count(v.trusted_files, "file", "files"),
                size(v.trusted_bytes)
            )?;
        }
    }
    if report.identical() {
        let hash = report.source.hash.map_or_else(String::new, |h| format!("; root {h}"));
        return writeln!(out, "identical: {}{hash}", checked_text(report));
    }
    let mut parts = Vec::new();
    for (n, label) in [
        (s.missing, "missing"),
        (s.extra, "extra"),
        (s.content, "content"),
        (s.type_, "type"),
        (s.metadata, "metadata"),
        (s.hardlink, "hardlink"),
        (s.trouble, "could not be compared"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    writeln!(
        out,
        "{}: {}; {} divergent in changed files, {} missing, {} extra",
        count(report.differences.len() as u64, "difference", "differences"),
        parts.join(", "),
        size(s.divergent_bytes),
        size(s.missing_bytes),
        size(s.extra_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::{counted, grouped};

    #[test]
    fn numbers_are_grouped_by_thousands_and_words_agree_with_them() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(86_629), "86,629");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(counted(1, "entry", "entries"), "1 entry");
        assert_eq!(counted(0, "entry", "entries"), "0 entries");
        assert_eq!(counted(5822, "directory", "directories"), "5,822 directories");
    }
}
