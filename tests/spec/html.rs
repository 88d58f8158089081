//! The HTML page (`--html FILE` on diff and repair), judged by a real browser: headless
//! Chromium runs the page's script, and the counts it writes into the page must equal the JSON
//! report's; its network log must show no request made by the page; the screenshot is kept at
//! target/html-report.png for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Tree, cutover, diff_json, noise, run_with_timeout};

/// Kinds as the page's counts table names them, with the JSON summary field each adds to.
const KINDS: [(&str, &str); 8] = [
    ("missing", "missing"),
    ("extra", "extra"),
    ("content", "content"),
    ("type", "type"),
    ("metadata", "metadata"),
    ("hardlink", "hardlink"),
    ("unreadable", "trouble"),
    ("unstable", "trouble"),
];

/// What headless Chromium made of a page.
struct Rendered {
    /// The DOM after the page's script ran.
    dom: String,
    /// The `initiator` of every URL request in Chromium's network log: "not an origin" for the
    /// browser's own background requests, the page's origin ("null" for a file) for its own.
    initiators: Vec<String>,
}

/// `/usr/bin/chromium` or `chromium` on PATH. Its absence fails the test unless
/// CUTOVER_SKIP_CHROMIUM is set, so a CI without it cannot pass silently.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("chromium")).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CUTOVER_SKIP_CHROMIUM").is_some(),
            "chromium is not installed (apt-get install chromium); set CUTOVER_SKIP_CHROMIUM=1 to skip the HTML tests"
        );
        eprintln!("note: chromium not found and CUTOVER_SKIP_CHROMIUM is set: skipping");
    }
    found
}

/// Loads `url` in headless Chromium, offline-minded flags, a fresh profile; with `screenshot`
/// it saves one there instead of dumping the DOM.
fn render(chromium: &Path, url: &str, screenshot: Option<&Path>) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let net_log = profile.path().join("net-log.json");
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1200,1000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().join("profile").display()));
    command.arg(format!("--log-net-log={}", net_log.display()));
    match screenshot {
        Some(png) => command.arg(format!("--screenshot={}", png.display())),
        None => command.arg("--dump-dom"),
    };
    command.arg(url);
    let run = run_with_timeout(command, Vec::new(), Duration::from_secs(90));
    assert!(run.status.success(), "chromium failed on {url}: {}", run.stderr);
    // The log may lack its closing brackets: read the initiators as text, not as JSON.
    let log = std::fs::read_to_string(&net_log).unwrap_or_default();
    let initiators = log
        .split("\"initiator\":\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_string())
        .collect();
    Rendered { dom: String::from_utf8_lossy(&run.stdout).into_owned(), initiators }
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The number the page's script wrote into the element with `id`.
#[track_caller]
fn shown(dom: &str, id: &str) -> u64 {
    let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let text = &dom[start + id.len() + 6..];
    let number = &text[..text.find('<').unwrap()];
    number.parse().unwrap_or_else(|_| panic!("#{id} holds {number:?}, not a count: did the script run?"))
}

/// Asserts that section `section` of the rendered page shows what the JSON report `doc` holds.
#[track_caller]
fn assert_counts_match(dom: &str, section: usize, doc: &Value) {
    let mut by_summary_field = std::collections::BTreeMap::<&str, u64>::new();
    for (kind, field) in KINDS {
        *by_summary_field.entry(field).or_default() += shown(dom, &format!("s{section}-shown-{kind}"));
    }
    for (field, n) in by_summary_field {
        assert_eq!(n, doc["summary"][field].as_u64().unwrap(), "page and JSON disagree on {field}");
    }
    let total = doc["differences"].as_array().unwrap().len() as u64;
    assert_eq!(shown(dom, &format!("s{section}-shown")), total);
}

/// A source and target with every common kind of difference, nested directories, and names
/// that try to break out of the page: markup, quotes, a newline, bytes that are not UTF-8.
fn trees() -> (Tree, Tree) {
    let source = Tree::new();
    source.file("data/disk.img", noise(1, 3 << 20)).file("data/deep/er/still.txt", "same").file("data/log", "a");
    source.file("config/app.toml", "x = 1").file("bin/run.sh", "#!/bin/sh").dir("archive/2025/q1");
    source.file("archive/2025/q1/a", "aa").file("swap", "file").symlink("latest", "data/log");
    source.file(b"weird/<b id=\"pwn\">&'\nline", "markup").file(b"weird/bad-\xff", "latin-1").file("README", "r");
    let target = source.copy();
    target.patch("data/disk.img", 100, b"!").patch("data/disk.img", (3 << 20) - 1, b"?");
    target.file("data/deep/er/still.txt", "moved").remove("archive").mode("bin/run.sh", 0o600);
    target.file("config/app.toml", "x = 2").remove("swap").dir("swap").file("tmp/junk", "junk");
    target.remove("latest").symlink("latest", "data/other").remove(b"weird/<b id=\"pwn\">&'\nline");
    target.file(b"weird/bad-\xff", "latin-2").remove("README").file("readme", "r");
    (source, target)
}

#[test]
fn the_page_shows_the_counts_of_the_json_report_and_fetches_nothing() {
    let Some(chromium) = chromium() else { return };
    let (source, target) = trees();
    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("report.html");
    let run = diff_json(source.path(), target.path(), &["--html", page.to_str().unwrap()]).expect_code(1);
    let doc = run.json();
    let html = std::fs::read_to_string(&page).unwrap();

    // Nothing in the page names anything outside it, and its policy forbids every fetch.
    assert!(html.contains("content=\"default-src 'none';"), "no CSP forbidding fetches");
    assert!(!html.contains("://"), "the page holds a URL");
    for tag in ["<link", "<img", "<iframe", "<object", "<embed", "<script src", "url("] {
        assert!(!html.contains(tag), "the page holds {tag}");
    }

    let rendered = render(&chromium, &file_url(&page), None);
    assert_counts_match(&rendered.dom, 0, &doc);
    assert!(rendered.initiators.iter().all(|i| i == "not an origin"), "the page fetched: {:?}", rendered.initiators);

    // A name is text, never markup, and its newline and invalid byte are shown escaped.
    assert!(!rendered.dom.contains("<b id=\"pwn\">"), "a file name became markup");
    assert!(rendered.dom.contains("&lt;b id=\"pwn\"&gt;&amp;'\\nline"), "the hostile name is not shown");
    assert!(rendered.dom.contains("bad-\\xff"), "the non-UTF-8 name is not shown escaped");
    // Every changed file gets a chunk map; the 3 MiB image's shows its first and last chunks.
    assert_eq!(rendered.dom.matches("class=\"bar\"").count(), doc["summary"]["content"].as_u64().unwrap() as usize - 1);
    assert!(rendered.dom.contains("left:0.0%;width:33.4%"), "the chunk map misplaces the first chunk");
    assert!(rendered.dom.contains("left:66.6%;width:33.4%"), "the chunk map misplaces the last chunk");
    assert!(rendered.dom.contains("hint: differs from"), "the name hint is not shown");

    // The filter, set from the address, hides those kinds and recounts.
    let filtered = render(&chromium, &format!("{}#hide=missing,content", file_url(&page)), None);
    assert_eq!(shown(&filtered.dom, "s0-shown-missing"), 0);
    assert_eq!(shown(&filtered.dom, "s0-shown-content"), 0);
    assert_eq!(shown(&filtered.dom, "s0-shown-extra"), doc["summary"]["extra"].as_u64().unwrap());
    let total = doc["differences"].as_array().unwrap().len() as u64;
    let hidden = doc["summary"]["missing"].as_u64().unwrap() + doc["summary"]["content"].as_u64().unwrap();
    assert_eq!(shown(&filtered.dom, "s0-shown"), total - hidden);

    // For people: a screenshot to look at, kept under target/.
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("html-report.png");
    let _ = std::fs::remove_file(&png);
    render(&chromium, &file_url(&page), Some(&png));
    assert!(std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000), "no screenshot at {}", png.display());
}

#[test]
fn the_network_check_catches_a_page_that_fetches() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("canary.html");
    std::fs::write(&page, "<!DOCTYPE html><p>canary<img src=\"http://127.0.0.1:9/canary.png\">").unwrap();
    let rendered = render(&chromium, &file_url(&page), None);
    assert!(rendered.initiators.iter().any(|i| i != "not an origin"), "a fetching page went unnoticed");
}

#[test]
fn a_repair_page_shows_the_differences_before_and_none_at_verify() {
    let Some(chromium) = chromium() else { return };
    let (source, target) = trees();
    let before = diff_json(source.path(), target.path(), &[]).expect_code(1).json();
    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("repair.html");
    cutover(["repair", "--delete", "--html"]).arg(&page).arg(source.path()).arg(target.path()).run().expect_code(0);
    let after = diff_json(source.path(), target.path(), &[]).expect_code(0).json();
    let rendered = render(&chromium, &file_url(&page), None);
    assert_counts_match(&rendered.dom, 0, &before);
    assert_counts_match(&rendered.dom, 1, &after);
    assert!(rendered.dom.contains("At verify"), "no verify section");
}

#[test]
fn the_page_replaces_an_old_one_whole_and_leaves_no_temp() {
    let (source, target) = trees();
    let out = tempfile::tempdir().unwrap();
    let page = out.path().join("report.html");
    std::fs::write(&page, "x".repeat(1 << 20)).unwrap();
    cutover(["diff", "-q", "--html"]).arg(&page).arg(source.path()).arg(target.path()).run().expect_code(1);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"), "not one whole page");
    let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["report.html"]);

    let run = cutover(["diff", "--html", "/nonexistent-dir/page.html"]).arg(source.path()).arg(target.path()).run();
    let run = run.expect_code(2);
    assert!(run.stderr.contains("/nonexistent-dir/page.html"), "the error does not name the file: {}", run.stderr);
}
