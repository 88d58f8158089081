//! Hints for the mistakes behind many differences. Missing/extra pairs whose names differ only
//! by Unicode normalization or by case: the classic trap when a tree moves between filesystems
//! (macOS NFD vs Linux NFC, case-insensitive targets); both stay reported as missing + extra,
//! the hint says why. And two whole-tree mistakes of a tired operator: a side that is an empty
//! directory (an unmounted filesystem looks like that), and a copy made one level down.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use super::report::{Change, Difference, Report};
use crate::manifest::Kind;
use crate::path::RelPath;

pub(super) fn flag_lookalike_names(differences: &mut [Difference]) {
    let any = |of: fn(&Change) -> bool| differences.iter().any(|d| of(&d.change));
    if !any(|c| matches!(c, Change::Missing { .. })) || !any(|c| matches!(c, Change::Extra { .. })) {
        return;
    }
    // (parent, NFC lower-case name) -> the missing and the extra entries folding to it
    let mut groups: HashMap<(RelPath, String), (Vec<usize>, Vec<usize>)> = HashMap::new();
    for (index, d) in differences.iter().enumerate() {
        let missing = match d.change {
            Change::Missing { .. } => true,
            Change::Extra { .. } => false,
            _ => continue,
        };
        let Ok(name) = std::str::from_utf8(d.path.name()) else { continue };
        let group = groups.entry((d.path.parent(), folded(name))).or_default();
        if missing { group.0.push(index) } else { group.1.push(index) }
    }
    let mut hints = Vec::new();
    for (missing, extra) in groups.into_values().filter(|(m, e)| !m.is_empty() && !e.is_empty()) {
        for (ones, others, kind) in [(&missing, &extra, "extra"), (&extra, &missing, "missing")] {
            for &one in ones {
                hints.push((one, hint(differences, one, others, kind)));
            }
        }
    }
    for (index, hint) in hints {
        differences[index].hint = Some(hint);
    }
}

/// What makes two names alike here: the same after NFC and lower-casing.
fn folded(name: &str) -> String {
    name.nfc().collect::<String>().to_lowercase()
}

/// "differs from extra 'readme' only by letter case", naming every lookalike of `one`.
fn hint(differences: &[Difference], one: usize, others: &[usize], kind: &str) -> String {
    let name = |index: usize| String::from_utf8_lossy(differences[index].path.name()).into_owned();
    let mine = name(one);
    let mut ways: Vec<&str> = others.iter().map(|&other| how_alike(&mine, &name(other))).collect();
    ways.sort_unstable();
    ways.dedup();
    let quoted: Vec<String> = others.iter().map(|&other| format!("'{}'", differences[other].path.display())).collect();
    format!("differs from {kind} {} only by {}", quoted.join(", "), ways.join(" or "))
}

fn how_alike(a: &str, b: &str) -> &'static str {
    if a.nfc().eq(b.nfc()) {
        "Unicode normalization (NFC vs NFD)"
    } else if a.to_lowercase() == b.to_lowercase() {
        "letter case"
    } else {
        "letter case and Unicode normalization"
    }
}

/// Whole-tree hints, for people and the JSON's `hints`: one side is an empty directory while
/// the other is not (an unmounted target looks like this), or the target holds the source one
/// level down (`rsync -a SRC DST` without the trailing slash makes `DST/SRC`): everything of the
/// source is missing at the top and one extra directory holds as many files and bytes.
pub fn tree_hints(report: &Report) -> Vec<String> {
    let empty = crate::manifest::dir_digest([]);
    let mut hints = Vec::new();
    for (side, other) in [(&report.target, &report.source), (&report.source, &report.target)] {
        let name = if std::ptr::eq(side, &report.target) { "target" } else { "source" };
        if side.hash.is_some() && side.hash == empty && other.hash.is_some() && other.hash != empty {
            hints.push(format!(
                "the {name} {} is an empty directory while the other side is not: is its filesystem mounted?",
                side.root
            ));
        }
    }
    let top = |d: &&Difference| d.path.depth() == 1;
    let extra: Vec<&Difference> =
        report.differences.iter().filter(top).filter(|d| matches!(d.change, Change::Extra { .. })).collect();
    let others_missing = report.differences.iter().filter(|d| !d.path.is_root()).all(|d| {
        matches!(d.change, Change::Missing { .. }) && d.path.depth() == 1
            || matches!(d.change, Change::Extra { .. }) && d.path.depth() == 1
    });
    if let [one] = extra[..]
        && let Change::Extra { kind: Kind::Dir, files, bytes } = one.change
        && others_missing
    {
        let (missing_files, missing_bytes) = report.differences.iter().fold((0, 0), |(f, b), d| match d.change {
            Change::Missing { files, bytes, .. } => (f + files, b + bytes),
            _ => (f, b),
        });
        if files > 0 && (files, bytes) == (missing_files, missing_bytes) {
            let dir = one.path.display();
            hints.push(format!(
                "the target holds a directory '{dir}' with as many files and bytes as everything missing: \
                 was the source copied one level down (rsync -a SRC DST without a trailing slash on SRC)? \
                 Compare the source with {}/{dir}",
                report.target.root.trim_end_matches('/')
            ));
        }
    }
    hints
}
