//! Exclude patterns, in the rsync manner: what a scan leaves out, so that a copy made with
//! `rsync --exclude` (or a tree with `lost+found`, `.snapshot`, lock files...) can be proved
//! complete without every excluded path showing up as missing.
//!
//! A pattern is matched against a path relative to the scanned root, as bytes:
//! - a pattern without `/` (a trailing `/` aside) and without `**` matches the last component,
//!   at any depth: `*.tmp`, `lost+found`;
//! - a pattern starting with `/` is anchored: it matches the whole path (`/build`, `/a/*/c`);
//! - any other pattern with a `/` matches the whole path or any tail of it that starts at a
//!   component (`cache/*.db` matches `cache/x.db` and `app/cache/x.db`);
//! - a trailing `/` makes it match directories only (`tmp/`).
//!
//! `*` matches any bytes but `/`, `**` any bytes including `/`, `?` one byte but `/`, `[abc]`,
//! `[a-z]` and `[!a-z]` (or `[^a-z]`) one byte of a set, and `\` takes the next byte as is.
//! An excluded directory is left out with everything below it.

use crate::path::RelPath;

/// A set of exclude patterns; empty excludes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// As given, for manifests and messages.
    text: String,
    glob: Vec<u8>,
    anchored: bool,
    whole_path: bool,
    dirs_only: bool,
}

impl Excludes {
    /// Patterns as given on the command line or in a manifest header. An empty pattern, or one
    /// that is only `/`, is refused: it would mean nothing or everything.
    pub fn new<S: AsRef<str>>(patterns: impl IntoIterator<Item = S>) -> Result<Excludes, String> {
        let patterns = patterns.into_iter().map(|p| Pattern::parse(p.as_ref())).collect::<Result<_, _>>()?;
        Ok(Excludes { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns as given.
    pub fn texts(&self) -> Vec<String> {
        self.patterns.iter().map(|p| p.text.clone()).collect()
    }

    /// Whether both sets hold the same patterns, in any order.
    pub fn same_patterns(&self, other: &Excludes) -> bool {
        let sorted = |e: &Excludes| {
            let mut texts = e.texts();
            texts.sort();
            texts.dedup();
            texts
        };
        sorted(self) == sorted(other)
    }

    /// Whether the entry at `path` (a directory or not) is left out. The root never is.
    pub fn excludes(&self, path: &RelPath, is_dir: bool) -> bool {
        !path.is_root() && self.patterns.iter().any(|p| p.matches(path.as_bytes(), is_dir))
    }

    /// Whether the answer for `path` depends on it being a directory.
    pub fn depends_on_kind(&self, path: &RelPath) -> bool {
        self.excludes(path, true) != self.excludes(path, false)
    }
}

impl Pattern {
    fn parse(given: &str) -> Result<Pattern, String> {
        // rsync's rule prefix for an exclude; includes are not supported.
        let text = given.strip_prefix("- ").unwrap_or(given);
        if given.starts_with("+ ") {
            return Err(format!("{} is an include rule; only excludes are supported", crate::path::Quoted(given)));
        }
        // rsync's `dir/***`: the directory `dir/` and everything below it, which an excluded
        // directory brings with it anyway.
        let (text, triple) = match text.strip_suffix("/***") {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let (body, dirs_only) = match text.strip_suffix('/') {
            Some(body) => (body, true),
            None => (text, triple),
        };
        let whole_path = triple;
        let (body, anchored) = match body.strip_prefix('/') {
            Some(body) => (body, true),
            None => (body, false),
        };
        if body.is_empty() {
            return Err(format!("exclude pattern {} matches nothing (or everything)", crate::path::Quoted(given)));
        }
        let whole_path = whole_path || anchored || body.contains('/') || body.contains("**");
        // As in rsync, a backslash escapes only in a pattern with wildcards; elsewhere it is a
        // character of the name.
        let glob = if body.contains(['*', '?', '[']) {
            body.as_bytes().to_vec()
        } else {
            body.replace('\\', "\\\\").into_bytes()
        };
        let text = if triple { format!("{text}/***") } else { text.to_string() };
        Ok(Pattern { text, glob, anchored, whole_path, dirs_only })
    }

    fn matches(&self, path: &[u8], is_dir: bool) -> bool {
        if self.dirs_only && !is_dir {
            return false;
        }
        if !self.whole_path {
            let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
            return glob(&self.glob, name);
        }
        if self.anchored {
            return glob(&self.glob, path);
        }
        // The whole path, or a tail of it that starts after a '/'.
        glob(&self.glob, path) || path.iter().enumerate().any(|(i, &b)| b == b'/' && glob(&self.glob, &path[i + 1..]))
    }
}

/// Whether `text` matches all of `pattern` (see the module docs for the syntax).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            let rest = &pattern[2..];
            // `**/` also matches no directory at all, as in rsync: `**/x` matches `x`.
            (rest.first() == Some(&b'/') && glob(&rest[1..], text))
                || (0..=text.len()).any(|skip| glob(rest, &text[skip..]))
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            let within = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
            (0..=within).any(|skip| glob(rest, &text[skip..]))
        }
        Some(b'?') => text.first().is_some_and(|&b| b != b'/') && glob(&pattern[1..], &text[1..]),
        Some(b'[') => match (class(&pattern[1..]), text.first()) {
            (Some((set, len)), Some(&b)) => b != b'/' && set.contains(b) && glob(&pattern[1 + len..], &text[1..]),
            (None, Some(&b'[')) => glob(&pattern[1..], &text[1..]),
            _ => false,
        },
        Some(b'\\') if pattern.len() > 1 => text.first() == Some(&pattern[1]) && glob(&pattern[2..], &text[1..]),
        Some(&p) => text.first() == Some(&p) && glob(&pattern[1..], &text[1..]),
    }
}

/// The bytes a bracket expression stands for.
struct ByteSet {
    members: [bool; 256],
    negated: bool,
}

impl ByteSet {
    fn contains(&self, b: u8) -> bool {
        self.members[usize::from(b)] != self.negated
    }
}

/// A bracket expression starting just after `[`, and its length up to and including `]`; or
/// `None` when it does not close (the `[` is then literal). Members: bytes, ranges `a-z`,
/// `\x` for a literal `x`, and POSIX classes such as `[:digit:]`; `!` or `^` first negates,
/// and a `]` right after them is a member.
fn class(pattern: &[u8]) -> Option<(ByteSet, usize)> {
    let mut set = ByteSet { members: [false; 256], negated: matches!(pattern.first(), Some(b'!' | b'^')) };
    let mut i = usize::from(set.negated);
    let first = i;
    loop {
        let b = *pattern.get(i)?;
        if b == b']' && i > first {
            return Some((set, i + 1));
        }
        if b == b'[' && pattern.get(i + 1) == Some(&b':') {
            let name_end = i + 2 + pattern.get(i + 2..)?.windows(2).position(|w| w == b":]")?;
            let test = posix_class(&pattern[i + 2..name_end])?;
            (0..=255u8).filter(|&c| test(c)).for_each(|c| set.members[usize::from(c)] = true);
            i = name_end + 2;
            continue;
        }
        let (low, next) = if b == b'\\' { (*pattern.get(i + 1)?, i + 2) } else { (b, i + 1) };
        if pattern.get(next) == Some(&b'-') && pattern.get(next + 1).is_some_and(|&c| c != b']') {
            let high_at = next + 1;
            let (high, after) = if pattern[high_at] == b'\\' {
                (*pattern.get(high_at + 1)?, high_at + 2)
            } else {
                (pattern[high_at], high_at + 1)
            };
            (low..=high).for_each(|c| set.members[usize::from(c)] = true);
            i = after;
        } else {
            set.members[usize::from(low)] = true;
            i = next;
        }
    }
}

fn posix_class(name: &[u8]) -> Option<fn(u8) -> bool> {
    Some(match name {
        b"alnum" => |c: u8| c.is_ascii_alphanumeric(),
        b"alpha" => |c: u8| c.is_ascii_alphabetic(),
        b"blank" => |c: u8| c == b' ' || c == b'\t',
        b"cntrl" => |c: u8| c.is_ascii_control(),
        b"digit" => |c: u8| c.is_ascii_digit(),
        b"graph" => |c: u8| c.is_ascii_graphic(),
        b"lower" => |c: u8| c.is_ascii_lowercase(),
        b"print" => |c: u8| c.is_ascii_graphic() || c == b' ',
        b"punct" => |c: u8| c.is_ascii_punctuation(),
        b"space" => |c: u8| c.is_ascii_whitespace() || c == 0x0b,
        b"upper" => |c: u8| c.is_ascii_uppercase(),
        b"xdigit" => |c: u8| c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &[&str], path: &str, is_dir: bool) -> bool {
        Excludes::new(patterns).unwrap().excludes(&RelPath::parse(path.as_bytes()).unwrap(), is_dir)
    }

    #[test]
    fn a_name_pattern_matches_the_last_component_at_any_depth() {
        assert!(excluded(&["*.tmp"], "a.tmp", false));
        assert!(excluded(&["*.tmp"], "deep/down/a.tmp", false));
        assert!(!excluded(&["*.tmp"], "a.tmp.keep", false));
        assert!(!excluded(&["*.tmp"], "x.tmp/inside", false), "only the last component is looked at");
        assert!(excluded(&["lost+found"], "lost+found", true));
        assert!(excluded(&["?.log"], "sub/a.log", false));
        assert!(!excluded(&["?.log"], "ab.log", false));
    }

    #[test]
    fn anchored_and_slashed_patterns_match_paths() {
        assert!(excluded(&["/build"], "build", true));
        assert!(!excluded(&["/build"], "src/build", true), "anchored at the root");
        assert!(excluded(&["cache/*.db"], "cache/x.db", false));
        assert!(excluded(&["cache/*.db"], "app/cache/x.db", false), "any tail at a component");
        assert!(!excluded(&["cache/*.db"], "appcache/x.db", false), "not inside a component");
        assert!(!excluded(&["cache/*.db"], "cache/sub/x.db", false), "* does not cross /");
        assert!(excluded(&["cache/**.db"], "cache/sub/x.db", false), "** does");
        assert!(excluded(&["/a/*/c"], "a/b/c", false));
        assert!(excluded(&["**/node_modules"], "x/y/node_modules", true));
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        assert!(excluded(&["tmp/"], "x/tmp", true));
        assert!(!excluded(&["tmp/"], "x/tmp", false));
        let set = Excludes::new(["tmp/"]).unwrap();
        assert!(set.depends_on_kind(&RelPath::parse(b"tmp").unwrap()));
        assert!(!set.depends_on_kind(&RelPath::parse(b"other").unwrap()));
    }

    #[test]
    fn brackets_escapes_and_literal_brackets() {
        assert!(excluded(&["[abc].txt"], "b.txt", false));
        assert!(!excluded(&["[abc].txt"], "d.txt", false));
        assert!(excluded(&["[!abc].txt"], "d.txt", false));
        assert!(excluded(&["[^a-c].txt"], "d.txt", false));
        assert!(excluded(&["file[0-9]"], "file7", false));
        assert!(excluded(&["[]x]"], "]", false), "a leading ] is a member");
        assert!(excluded(&["a[b"], "a[b", false), "an unclosed [ is literal");
        assert!(excluded(&["\\*"], "*", false));
        assert!(!excluded(&["\\*"], "x", false));
    }

    #[test]
    fn rsync_forms_leading_double_star_triple_star_rule_prefix_and_posix_classes() {
        assert!(excluded(&["**/node_modules"], "node_modules", true), "**/ matches no directory too");
        assert!(excluded(&["**/node_modules"], "a/b/node_modules", true));
        assert!(excluded(&["a/**/b"], "a/b", false));
        assert!(excluded(&["a/**/b"], "a/x/y/b", false));
        assert!(excluded(&["dir/***"], "dir", true), "dir/*** is the directory itself");
        assert!(!excluded(&["/dir/***"], "dir", false), "a file named dir is not the directory");
        assert!(excluded(&["/dir/***"], "dir", true));
        assert!(!excluded(&["/dir/***"], "x/dir", true));
        assert!(excluded(&["- foo"], "foo", false), "rsync's exclude prefix");
        assert!(Excludes::new(["+ foo"]).is_err(), "includes are not supported");
        assert!(excluded(&["[[:digit:]]"], "7", false));
        assert!(excluded(&["file[[:digit:]]"], "file7", false));
        assert!(!excluded(&["file[[:digit:]]"], "filex", false));
        assert!(excluded(&["a[\\]]b"], "a]b", false), "an escaped ] inside a set");
        assert!(excluded(&["a\\b"], "a\\b", false), "no wildcard: the backslash is literal");
        assert!(!excluded(&["a\\b"], "ab", false));
        assert!(excluded(&["a\\*"], "a*", false), "with a wildcard it escapes");
    }

    #[test]
    fn the_root_is_never_excluded_and_empty_patterns_are_refused() {
        assert!(!Excludes::new(["**"]).unwrap().excludes(&RelPath::root(), true));
        assert!(Excludes::new([""]).is_err());
        assert!(Excludes::new(["/"]).is_err());
        assert!(Excludes::new(["//"]).is_err());
    }

    #[test]
    fn names_that_are_not_utf8_match_bytewise() {
        let set = Excludes::new(["caf*"]).unwrap();
        assert!(set.excludes(&RelPath::parse(b"dir/caf\xe9").unwrap(), false));
    }
}
