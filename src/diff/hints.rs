//! Flags missing/extra pairs whose names differ only by Unicode normalization or by case: the
//! classic trap when a tree moves between filesystems (macOS NFD vs Linux NFC, case-insensitive
//! targets). Both stay reported as missing + extra; the hint says why.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use super::report::{Change, Difference};
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
