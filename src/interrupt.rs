//! Stopping on SIGINT, SIGTERM and SIGHUP at a safe point.
//!
//! [`install`] (the command line calls it once) replaces the default action of the three
//! signals. Outside a [`Deferred`] section a signal ends the process at once, with exit code
//! 128 + the signal's number, as the default action would: nothing is being written then.
//! Inside one (apply, writing an output file) the signal is only recorded; the work polls
//! [`pending`] between operations and between chunks, stops there, removes its temporary files
//! and returns, and the caller exits with [`Signal::exit_code`]. A second signal stops the
//! process at once even there, as `kill -9` would; the next run cleans up after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// A signal that asks cutover to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(i32);

impl Signal {
    /// `SIGINT`, `SIGTERM` or `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            SIGHUP => "SIGHUP",
            _ => "a signal",
        }
    }

    /// 128 + the signal's number, as a shell reports a process the signal killed: 130, 143,
    /// 129.
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.0).unwrap_or(u8::MAX)
    }
}

struct Flags {
    /// The first signal's number, 0 before any.
    pending: Arc<AtomicUsize>,
    /// True outside every [`Deferred`] section: a signal then ends the process at once.
    immediate: Arc<AtomicBool>,
    /// True once a signal arrived: the next one ends the process at once.
    seen: Arc<AtomicBool>,
    /// How many [`Deferred`] sections are open.
    depth: Mutex<usize>,
}

static FLAGS: LazyLock<Flags> = LazyLock::new(|| Flags {
    pending: Arc::new(AtomicUsize::new(0)),
    immediate: Arc::new(AtomicBool::new(true)),
    seen: Arc::new(AtomicBool::new(false)),
    depth: Mutex::new(0),
});

/// Installs the handlers. Call once, early, from the program's `main`.
pub fn install() -> std::io::Result<()> {
    use signal_hook::flag;
    let flags = &*FLAGS;
    for signal in [SIGINT, SIGTERM, SIGHUP] {
        let code = Signal(signal).exit_code().into();
        // Run in this order on each delivery.
        flag::register_conditional_shutdown(signal, code, Arc::clone(&flags.immediate))?;
        flag::register_conditional_shutdown(signal, code, Arc::clone(&flags.seen))?;
        flag::register(signal, Arc::clone(&flags.seen))?;
        flag::register_usize(signal, Arc::clone(&flags.pending), signal as usize)?;
    }
    Ok(())
}

/// The signal received inside a [`Deferred`] section, if any.
pub fn pending() -> Option<Signal> {
    match FLAGS.pending.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Signal(n as i32)),
    }
}

/// While a value of this type lives, signals are recorded for [`pending`] instead of ending
/// the process.
#[derive(Debug)]
pub struct Deferred(());

/// Opens a [`Deferred`] section (they nest).
pub fn defer() -> Deferred {
    let mut depth = FLAGS.depth.lock().unwrap_or_else(|e| e.into_inner());
    *depth += 1;
    FLAGS.immediate.store(false, Ordering::SeqCst);
    Deferred(())
}

impl Drop for Deferred {
    fn drop(&mut self) {
        let mut depth = FLAGS.depth.lock().unwrap_or_else(|e| e.into_inner());
        *depth -= 1;
        if *depth == 0 {
            FLAGS.immediate.store(true, Ordering::SeqCst);
        }
    }
}

/// A writer that fails once a signal is pending, so whatever writes through it stops at the
/// next write and takes its error path (which removes its temporary file).
#[derive(Debug)]
pub struct Stoppable<W>(pub W);

impl<W: std::io::Write> std::io::Write for Stoppable<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        stop_point()?;
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        stop_point()?;
        self.0.flush()
    }
}

/// An error naming the pending signal, if there is one. (Not `ErrorKind::Interrupted`: that
/// one is retried by `write_all`.)
pub fn stop_point() -> std::io::Result<()> {
    match pending() {
        Some(signal) => Err(std::io::Error::other(format!("stopped by {}", signal.name()))),
        None => Ok(()),
    }
}
