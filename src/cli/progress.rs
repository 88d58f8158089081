//! A progress line on the terminal while trees are scanned; nothing at all off a terminal, so
//! cron mail and pipes stay clean.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover::scan::{Progress, Silent};
use indicatif::{ProgressBar, ProgressStyle};

use super::render::size;

/// Counters bumped by the scanning threads.
#[derive(Debug, Default)]
struct Meter {
    files: AtomicU64,
    bytes: AtomicU64,
    dirs: AtomicU64,
}

impl Progress for Meter {
    fn file_done(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn dir_done(&self) {
        self.dirs.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `work` with a progress line on stderr when stderr is a terminal and `quiet` is off.
pub fn with_progress<T>(label: &str, quiet: bool, work: impl FnOnce(&dyn Progress) -> T) -> T {
    if quiet || !std::io::stderr().is_terminal() {
        return work(&Silent);
    }
    let meter = Meter::default();
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let bytes = meter.bytes.load(Ordering::Relaxed);
                let rate = bytes as f64 / start.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{label}: {} files, {} directories, {} ({}/s)",
                    meter.files.load(Ordering::Relaxed),
                    meter.dirs.load(Ordering::Relaxed),
                    size(bytes),
                    size(rate as u64)
                ));
                bar.tick();
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let result = work(&meter);
        done.store(true, Ordering::Relaxed);
        result
    });
    bar.finish_and_clear();
    result
}
