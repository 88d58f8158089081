//! Read-only file mappings that survive the file being truncated under them.
//!
//! Reading a mapped page that lies past the end of a file which shrank after `mmap` (or a page
//! the kernel cannot read) raises SIGBUS, and SIGBUS kills the process. So every mapping made
//! here is entered in a small lock-free registry, and a SIGBUS handler, installed once, asks
//! whether the faulting address lies in a registered mapping. If it does, the handler maps
//! anonymous zero pages over the whole mapping, marks it, and returns: the read resumes on zeros
//! and the owner, seeing the mark, reports the file instead of hashing zeros into a root. Any
//! other SIGBUS goes on to the handler that was installed before ours (Rust's runtime installs
//! one) or to the default action, so a real fault still kills the process as it would have.
//!
//! A mapping is only made while our handler is the installed one; when the registry is full or
//! something replaced the handler, [`Mapping::new`] declines and the caller reads with `pread`.
//! (A handler installed by someone else while a mapping is being read is not detected: cutover
//! installs none.) The handler touches only atomics and calls only `mmap`, `sigaction` and
//! `raise`, which POSIX lists as async-signal-safe.
//!
//! All of cutover's `unsafe` code is in this module.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use libc::{c_int, c_void, siginfo_t};

/// How many mappings can be live at once; more fall back to `pread`. The scan holds about one
/// per worker thread.
const SLOTS: usize = 64;

/// One registered mapping, guarded as a seqlock: `seq` is odd while its owner rewrites the other
/// fields, so the handler (which may run on any thread at any moment) never acts on a half-written
/// range.
struct Slot {
    seq: AtomicUsize,
    start: AtomicUsize,
    /// Length in bytes rounded up to whole pages; 0 marks a free slot.
    len: AtomicUsize,
    /// Set by the handler once it has replaced the mapping with zeros.
    zeroed: AtomicBool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("len", &self.len.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        seq: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        zeroed: AtomicBool::new(false),
    }
}; SLOTS];

static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PAGE: AtomicUsize = AtomicUsize::new(4096);
/// The SIGBUS disposition found before ours (`SIG_DFL`, `SIG_IGN` or a function), and whether
/// that function takes `siginfo`.
static PREVIOUS: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);

/// A private read-only mapping of the first `len` bytes of a file, registered with the handler.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    slot: &'static Slot,
    /// The slot's sequence number while we hold it.
    seq: usize,
}

impl Mapping {
    /// Maps `len` (> 0) bytes of `fd`, or `None` when mapping is not possible or not guarded (the
    /// caller then reads the file instead).
    pub(crate) fn new(fd: BorrowedFd<'_>, len: u64) -> Option<Mapping> {
        let len = usize::try_from(len).ok().filter(|&len| len > 0 && len <= isize::MAX as usize)?;
        if !guard_installed() {
            return None;
        }
        // SAFETY: a fresh mapping at an address the kernel chooses, so no existing memory is
        // affected; the arguments are valid (len > 0, fd open for reading). On failure nothing
        // was mapped.
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let ptr = NonNull::new(ptr.cast::<u8>())?;
        let page = PAGE.load(Ordering::Relaxed);
        match claim(ptr.as_ptr() as usize, len.next_multiple_of(page)) {
            Some((slot, seq)) => Some(Mapping { ptr, len, slot, seq }),
            None => {
                // SAFETY: unmaps exactly the range mapped above, which nothing has borrowed yet.
                unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
                None
            }
        }
    }

    /// The mapped bytes. They are the file's as long as it does not change; if it is truncated,
    /// they may turn to zeros (see [`Mapping::faulted`]).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is a live PROT_READ mapping owned by `self` and unmapped only
        // in `drop`, after every borrow of `self` has ended. Reads cannot fault fatally: a page
        // past the end of a truncated file is replaced with zeros by the handler. The bytes can
        // still change under the borrow (another process writing the file, or that zero-fill);
        // we only feed them to the hash, never trust them for control flow or memory safety,
        // and the caller discards the result when the file changed (the same contract as
        // memmap2's `Mmap` and b3sum's use of it).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Whether a read raised SIGBUS, so [`Mapping::bytes`] holds zeros where the file's content
    /// was: the file shrank after it was mapped, or a page of it could not be read.
    pub(crate) fn faulted(&self) -> bool {
        self.slot.zeroed.load(Ordering::Acquire)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        release(self.slot, self.seq);
        // SAFETY: unmaps exactly our own mapping (or the zero pages the handler put in its
        // place); `&mut self` guarantees no slice from `bytes` is still alive.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Takes a free slot for `start..start + len`; returns it with the sequence number we own.
fn claim(start: usize, len: usize) -> Option<(&'static Slot, usize)> {
    REGISTRY.iter().find_map(|slot| {
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq % 2 == 1 || slot.len.load(Ordering::Relaxed) != 0 {
            return None;
        }
        // Unchanged `seq` means nobody wrote the slot since we saw it free.
        slot.seq.compare_exchange(seq, seq + 1, Ordering::Relaxed, Ordering::Relaxed).ok()?;
        fence(Ordering::Release);
        slot.zeroed.store(false, Ordering::Relaxed);
        slot.start.store(start, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.seq.store(seq + 2, Ordering::Release);
        Some((slot, seq + 2))
    })
}

fn release(slot: &Slot, seq: usize) {
    slot.seq.store(seq + 1, Ordering::Relaxed);
    fence(Ordering::Release);
    slot.len.store(0, Ordering::Relaxed);
    slot.start.store(0, Ordering::Relaxed);
    slot.seq.store(seq + 2, Ordering::Release);
}

/// The registered mapping holding `addr`, as `(slot, start, len)`. Async-signal-safe.
fn owner_of(addr: usize) -> Option<(&'static Slot, usize, usize)> {
    for slot in &REGISTRY {
        // A writer on another thread finishes in a few instructions; the bound only matters if
        // the slot's writer is the interrupted thread itself, which cannot fault inside
        // claim/release, so there the slot is simply skipped.
        for _ in 0..1 << 16 {
            let seq = slot.seq.load(Ordering::Acquire);
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let start = slot.start.load(Ordering::Relaxed);
            let len = slot.len.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) != seq {
                continue;
            }
            if addr.wrapping_sub(start) < len {
                return Some((slot, start, len));
            }
            break;
        }
    }
    None
}

/// Installs the handler on first use; true while it is still the installed SIGBUS handler.
fn guard_installed() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page)
            && page.is_power_of_two()
        {
            PAGE.store(page, Ordering::Relaxed);
        }
        let Some(previous) = current_action() else { return };
        PREVIOUS.store(previous.sa_sigaction, Ordering::Relaxed);
        PREVIOUS_SIGINFO.store(previous.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
        // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags, SIG_DFL).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_sigbus as *const () as usize;
        // SA_ONSTACK: run on the thread's alternate stack when it has one, as Rust's own
        // handler does, so a fault near the stack's end can still be handled.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `action` is fully initialised and `on_sigbus` has the SA_SIGINFO signature;
        // the handler only reads statics that are initialised above, before this call.
        if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } == 0 {
            INSTALLED.store(true, Ordering::Release);
        }
    });
    INSTALLED.load(Ordering::Acquire)
        && current_action().is_some_and(|action| action.sa_sigaction == on_sigbus as *const () as usize)
}

fn current_action() -> Option<libc::sigaction> {
    // SAFETY: all-zero is a valid `sigaction`; with a null new action, sigaction(2) only writes
    // the current one into `current`.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) == 0).then_some(current)
    }
}

/// The SIGBUS handler. Runs in signal context: only atomics and async-signal-safe calls.
extern "C" fn on_sigbus(signal: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: errno is thread-local; we save it and put it back so the interrupted code never
    // sees our calls' errno.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; `si_addr` is the
    // faulting address for SIGBUS.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code > 0: raised by the kernel for a fault, not sent by a process (SI_USER, SI_TKILL...).
    if code > 0
        && let Some((slot, start, len)) = owner_of(addr)
    {
        // SAFETY: `start..start + len` is one of our registered read-only mappings, whose owner
        // reads it as opaque bytes; replacing all of it with zero pages (MAP_FIXED replaces a
        // range atomically, so other threads see the file's page or a zero page, never a hole)
        // lets the faulting read and any later read complete. Replacing the whole mapping never
        // splits it into two kernel mappings, so this cannot fail on the map-count limit.
        let zeros = unsafe {
            libc::mmap(
                start as *mut c_void,
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            slot.zeroed.store(true, Ordering::Release);
            // SAFETY: see the matching read above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
    }
    // Not ours: behave as if we were never installed.
    let previous = PREVIOUS.load(Ordering::Relaxed);
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        // SAFETY: sigaction and raise are async-signal-safe. With the default action restored,
        // a fault recurs when we return and kills the process as it would have without us; a
        // signal sent by a process is raised again (blocked until we return) unless it was
        // being ignored.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &action, std::ptr::null_mut());
            if code <= 0 && previous == libc::SIG_DFL {
                libc::raise(signal);
            }
        }
    } else if PREVIOUS_SIGINFO.load(Ordering::Relaxed) {
        // SAFETY: `previous` was installed as an SA_SIGINFO handler, so it has this signature,
        // and we pass it our own arguments unchanged.
        let handler: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) = unsafe { std::mem::transmute(previous) };
        handler(signal, info, context);
    } else {
        // SAFETY: `previous` was installed as a plain handler taking the signal number.
        let handler: extern "C" fn(c_int) = unsafe { std::mem::transmute(previous) };
        handler(signal);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_mapping_shows_the_file() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"hello, mapping").unwrap();
        let mapping = Mapping::new(file.as_fd(), 14).unwrap();
        assert_eq!(mapping.bytes(), b"hello, mapping");
        assert!(!mapping.faulted());
    }

    #[test]
    fn reading_past_the_end_of_a_truncated_file_gives_zeros_and_is_reported() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 20).unwrap();
        let mapping = Mapping::new(file.as_fd(), 1 << 20).unwrap();
        file.set_len(100).unwrap();
        // Without the handler this read raises SIGBUS and the test binary dies.
        let sum: u64 = mapping.bytes().iter().map(|&b| u64::from(b)).sum();
        assert_eq!(sum, 0);
        assert!(mapping.faulted());
    }

    #[test]
    fn slots_are_reused_after_release() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        for _ in 0..3 * SLOTS {
            let mapping = Mapping::new(file.as_fd(), 4096).unwrap();
            assert_eq!(mapping.bytes()[0], 0);
        }
    }

    /// Run in a child process by `a_sigbus_outside_our_mappings_still_kills`.
    #[test]
    fn foreign_sigbus_child() {
        if std::env::var_os("CUTOVER_FOREIGN_SIGBUS").is_none() {
            return;
        }
        let file = tempfile::tempfile().unwrap();
        file.set_len(1 << 16).unwrap();
        let _ours = Mapping::new(file.as_fd(), 1 << 16).unwrap();
        // SAFETY: a fresh unregistered mapping, deliberately read past the end of its file.
        unsafe {
            let ptr =
                libc::mmap(std::ptr::null_mut(), 1 << 16, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
            assert_ne!(ptr, libc::MAP_FAILED);
            file.set_len(0).unwrap();
            std::ptr::read_volatile(ptr.cast::<u8>().add(8192));
        }
        println!("survived");
    }

    #[test]
    fn a_sigbus_outside_our_mappings_still_kills() {
        use std::os::unix::process::ExitStatusExt;
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "scan::hash::mapped::tests::foreign_sigbus_child", "--nocapture", "--test-threads=1"])
            .env("CUTOVER_FOREIGN_SIGBUS", "1")
            .output()
            .unwrap();
        assert_eq!(output.status.signal(), Some(libc::SIGBUS), "{output:?}");
        assert!(!String::from_utf8_lossy(&output.stdout).contains("survived"), "{output:?}");
    }
}
