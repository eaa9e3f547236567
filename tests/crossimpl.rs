//! L11 (safety plan): rmirror pulling from another implementation of the
//! rsync protocol. openrsync (protocol 27) is started as the sender over
//! rmirror's remote-shell transport, through a local stand-in for ssh that
//! runs the command on this machine; the result is checked by the usual
//! oracle, the real rsync client against the real rsync daemon serving the
//! same tree.
//!
//! openrsync is not packaged by Debian and must never be committed here, so
//! the test runs only on request, with a binary built outside the repository
//! (tests/README.md says how):
//!
//! ```sh
//! RMIRROR_OPENRSYNC=/path/to/openrsync cargo test --test crossimpl -- --ignored
//! ```
//!
//! gokrazy/rsync is not covered: it needs a Go toolchain, which this
//! machine cannot install.

mod support;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::evil::{run_rmirror, Run};
use support::{oracle, tree, Module, Rsyncd, TestDir};

/// The openrsync binary named by `RMIRROR_OPENRSYNC` (the test fails,
/// naming the variable, when it is unset or not executable: it only runs
/// on request).
fn openrsync() -> PathBuf {
    let p = std::env::var_os("RMIRROR_OPENRSYNC")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("set RMIRROR_OPENRSYNC to an openrsync binary built outside the repository"));
    let md = std::fs::metadata(&p).unwrap_or_else(|e| panic!("RMIRROR_OPENRSYNC={}: {e}", p.display()));
    assert!(md.is_file() && md.permissions().mode() & 0o111 != 0, "RMIRROR_OPENRSYNC={} is not executable", p.display());
    p
}

/// A remote shell for `rmirror -e`: called as `rsh HOST COMMAND`, it drops
/// the host and runs the command here with /bin/sh, as ssh would on HOST.
/// It also records each command line, so the test can show what ran.
fn write_rsh(dir: &Path) -> PathBuf {
    let rsh = dir.join("rsh");
    let log = dir.join("rsh.log");
    let script = format!(
        "#!/bin/sh\n# local stand-in for ssh: rsh HOST COMMAND...\nshift\nprintf '%s\\n' \"$*\" >> '{}'\nexec /bin/sh -c \"$*\"\n",
        log.display()
    );
    std::fs::write(&rsh, script).expect("write rsh");
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).expect("chmod rsh");
    rsh
}

struct Setup {
    _tmp: TestDir,
    src: PathBuf,
    rsh: PathBuf,
    openrsync: PathBuf,
    daemon: Rsyncd,
}

impl Setup {
    fn new(spec: tree::TreeSpec) -> Setup {
        let openrsync = openrsync();
        let tmp = TestDir::new("crossimpl");
        let src = tmp.join("src");
        std::fs::create_dir(&src).unwrap();
        spec.write(&src);
        let rsh = write_rsh(tmp.path());
        let daemon = Rsyncd::builder().add_module(Module::new("m", &src)).start();
        Setup { _tmp: tmp, src, rsh, openrsync, daemon }
    }

    /// `rmirror sync -e RSH --rsync-path OPENRSYNC --no-safe-links [extra] localhost:SRC/ DEST`.
    /// `--no-safe-links`: the nasty tree's absolute links must arrive too
    /// (and openrsync as a sender given `--safe-links` counts every dangling
    /// link as an error).
    fn pull(&self, dest: &Path, extra: &[&str]) -> Run {
        let mut a: Vec<OsString> = vec!["sync".into(), "-e".into(), self.rsh.clone().into(), "--no-safe-links".into()];
        a.push("--rsync-path".into());
        a.push(self.openrsync.clone().into());
        a.extend(extra.iter().map(OsString::from));
        let mut from = OsString::from("localhost:");
        from.push(&self.src);
        from.push("/");
        a.push(from);
        a.push(dest.as_os_str().to_owned());
        run_rmirror(&a, Duration::from_secs(120))
    }

    fn rsh_log(&self) -> String {
        std::fs::read_to_string(self.rsh.with_file_name("rsh.log")).unwrap_or_default()
    }

    /// The full-strength oracle (the tree has whole-second mtimes only).
    #[track_caller]
    fn assert_clean(&self, dest: &Path, run: &Run) {
        let diff = oracle::Oracle::new(&self.daemon.url("m"), dest).diff();
        assert!(
            diff.is_empty(),
            "DEST differs from the tree openrsync served:\n{}\n{}\nremote commands:\n{}",
            diff.join("\n"),
            run.show(),
            self.rsh_log()
        );
    }
}

/// The tree for the pulls: the harness's nasty tree restricted to what
/// protocol 27 can carry, exactly as for the real rsync at that protocol
/// (tests/interop's `for_protocol`): no sub-second mtimes (set to .0), and
/// no pre-1970 mtimes (made positive) — below protocol 30 an mtime is an
/// unsigned 32-bit number, so the real client too reads -1 as 2106.
fn tree_for_openrsync() -> tree::TreeSpec {
    let mut t = tree::nasty();
    let fix = |m: &mut Option<(i64, u32)>| {
        if let Some((s, n)) = m {
            *n = 0;
            *s = s.abs();
        }
    };
    for e in &mut t.entries {
        fix(&mut e.mtime);
    }
    fix(&mut t.root_mtime);
    t
}

/// A fresh pull, then an update with changed, new and deleted files (delta
/// transfers against the old files as basis, `--delete`), each oracle-clean.
#[test]
#[ignore = "needs openrsync built outside the repo; run: RMIRROR_OPENRSYNC=/path/openrsync cargo test --test crossimpl -- --ignored"]
fn l11_openrsync_sender_over_remote_shell() {
    let s = Setup::new(tree_for_openrsync());
    let dest_dir = TestDir::new("crossimpl-dest");
    let dest = dest_dir.join("d");

    let r = s.pull(&dest, &[]);
    r.assert_code(&[0]);
    assert!(s.rsh_log().contains(&s.openrsync.display().to_string()), "openrsync was not started:\n{}", r.show());
    s.assert_clean(&dest, &r);
    support::evil::assert_no_temps(&dest);

    // Update: edit two files in place (same size, so a delta against the old
    // copy), grow one, add one, delete one.
    tree::mutate_in_place(&s.src.join("big.bin"), &[0, 150_000, 299_000], 700, 11);
    tree::mutate_in_place(&s.src.join("block.bin"), &[4096], 64, 12);
    std::fs::write(s.src.join("plain.txt"), b"hello, and more\n").unwrap();
    std::fs::write(s.src.join("new-file"), b"new\n").unwrap();
    // Whole seconds: protocol 27 carries no more.
    tree::set_mtime(&s.src.join("plain.txt"), 1_700_000_100, 0);
    tree::set_mtime(&s.src.join("new-file"), 1_700_000_200, 0);
    std::fs::remove_file(s.src.join("with space.txt")).unwrap();
    tree::set_mtime(&s.src, 1_700_000_000, 0);
    let r = s.pull(&dest, &["--delete", "--stats"]);
    r.assert_code(&[0]);
    s.assert_clean(&dest, &r);
    support::evil::assert_no_temps(&dest);
    assert!(!dest.join("with space.txt").exists(), "--delete did not remove a deleted file:\n{}", r.show());

    // A no-change rerun transfers nothing and stays clean.
    let r = s.pull(&dest, &["-i"]);
    r.assert_code(&[0]);
    assert!(r.stdout.trim().is_empty(), "a no-change rerun itemized changes:\n{}", r.show());
    s.assert_clean(&dest, &r);
}

/// Options over the same transport: `-z` (zlib tokens at protocol 27) gives
/// an oracle-clean copy; `-c` gives the exit code the real rsync client gets
/// from the same openrsync (whose Linux build fails to checksum files as a
/// `-c` sender: both clients then report 23, "partial transfer").
#[test]
#[ignore = "needs openrsync built outside the repo; run: RMIRROR_OPENRSYNC=/path/openrsync cargo test --test crossimpl -- --ignored"]
fn l11_openrsync_sender_options() {
    let s = Setup::new(tree_for_openrsync());
    let dest_dir = TestDir::new("crossimpl-dest");

    let dz = dest_dir.join("z");
    let r = s.pull(&dz, &["-z"]);
    r.assert_code(&[0]);
    s.assert_clean(&dz, &r);

    let dc = dest_dir.join("c");
    let r = s.pull(&dc, &["-c"]);
    r.assert_sane();
    let mut from = OsString::from("localhost:");
    from.push(&s.src);
    from.push("/");
    let real = support::rsync_command()
        .args(["-rlptHc", "-e"])
        .arg(&s.rsh)
        .arg("--rsync-path")
        .arg(&s.openrsync)
        .arg(from)
        .arg(dest_dir.join("c-real"))
        .output()
        .expect("run rsync");
    assert_eq!(
        r.code,
        real.status.code(),
        "rmirror and the real rsync client disagree on -c from openrsync:\n{}\nrsync said:\n{}",
        r.show(),
        String::from_utf8_lossy(&real.stderr)
    );
    if r.code == Some(0) {
        s.assert_clean(&dc, &r);
    }
}
