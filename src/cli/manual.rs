//! `cutover man` and `cutover completions SHELL`: the manual page and the completion scripts,
//! generated from the same clap definitions that parse the command line, so they cannot
//! drift from it.

use std::io::Write;

use anyhow::Result;
use clap_complete::Shell;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Writes one roff page: the command, then a section for each subcommand with its synopsis,
/// description and options (clap_mangen renders one command per page; a tool this size reads
/// better as one page, as rsync's does), then the version.
pub fn run_man(mut cli: clap::Command) -> Result<u8> {
    cli.build();
    let mut page = Vec::new();
    // Not `Man::render`: its SUBCOMMANDS section points to a page per subcommand
    // (cutover-scan(1)...), and here they are sections of this one.
    let top = clap_mangen::Man::new(cli.clone());
    top.render_title(&mut page)?;
    // No hyphenation: a flag broken across lines (`--ex-` `clude`) cannot be searched for.
    writeln!(page, ".nh")?;
    top.render_name_section(&mut page)?;
    top.render_synopsis_section(&mut page)?;
    top.render_description_section(&mut page)?;
    top.render_options_section(&mut page)?;
    for sub in cli.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        let man = clap_mangen::Man::new(sub.clone());
        let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_uppercase();
        writeln!(page, ".SH \"{name}\"")?;
        let mut parts = Vec::new();
        man.render_synopsis_section(&mut parts)?;
        man.render_description_section(&mut parts)?;
        man.render_options_section(&mut parts)?;
        // Inside the subcommand's section its own headings are subsections; the synopsis needs none.
        for line in String::from_utf8(parts)?.lines() {
            match line.strip_prefix(".SH ") {
                Some("SYNOPSIS") => {}
                Some(heading) => writeln!(page, ".SS {}", title_case(heading))?,
                None => writeln!(page, "{line}")?,
            }
        }
    }
    top.render_version_section(&mut page)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&page)?;
    out.flush()?;
    Ok(super::EXIT_SAME)
}

/// `OPTIONS` → `Options`.
fn title_case(heading: &str) -> String {
    let heading = heading.trim_matches('"').to_lowercase();
    let mut chars = heading.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

pub fn run_completions(args: CompletionsArgs, mut cli: clap::Command) -> Result<u8> {
    // Into memory first: the generator panics when a write fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "cutover", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(super::EXIT_SAME)
}
