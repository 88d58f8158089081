//! `cutover man` and `cutover completions`: generated from the definitions that parse the
//! command line, judged by the tools that read them (groff, bash).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::support::{cutover, run_with_timeout};

const SUBCOMMANDS: [&str; 9] = ["scan", "diff", "plan", "apply", "bundle", "repair", "merge", "man", "completions"];

/// Every `--long` flag `cutover SUB --help` names.
fn flags_in_help(sub: &str) -> BTreeSet<String> {
    let help = cutover([sub, "--help"]).run().expect_code(0).stdout_text();
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(String::from)
        .collect()
}

#[test]
fn the_man_page_renders_and_names_every_subcommand_and_flag() {
    let page = cutover(["man"]).run().expect_code(0).stdout;
    assert!(page.starts_with(b".ie \\n(.g") || page.windows(4).any(|w| w == b".TH "), "not a roff page");
    let mut groff = Command::new("groff");
    // ASCII without overstriking, warnings on: what a person reads, as plain text.
    groff.args(["-man", "-Tascii", "-P-cbou", "-ww"]);
    let run = run_with_timeout(groff, page, Duration::from_secs(60));
    if run.status.code() == Some(127) || !run.status.success() && run.stderr.contains("not found") {
        panic!("groff is needed to check the man page: {}", run.stderr);
    }
    assert!(run.status.success(), "groff failed: {}", run.stderr);
    assert_eq!(run.stderr, "", "groff warns about the page");
    let text = String::from_utf8(run.stdout).unwrap();
    for sub in SUBCOMMANDS {
        assert!(text.contains(&format!("CUTOVER {}", sub.to_uppercase())), "no section for {sub}:\n{text}");
        for flag in flags_in_help(sub) {
            assert!(text.contains(&flag), "the man page does not name {flag} of {sub}");
        }
    }
}

#[test]
fn the_bash_completion_is_valid_and_completes_a_subcommand() {
    let script = cutover(["completions", "bash"]).run().expect_code(0).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cutover.bash");
    std::fs::write(&file, &script).unwrap();
    let mut check = Command::new("bash");
    check.arg("-n").arg(&file);
    let run = run_with_timeout(check, Vec::new(), Duration::from_secs(30));
    assert!(run.status.success(), "bash -n rejects the script: {}", run.stderr);

    let complete = |words: &str, cword: usize| {
        let mut bash = Command::new("bash");
        bash.arg("-c").arg(format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={cword}; COMP_LINE='{words}'; COMP_POINT=${{#COMP_LINE}}; \
             _cutover cutover \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ));
        let run = run_with_timeout(bash, Vec::new(), Duration::from_secs(30));
        assert!(run.status.success(), "completing `{words}` failed: {}", run.stderr);
        run.stdout_text().lines().map(String::from).collect::<Vec<_>>()
    };
    assert_eq!(complete("cutover rep", 1), ["repair"]);
    let flags = complete("cutover diff --fo", 2);
    assert!(flags.contains(&"--format".to_string()), "{flags:?}");
    let shells = complete("cutover completions ", 2);
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        assert!(shells.contains(&shell.to_string()), "{shell} not offered: {shells:?}");
    }
}

#[test]
fn every_shell_gets_a_script_that_names_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = cutover(["completions", shell]).run().expect_code(0).stdout_text();
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "the {shell} script does not know {sub}");
        }
    }
    let run = cutover(["completions", "tcsh"]).run().expect_code(2);
    assert!(run.stderr.contains("tcsh"), "{}", run.stderr);
}
