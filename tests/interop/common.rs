//! Helpers shared by the interop tests: running the rmirror binary with a
//! hang guard, snapshots of a destination tree, tree transforms for old
//! protocols, and the standard "update with deletions" mutation.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::tree::{self, TreeSpec};

/// Hard limit for one rmirror run: a hang fails the test instead of CI.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What one rmirror run did.
#[derive(Debug)]
pub struct Out {
    /// Exit code; None if killed by a signal (incl. the timeout guard).
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub timed_out: bool,
    pub cmdline: String,
}

impl Out {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Human-readable description for assertion messages.
    pub fn show(&self) -> String {
        format!(
            "`{}` -> exit {:?}{} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            self.stdout(),
            self.stderr()
        )
    }
    /// Panics unless the exit code is WANT.
    #[track_caller]
    pub fn expect_code(&self, want: i32) -> &Self {
        assert!(!self.timed_out, "rmirror hung:\n{}", self.show());
        assert_eq!(self.code, Some(want), "unexpected exit code:\n{}", self.show());
        self
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }
}

/// Builder for one rmirror invocation.
pub struct Rm {
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

pub fn rm<I, S>(args: I) -> Rm
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Rm {
        args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
        env: Vec::new(),
        timeout: RUN_TIMEOUT,
    }
}

impl Rm {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    /// Runs the binary; stdin closed, sanitised env, killed after the timeout.
    pub fn run(self) -> Out {
        let bin = env!("CARGO_BIN_EXE_rmirror");
        let mut c = Command::new(bin);
        c.args(&self.args)
            .env("LC_ALL", "C")
            .env_remove("RSYNC_PASSWORD")
            .env_remove("RSYNC_PROXY")
            .env_remove("RSYNC_CONNECT_PROG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let cmdline = format!(
            "rmirror {}",
            self.args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let start = Instant::now();
        let mut child = c.spawn().expect("spawn rmirror");
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t1 = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let t2 = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        });
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait rmirror") {
                break s;
            }
            if start.elapsed() > self.timeout {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("reap rmirror");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();
        Out {
            code: status.code(),
            stdout: t1.join().unwrap(),
            stderr: t2.join().unwrap(),
            elapsed,
            timed_out,
            cmdline,
        }
    }
}

/// `rmirror sync EXTRA URL DEST/`.
pub fn sync(url: &str, dest: &Path, extra: &[&str]) -> Out {
    let mut r = rm(["sync"]);
    for e in extra {
        r = r.arg(e);
    }
    r.arg(url).arg(crate::support::dir_arg(dest)).run()
}

// ------------------------------------------------------------ snapshots

/// One entry of a [`snapshot`]: everything that a sync could change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
    /// File content (whole), or symlink target bytes.
    pub data: Vec<u8>,
}

/// Recursive snapshot of ROOT (root itself is key ""), not following
/// symlinks. Compares equal iff nothing observable changed (incl. inodes, so
/// a rewrite-in-place with identical bytes is also caught).
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Snap> {
    let mut out = BTreeMap::new();
    walk(root, Vec::new(), &mut out);
    out
}

fn walk(p: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, Snap>) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let ft = m.file_type();
    let (kind, data) = if ft.is_symlink() {
        ('l', fs::read_link(p).unwrap().as_os_str().as_bytes().to_vec())
    } else if ft.is_dir() {
        ('d', Vec::new())
    } else if ft.is_file() {
        ('f', fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
    } else {
        ('o', Vec::new())
    };
    out.insert(
        rel.clone(),
        Snap {
            kind,
            mode: m.mode(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ino: m.ino(),
            nlink: m.nlink(),
            data,
        },
    );
    if kind == 'd' {
        let mut names: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(n.as_bytes());
            walk(&p.join(&n), r, out);
        }
    }
}

/// Lists what differs between two snapshots (for assertion messages).
pub fn snap_diff(a: &BTreeMap<Vec<u8>, Snap>, b: &BTreeMap<Vec<u8>, Snap>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("removed {:?}", String::from_utf8_lossy(k))),
            Some(w) if w != v => d.push(format!(
                "changed {:?}: {:?}/{:o}/{}/{:?}/ino {} -> {:?}/{:o}/{}/{:?}/ino {}",
                String::from_utf8_lossy(k),
                v.kind,
                v.mode,
                v.size,
                v.mtime,
                v.ino,
                w.kind,
                w.mode,
                w.size,
                w.mtime,
                w.ino
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("added {:?}", String::from_utf8_lossy(k)));
        }
    }
    d
}

#[track_caller]
pub fn assert_unchanged(before: &BTreeMap<Vec<u8>, Snap>, dest: &Path, what: &str) {
    let after = snapshot(dest);
    let d = snap_diff(before, &after);
    assert!(d.is_empty(), "{what}: DEST changed:\n{}", d.join("\n"));
}

// --------------------------------------------------------- tree helpers

/// The nasty tree restricted to what protocol PROTO can carry: below 31 no
/// nanosecond mtimes (set to .0), below 30 no pre-1970 mtimes (made
/// positive). The real rsync has the same limits, so the full-strength
/// oracle (protocol 32, nanosecond compare) can still be used.
pub fn for_protocol(mut t: TreeSpec, proto: u32) -> TreeSpec {
    let fix = |m: &mut Option<(i64, u32)>| {
        if let Some((s, n)) = m {
            if proto < 31 {
                *n = 0;
            }
            if proto < 30 && *s < 0 {
                *s = -*s;
            }
        }
    };
    for e in &mut t.entries {
        fix(&mut e.mtime);
    }
    fix(&mut t.root_mtime);
    t
}

/// The tree every matrix test starts from: the nasty tree plus a large
/// file (3 MiB) that the update changes in the middle and at the tail.
pub const LARGE: u64 = 3 << 20;

pub fn matrix_tree(proto: u32) -> TreeSpec {
    let t = tree::nasty()
        .random_file("large.bin", LARGE, 77)
        .mtime(1_600_000_500, 0)
        .file("gone/dir/a.txt", "will be deleted with its directory\n")
        .file("gone/b.txt", "b\n")
        .file("to-dir", "file that becomes a directory\n")
        .dir("dir-to-file")
        .file("dir-to-file/x", "x\n")
        .file("file-to-link", "file that becomes a symlink\n")
        .symlink("link-to-file", "plain.txt")
        .symlink("link-to-dir", "deep")
        .file("dir-to-link/inner", "inner\n")
        .file("chmod-me", "mode change\n")
        .mode(0o644)
        .dir("chmod-dir")
        .mode(0o755)
        .file("shrink.bin", tree::random_bytes(50_000, 9))
        .file("grow.bin", tree::random_bytes(20_000, 10));
    for_protocol(t, proto)
}

/// Moves every mtime under ROOT (root included, symlinks not followed) that
/// lies in the last minute one hour back, and for protocols below 31 drops
/// the nanoseconds (they cannot travel). Without the shift, a DEST entry
/// that the client creates in the same second as the source changed would
/// match on whole seconds and — like the real rsync does — not be touched,
/// which makes the nanosecond oracle flaky.
pub fn settle_times(root: &Path, proto: u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (rel, snap) in snapshot(root) {
        let (s, n) = snap.mtime;
        let s2 = if s > now - 60 { s - 3600 } else { s };
        let n2 = if proto < 31 { 0 } else { n as u32 };
        if n as u32 != n2 || s2 != s {
            let p = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(OsStr::from_bytes(&rel))
            };
            tree::set_mtime(&p, s2, n2);
        }
    }
}

fn write_keep_parent(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap();
}

/// The "update with deletions" applied to the SOURCE tree: large file
/// changed in the middle and at the tail, files and a directory deleted,
/// files added (incl. a new hard link), file↔dir↔symlink changes, mode
/// changes, size changes. Directory mtimes change as a side effect (the
/// client must reproduce them).
pub fn mutate_source(src: &Path) {
    let large = src.join("large.bin");
    tree::mutate_in_place(&large, &[LARGE / 2, LARGE / 2 + 70_000, LARGE - 3000], 2048, 5);
    tree::mutate_in_place(&src.join("block.bin"), &[100], 10, 6);
    // deletions
    fs::remove_file(src.join("plain.txt")).unwrap();
    fs::remove_file(src.join("new\nline")).unwrap();
    fs::remove_file(src.join("hard/b")).unwrap(); // one member of a hard-link group
    tree::remove_any(&src.join("gone"));
    tree::remove_any(&src.join("nested-empty"));
    // additions
    fs::create_dir(src.join("added")).unwrap();
    fs::write(src.join("added/new.txt"), "new file\n").unwrap();
    tree::large_file(&src.join("added/new.bin"), 100_000, 11);
    fs::hard_link(src.join("hard2-x"), src.join("hard2-z")).unwrap();
    fs::write(src.join("new top file"), "top\n").unwrap();
    // type changes
    tree::to_dir(&src.join("to-dir"));
    tree::to_file(&src.join("dir-to-file"), b"was a directory\n");
    tree::to_symlink(&src.join("file-to-link"), "plain-gone");
    tree::to_file(&src.join("link-to-file"), b"was a symlink\n");
    tree::to_dir(&src.join("link-to-dir"));
    tree::to_symlink(&src.join("dir-to-link"), "deep/d00");
    // mode changes
    fs::set_permissions(src.join("chmod-me"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(src.join("modes/0755"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(src.join("chmod-dir"), fs::Permissions::from_mode(0o750)).unwrap();
    // size changes (different content, same old mtime+1)
    let t = tree::mtime(&src.join("shrink.bin"));
    write_keep_parent(&src.join("shrink.bin"), &tree::random_bytes(50_000, 9)[..30_000]);
    tree::set_mtime(&src.join("shrink.bin"), t.0 + 1, 0);
    let mut g = tree::random_bytes(20_000, 10);
    g.extend_from_slice(&tree::random_bytes(40_000, 12));
    write_keep_parent(&src.join("grow.bin"), &g);
    tree::set_mtime(&src.join("grow.bin"), t.0 + 2, 0);
}

/// Paths that must have been rewritten in DEST by the update (spot checks
/// beyond the oracle).
pub fn check_update_spots(src: &Path, dest: &Path) {
    assert!(!dest.join("plain.txt").exists(), "plain.txt not deleted");
    assert!(!dest.join("gone").exists(), "gone/ not deleted");
    assert!(dest.join("to-dir").is_dir());
    assert!(dest.join("dir-to-file").is_file());
    assert!(fs::symlink_metadata(dest.join("file-to-link")).unwrap().file_type().is_symlink());
    assert_eq!(
        fs::read(dest.join("large.bin")).unwrap(),
        fs::read(src.join("large.bin")).unwrap(),
        "large.bin content"
    );
    assert_eq!(
        fs::metadata(dest.join("hard2-z")).unwrap().ino(),
        fs::metadata(dest.join("hard2-x")).unwrap().ino(),
        "new hard link hard2-z is not linked to hard2-x"
    );
}
