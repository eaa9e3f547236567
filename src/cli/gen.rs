//! Generated documentation: `rmirror gen-man DIR` writes `rmirror.1` and one
//! `rmirror-<command>.1` per subcommand (clap_mangen); `rmirror completions
//! SHELL` prints a completion script (clap_complete).  Both come from the
//! same clap definitions as `--help`, so they never drift.  Hidden commands:
//! packagers run them at build time, e.g.
//!
//! ```text
//! rmirror gen-man /usr/share/man/man1
//! rmirror completions bash > /usr/share/bash-completion/completions/rmirror
//! ```

use std::path::Path;

use clap::CommandFactory;

use super::{Cli, CliError};
use crate::exit::ExitCode;

fn io_err(what: &Path, e: std::io::Error) -> CliError {
    CliError { msg: format!("cannot write {}: {e}", what.display()), code: ExitCode::FileIo }
}

/// Write the man pages into `dir` (created if missing); the names written.
pub fn gen_man(dir: &Path) -> Result<Vec<String>, CliError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    let cmd = Cli::command();
    let mut written = Vec::new();
    let mut page = |name: String, c: clap::Command| -> Result<(), CliError> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).title(name.to_uppercase()).render(&mut buf).map_err(|e| io_err(dir, e))?;
        let p = dir.join(format!("{name}.1"));
        std::fs::write(&p, buf).map_err(|e| io_err(&p, e))?;
        written.push(format!("{name}.1"));
        Ok(())
    };
    page("rmirror".into(), cmd.clone())?;
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let name = format!("rmirror-{}", sub.get_name());
        // a one-shot command: leaking the page names is fine (clap wants &'static str here)
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let c = sub.clone().name(leaked).bin_name(name.replace('-', " ")).version(env!("CARGO_PKG_VERSION"));
        page(name, c)?;
    }
    Ok(written)
}

/// Print the completion script for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "rmirror", &mut out);
}

/// `-h/--help` with the common options (the rest are `hide_short_help`),
/// `--help-all` with every one, for commands whose full list is longer than a
/// screen (`sync`, `compare`).
#[derive(clap::Args, Debug, Clone)]
pub struct HelpArgs {
    /// Print help (common options; --help-all for all).
    #[arg(short = 'h', long = "help", action = clap::ArgAction::HelpShort)]
    help: Option<bool>,
    /// Print help with every option.
    #[arg(long = "help-all", action = clap::ArgAction::HelpLong)]
    help_all: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_for_every_command() {
        let d = tempfile::tempdir().unwrap();
        let w = gen_man(d.path()).unwrap();
        for n in ["rmirror.1", "rmirror-sync.1", "rmirror-watch.1", "rmirror-run.1"] {
            assert!(w.iter().any(|x| x == n), "{n} not in {w:?}");
        }
        let page = std::fs::read_to_string(d.path().join("rmirror-sync.1")).unwrap();
        assert!(page.contains(".TH") && page.contains("delete"), "{page}");
        assert!(!w.iter().any(|x| x.contains("gen-man") || x.contains("completions")));
    }
}
