//! The result of a diff, and its JSON form `cutover-diff/1` (docs/report.md).

use base64::Engine as _;
use serde_json::{Value, json};

use crate::digest::{ByteRange, ChunkSize, Digest};
use crate::manifest::{Kind, Manifest, MetaSet, Mtime, Problem};
use crate::path::RelPath;

/// Which side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

/// One metadata field that differs, with both values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaChange {
    Mode {
        source: u32,
        target: u32,
    },
    Mtime {
        source: Mtime,
        target: Mtime,
    },
    Owner {
        source: (u32, u32),
        target: (u32, u32),
    },
    /// Extended attributes differ; the names that were added, removed or changed.
    Xattr {
        names: Vec<String>,
    },
}

impl MetaChange {
    pub fn field(&self) -> &'static str {
        match self {
            MetaChange::Mode { .. } => "mode",
            MetaChange::Mtime { .. } => "mtime",
            MetaChange::Owner { .. } => "owner",
            MetaChange::Xattr { .. } => "xattr",
        }
    }
}

/// How a path differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// In the source only; for a directory, once for its whole subtree.
    Missing { kind: Kind, files: u64, bytes: u64 },
    /// In the target only; for a directory, once for its whole subtree.
    Extra { kind: Kind, files: u64, bytes: u64 },
    /// Both regular files, bytes differ inside `ranges`.
    Content { source_size: u64, target_size: u64, ranges: Vec<ByteRange>, metadata: Vec<MetaChange> },
    /// Both symlinks pointing at different text (reported as kind `content`).
    LinkTarget { source: Box<[u8]>, target: Box<[u8]>, metadata: Vec<MetaChange> },
    /// Both devices of one kind with different device numbers (major, minor), reported as kind
    /// `content`.
    Device { kind: Kind, source: (u32, u32), target: (u32, u32), metadata: Vec<MetaChange> },
    /// Content equal, but the name is a hard link on one side and not the same one on the
    /// other ([`Difference::hard_link`] says how); compared metadata may differ too.
    HardLink { metadata: Vec<MetaChange> },
    /// Different kinds of object.
    Type { source: Kind, target: Kind },
    /// Content equal, compared metadata not.
    Metadata { changes: Vec<MetaChange> },
    /// The entry could not be hashed on one side: nothing can be said about it.
    Trouble { side: Side, problem: Problem },
}

impl Change {
    /// The report's `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Missing { .. } => "missing",
            Change::Extra { .. } => "extra",
            Change::Content { .. } | Change::LinkTarget { .. } | Change::Device { .. } => "content",
            Change::HardLink { .. } => "hardlink",
            Change::Type { .. } => "type",
            Change::Metadata { .. } => "metadata",
            Change::Trouble { problem: Problem::Unreadable(_), .. } => "unreadable",
            Change::Trouble { problem: Problem::Unstable(_), .. } => "unstable",
        }
    }
}

/// A path and how it differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub path: RelPath,
    pub change: Change,
    /// Set on a missing/extra pair whose names differ only by Unicode normalization or case.
    pub hint: Option<String>,
    /// Set when the name shares its inode with a different earlier name on each side (a
    /// `hardlink` difference, or a `content` one whose link structure differs too).
    pub hard_link: Option<HardLinkChange>,
}

/// How a name's hard link differs: on each side, the first name of the tree that shares its
/// inode, or `None` when no earlier name does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HardLinkChange {
    pub source: Option<RelPath>,
    pub target: Option<RelPath>,
}

/// One side of a comparison.
#[derive(Clone, Debug)]
pub struct SideInfo {
    pub root: String,
    pub hash: Option<Digest>,
    pub chunk_size: ChunkSize,
    /// With a cache (`diff --state`): how many files were read and how many trusted.
    pub verified: Option<crate::scan::Verified>,
}

impl SideInfo {
    pub fn of(manifest: &Manifest) -> Self {
        SideInfo {
            root: manifest.header.root.clone(),
            hash: manifest.root_digest(),
            chunk_size: manifest.header.chunk_size,
            verified: None,
        }
    }
}

/// Counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub missing: u64,
    pub extra: u64,
    pub content: u64,
    pub type_: u64,
    pub metadata: u64,
    /// Names whose hard links differ while their content is equal.
    pub hardlink: u64,
    /// Entries that could not be compared (unreadable or unstable on either side).
    pub trouble: u64,
    /// Sum of the divergent ranges of changed files.
    pub divergent_bytes: u64,
    pub missing_bytes: u64,
    pub extra_bytes: u64,
}

/// The entries of the source tree by kind: what a comparison looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeCounts {
    /// Every entry, the root directory included.
    pub entries: u64,
    pub files: u64,
    /// Directories, the root included.
    pub directories: u64,
    /// The sizes of the regular files.
    pub bytes: u64,
}

/// Everything a diff found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The source's entries, each compared with the target's.
    pub checked: TreeCounts,
    pub source: SideInfo,
    pub target: SideInfo,
    pub compared: MetaSet,
    /// Whether hard links and device numbers were compared (both sides recorded them).
    pub hard_links: bool,
    pub rdev: bool,
    /// The granularity of the byte ranges.
    pub chunk_size: ChunkSize,
    pub differences: Vec<Difference>,
    /// Directories not entered (`-x`: another filesystem is mounted there) with the side that
    /// did not enter them, `"source"`, `"target"` or `"both"`; nothing below them was compared.
    pub not_entered: Vec<(RelPath, &'static str)>,
}

impl Report {
    /// No differences and nothing that could not be compared.
    pub fn identical(&self) -> bool {
        self.differences.is_empty()
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for d in &self.differences {
            match &d.change {
                Change::Missing { bytes, .. } => {
                    s.missing += 1;
                    s.missing_bytes += bytes;
                }
                Change::Extra { bytes, .. } => {
                    s.extra += 1;
                    s.extra_bytes += bytes;
                }
                Change::Content { ranges, .. } => {
                    s.content += 1;
                    s.divergent_bytes += ranges.iter().map(|r| r.length).sum::<u64>();
                }
                Change::LinkTarget { .. } | Change::Device { .. } => s.content += 1,
                Change::HardLink { .. } => s.hardlink += 1,
                Change::Type { .. } => s.type_ += 1,
                Change::Metadata { .. } => s.metadata += 1,
                Change::Trouble { .. } => s.trouble += 1,
            }
        }
        s
    }

    /// Which metadata was compared and which was not, for the line that says "identical", so
    /// that a default run (modes only) cannot be read as "owners checked too".
    pub fn compared_text(&self) -> String {
        let list = |names: Vec<&str>| if names.is_empty() { "none".to_string() } else { names.join(", ") };
        let mut text = format!("compared: {}", list(self.compared_names()));
        let missing = self.not_compared_names();
        if !missing.is_empty() {
            text.push_str(&format!("; not compared: {}", list(missing)));
        }
        text
    }

    /// The whole report as one `cutover-diff/1` JSON document.
    pub fn to_json(&self) -> Value {
        let mut doc = self.header_json();
        doc["differences"] = self.differences.iter().map(Difference::to_json).collect();
        doc
    }

    /// The last line of the `jsonl` form: everything but the differences.
    pub fn summary_line_json(&self) -> Value {
        let mut doc = self.header_json();
        doc["type"] = json!("summary");
        doc
    }

    /// What was compared besides names, kinds and content: the metadata fields, then
    /// `hardlinks` and `rdev` when both sides recorded them.
    pub fn compared_names(&self) -> Vec<&'static str> {
        let mut names = self.compared.names();
        names.extend(self.hard_links.then_some("hardlinks"));
        names.extend(self.rdev.then_some("rdev"));
        names
    }

    /// What was not compared: the metadata fields not asked for or not recorded, then
    /// `hardlinks` and `rdev` when a side did not record them.
    pub fn not_compared_names(&self) -> Vec<&'static str> {
        let mut names = self.compared.missing().names();
        names.extend((!self.hard_links).then_some("hardlinks"));
        names.extend((!self.rdev).then_some("rdev"));
        names
    }

    fn header_json(&self) -> Value {
        json!({
            "format": "cutover-diff/1",
            "identical": self.identical(),
            "source": side_json(&self.source),
            "target": side_json(&self.target),
            "compared": self.compared_names(),
            "not_compared": self.not_compared_names(),
            "checked": {
                "entries": self.checked.entries,
                "files": self.checked.files,
                "directories": self.checked.directories,
                "bytes": self.checked.bytes,
            },
            "chunk_size": self.chunk_size.bytes(),
            "summary": summary_json(&self.summary()),
            "not_entered": self.not_entered.iter().map(|(path, side)| {
                let mut object = serde_json::Map::new();
                path_json(path, &mut object);
                object.insert("side".into(), json!(side));
                Value::Object(object)
            }).collect::<Vec<_>>(),
            "hints": super::hints::tree_hints(self),
        })
    }
}

fn side_json(side: &SideInfo) -> Value {
    let mut doc =
        json!({ "root": side.root, "hash": side.hash.map(Digest::to_hex), "chunk_size": side.chunk_size.bytes() });
    if let Some(verified) = side.verified {
        doc["verified"] = json!(verified);
    }
    doc
}

fn summary_json(s: &Summary) -> Value {
    json!({
        "missing": s.missing, "extra": s.extra, "content": s.content, "type": s.type_,
        "metadata": s.metadata, "hardlink": s.hardlink, "trouble": s.trouble, "divergent_bytes": s.divergent_bytes,
        "missing_bytes": s.missing_bytes, "extra_bytes": s.extra_bytes,
    })
}

/// `path`, plus `path_bytes` (base64) when the path is not valid UTF-8.
pub fn path_json(path: &RelPath, object: &mut serde_json::Map<String, Value>) {
    object.insert("path".into(), json!(path.display()));
    if let Some(b64) = path.exact_bytes_b64() {
        object.insert("path_bytes".into(), json!(b64));
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    json!(String::from_utf8_lossy(bytes))
}

fn meta_json(changes: &[MetaChange]) -> Value {
    let mut object = serde_json::Map::new();
    for change in changes {
        let (source, target) = match change {
            MetaChange::Xattr { names } => {
                object.insert(change.field().into(), json!({ "names": names }));
                continue;
            }
            MetaChange::Mode { source, target } => (json!(format!("{source:04o}")), json!(format!("{target:04o}"))),
            MetaChange::Mtime { source, target } => (json!(mtime_text(*source)), json!(mtime_text(*target))),
            MetaChange::Owner { source, target } => {
                (json!(format!("{}:{}", source.0, source.1)), json!(format!("{}:{}", target.0, target.1)))
            }
        };
        object.insert(change.field().into(), json!({ "source": source, "target": target }));
    }
    Value::Object(object)
}

/// An mtime as RFC 3339 with nanoseconds.
pub fn mtime_text(mtime: Mtime) -> String {
    let base = crate::time::rfc3339(mtime.sec, 0);
    format!("{}.{:09}Z", &base[..base.len() - 5], mtime.nsec)
}

impl Difference {
    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        path_json(&self.path, &mut o);
        o.insert("kind".into(), json!(self.change.kind()));
        match &self.change {
            Change::Missing { kind, files, bytes } | Change::Extra { kind, files, bytes } => {
                o.insert("type".into(), json!(kind.name()));
                o.insert("files".into(), json!(files));
                o.insert("bytes".into(), json!(bytes));
            }
            Change::Content { source_size, target_size, ranges, metadata } => {
                o.insert("source_size".into(), json!(source_size));
                o.insert("target_size".into(), json!(target_size));
                o.insert("ranges".into(), json!(ranges));
                if !metadata.is_empty() {
                    o.insert("metadata".into(), meta_json(metadata));
                }
            }
            Change::LinkTarget { source, target, metadata } => {
                o.insert("type".into(), json!("symlink"));
                let mut link = serde_json::Map::new();
                for (side, bytes) in [("source", source), ("target", target)] {
                    link.insert(side.into(), bytes_json(bytes));
                    if std::str::from_utf8(bytes).is_err() {
                        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
                        link.insert(format!("{side}_bytes"), json!(b64));
                    }
                }
                o.insert("link".into(), Value::Object(link));
                if !metadata.is_empty() {
                    o.insert("metadata".into(), meta_json(metadata));
                }
            }
            Change::Device { kind, source, target, metadata } => {
                o.insert("type".into(), json!(kind.name()));
                o.insert("rdev".into(), json!({ "source": rdev_text(*source), "target": rdev_text(*target) }));
                if !metadata.is_empty() {
                    o.insert("metadata".into(), meta_json(metadata));
                }
            }
            Change::HardLink { metadata } => {
                if !metadata.is_empty() {
                    o.insert("metadata".into(), meta_json(metadata));
                }
            }
            Change::Type { source, target } => {
                o.insert("source_type".into(), json!(source.name()));
                o.insert("target_type".into(), json!(target.name()));
            }
            Change::Metadata { changes } => {
                o.insert("fields".into(), json!(changes.iter().map(MetaChange::field).collect::<Vec<_>>()));
                o.insert("metadata".into(), meta_json(changes));
            }
            Change::Trouble { side, problem } => {
                o.insert("side".into(), json!(side.name()));
                let (Problem::Unreadable(why) | Problem::Unstable(why)) = problem;
                o.insert("error".into(), json!(why));
            }
        }
        if let Some(hint) = &self.hint {
            o.insert("hint".into(), json!(hint));
        }
        if let Some(change) = &self.hard_link {
            let mut link = serde_json::Map::new();
            for (side, first) in [("source", &change.source), ("target", &change.target)] {
                link.insert(side.into(), first.as_ref().map_or(Value::Null, |p| json!(p.display())));
                if let Some(b64) = first.as_ref().and_then(RelPath::exact_bytes_b64) {
                    link.insert(format!("{side}_bytes"), json!(b64));
                }
            }
            o.insert("hardlink".into(), Value::Object(link));
        }
        Value::Object(o)
    }
}

/// A device number as `major:minor`.
pub fn rdev_text((major, minor): (u32, u32)) -> String {
    format!("{major}:{minor}")
}
