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
//! Every line is fsynced before the write it announces. See docs/plan.md, "Resumable".

use std::collections::HashSet;

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
        let recorded = bytes.map(|b| Recorded::parse(&b));
        Ok(Journal {
            torn,
            state,
            id: id.to_string(),
            nonce,
            started: recorded.map(|r| r.started).unwrap_or_default(),
            temp_dirs: HashSet::new(),
            file: None,
        })
    }

    /// Whether an earlier run began writing operation `op` and did not see it verified.
    pub fn was_started(&self, op: usize) -> bool {
        self.started.contains(&op)
    }

    /// Records, durably, that operation `op` is about to write in place.
    pub fn start(&mut self, op: usize) -> Result<(), String> {
        if self.started.contains(&op) {
            return Ok(());
        }
        self.append(&format!("start {op}\n"))?;
        self.started.insert(op);
        Ok(())
    }

    /// Records that operation `op` verified: from now on the file is the user's again, and a
    /// later run must find it exactly as its plan expects before touching it.
    pub fn finish_op(&mut self, op: usize) -> Result<(), String> {
        if !self.started.remove(&op) {
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
}
