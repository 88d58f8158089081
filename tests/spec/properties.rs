//! The core invariant, on random trees: after random mutations of a copy, the diff names exactly
//! the mutated paths with the right kinds, and its byte ranges cover every changed byte and
//! nothing more than the chunk granularity forces. Judged against an in-memory model of both
//! trees and against `rsync -c`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

use crate::support::{Tree, cutover, diff_json, kind, noise, ranges, run_with_timeout};

const CHUNK: u64 = 1024;

#[derive(Clone, Debug, PartialEq)]
enum Node {
    File { bytes: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link(String),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Dir { .. } => "dir",
            Node::Link(_) => "symlink",
        }
    }

    fn mode(&self) -> Option<u32> {
        match self {
            Node::File { mode, .. } | Node::Dir { mode } => Some(*mode),
            Node::Link(_) => None,
        }
    }
}

/// A tree as relative path → node; every parent directory is an entry too.
type Model = BTreeMap<String, Node>;

fn materialize(model: &Model) -> Tree {
    let tree = Tree::new();
    for (path, node) in model {
        match node {
            Node::File { bytes, .. } => tree.file(path.as_str(), bytes),
            Node::Dir { .. } => tree.dir(path.as_str()),
            Node::Link(target) => tree.symlink(path.as_str(), target),
        };
    }
    for (path, node) in model.iter().rev() {
        if let Some(mode) = node.mode() {
            tree.mode(path.as_str(), mode);
        }
    }
    tree
}

fn is_inside(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

fn remove_subtree(model: &mut Model, path: &str) {
    model.retain(|p, _| p != path && !is_inside(p, path));
}

/// File sizes biased to chunk boundaries, where off-by-one errors live.
fn size() -> impl Strategy<Value = usize> {
    let c = CHUNK as usize;
    prop_oneof![
        0..20 * c,
        (0..20usize).prop_map(move |k| k * c),
        (1..20usize).prop_map(move |k| k * c - 1),
        (0..20usize).prop_map(move |k| k * c + 1)
    ]
}

fn source_tree() -> impl Strategy<Value = Model> {
    let file = (0..4usize, 0..6usize, size(), any::<u64>(), any::<bool>());
    prop::collection::vec(file, 1..10).prop_map(|files| {
        let mut model = Model::new();
        for dir in ["e", "p", "p/q", "r"] {
            model.insert(dir.into(), Node::Dir { mode: 0o755 });
        }
        for (dir, name, len, seed, exec) in files {
            let path = match ["", "p/", "p/q/", "r/"][dir] {
                "" => format!("f{name}"),
                dir => format!("{dir}f{name}"),
            };
            model.insert(path, Node::File { bytes: noise(seed, len), mode: if exec { 0o755 } else { 0o644 } });
        }
        model.insert("ln".into(), Node::Link("p/f0".into()));
        model
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(Index),
    Add { dir: Index, len: usize, seed: u64 },
    Flip { file: Index, at: Vec<(Index, u8)> },
    Resize { file: Index, len: usize, seed: u64 },
    Chmod { entry: Index, mode: Index },
    FileToDir(Index),
    DirToFile { dir: Index, len: usize },
    Retarget,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Delete),
        (any::<Index>(), size(), any::<u64>()).prop_map(|(dir, len, seed)| Mutation::Add { dir, len, seed }),
        (any::<Index>(), prop::collection::vec((any::<Index>(), 1..=255u8), 1..4))
            .prop_map(|(file, at)| Mutation::Flip { file, at }),
        (any::<Index>(), size(), any::<u64>()).prop_map(|(file, len, seed)| Mutation::Resize { file, len, seed }),
        (any::<Index>(), any::<Index>()).prop_map(|(entry, mode)| Mutation::Chmod { entry, mode }),
        any::<Index>().prop_map(Mutation::FileToDir),
        (any::<Index>(), size()).prop_map(|(dir, len)| Mutation::DirToFile { dir, len }),
        Just(Mutation::Retarget),
    ]
}

fn paths_of(model: &Model, wanted: impl Fn(&Node) -> bool) -> Vec<String> {
    model.iter().filter(|(_, node)| wanted(node)).map(|(path, _)| path.clone()).collect()
}

/// Applies one mutation to `model`; `serial` makes added names unique.
fn mutate(model: &mut Model, mutation: &Mutation, serial: usize) {
    let files = paths_of(model, |n| matches!(n, Node::File { .. }));
    let dirs = paths_of(model, |n| matches!(n, Node::Dir { .. }));
    match mutation {
        Mutation::Delete(pick) => {
            let all: Vec<String> = model.keys().cloned().collect();
            if !all.is_empty() {
                remove_subtree(model, &all[pick.index(all.len())]);
            }
        }
        Mutation::Add { dir, len, seed } => {
            let parent = if dirs.is_empty() { String::new() } else { format!("{}/", dirs[dir.index(dirs.len())]) };
            let file = Node::File { bytes: noise(*seed, *len), mode: 0o644 };
            model.insert(format!("{parent}n{serial}"), file);
        }
        Mutation::Flip { file, at } if !files.is_empty() => {
            if let Some(Node::File { bytes, .. }) = model.get_mut(&files[file.index(files.len())]) {
                for (offset, mask) in at {
                    if !bytes.is_empty() {
                        let i = offset.index(bytes.len());
                        bytes[i] ^= mask;
                    }
                }
            }
        }
        Mutation::Resize { file, len, seed } if !files.is_empty() => {
            if let Some(Node::File { bytes, .. }) = model.get_mut(&files[file.index(files.len())]) {
                let extra = noise(*seed, len.saturating_sub(bytes.len()));
                bytes.truncate(*len);
                bytes.extend_from_slice(&extra);
            }
        }
        Mutation::Chmod { entry, mode } => {
            let entries: Vec<String> = files.iter().chain(&dirs).cloned().collect();
            if !entries.is_empty() {
                let modes = [0o600, 0o640, 0o644, 0o700, 0o750, 0o755];
                match model.get_mut(&entries[entry.index(entries.len())]) {
                    Some(Node::File { mode: m, .. } | Node::Dir { mode: m }) => *m = modes[mode.index(modes.len())],
                    _ => unreachable!(),
                }
            }
        }
        Mutation::FileToDir(pick) if !files.is_empty() => {
            let path = files[pick.index(files.len())].clone();
            model.insert(path.clone(), Node::Dir { mode: 0o755 });
            model.insert(format!("{path}/inner"), Node::File { bytes: b"inner".to_vec(), mode: 0o644 });
        }
        Mutation::DirToFile { dir, len } if !dirs.is_empty() => {
            let path = dirs[dir.index(dirs.len())].clone();
            remove_subtree(model, &path);
            model.insert(path, Node::File { bytes: noise(*len as u64, *len), mode: 0o644 });
        }
        Mutation::Retarget => {
            if let Some(Node::Link(target)) = model.get_mut("ln") {
                target.push_str("-moved");
            }
        }
        _ => {}
    }
}

fn subtree_counts(model: &Model, path: &str) -> (u64, u64) {
    model
        .iter()
        .filter(|(p, _)| *p == path || is_inside(p, path))
        .filter_map(|(_, node)| match node {
            Node::File { bytes, .. } => Some(bytes.len() as u64),
            _ => None,
        })
        .fold((0, 0), |(n, b), len| (n + 1, b + len))
}

fn mode_json(source: u32, target: u32) -> Value {
    json!({"mode": {"source": format!("{source:04o}"), "target": format!("{target:04o}")}})
}

/// What the report must say, from the two models alone. Content differences are listed without
/// their ranges, which are judged by [`check_ranges`].
fn expected_differences(source: &Model, target: &Model) -> BTreeMap<String, Value> {
    let paths: BTreeSet<&String> = source.keys().chain(target.keys()).collect();
    let mut whole: Vec<&str> = Vec::new();
    let mut expected = BTreeMap::new();
    for path in paths {
        if whole.iter().any(|dir| is_inside(path, dir)) {
            continue;
        }
        let difference = match (source.get(path), target.get(path)) {
            (Some(s), None) => {
                let (files, bytes) = subtree_counts(source, path);
                json!({"path": path, "kind": "missing", "type": s.kind(), "files": files, "bytes": bytes})
            }
            (None, Some(t)) => {
                let (files, bytes) = subtree_counts(target, path);
                json!({"path": path, "kind": "extra", "type": t.kind(), "files": files, "bytes": bytes})
            }
            (Some(s), Some(t)) if s.kind() != t.kind() => {
                json!({"path": path, "kind": "type", "source_type": s.kind(), "target_type": t.kind()})
            }
            (Some(Node::File { bytes: a, mode: m }), Some(Node::File { bytes: b, mode: n })) if a != b => {
                let mut d = json!({"path": path, "kind": "content", "source_size": a.len(), "target_size": b.len()});
                if m != n {
                    d["metadata"] = mode_json(*m, *n);
                }
                d
            }
            (Some(Node::Link(a)), Some(Node::Link(b))) if a != b => {
                json!({"path": path, "kind": "content", "type": "symlink", "link": {"source": a, "target": b}})
            }
            (Some(s), Some(t)) if s.mode() != t.mode() => {
                let (m, n) = (s.mode().unwrap(), t.mode().unwrap());
                json!({"path": path, "kind": "metadata", "fields": ["mode"], "metadata": mode_json(m, n)})
            }
            _ => continue,
        };
        if difference["kind"] != "content" && difference["kind"] != "metadata" {
            whole.push(path);
        }
        expected.insert(path.clone(), difference);
    }
    expected
}

fn chunk_len(index: u64, len: u64) -> u64 {
    CHUNK.min(len.saturating_sub(index * CHUNK))
}

/// Every changed byte lies in a reported range; every chunk a range covers holds a changed
/// byte or lies at/after the first chunk whose length differs between the sides; ranges are
/// sorted, chunk-aligned, merged and inside the longer file.
fn check_ranges(path: &str, s: &[u8], t: &[u8], found: &[(u64, u64)]) -> Result<(), String> {
    let fail = |why: String| Err(format!("{path} ({} -> {} bytes), ranges {found:?}: {why}", s.len(), t.len()));
    let (shorter, longer) = (s.len().min(t.len()) as u64, s.len().max(t.len()) as u64);
    let first_uneven = (0..longer.div_ceil(CHUNK))
        .find(|&k| chunk_len(k, s.len() as u64) != chunk_len(k, t.len() as u64))
        .unwrap_or(u64::MAX);
    let differs = |i: u64| i >= shorter || s[i as usize] != t[i as usize];
    let mut previous_end = None;
    for &(offset, length) in found {
        let end = offset + length;
        if length == 0 || offset % CHUNK != 0 || (end % CHUNK != 0 && end != longer) || end > longer {
            return fail(format!("{offset}+{length} is not a chunk-aligned range inside the file"));
        }
        if previous_end.is_some_and(|p| p >= offset) {
            return fail("ranges are unsorted or not merged".into());
        }
        previous_end = Some(end);
        for k in offset / CHUNK..end.div_ceil(CHUNK) {
            let chunk_changed = (k * CHUNK..(k * CHUNK + CHUNK).min(longer)).any(differs);
            if !chunk_changed && k < first_uneven {
                return fail(format!("chunk {k} is reported but identical on both sides"));
            }
        }
    }
    if let Some(i) = (0..longer).find(|&i| differs(i) && !found.iter().any(|&(o, l)| (o..o + l).contains(&i))) {
        return fail(format!("changed byte {i} is in no range"));
    }
    Ok(())
}

/// Paths `rsync -rlpc --delete` would touch to make `target` equal `source`, with created or
/// deleted subtrees collapsed to their top, as cutover reports them.
fn rsync_paths(source: &Path, target: &Path) -> BTreeSet<String> {
    rsync_paths_with(source, target, &[])
}

/// [`rsync_paths`] with more rsync arguments (`--exclude=...`).
pub(crate) fn rsync_paths_with(source: &Path, target: &Path, extra: &[&str]) -> BTreeSet<String> {
    let mut command = Command::new("rsync");
    command.args(["-rlpcn", "--delete", "--out-format=%i %n"]).args(extra).arg(source.join("")).arg(target.join(""));
    let run = run_with_timeout(command, Vec::new(), Duration::from_secs(60));
    assert!(run.status.success(), "rsync failed: {}", run.stderr);
    let mut changed = Vec::new();
    let text = String::from_utf8(run.stdout).unwrap();
    // A directory holding excluded entries is kept: rsync says it cannot delete it.
    let kept: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("cannot delete non-empty directory: ")).collect();
    for line in text.lines().filter(|l| !l.starts_with("cannot delete ")) {
        let (code, name) = (&line[..11], &line[12..]);
        if kept.contains(&name.trim_end_matches('/')) {
            continue;
        }
        let whole = code.contains("+++++++++") || (code.starts_with("*deleting") && name.ends_with('/'));
        changed.push((name.trim_end_matches('/').to_string(), whole));
    }
    let wholes: Vec<&str> = changed.iter().filter(|(_, whole)| *whole).map(|(p, _)| p.as_str()).collect();
    changed.iter().map(|(p, _)| p.clone()).filter(|p| p != "." && !wholes.iter().any(|w| is_inside(p, w))).collect()
}

/// Component-wise order: `/` sorts before every other byte.
fn path_order(path: &str) -> Vec<u16> {
    path.bytes().map(|b| if b == b'/' { 0 } else { u16::from(b) + 1 }).collect()
}

fn file_bytes<'m>(model: &'m Model, path: &str) -> &'m [u8] {
    match model.get(path) {
        Some(Node::File { bytes, .. }) => bytes,
        other => panic!("{path} is not a file in the model: {other:?}"),
    }
}

fn check_case(source: &Model, mutations: &[Mutation]) -> Result<(), TestCaseError> {
    let mut target = source.clone();
    for (serial, m) in mutations.iter().enumerate() {
        mutate(&mut target, m, serial);
    }
    let (source_tree, target_tree) = (materialize(source), materialize(&target));
    let expected = expected_differences(source, &target);
    let run = diff_json(source_tree.path(), target_tree.path(), &["--chunk-size", "1K"]);
    prop_assert_eq!(run.code(), if expected.is_empty() { 0 } else { 1 }, "{}", run.stderr);
    let report = run.report();
    let mut found = BTreeMap::new();
    for d in report.differences() {
        let path = d["path"].as_str().unwrap().to_string();
        let mut without_ranges = d.clone();
        if kind(d) == "content" && d.get("link").is_none() {
            without_ranges.as_object_mut().unwrap().remove("ranges");
            let (s, t) = (file_bytes(source, &path), file_bytes(&target, &path));
            check_ranges(&path, s, t, &ranges(d)).map_err(TestCaseError::fail)?;
        }
        prop_assert!(found.insert(path.clone(), without_ranges).is_none(), "{} reported twice", path);
    }
    prop_assert_eq!(&found, &expected);
    let order: Vec<Vec<u16>> = report.differences().iter().map(|d| path_order(d["path"].as_str().unwrap())).collect();
    prop_assert!(order.is_sorted(), "differences in path order");
    let rsync = rsync_paths(source_tree.path(), target_tree.path());
    prop_assert_eq!(&found.keys().cloned().collect::<BTreeSet<_>>(), &rsync, "rsync -c disagrees");
    let divergent: u64 =
        report.differences().iter().filter(|d| d.get("ranges").is_some()).flat_map(ranges).map(|r| r.1).sum();
    prop_assert_eq!(report.summary("divergent_bytes"), divergent);
    // Two manifests are compared as streams: the same report, byte for byte.
    let work = Tree::new();
    let (a, b) = (work.at("source.manifest"), work.at("target.manifest"));
    for (tree, manifest) in [(&source_tree, &a), (&target_tree, &b)] {
        cutover(["scan", "--chunk-size", "1K", "-o"]).arg(manifest).arg(tree.path()).run().expect_code(0);
    }
    let streamed = cutover(["diff", "--format", "json"]).arg(&a).arg(&b).run();
    prop_assert_eq!(streamed.code(), run.code());
    prop_assert_eq!(streamed.stdout_text(), run.stdout_text());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_diff_names_exactly_the_mutated_paths_with_tight_ranges(
        source in source_tree(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        check_case(&source, &mutations)?;
    }
}
