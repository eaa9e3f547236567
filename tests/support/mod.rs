//! Shared integration-test harness: a real rsync daemon, the real rsync
//! client as correctness oracle, and deterministic fixture trees.
//!
//! Include it from an integration test with `mod support;` (it uses only
//! std, `tempfile`, `libc`, and `fuser` for `casefs`). Everything talks to 127.0.0.1 only.
//!
//! ```ignore
//! mod support;
//! use support::{oracle, tree, Rsyncd, TestDir};
//!
//! #[test]
//! fn pulls_the_nasty_tree() {
//!     let src = TestDir::new("src");
//!     tree::nasty().write(src.path());
//!     let d = Rsyncd::builder().module("pub", src.path()).start();
//!     let dest = TestDir::new("dest");
//!     // ... run rmirror against d.url("pub") into dest.path() ...
//!     oracle::assert_clean(&d.url("pub"), dest.path());
//!     assert!(d.transfers("pub").contains(&"big.bin".to_string()));
//! }
//! ```
//!
//! * [`Rsyncd`] (`rsyncd.rs`): `Rsyncd::builder().module(name, path)` or
//!   `.add_module(Module::new(name, path).comment(..).auth(user, pw)
//!   .list(false).read_only(..).use_chroot(..).numeric_ids(..)
//!   .max_connections(n).timeout(s).refuse_options("..").param(k, v))`,
//!   `.motd(text)`, `.log_format(fmt)`, `.global(k, v)`, `.start()`.
//!   Accessors: `port()`, `pid()`, `url(m)`, `url_with_user(m, u)`,
//!   `root_url()`, `log()`, `sessions()`, `sent_bytes()`,
//!   `transfers(m)`, `transfer_log()`, `quiesce()`, `kill()`.
//! * [`oracle`]: `diff(url, dest, extra) -> Vec<String>`,
//!   `assert_clean(url, dest)`, `Oracle::new(url, dest).password(..)...`.
//! * [`tree`]: `TreeSpec`, `nasty()`, `cpan_like(n, seed)`, `large_file`,
//!   `mutate_in_place`, `replace_with`/type-change helpers, `set_mtime`.
//! * Here: [`TestDir`], [`free_port`], [`rsync_command`], [`pull`].

#![allow(dead_code)]

pub mod casefs;
pub mod evil;
pub mod faultproxy;
pub mod oracle;
pub mod rsyncd;
pub mod recent_producer;
pub mod tree;

#[allow(unused_imports)] // not every test binary uses both
pub use rsyncd::{Module, Rsyncd};

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A free TCP port on 127.0.0.1 (bind :0, read, drop). Racy by nature;
/// `Rsyncd::start` retries when it loses the race.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A temporary directory that is removed on drop even if the test left
/// read-only directories in it (permissions are restored first). Set
/// `RMIRROR_KEEP_TMP=1` to keep it for debugging (the path is printed).
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rmirror-{label}-"))
            .tempdir()
            .expect("create temp dir");
        TestDir { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if std::env::var_os("RMIRROR_KEEP_TMP").is_some() {
            eprintln!("RMIRROR_KEEP_TMP: keeping {}", dir.keep().display());
            return;
        }
        make_writable(dir.path());
        let _ = dir.close();
    }
}

/// Recursively adds u+rwx to directories (not following symlinks) so the
/// tree can be removed by a non-root user.
pub fn make_writable(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_writable(&e.path());
        }
    }
}

/// `rsync` with a sanitized environment: `LC_ALL=C` (stable `\#ooo`
/// escaping of non-ASCII names), no inherited `RSYNC_PASSWORD`,
/// `RSYNC_PROXY`, `RSYNC_CONNECT_PROG` or `RSYNC_SHELL` (nothing may leave
/// 127.0.0.1), stdin closed (never prompts).
pub fn rsync_command() -> Command {
    let mut c = Command::new("rsync");
    c.env("LC_ALL", "C")
        .env_remove("RSYNC_PASSWORD")
        .env_remove("RSYNC_PROXY")
        .env_remove("RSYNC_CONNECT_PROG")
        .env_remove("RSYNC_SHELL")
        .env_remove("RSYNC_OLD_ARGS")
        .env_remove("RSYNC_PROTECT_ARGS")
        .stdin(Stdio::null());
    c
}

/// Pulls URL into DEST with the REAL client: `rsync -aH --no-motd EXTRA URL DEST/`.
/// Panics with stderr on failure. Handy for seeding a destination.
pub fn pull(url: &str, dest: &Path, extra: &[&str]) -> Output {
    let out = rsync_command()
        .args(["-aH", "--no-motd"])
        .args(extra)
        .arg(url)
        .arg(dir_arg(dest))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "rsync -aH {extra:?} {url} {} failed: {}\nstdout:\n{}\nstderr:\n{}",
        dest.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// DEST as a command-line argument with exactly one trailing slash.
pub(crate) fn dir_arg(dest: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStrExt;
    let mut b = dest.as_os_str().as_bytes().to_vec();
    while b.len() > 1 && b.ends_with(b"/") {
        b.pop();
    }
    if b != b"/" {
        b.push(b'/');
    }
    OsStr::from_bytes(&b).to_owned()
}
