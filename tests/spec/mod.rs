//! One module per part of the promise cutover makes.

mod b3sum;
mod deep;
mod differences;
mod excludes;
mod html;
mod itemize;
mod manifests;
mod manual;
mod names;
mod oracle;
mod output;
pub(crate) mod properties;
mod ranges;
mod reading;
mod records;
mod run_state;
mod streaming;
mod trouble;
mod verdicts;
mod watching;
mod xattrs;
