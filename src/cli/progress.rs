//! Progress for the person watching: a line that redraws itself on a terminal; plain lines on
//! stderr every few seconds with `--progress` off a terminal (for logs); nothing otherwise, so
//! cron mail and pipes stay clean, and nothing at all with `-q`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover::manifest::{Kind, Manifest};
use cutover::scan::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use super::render::{counted, size};

/// How progress is shown, set once from the command line by [`configure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Off,
    /// A line redrawn in place on the terminal.
    Bar,
    /// Plain lines, every [`interval`] and at the end of each phase.
    Lines,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);
static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q` and `--progress`, for the whole run.
pub fn configure(quiet: bool, forced: bool) {
    let mode = if quiet {
        Mode::Off
    } else if std::io::stderr().is_terminal() {
        Mode::Bar
    } else if forced {
        Mode::Lines
    } else {
        Mode::Off
    };
    MODE.store(mode as u8, Ordering::Relaxed);
    QUIET.store(quiet, Ordering::Relaxed);
}

/// `-q`: say nothing but errors.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        m if m == Mode::Bar as u8 => Mode::Bar,
        m if m == Mode::Lines as u8 => Mode::Lines,
        _ => Mode::Off,
    }
}

/// Seconds between plain progress lines: 5, or `CUTOVER_PROGRESS_SECONDS`.
fn interval() -> Duration {
    let seconds = std::env::var("CUTOVER_PROGRESS_SECONDS").ok().and_then(|s| s.parse::<f64>().ok());
    Duration::from_secs_f64(seconds.filter(|s| s.is_finite() && *s >= 0.1).unwrap_or(5.0))
}

/// What a phase will amount to, when known beforehand (a cache's files, a plan's bytes): it
/// gives the percentage and the ETA.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub items: u64,
    pub bytes: u64,
}

impl Totals {
    /// The regular files of `manifest` (a cache: last run's tree).
    pub fn of_tree(manifest: &Manifest) -> Totals {
        let files = manifest.entries.iter().filter(|e| e.kind == Kind::File);
        files.fold(Totals::default(), |t, e| Totals { items: t.items + 1, bytes: t.bytes + e.size })
    }

    /// The sum of the totals known; `None` when one is not (an ETA from half the work lies).
    pub fn sum(parts: impl IntoIterator<Item = Option<Totals>>) -> Option<Totals> {
        parts.into_iter().try_fold(Totals::default(), |t, p| {
            p.map(|p| Totals { items: t.items + p.items, bytes: t.bytes + p.bytes })
        })
    }
}

/// Counters bumped by the working threads.
#[derive(Debug, Default)]
pub struct Meter {
    items: AtomicU64,
    bytes: AtomicU64,
    dirs: AtomicU64,
}

impl Meter {
    /// One more item (a file, an operation) of `bytes` bytes done.
    pub fn add(&self, bytes: u64) {
        self.items.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Progress for Meter {
    fn file_done(&self, bytes: u64) {
        self.add(bytes);
    }

    fn dir_done(&self) {
        self.dirs.fetch_add(1, Ordering::Relaxed);
    }
}

/// A phase of a run: `scanning` files, `applying` operations.
#[derive(Clone, Copy, Debug)]
pub struct Phase {
    pub label: &'static str,
    pub one: &'static str,
    pub many: &'static str,
}

pub const SCANNING: Phase = Phase { label: "scanning", one: "file", many: "files" };
pub const VERIFYING: Phase = Phase { label: "verifying", one: "file", many: "files" };
pub const APPLYING: Phase = Phase { label: "applying", one: "operation", many: "operations" };

/// The progress text: `scanning: 1,234 files, 56 directories, 1.2 GiB, 310.4 MiB/s, 40% of
/// 3.0 GiB, ETA 0:12`.
fn text(phase: Phase, meter: &Meter, totals: Option<Totals>, elapsed: Duration) -> String {
    let (items, bytes, dirs) =
        (meter.items.load(Ordering::Relaxed), meter.bytes.load(Ordering::Relaxed), meter.dirs.load(Ordering::Relaxed));
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut text = format!("{}: {}", phase.label, counted(items, phase.one, phase.many));
    if dirs > 0 {
        text.push_str(&format!(", {}", counted(dirs, "directory", "directories")));
    }
    text.push_str(&format!(", {}, {}/s", size(bytes), size((bytes as f64 / seconds) as u64)));
    let fraction = totals.and_then(|t| {
        if t.bytes > 0 {
            Some(bytes as f64 / t.bytes as f64)
        } else if t.items > 0 {
            Some(items as f64 / t.items as f64)
        } else {
            None
        }
    });
    if let Some(fraction) = fraction.filter(|f| *f > 0.0 && *f < 1.0) {
        let left = seconds * (1.0 - fraction) / fraction;
        text.push_str(&format!(", {:.0}%, ETA {}", fraction * 100.0, clock(left as u64)));
    }
    text
}

/// Seconds as `m:ss` or `h:mm:ss`.
fn clock(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 { format!("{h}:{m:02}:{s:02}") } else { format!("{m}:{s:02}") }
}

/// Runs `work` with progress shown as [`configure`] chose: on a terminal a line redrawn ten
/// times a second, with `--progress` elsewhere a plain line every few seconds and one when the
/// phase ends.
pub fn with_progress<T>(phase: Phase, totals: Option<Totals>, work: impl FnOnce(&Meter) -> T) -> T {
    let mode = mode();
    let meter = Meter::default();
    if mode == Mode::Off {
        return work(&meter);
    }
    let bar = (mode == Mode::Bar).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    });
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let every = interval();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                match &bar {
                    Some(bar) => {
                        bar.set_message(text(phase, &meter, totals, start.elapsed()));
                        bar.tick();
                    }
                    None if last.elapsed() >= every && !done.load(Ordering::Relaxed) => {
                        eprintln!("cutover: {}", text(phase, &meter, totals, start.elapsed()));
                        last = Instant::now();
                    }
                    None => {}
                }
            }
        });
        let result = work(&meter);
        done.store(true, Ordering::Relaxed);
        result
    });
    match bar {
        Some(bar) => bar.finish_and_clear(),
        None => {
            let line = text(phase, &meter, None, start.elapsed());
            let line = line.replacen(": ", &format!(": done in {:.1} s: ", start.elapsed().as_secs_f64()), 1);
            eprintln!("cutover: {line}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_gives_counts_rate_and_an_eta_only_when_the_total_is_known() {
        let meter = Meter::default();
        for _ in 0..3 {
            meter.file_done(1 << 20);
        }
        meter.dir_done();
        let line = text(SCANNING, &meter, None, Duration::from_secs(3));
        assert_eq!(line, "scanning: 3 files, 1 directory, 3.0 MiB, 1.0 MiB/s");
        let totals = Some(Totals { items: 12, bytes: 12 << 20 });
        let line = text(SCANNING, &meter, totals, Duration::from_secs(3));
        assert_eq!(line, "scanning: 3 files, 1 directory, 3.0 MiB, 1.0 MiB/s, 25%, ETA 0:09");
        // Past the total (the tree grew since the cache), no made-up ETA.
        let small = Some(Totals { items: 1, bytes: 1 << 20 });
        assert!(!text(SCANNING, &meter, small, Duration::from_secs(3)).contains("ETA"));
        assert_eq!(clock(3725), "1:02:05");
    }

    #[test]
    fn totals_add_up_only_when_every_part_is_known() {
        let t = Totals { items: 2, bytes: 10 };
        assert_eq!(Totals::sum([Some(t), Some(t)]).map(|t| (t.items, t.bytes)), Some((4, 20)));
        assert!(Totals::sum([Some(t), None]).is_none());
    }
}
