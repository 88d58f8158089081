//! Flags missing/extra pairs whose names differ only by Unicode normalization or by case: the
//! classic trap when a tree moves between filesystems (macOS NFD vs Linux NFC, case-insensitive
//! targets). Both stay reported as missing + extra; the hint says why.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

use super::report::{Change, Difference};
use crate::path::RelPath;

pub(super) fn flag_lookalike_names(differences: &mut [Difference]) {
    // (parent, folded name) -> index of an extra entry
    let mut by_nfc: HashMap<(RelPath, String), usize> = HashMap::new();
    let mut by_case: HashMap<(RelPath, String), usize> = HashMap::new();
    for (index, d) in differences.iter().enumerate() {
        if let (Change::Extra { .. }, Ok(name)) = (&d.change, std::str::from_utf8(d.path.name())) {
            let nfc: String = name.nfc().collect();
            by_case.insert((d.path.parent(), nfc.to_lowercase()), index);
            by_nfc.insert((d.path.parent(), nfc), index);
        }
    }
    if by_nfc.is_empty() {
        return;
    }
    let mut pairs = Vec::new();
    for (index, d) in differences.iter().enumerate() {
        let (Change::Missing { .. }, Ok(name)) = (&d.change, std::str::from_utf8(d.path.name())) else {
            continue;
        };
        let nfc: String = name.nfc().collect();
        let parent = d.path.parent();
        if let Some(&extra) = by_nfc.get(&(parent.clone(), nfc.clone())) {
            pairs.push((index, extra, "Unicode normalization (NFC vs NFD)"));
        } else if let Some(&extra) = by_case.get(&(parent, nfc.to_lowercase())) {
            pairs.push((index, extra, "letter case"));
        }
    }
    for (missing, extra, what) in pairs {
        let (m, e) = (differences[missing].path.display(), differences[extra].path.display());
        differences[missing].hint = Some(format!("differs from extra '{e}' only by {what}"));
        differences[extra].hint = Some(format!("differs from missing '{m}' only by {what}"));
    }
}
