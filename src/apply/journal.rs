//! apply's intent log, kept in the state directory (never in the target), one per plan and
//! target. It says two things a later run must know:
//!
//! - which operations had started writing in place and were not seen verified (`start N`,
//!   `done N`), so an in-place patch or a directory removal interrupted halfway is finished:
//!   chunks that are neither the old nor the new bytes are only accepted when the journal says
//!   this plan had started writing that file;
//! - where this tool may have left temporary files (`temps <nonce> <dir>`, written before the
//!   first temp of a run is made in that directory), so a later run removes exactly those: a
//!   temp name carries its run's nonce, and a file without a recorded nonce is never touched.
//!
//! - which operations ran in a batch whose writes were not yet known durable (`batch A B`
//!   before the batch's first write, `synced A B` after one `syncfs` of the target made them
//!   durable): after a crash every operation of such a batch is treated as interrupted, so a
//!   copy torn by a power loss (wrong size or hash at its final name) is redone, not refused.
//!
//! Every line is fsynced before the write it announces. See docs/plan.md, "Resumable".

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::state::{Appender, TreeState};

/// What a journal file says.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Recorded {
    /// Operations started and not done.
    pub started: HashSet<usize>,
    /// `(nonce, directory)`: a run with that nonce may have made temps in that directory.
    pub temps: Vec<(String, Vec<u8>)>,
    /// Operations of batches begun and not seen synced.
    pub unsynced: Ranges,
}

/// A set of operation indexes, as disjoint ranges (start -> end).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Ranges(BTreeMap<usize, usize>);

impl Ranges {
    pub fn insert(&mut self, range: Range<usize>) {
        let (mut start, mut end) = (range.start, range.end);
        if start >= end {
            return;
        }
        self.remove(start..end);
        // Merge with neighbours that touch it.
        if let Some((&s, &e)) = self.0.range(..start).next_back()
            && e == start
        {
            self.0.remove(&s);
            start = s;
        }
        if let Some(e) = self.0.remove(&end) {
            end = e;
        }
        self.0.insert(start, end);
    }

    pub fn remove(&mut self, range: Range<usize>) {
        if range.start >= range.end {
            return;
        }
        let overlapping: Vec<(usize, usize)> =
            self.0.range(..range.end).rev().take_while(|&(_, &e)| e > range.start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.0.remove(&s);
            if s < range.start {
                self.0.insert(s, range.start);
            }
            if e > range.end {
                self.0.insert(range.end, e);
            }
        }
    }

    pub fn contains(&self, op: usize) -> bool {
        self.0.range(..=op).next_back().is_some_and(|(_, &end)| op < end)
    }
}

/// `A B` as a range of operations.
fn range_of(text: &str) -> Option<Range<usize>> {
    let (a, b) = text.split_once(' ')?;
    Some(a.parse().ok()?..b.parse().ok()?)
}

impl Recorded {
    pub fn parse(bytes: &[u8]) -> Recorded {
        let mut recorded = Recorded::default();
        // A last line without its newline was torn by a crash; what it announced had not begun.
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(&[][..], |end| &bytes[..=end]);
        for line in String::from_utf8_lossy(whole).lines() {
            let number = |prefix| line.strip_prefix(prefix)?.parse::<usize>().ok();
            // `patch N` is what the first builds wrote for `start N`.
            if let Some(op) = number("start ").or_else(|| number("patch ")) {
                recorded.started.insert(op);
            } else if let Some(op) = number("done ") {
                recorded.started.remove(&op);
            } else if let Some(ops) = line.strip_prefix("batch ").and_then(range_of) {
                recorded.unsynced.insert(ops);
            } else if let Some(ops) = line.strip_prefix("synced ").and_then(range_of) {
                recorded.unsynced.remove(ops);
            } else if let Some((nonce, dir)) = line.strip_prefix("temps ").and_then(|rest| rest.split_once(' '))
                && let Ok(dir) = STANDARD.decode(dir)
            {
                recorded.temps.push((nonce.to_string(), dir));
            }
        }
        recorded
    }

    /// The nonces recorded for each directory, directories in order.
    pub fn temps_by_dir(&self) -> Vec<(&[u8], Vec<&str>)> {
        let mut pairs: Vec<(&[u8], &str)> = self.temps.iter().map(|(n, d)| (&d[..], &n[..])).collect();
        pairs.sort();
        pairs.dedup();
        pairs.chunk_by(|a, b| a.0 == b.0).map(|group| (group[0].0, group.iter().map(|p| p.1).collect())).collect()
    }
}

#[derive(Debug)]
pub(super) struct Journal<'a> {
    state: &'a TreeState,
    id: String,
    /// This run's nonce, in the name of every temp it makes.
    nonce: &'a str,
    started: HashSet<usize>,
    /// Operations of earlier runs' batches that were never synced: possibly torn.
    unsynced: Ranges,
    /// The batch this run has open, if any.
    batch: Option<Range<usize>>,
    /// Operations of the open batch that began writing in place and did not verify yet; their
    /// `start` line is needed only if the batch ends with them unfinished.
    pending: HashSet<usize>,
    /// Operations of the open batch whose postcondition holds now.
    settled: HashSet<usize>,
    /// Lines that can wait for the end of the open batch (`done N`).
    queued: String,
    /// Directories already announced for this run's temps.
    temp_dirs: HashSet<Vec<u8>>,
    file: Option<Appender>,
    /// The file ends in a torn line, which the next line must not continue.
    torn: bool,
}

impl<'a> Journal<'a> {
    /// The journal of plan `id`, with what an earlier run of it left there.
    pub fn open(state: &'a TreeState, id: &str, nonce: &'a str) -> Result<Self, String> {
        let bytes = state.read_journal(id).map_err(|e| e.to_string())?;
        let torn = bytes.as_ref().is_some_and(|b| b.last().is_some_and(|&last| last != b'\n'));
        let recorded = bytes.map(|b| Recorded::parse(&b)).unwrap_or_default();
        Ok(Journal {
            torn,
            state,
            id: id.to_string(),
            nonce,
            started: recorded.started,
            unsynced: recorded.unsynced,
            batch: None,
            pending: HashSet::new(),
            settled: HashSet::new(),
            queued: String::new(),
            temp_dirs: HashSet::new(),
            file: None,
        })
    }

    /// Whether an earlier run began writing operation `op` and did not see it verified, or ran
    /// it in a batch it did not see synced (so its writes may be torn).
    pub fn was_started(&self, op: usize) -> bool {
        self.started.contains(&op) || self.pending.contains(&op) || self.unsynced.contains(op)
    }

    /// Records, durably, that operations `ops` are about to run without syncing each: one line,
    /// with the `temps` lines for the directories in `dirs` not yet announced.
    pub fn begin_batch<'d>(&mut self, ops: Range<usize>, dirs: impl Iterator<Item = &'d [u8]>) -> Result<(), String> {
        let mut text = String::new();
        for dir in dirs {
            if self.temp_dirs.insert(dir.to_vec()) {
                text.push_str(&format!("temps {} {}\n", self.nonce, STANDARD.encode(dir)));
            }
        }
        text.push_str(&format!("batch {} {}\n", ops.start, ops.end));
        self.append(&text)?;
        self.batch = Some(ops);
        Ok(())
    }

    /// Ends the open batch once its writes are durable (`syncfs` succeeded): what is still
    /// unfinished in it is recorded as started, then the batch as synced. When the sync failed
    /// (`durable` false) the batch stays unsynced in the journal, so a later run treats all its
    /// operations as interrupted.
    pub fn end_batch(&mut self, durable: bool) -> Result<(), String> {
        let Some(ops) = self.batch.take() else { return Ok(()) };
        let pending = std::mem::take(&mut self.pending);
        let settled = std::mem::take(&mut self.settled);
        let queued = std::mem::take(&mut self.queued);
        if !durable {
            return Ok(());
        }
        let mut text = queued;
        for op in ops.clone() {
            let unfinished = (pending.contains(&op) || self.unsynced.contains(op)) && !settled.contains(&op);
            if unfinished && self.started.insert(op) {
                text.push_str(&format!("start {op}\n"));
            }
        }
        text.push_str(&format!("synced {} {}\n", ops.start, ops.end));
        self.append(&text)
    }

    /// Records, durably, that operation `op` is about to write in place (inside a batch: when
    /// the batch ends, if `op` did not verify by then).
    pub fn start(&mut self, op: usize) -> Result<(), String> {
        if self.started.contains(&op) {
            return Ok(());
        }
        if self.batch.as_ref().is_some_and(|ops| ops.contains(&op)) {
            self.pending.insert(op);
            return Ok(());
        }
        self.append(&format!("start {op}\n"))?;
        self.started.insert(op);
        Ok(())
    }

    /// Records that operation `op` verified: from now on the file is the user's again, and a
    /// later run must find it exactly as its plan expects before touching it.
    pub fn finish_op(&mut self, op: usize) -> Result<(), String> {
        let in_batch = self.batch.as_ref().is_some_and(|ops| ops.contains(&op));
        if in_batch {
            self.settled.insert(op);
            self.pending.remove(&op);
        }
        if !self.started.remove(&op) {
            return Ok(());
        }
        if in_batch {
            // Durable with the batch's end: until then a crash leaves it started, and the next
            // run finds its postcondition.
            self.queued.push_str(&format!("done {op}\n"));
            return Ok(());
        }
        self.append(&format!("done {op}\n"))
    }

    /// Records, durably and once per directory, that this run is about to make temporary files
    /// in `dir` (relative to the target root, empty for the root).
    pub fn will_make_temps_in(&mut self, dir: &[u8]) -> Result<(), String> {
        if self.temp_dirs.contains(dir) {
            return Ok(());
        }
        self.append(&format!("temps {} {}\n", self.nonce, STANDARD.encode(dir)))?;
        self.temp_dirs.insert(dir.to_vec());
        Ok(())
    }

    fn append(&mut self, line: &str) -> Result<(), String> {
        if self.file.is_none() {
            self.file = Some(self.state.append_journal(&self.id).map_err(|e| e.to_string())?);
        }
        let file = self.file.as_mut().ok_or("journal not open")?;
        let line = if std::mem::take(&mut self.torn) { format!("\n{line}") } else { line.to_string() };
        file.append_durably(line.as_bytes()).map_err(|e| e.to_string())
    }

    /// Retires the journal after a complete run: every temp this run made was renamed into
    /// place or removed, and every operation verified.
    pub fn finish(self) -> Result<(), String> {
        drop(self.file);
        self.state.remove_journal(&self.id).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_started_and_where_temps_may_be() {
        let text = b"start 3\nstart 5\ndone 3\npatch 9\ntemps 0123456789abcdef ZA==\ntemps 0123456789abcdef \n\
                     temps fedcba9876543210 ZA==\ntemps 0123456789abcdef ZA==\nstart 1";
        let recorded = Recorded::parse(text);
        assert_eq!(recorded.started, HashSet::from([5, 9]), "the torn last line is not read");
        let by_dir = recorded.temps_by_dir();
        assert_eq!(
            by_dir,
            [(&b""[..], vec!["0123456789abcdef"]), (&b"d"[..], vec!["0123456789abcdef", "fedcba9876543210"])]
        );
    }

    #[test]
    fn batches_begun_and_not_synced_are_unsynced() {
        let recorded = Recorded::parse(b"batch 0 10\nsynced 0 10\nbatch 10 20\nsynced 10 13\nbatch 30 40\nsynced 35");
        let unsynced: Vec<usize> = (0..50).filter(|&op| recorded.unsynced.contains(op)).collect();
        assert_eq!(unsynced, [13, 14, 15, 16, 17, 18, 19, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39]);
    }

    #[test]
    fn ranges_merge_and_split() {
        let mut ranges = Ranges::default();
        ranges.insert(5..10);
        ranges.insert(10..12);
        ranges.insert(0..3);
        ranges.remove(2..6);
        ranges.insert(20..25);
        ranges.remove(21..22);
        let members: Vec<usize> = (0..30).filter(|&op| ranges.contains(op)).collect();
        assert_eq!(members, [0, 1, 6, 7, 8, 9, 10, 11, 20, 22, 23, 24]);
        assert_eq!(ranges.0.len(), 4, "{ranges:?}");
    }
}
