//! Paths relative to a scanned root, kept as exact bytes.
//!
//! A name that is not valid UTF-8 must survive scan → manifest → report → plan unchanged, so
//! paths are bytes, never `String`. Their order is component-wise (equivalently: bytewise with
//! `/` sorting before every other byte), which puts a directory's whole subtree directly after
//! it. That makes a sorted list of entries a pre-order walk, so two trees merge in one pass and a
//! subtree can be skipped as one contiguous run.

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;

/// A `/`-separated path relative to a tree's root. The root itself is the empty path.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Box<[u8]>);

/// Why a byte string is not an acceptable [`RelPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("absolute path")]
    Absolute,
    #[error("empty path component")]
    EmptyComponent,
    #[error("'.' or '..' component")]
    DotComponent,
    #[error("NUL byte in path")]
    Nul,
}

impl RelPath {
    /// The root of a tree.
    pub fn root() -> Self {
        Self::default()
    }

    /// Validates untrusted bytes (from a manifest or a plan): no leading `/`, no empty, `.` or
    /// `..` component, no NUL. The empty string is the root.
    pub fn parse(bytes: &[u8]) -> Result<Self, BadPath> {
        if bytes.is_empty() {
            return Ok(Self::root());
        }
        if bytes[0] == b'/' {
            return Err(BadPath::Absolute);
        }
        if bytes.contains(&0) {
            return Err(BadPath::Nul);
        }
        for component in bytes.split(|&b| b == b'/') {
            match component {
                b"" => return Err(BadPath::EmptyComponent),
                b"." | b".." => return Err(BadPath::DotComponent),
                _ => {}
            }
        }
        Ok(Self(bytes.into()))
    }

    /// The path of `name` inside this directory. `name` comes from `readdir`, so it is a single
    /// valid component already.
    pub fn join(&self, name: &[u8]) -> Self {
        if self.0.is_empty() {
            return Self(name.into());
        }
        let mut joined = Vec::with_capacity(self.0.len() + 1 + name.len());
        joined.extend_from_slice(&self.0);
        joined.push(b'/');
        joined.extend_from_slice(name);
        Self(joined.into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The last component; empty for the root.
    pub fn name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// The containing directory; the root for a top-level entry and for the root itself.
    pub fn parent(&self) -> RelPath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Self(self.0[..i].into()),
            None => Self::root(),
        }
    }

    /// Number of components (0 for the root).
    pub fn depth(&self) -> usize {
        if self.0.is_empty() { 0 } else { 1 + self.0.iter().filter(|&&b| b == b'/').count() }
    }

    /// True when `self` lies strictly inside the directory `dir`.
    pub fn is_inside(&self, dir: &RelPath) -> bool {
        if dir.0.is_empty() {
            return !self.0.is_empty();
        }
        self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0[dir.0.len()] == b'/'
    }

    /// Lossy UTF-8 form for people; never use it to find a file again.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// Standard base64 of the exact bytes when they are not valid UTF-8, for reports and plans.
    pub fn exact_bytes_b64(&self) -> Option<String> {
        match std::str::from_utf8(&self.0) {
            Ok(_) => None,
            Err(_) => Some(base64::engine::general_purpose::STANDARD.encode(&self.0)),
        }
    }

    /// Inverse of [`exact_bytes_b64`](Self::exact_bytes_b64) + [`display`](Self::display) as
    /// stored in reports and plans: the base64 form wins when present.
    pub fn from_report(display: &str, b64: Option<&str>) -> Result<Self, String> {
        let bytes = match b64 {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("bad base64 in path_bytes: {e}"))?,
            None => display.as_bytes().to_vec(),
        };
        Self::parse(&bytes).map_err(|e| format!("unsafe path {}: {e}", Quoted(display)))
    }
}

/// Component-wise order: `/` sorts before every other byte.
pub fn compare_path_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let key = |byte: u8| if byte == b'/' { 0u16 } else { u16::from(byte) + 1 };
    a.iter().map(|&x| key(x)).cmp(b.iter().map(|&x| key(x)))
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_path_bytes(&self.0, &other.0)
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() { f.write_str(".") } else { f.write_str(&String::from_utf8_lossy(&self.0)) }
    }
}

/// A name in a message: in single quotes, with control characters and `\\` escaped (`\\n`,
/// `\\u{1b}`), so a name can neither forge a line nor read as Rust's debug form.
#[derive(Debug)]
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        for c in self.0.chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_name_escapes_what_could_forge_a_line_and_keeps_the_rest() {
        assert_eq!(Quoted("a/b c").to_string(), "'a/b c'");
        assert_eq!(Quoted("Cafe\u{301}\n\\").to_string(), "'Cafe\u{301}\\n\\\\'");
        assert_eq!(Quoted("\u{1b}[2J").to_string(), "'\\u{1b}[2J'");
    }

    fn p(s: &str) -> RelPath {
        RelPath::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn subtree_sorts_right_after_its_directory() {
        let mut paths = [p("a-b"), p("a/z"), p("a"), p("a.b"), p("a/b/c"), p("ab")];
        paths.sort();
        let names: Vec<String> = paths.iter().map(|p| p.display()).collect();
        assert_eq!(names, ["a", "a/b/c", "a/z", "a-b", "a.b", "ab"]);
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert_eq!(RelPath::parse(b"/etc"), Err(BadPath::Absolute));
        assert_eq!(RelPath::parse(b"a/../b"), Err(BadPath::DotComponent));
        assert_eq!(RelPath::parse(b"a//b"), Err(BadPath::EmptyComponent));
        assert_eq!(RelPath::parse(b"a/"), Err(BadPath::EmptyComponent));
        assert_eq!(RelPath::parse(b"a\0b"), Err(BadPath::Nul));
        assert!(RelPath::parse(b"..a/b.").is_ok());
    }

    #[test]
    fn inside_parent_name() {
        assert!(p("a/b").is_inside(&p("a")));
        assert!(!p("ab").is_inside(&p("a")));
        assert!(!p("a").is_inside(&p("a")));
        assert!(p("a").is_inside(&RelPath::root()));
        assert_eq!(p("a/b/c").parent(), p("a/b"));
        assert_eq!(p("a/b/c").name(), b"c");
        assert_eq!(p("a/b/c").depth(), 3);
    }

    #[test]
    fn non_utf8_round_trips_through_report_form() {
        let path = RelPath::parse(b"dir/caf\xe9").unwrap();
        let b64 = path.exact_bytes_b64().unwrap();
        assert_eq!(RelPath::from_report(&path.display(), Some(&b64)).unwrap(), path);
        assert!(p("plain").exact_bytes_b64().is_none());
    }
}
