//! A file given in another's place, named as what it is: "this is a manifest, apply wants a
//! plan" rather than "Is a directory" or "invalid JSON". Consulted only once the right reader
//! has failed, so a good input is never second-guessed.

use std::io::Read;
use std::path::Path;

/// What a command reads from a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// A repair plan (`apply`, `bundle`).
    Plan,
    /// One side of a comparison: a directory or a manifest (`diff`, `plan`).
    Side,
    /// A bundle (`apply --bundle`).
    Bundle,
}

/// What a path holds, as far as its first bytes tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Directory,
    Manifest,
    Plan,
    Bundle,
    DiffReport,
    RunRecord,
    ApplyReport,
    Log,
    /// Anything else (or unreadable): the reader's own message stands.
    Unknown,
}

impl Found {
    /// "this is X", and what made it.
    fn what(self) -> &'static str {
        match self {
            Found::Directory => "a directory",
            Found::Manifest => "a manifest (written by `cutover scan DIR -o FILE`)",
            Found::Plan => "a repair plan (written by `cutover plan SOURCE TARGET -o FILE`)",
            Found::Bundle => "a bundle of source data (written by `cutover bundle PLAN -o FILE`)",
            Found::DiffReport => "a diff report (`cutover diff --format json`)",
            Found::RunRecord => "a run record (written by `--report FILE`)",
            Found::ApplyReport => "an apply report (`cutover apply --format json`)",
            Found::Log => "an apply log (written by `--log FILE`)",
            Found::Unknown => "something else",
        }
    }
}

/// The JSON formats, by the id in their `format` field.
const FORMAT_IDS: [(&str, Found); 6] = [
    ("\"cutover-plan/", Found::Plan),
    ("\"cutover-bundle/", Found::Bundle),
    ("\"cutover-diff/", Found::DiffReport),
    ("\"cutover-run/", Found::RunRecord),
    ("\"cutover-apply/", Found::ApplyReport),
    ("\"cutover-log/", Found::Log),
];

/// Looks at the first 64 KiB of `path`.
fn sniff(path: &Path) -> Found {
    if path.as_os_str() == "-" {
        return Found::Unknown;
    }
    if path.is_dir() {
        return Found::Directory;
    }
    let mut head = Vec::new();
    let Ok(file) = std::fs::File::open(path) else { return Found::Unknown };
    if file.take(64 << 10).read_to_end(&mut head).is_err() {
        return Found::Unknown;
    }
    if head.starts_with(b"cutover-manifest/") {
        return Found::Manifest;
    }
    if head.trim_ascii_start().first() != Some(&b'{') {
        return Found::Unknown;
    }
    let text = String::from_utf8_lossy(&head);
    FORMAT_IDS
        .iter()
        .filter_map(|(id, found)| text.find(id).map(|at| (at, *found)))
        .min_by_key(|(at, _)| *at)
        .map_or(Found::Unknown, |(_, found)| found)
}

/// The error to give when `command` could not read `path` as `wanted` (`error` is the
/// reader's): the file named as what it is when it is a known other thing, else `error`.
pub fn explain(path: &Path, wanted: Wanted, command: &str, error: impl Into<anyhow::Error>) -> anyhow::Error {
    let error = error.into();
    let found = sniff(path);
    let fits = match wanted {
        Wanted::Plan => found == Found::Plan,
        Wanted::Side => matches!(found, Found::Manifest | Found::Directory),
        Wanted::Bundle => found == Found::Bundle,
    };
    if fits || found == Found::Unknown {
        return error;
    }
    let wants = match wanted {
        Wanted::Plan => "a plan: make one with `cutover plan SOURCE TARGET -o FILE`".to_string(),
        Wanted::Side => "a directory or a manifest: make one with `cutover scan DIR -o FILE`".to_string(),
        Wanted::Bundle => "a bundle: make one with `cutover bundle PLAN -o FILE`".to_string(),
    };
    let hint = match (found, wanted) {
        (Found::Bundle, Wanted::Plan) => "; give the bundle with --bundle FILE, after the plan it was made for",
        (Found::Plan, Wanted::Bundle) => "; the plan comes first, the bundle after --bundle",
        (Found::Directory, Wanted::Bundle) => "; to take source data from a directory, give it with --source DIR",
        (Found::Plan, Wanted::Side) => "; carry it out with `cutover apply PLAN`",
        _ => "",
    };
    anyhow::anyhow!("{}: this is {}, {command} wants {wants}{hint}", path.display(), found.what())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_known_by_its_first_bytes_and_a_stranger_keeps_the_readers_message() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        assert_eq!(sniff(dir.path()), Found::Directory);
        assert_eq!(sniff(&file("m", "cutover-manifest/1\n{}")), Found::Manifest);
        assert_eq!(sniff(&file("p", "{\n  \"checksum\": \"x\",\n  \"format\": \"cutover-plan/1\"}")), Found::Plan);
        assert_eq!(sniff(&file("b", "{\"format\":\"cutover-bundle/1\",\"plan\":\"x\"}\n")), Found::Bundle);
        assert_eq!(sniff(&file("r", "{\"format\": \"cutover-run/1\"}")), Found::RunRecord);
        assert_eq!(sniff(&file("t", "hello")), Found::Unknown);
        let kept = explain(&dir.path().join("t"), Wanted::Plan, "apply", anyhow::anyhow!("invalid JSON"));
        assert_eq!(kept.to_string(), "invalid JSON");
        let named = explain(&dir.path().join("m"), Wanted::Plan, "apply", anyhow::anyhow!("invalid JSON"));
        assert!(named.to_string().contains("this is a manifest"), "{named}");
    }
}
