//! The parts of a sharded scan put back together.
//!
//! Every part lists every directory of the tree, with its metadata, and the other entries its
//! shard owns (see [`crate::shard`]); its directory hashes cover only what it lists. Merging
//! takes the entries of all parts in path order, checks that each directory is in every part
//! and the same there (so no part saw a tree the others did not) and that no other entry is in
//! two parts, then takes every directory hash again from the whole list of children. The result
//! is the manifest a single scan of the same tree writes, header times and fields aside.

use super::{Entry, Header, Kind, Manifest, check_tree, rehash_dirs};
use crate::shard::Shard;

/// Parts that do not make one whole manifest.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no parts to merge")]
    Empty,
    #[error(
        "{part}: not a part of a sharded scan (its header has no shard): merge takes what `scan --shard I/N` wrote"
    )]
    NotAPart { part: String },
    #[error(
        "{part}: part {shard} of a scan in {count} shards, but {first} is part {first_shard}: parts of different sharded scans"
    )]
    Count { part: String, shard: Shard, count: u32, first: String, first_shard: Shard },
    #[error("{part} and {other} are both part {shard}: a part was given twice")]
    Duplicate { part: String, other: String, shard: Shard },
    #[error("part {missing} of {count} is missing (given: {given})")]
    Missing { missing: u32, count: u32, given: String },
    #[error("{part}: its {what} ({ours}) is not that of {first} ({theirs}): parts of different scans")]
    Mismatch { part: String, first: String, what: &'static str, ours: String, theirs: String },
    #[error("{path:?} is in both {part} and {other}: the parts overlap")]
    Overlap { path: String, part: String, other: String },
    #[error("{path:?} {how}: the tree changed between the scans of the parts; scan again while nothing writes to it")]
    Changed { path: String, how: String },
    #[error("the merged manifest is inconsistent at {path:?}: {what}")]
    Inconsistent { path: String, what: String },
}

/// Merges the parts of one sharded scan, each given with the name to use in messages (its file).
/// All parts must be there, once each, and agree on the tree and on how it was scanned.
pub fn merge_parts(parts: Vec<(String, Manifest)>) -> Result<Manifest, MergeError> {
    let header = merged_header(&parts)?;
    let names: Vec<String> = parts.iter().map(|(name, _)| name.clone()).collect();
    let count = parts.len();
    let mut iters: Vec<std::vec::IntoIter<Entry>> = parts.into_iter().map(|(_, m)| m.entries.into_iter()).collect();
    let mut heads: Vec<Option<Entry>> = iters.iter_mut().map(Iterator::next).collect();
    let mut entries = Vec::with_capacity(heads.len());
    let mut holders = Vec::with_capacity(count);
    loop {
        let mut min: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(entry) = head
                && min.is_none_or(|m| heads[m].as_ref().is_some_and(|low| entry.path < low.path))
            {
                min = Some(i);
            }
        }
        let Some(first) = min else { break };
        holders.clear();
        let path = &heads[first].as_ref().expect("the minimum is a head").path;
        holders.extend((0..count).filter(|&i| heads[i].as_ref().is_some_and(|e| e.path == *path)));
        let entry = heads[first].take().expect("the minimum is a head");
        let shown = || entry.path.display();
        if entry.kind == Kind::Dir || holders.iter().any(|&i| heads[i].as_ref().is_some_and(|e| e.kind == Kind::Dir)) {
            if let Some(absent) = (0..count).find(|i| !holders.contains(i)) {
                let how = format!("is a directory in {} but not in {}", names[first], names[absent]);
                return Err(MergeError::Changed { path: shown(), how });
            }
            for &other in &holders[1..] {
                let theirs = heads[other].as_ref().expect("a holder has a head");
                if let Some(what) = dir_difference(&entry, theirs) {
                    let how = format!("has another {what} in {} than in {}", names[other], names[first]);
                    return Err(MergeError::Changed { path: shown(), how });
                }
            }
        } else if let Some(&other) = holders.get(1) {
            let (part, other) = (names[first].clone(), names[other].clone());
            return Err(MergeError::Overlap { path: shown(), part, other });
        }
        for &i in &holders {
            heads[i] = iters[i].next();
        }
        entries.push(entry);
    }
    rehash_dirs(&mut entries);
    check_tree(&entries).map_err(|(path, what)| MergeError::Inconsistent { path: path.display(), what })?;
    Ok(Manifest { header, entries })
}

/// What differs between two parts' records of one directory (its hash aside, which covers only
/// the part's own children).
fn dir_difference(a: &Entry, b: &Entry) -> Option<&'static str> {
    if b.kind != Kind::Dir {
        return Some("type");
    }
    [
        (a.mode != b.mode, "mode"),
        (a.mtime != b.mtime, "mtime"),
        (a.uid != b.uid || a.gid != b.gid, "owner"),
        (a.xattrs != b.xattrs, "set of extended attributes"),
        (a.problem != b.problem, "read error"),
        (a.not_entered != b.not_entered, "mount point status"),
        (a.holds_excluded != b.holds_excluded, "set of excluded names"),
    ]
    .into_iter()
    .find_map(|(differs, what)| differs.then_some(what))
}

/// The whole manifest's header: that of the parts, which must agree on the tree and the scan,
/// without the shard, from the earliest start to the latest finish.
fn merged_header(parts: &[(String, Manifest)]) -> Result<Header, MergeError> {
    let (first_name, first) = parts.first().ok_or(MergeError::Empty)?;
    let shard_of = |name: &String, m: &Manifest| m.header.shard.ok_or(MergeError::NotAPart { part: name.clone() });
    let first_shard = shard_of(first_name, first)?;
    let count = first_shard.count();
    let mut seen: Vec<Option<&String>> = vec![None; count as usize];
    for (name, part) in parts {
        let shard = shard_of(name, part)?;
        if shard.count() != count {
            let (part, first) = (name.clone(), first_name.clone());
            return Err(MergeError::Count { part, shard, count: shard.count(), first, first_shard });
        }
        let slot = &mut seen[shard.index() as usize - 1];
        if let Some(other) = slot {
            return Err(MergeError::Duplicate { part: name.clone(), other: (*other).clone(), shard });
        }
        *slot = Some(name);
        check_same_scan(name, &part.header, first_name, &first.header)?;
    }
    if let Some(missing) = seen.iter().position(Option::is_none) {
        let given = parts.iter().map(|(name, m)| format!("{name} ({})", m.header.shard.expect("checked"))).collect();
        let given: Vec<String> = given;
        return Err(MergeError::Missing { missing: missing as u32 + 1, count, given: given.join(", ") });
    }
    let mut header = first.header.clone();
    header.tool = format!("cutover {}", env!("CARGO_PKG_VERSION"));
    header.shard = None;
    for (_, part) in parts {
        header.started = header.started.min(part.header.started.clone());
        header.finished = header.finished.max(part.header.finished.clone());
    }
    Ok(header)
}

fn check_same_scan(name: &str, ours: &Header, first_name: &str, theirs: &Header) -> Result<(), MergeError> {
    let metadata = |h: &Header| {
        let mut names = h.metadata.names();
        names.extend(
            [(h.hard_links, "hardlinks"), (h.rdev, "rdev"), (h.stamps, "stamp")].iter().filter(|f| f.0).map(|f| f.1),
        );
        names.join(",")
    };
    let excludes = |h: &Header| format!("[{}]", h.exclude.texts().join(", "));
    let checks: [(&'static str, String, String); 5] = [
        ("tree root", ours.root.clone(), theirs.root.clone()),
        ("chunk size", ours.chunk_size.bytes().to_string(), theirs.chunk_size.bytes().to_string()),
        ("metadata set", metadata(ours), metadata(theirs)),
        ("exclude patterns", excludes(ours), excludes(theirs)),
        ("one-file-system setting", ours.one_file_system.to_string(), theirs.one_file_system.to_string()),
    ];
    for (what, ours, theirs) in checks {
        if ours != theirs {
            let (part, first) = (name.to_string(), first_name.to_string());
            return Err(MergeError::Mismatch { part, first, what, ours, theirs });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{ScanOptions, scan};

    fn parts(root: &std::path::Path) -> Vec<(String, Manifest)> {
        (1..=2)
            .map(|i| {
                let shard = Some(Shard::new(i, 2).unwrap());
                (format!("p{i}"), scan(root, &ScanOptions { shard, ..ScanOptions::default() }).unwrap())
            })
            .collect()
    }

    #[test]
    fn parts_merge_into_the_whole_scan_and_an_entry_in_two_parts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..50 {
            std::fs::create_dir_all(dir.path().join(format!("d{}", i % 3))).unwrap();
            std::fs::write(dir.path().join(format!("d{}/f{i}", i % 3)), format!("{i}")).unwrap();
        }
        let whole = scan(dir.path(), &ScanOptions::default()).unwrap();
        let unstamped = |m: &Manifest| m.entries.iter().map(|e| Entry { stamp: None, ..e.clone() }).collect::<Vec<_>>();
        let merged = merge_parts(parts(dir.path())).unwrap();
        assert_eq!(unstamped(&merged), unstamped(&whole));
        assert_eq!(merged.header.shard, None);

        let mut overlapping = parts(dir.path());
        let stray = overlapping[0].1.entries.iter().find(|e| e.kind == Kind::File).unwrap().clone();
        let into = &mut overlapping[1].1.entries;
        let at = into.binary_search_by(|e| e.path.cmp(&stray.path)).unwrap_err();
        into.insert(at, stray);
        let err = merge_parts(overlapping).unwrap_err().to_string();
        assert!(err.contains("is in both p1 and p2: the parts overlap"), "{err}");
    }
}
