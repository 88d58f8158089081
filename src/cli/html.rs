//! The HTML form of a diff report (`--html FILE`): one page for people, with its style and
//! script inline and a Content-Security-Policy that forbids every fetch, so it opens offline
//! and never calls out. It is a view of the same [`Report`] as the human and JSON forms: the
//! differences become a tree of directories (with counts), each changed file gets a bar that
//! maps its divergent ranges, and the script filters by kind and counts what is shown.
//!
//! Every text taken from a tree (paths, link targets, hints, errors, roots) goes through
//! [`shown`] (control characters and invalid UTF-8 escaped) and then [`escape`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use cutover::diff::{Change, Difference, Report};

use super::render::{count, detail, path_text, shown, size};

/// One report on the page under its own heading (a repair shows two: before and at verify).
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub heading: &'a str,
    pub report: &'a Report,
}

/// The kinds of difference, in the order the page lists them (the report's `kind` values).
const KINDS: [&str; 8] = ["missing", "extra", "content", "type", "metadata", "hardlink", "unreadable", "unstable"];

/// Above this many differences only the first level of the tree starts open.
const OPEN_ALL_UP_TO: usize = 300;

/// The tree lists at most this many differences (in report order): a page of millions would
/// not open. The counts table still has them all, and the JSON form lists every one.
const MOST_LISTED: usize = 50_000;

/// Writes the page for `sections` to `path` atomically (as every output file is).
pub fn write_page(path: &Path, title: &str, sections: &[Section]) -> Result<()> {
    let page = page(title, sections);
    super::write_output(path, |out| Ok(out.write_all(page.as_bytes())?))
}

/// The page of a repair at `path`, if asked for: the differences found before it and, unless
/// it was a dry run, those that remained at verify.
pub fn write_repair_page(
    path: Option<&Path>,
    roots: [&Path; 2],
    before: &Report,
    after: Option<&Report>,
) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let title = format!("cutover repair {} {}", roots[0].display(), roots[1].display());
    let mut sections = vec![Section { heading: "Before the repair", report: before }];
    if let Some(after) = after {
        sections.push(Section { heading: "At verify, after the repair", report: after });
    }
    write_page(path, &title, &sections)
}

/// The whole page.
pub fn page(title: &str, sections: &[Section]) -> String {
    let mut html = String::new();
    let title = escape(title);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    filter_bar(&mut html);
    for (index, section) in sections.iter().enumerate() {
        section_html(&mut html, index, section);
    }
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

/// Text for HTML, in element content and in quoted attribute values alike.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes from a tree (a name, a link target) as page text.
fn escape_bytes(bytes: &[u8]) -> String {
    escape(&shown(bytes))
}

fn filter_bar(html: &mut String) {
    html.push_str("<form id=\"filter\"><span>Show:</span>");
    for kind in KINDS {
        let _ =
            write!(html, "<label class=\"k-{kind}\"><input type=\"checkbox\" value=\"{kind}\" checked> {kind}</label>");
    }
    html.push_str(
        "<button type=\"button\" id=\"expand\">expand all</button>\
         <button type=\"button\" id=\"collapse\">collapse all</button></form>\n",
    );
}

fn section_html(html: &mut String, index: usize, section: &Section) {
    let report = section.report;
    let id = format!("s{index}");
    let _ = write!(html, "<section class=\"report\" id=\"{id}\">\n<h2>{}</h2>\n", escape(section.heading));
    let verdict = if report.identical() {
        "identical".to_string()
    } else {
        count(report.differences.len() as u64, "difference", "differences")
    };
    let _ =
        write!(html, "<p class=\"verdict {}\">{verdict}</p>\n<dl>", if report.identical() { "same" } else { "differ" });
    for (name, side) in [("source", &report.source), ("target", &report.target)] {
        let hash =
            side.hash.map_or_else(|| "(incomplete: some entries could not be hashed)".to_string(), |h| h.to_hex());
        let _ = write!(
            html,
            "<dt>{name}</dt><dd><code>{}</code><br><small>root hash <code>{hash}</code>, chunks of {}</small></dd>",
            escape_bytes(side.root.as_bytes()),
            size(side.chunk_size.bytes())
        );
    }
    let compared = report.compared.names();
    let compared = if compared.is_empty() { "none".to_string() } else { compared.join(", ") };
    let also: String = [(report.hard_links, ", hard links"), (report.rdev, ", device numbers")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect();
    let _ = writeln!(
        html,
        "<dt>compared</dt><dd>existence, kinds, content{also}; metadata: {}; ranges in chunks of {}</dd></dl>",
        escape(&compared),
        size(report.chunk_size.bytes())
    );
    if !report.not_entered.is_empty() {
        html.push_str("<p>Not entered (another filesystem is mounted there, <code>-x</code>):</p><ul class=\"plain\">");
        for (path, side) in &report.not_entered {
            let _ = write!(html, "<li><code>{}</code> ({side})</li>", escape_bytes(path.as_bytes()));
        }
        html.push_str("</ul>\n");
    }
    counts_table(html, &id, report);
    if !report.identical() {
        tree_html(html, report);
    }
    html.push_str("</section>\n");
}

/// The counts by kind: `found` from the report, `shown` written by the script from the tree.
fn counts_table(html: &mut String, id: &str, report: &Report) {
    let mut found: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &report.differences {
        *found.entry(d.change.kind()).or_default() += 1;
    }
    let s = report.summary();
    html.push_str("<table class=\"counts\"><thead><tr><th>kind</th><th>found</th><th>shown</th></tr></thead><tbody>");
    for kind in KINDS {
        let n = found.get(kind).copied().unwrap_or(0);
        let bytes = match kind {
            "missing" => format!(" ({})", size(s.missing_bytes)),
            "extra" => format!(" ({})", size(s.extra_bytes)),
            "content" => format!(" ({} divergent)", size(s.divergent_bytes)),
            _ => String::new(),
        };
        let _ = write!(
            html,
            "<tr class=\"k-{kind}\"><td>{kind}</td><td>{n}{bytes}</td><td id=\"{id}-shown-{kind}\">?</td></tr>"
        );
    }
    let _ = writeln!(
        html,
        "</tbody><tfoot><tr><td>all</td><td>{}</td><td id=\"{id}-shown\">?</td></tr></tfoot></table>",
        report.differences.len()
    );
}

/// A directory of the difference tree: differences at this path and the names below it.
#[derive(Default)]
struct Node<'a> {
    here: Vec<&'a Difference>,
    below: BTreeMap<&'a [u8], Node<'a>>,
    total: usize,
}

impl<'a> Node<'a> {
    fn insert(&mut self, difference: &'a Difference) {
        let mut node = self;
        node.total += 1;
        let bytes = difference.path.as_bytes();
        if !bytes.is_empty() {
            for name in bytes.split(|&b| b == b'/') {
                node = node.below.entry(name).or_default();
                node.total += 1;
            }
        }
        node.here.push(difference);
    }
}

fn tree_html(html: &mut String, report: &Report) {
    let mut root = Node::default();
    for difference in report.differences.iter().take(MOST_LISTED) {
        root.insert(difference);
    }
    if report.differences.len() > MOST_LISTED {
        let _ = writeln!(
            html,
            "<p class=\"cut\">The tree lists the first {MOST_LISTED} of {} differences, in path order; \
             <code>--format json</code> lists them all.</p>",
            report.differences.len()
        );
    }
    let open_all = report.differences.len() <= OPEN_ALL_UP_TO;
    html.push_str("<ul class=\"tree\">");
    children_html(html, &root, 0, open_all);
    html.push_str("</ul>\n");
}

fn children_html(html: &mut String, node: &Node, depth: usize, open_all: bool) {
    for d in &node.here {
        difference_html(html, d, depth == 0);
    }
    for (name, child) in &node.below {
        if child.below.is_empty() {
            for d in &child.here {
                difference_html(html, d, false);
            }
            continue;
        }
        let open = if open_all || depth == 0 { " open" } else { "" };
        let _ = write!(
            html,
            "<li class=\"dir\"><details{open}><summary><span class=\"name\">{}/</span> <span class=\"n\">{}</span></summary><ul>",
            escape_bytes(name),
            child.total
        );
        children_html(html, child, depth + 1, open_all);
        html.push_str("</ul></details></li>");
    }
}

/// One difference: its kind, its name, what differs, a hint, and for a file its chunk map.
fn difference_html(html: &mut String, d: &Difference, full_path: bool) {
    let kind = d.change.kind();
    let path = path_text(d);
    let name = if full_path || d.path.is_root() {
        path.clone()
    } else {
        let name = shown(d.path.name());
        if path.ends_with('/') { name + "/" } else { name }
    };
    let _ = write!(
        html,
        "<li class=\"d\" data-kind=\"{kind}\" title=\"{}\"><span class=\"k k-{kind}\">{kind}</span> <span class=\"name\">{}</span> <span class=\"x\">{}</span>",
        escape(&path),
        escape(&name),
        escape(&detail(d))
    );
    if let Some(hint) = &d.hint {
        let _ = write!(html, " <span class=\"hint\">hint: {}</span>", escape_bytes(hint.as_bytes()));
    }
    if let Change::Content { source_size, target_size, ranges, .. } = &d.change {
        chunk_map(html, (*source_size).max(*target_size), ranges);
    }
    html.push_str("</li>");
}

/// A bar as long as the file, marking where its divergent ranges lie. Positions are kept in
/// thousandths of the file, so a file with a million ranges still draws at most 1000 marks,
/// and a one-byte range in a huge file still shows.
fn chunk_map(html: &mut String, file_size: u64, ranges: &[cutover::digest::ByteRange]) {
    if file_size == 0 || ranges.is_empty() {
        return;
    }
    let mut marks: Vec<(u64, u64)> = Vec::new();
    for r in ranges {
        let start = (u128::from(r.offset) * 1000 / u128::from(file_size)).min(999) as u64;
        let end =
            (u128::from(r.end()) * 1000).div_ceil(u128::from(file_size)).clamp(u128::from(start + 1), 1000) as u64;
        match marks.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => marks.push((start, end)),
        }
    }
    let _ = write!(
        html,
        "<div class=\"bar\" title=\"{} of {} differ\">",
        count(ranges.len() as u64, "range", "ranges"),
        size(file_size)
    );
    for (start, end) in marks {
        let width = end - start;
        let _ =
            write!(html, "<i style=\"left:{}.{}%;width:{}.{}%\"></i>", start / 10, start % 10, width / 10, width % 10);
    }
    html.push_str("</div>");
}

const STYLE: &str = r##"
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1d1d1f;background:#fff}
h1{font-size:1.3em;margin:0 0 .6em;overflow-wrap:anywhere}
h2{font-size:1.1em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.4em}
code,.name,.x{font-family:ui-monospace,monospace;overflow-wrap:anywhere}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.4em 0}
dt{font-weight:600}dd{margin:0}
.verdict{font-weight:600;font-size:1.1em}.verdict.same{color:#1a7f37}.verdict.differ{color:#b35900}
#filter{position:sticky;top:0;background:#f6f8fa;border:1px solid #ddd;border-radius:6px;padding:.4em .6em;display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:center;z-index:1}
#filter button{font:inherit}
table.counts{border-collapse:collapse;margin:.6em 0}
table.counts td,table.counts th{border:1px solid #ddd;padding:.15em .7em;text-align:right}
table.counts td:first-child,table.counts th:first-child{text-align:left}
table.counts tfoot{font-weight:600}
ul.tree,ul.tree ul{list-style:none;margin:0;padding-left:1.2em}
ul.tree{padding-left:0}
li.d{margin:.15em 0}
summary{cursor:pointer}
summary .n{background:#eaeef2;border-radius:9px;padding:0 .5em;font-size:.85em}
.k{display:inline-block;min-width:6.5em;font-size:.8em;font-weight:600;text-transform:uppercase;border-radius:3px;padding:0 .3em;color:#fff;background:#6e7781}
.k-missing.k{background:#cf222e}.k-extra.k{background:#8250df}.k-content.k{background:#bf8700}
.k-type.k{background:#0969da}.k-metadata.k{background:#1a7f37}.k-hardlink.k{background:#0a7f8f}.k-unreadable.k,.k-unstable.k{background:#57606a}
.x{color:#57606a;font-size:.9em}
.hint{color:#9a6700;font-size:.9em}
.cut{font-weight:600;color:#b35900}
.bar{position:relative;height:8px;background:#d0f0d8;border:1px solid #aaa;margin:.2em 0 .3em 7em;max-width:40em}
.bar i{position:absolute;top:0;bottom:0;background:#cf222e;min-width:2px}
[hidden]{display:none!important}
"##;

/// Filters by kind (also from the address: `page.html#hide=missing,extra`), counts the
/// differences shown per kind and per directory, and hides directories left empty.
const SCRIPT: &str = r##"
(function () {
  "use strict";
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#filter input[type=checkbox]"));
  var hide = /(?:^#|&)hide=([^&]*)/.exec(location.hash);
  if (hide) {
    var hidden = decodeURIComponent(hide[1]).split(",");
    boxes.forEach(function (box) { box.checked = hidden.indexOf(box.value) < 0; });
  }
  function update() {
    var on = {};
    boxes.forEach(function (box) { on[box.value] = box.checked; });
    Array.prototype.forEach.call(document.querySelectorAll("section.report"), function (section) {
      var counts = {}, shown = 0;
      Array.prototype.forEach.call(section.querySelectorAll("li.d"), function (li) {
        var kind = li.getAttribute("data-kind"), visible = on[kind] !== false;
        li.hidden = !visible;
        if (visible) { counts[kind] = (counts[kind] || 0) + 1; shown += 1; }
      });
      var dirs = Array.prototype.slice.call(section.querySelectorAll("li.dir")).reverse();
      dirs.forEach(function (dir) {
        var n = dir.querySelectorAll("li.d:not([hidden])").length;
        dir.querySelector("summary .n").textContent = n;
        dir.hidden = n === 0;
      });
      boxes.forEach(function (box) {
        var cell = document.getElementById(section.id + "-shown-" + box.value);
        if (cell) { cell.textContent = counts[box.value] || 0; }
      });
      document.getElementById(section.id + "-shown").textContent = shown;
    });
  }
  function openAll(open) {
    Array.prototype.forEach.call(document.querySelectorAll("ul.tree details"), function (d) { d.open = open; });
  }
  boxes.forEach(function (box) { box.addEventListener("change", update); });
  document.getElementById("expand").addEventListener("click", function () { openAll(true); });
  document.getElementById("collapse").addEventListener("click", function () { openAll(false); });
  update();
})();
"##;

#[cfg(test)]
mod tests {
    use super::{MOST_LISTED, Section, chunk_map, escape, page};
    use cutover::diff::{Change, Difference, Report, SideInfo};
    use cutover::digest::{ByteRange, ChunkSize};
    use cutover::manifest::MetaSet;
    use cutover::path::RelPath;

    #[test]
    fn a_huge_report_lists_the_first_differences_and_says_so() {
        let side = || SideInfo { root: "/r".into(), hash: None, chunk_size: ChunkSize::DEFAULT, verified: None };
        let differences = (0..=MOST_LISTED)
            .map(|i| Difference {
                path: RelPath::parse(format!("d{}/f{i:06}", i % 7).as_bytes()).unwrap(),
                change: Change::Metadata { changes: Vec::new() },
                hint: None,
                hard_link: None,
            })
            .collect();
        let report = Report {
            checked: cutover::diff::TreeCounts::default(),
            source: side(),
            target: side(),
            compared: MetaSet::DEFAULT,
            hard_links: true,
            rdev: true,
            chunk_size: ChunkSize::DEFAULT,
            differences,
            not_entered: Vec::new(),
        };
        let html = page("t", &[Section { heading: "h", report: &report }]);
        assert_eq!(html.matches("<li class=\"d\"").count(), MOST_LISTED);
        assert!(html.contains(&format!("the first {MOST_LISTED} of {} differences", MOST_LISTED + 1)));
        assert!(html.contains(&format!("<td>metadata</td><td>{}</td>", MOST_LISTED + 1)));
    }

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn the_chunk_map_places_ranges_in_thousandths_and_merges_touching_marks() {
        let mut html = String::new();
        let ranges = [
            ByteRange { offset: 0, length: 1 },
            ByteRange { offset: 1, length: 1 },
            ByteRange { offset: 500, length: 250 },
        ];
        chunk_map(&mut html, 1000, &ranges);
        assert!(
            html.contains("<i style=\"left:0.0%;width:0.2%\"></i><i style=\"left:50.0%;width:25.0%\"></i>"),
            "{html}"
        );
        let mut html = String::new();
        chunk_map(&mut html, u64::MAX, &[ByteRange { offset: u64::MAX - 1, length: 1 }]);
        assert!(html.contains("left:99.9%;width:0.1%"), "{html}");
    }
}
