//! The correctness oracle: the REAL rsync client in dry-run itemize mode.
//!
//! Command: `rsync -anic --delete -H --no-motd --modify-window=-1 EXTRA URL/ DEST/`
//! (`LC_ALL=C`, stdin closed). An empty result means DEST is identical to
//! the module: same names, types, contents (`-c`: full checksums, so a
//! same-size same-mtime edit is caught), modes, mtimes to the NANOSECOND
//! (`--modify-window=-1`; opt out with [`Oracle::nanoseconds`]), symlink
//! targets and times, hard-link groups (`-H`), owners/groups (`-a`), and no
//! extra files (`--delete`). `--no-motd` keeps a module's MOTD out of the
//! result.
//!
//! Output lines look like (verified with rsync 3.5.0):
//! ```text
//! >fc........ a            content differs (same size + mtime; -c)
//! >fcs....... a            content and size differ
//! .f..t...... a            mtime differs (also nanoseconds-only)
//! .f...p..... a            permissions differ
//! .f....og... a            owner and group differ
//! .d..t...... ./           the root directory's mtime differs
//! .d..t...... d/           a directory's mtime differs
//! >f+++++++++ d/b          file missing in DEST
//! cd+++++++++ d/           directory missing (or a non-dir is in its place)
//! *deleting   extra        file only in DEST (dirs: `*deleting   e/`)
//! .L..t...... sl -> a      symlink mtime differs
//! cLc........ sl -> a      symlink target differs
//! hf          hl => a      hard link missing in DEST (separate inode)
//! ```
//! Names are escaped by rsync: with `LC_ALL=C` every non-printable or
//! non-ASCII byte shows as `\#ooo` (octal), e.g. a newline is `\#012`.

use std::path::Path;
use std::process::Output;

use super::{dir_arg, rsync_command};

/// Configurable oracle run; [`diff`] and [`assert_clean`] are shortcuts.
#[derive(Clone, Debug)]
pub struct Oracle {
    url: String,
    dest: std::path::PathBuf,
    password: Option<String>,
    extra: Vec<String>,
    nanoseconds: bool,
}

/// Result of one oracle run that did not necessarily succeed.
#[derive(Debug)]
pub struct OracleRun {
    pub status: std::process::ExitStatus,
    /// Itemized lines (stdout, split on '\n', empty lines dropped).
    pub lines: Vec<String>,
    pub stderr: String,
}

#[allow(dead_code)]
impl Oracle {
    pub fn new(url: &str, dest: &Path) -> Oracle {
        Oracle {
            url: url.to_owned(),
            dest: dest.to_path_buf(),
            password: None,
            extra: Vec::new(),
            nanoseconds: true,
        }
    }
    /// Sets RSYNC_PASSWORD for an auth module (put the user in the URL, see
    /// `Rsyncd::url_with_user`).
    pub fn password(mut self, pw: &str) -> Self {
        self.password = Some(pw.to_owned());
        self
    }
    /// Extra rsync arguments (e.g. `--exclude=...`, `--no-o`).
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }
    /// `true` (default): compare mtimes including nanoseconds
    /// (`--modify-window=-1`); `false`: whole seconds only (rsync's default).
    pub fn nanoseconds(mut self, yes: bool) -> Self {
        self.nanoseconds = yes;
        self
    }

    /// Runs the oracle and returns whatever happened.
    pub fn run(&self) -> OracleRun {
        let mut url = self.url.clone();
        if !url.ends_with('/') {
            url.push('/');
        }
        let mut cmd = rsync_command();
        cmd.args(["-anic", "--delete", "-H", "--no-motd"]);
        if self.nanoseconds {
            cmd.arg("--modify-window=-1");
        }
        cmd.args(&self.extra).arg(&url).arg(dir_arg(&self.dest));
        if let Some(pw) = &self.password {
            cmd.env("RSYNC_PASSWORD", pw);
        }
        let out: Output = cmd.output().expect("run rsync (oracle)");
        OracleRun {
            status: out.status,
            lines: String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the oracle; panics if rsync itself fails. Empty = identical.
    pub fn diff(&self) -> Vec<String> {
        let r = self.run();
        assert!(
            r.status.success(),
            "oracle rsync failed ({}) for {} vs {}\nstdout:\n{}\nstderr:\n{}",
            r.status,
            self.url,
            self.dest.display(),
            r.lines.join("\n"),
            r.stderr
        );
        r.lines
    }

    /// Panics listing the differences unless DEST matches the module.
    pub fn assert_clean(&self) {
        let lines = self.diff();
        assert!(
            lines.is_empty(),
            "oracle: {} differs from {} ({} lines):\n{}",
            self.dest.display(),
            self.url,
            lines.len(),
            lines.join("\n")
        );
    }
}

/// Itemized differences between URL and DEST (empty = identical).
pub fn diff(url: &str, dest: &Path, extra_args: &[&str]) -> Vec<String> {
    Oracle::new(url, dest).args(extra_args).diff()
}

/// Like [`diff`] for an auth module: the user goes in the URL, the
/// password into RSYNC_PASSWORD.
pub fn diff_auth(url: &str, dest: &Path, password: &str, extra_args: &[&str]) -> Vec<String> {
    Oracle::new(url, dest)
        .password(password)
        .args(extra_args)
        .diff()
}

/// Panics with the itemized lines unless DEST is identical to URL.
pub fn assert_clean(url: &str, dest: &Path) {
    Oracle::new(url, dest).assert_clean()
}
