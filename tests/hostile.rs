//! Hostile-server cases (safety-plan §4.3, H1–H38) against the rmirror
//! binary, served by the scripted daemon in `support/evil.rs`. Each case
//! checks the invariants of issue 6: I1 nothing outside DEST changed (a
//! sandbox with canaries next to DEST), I2 no torn or temp file under DEST,
//! I3 no panic / the right exit code / bounded memory (wait4 ru_maxrss),
//! and where it applies I4 a rerun against an honest server converges.
//!
//! The first tests prove the evil encoder does not drift: an honest script
//! makes rmirror produce a destination that the real rsync client (oracle)
//! finds identical to the real daemon serving the same tree, at protocols
//! 27, 29, 30, 31 and 32.
//!
//! Cases that expose a bug in rmirror are `#[ignore = "BUG: …"]` (see
//! tests/README.md, "Hostile, fault and load cases").

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::evil::{self, enc, Cfg, Csum, EFile, EvilServer, Field, Reply, Sandbox};
use support::{oracle, tree, Rsyncd, TestDir};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A tree that exercises every field the default `-rlptH` pull transmits.
fn selftest_files(variant: u64) -> Vec<EFile> {
    vec![
        EFile::dir(".").perms(0o755).mtime(1_600_000_000),
        EFile::file("a.txt", b"hello world\n").nsec(123_456_789),
        EFile::file("empty", b""),
        EFile::file("big.bin", tree::random_bytes(200_000 + variant as usize * 7, 7 + variant)).perms(0o600),
        EFile::file("block.bin", tree::random_bytes(70_000, 99)).mtime(1_650_000_000 + variant as i64),
        EFile::dir("d").perms(0o750),
        EFile::file("d/inner", format!("inner {variant}\n")).mtime(1_600_000_000 + variant as i64),
        EFile::dir("d/e"),
        EFile::file("d/e/deep", b"deep"),
        EFile::symlink("link", "a.txt"),
        EFile::symlink("d/dangling", "../nowhere"),
        EFile::file("hl1", b"hard link group\n").hl(1),
        EFile::file("hl2", b"hard link group\n").hl(1),
        EFile::file(tree::bpath(b"odd \xff name").as_os_str().as_encoded_bytes(), b"odd"),
        EFile::dir("zdir").mtime(1_500_000_000),
        EFile::file(format!("zdir/{}", "n".repeat(200)), b"long name"),
    ]
}

/// Put the tree's mtimes / modes in wire order (the evil list) and on disk.
fn serve_both(files: &[EFile]) -> (TestDir, Rsyncd) {
    let src = TestDir::new("evil-src");
    evil::write_tree(files, src.path());
    let d = Rsyncd::builder().module("m", src.path()).start();
    (src, d)
}

fn sync_p(url: &str, dest: &Path, protocol: i32, extra: &[&str]) -> evil::Run {
    let p = format!("--protocol={protocol}");
    let mut a = vec![p.as_str()];
    a.extend_from_slice(extra);
    evil::sync(url, dest, &a)
}

fn assert_oracle(url: &str, dest: &Path, protocol: i32) {
    let o = oracle::Oracle::new(url, dest).nanoseconds(protocol >= 31);
    o.assert_clean();
}

fn selftest(protocol: i32, cfg: Cfg, extra: &[&str]) {
    let v1 = selftest_files(0);
    let (_src, real) = serve_both(&v1);
    let srv = EvilServer::honest(cfg.clone(), v1.clone());
    let dest = TestDir::new("evil-dest");
    let r = sync_p(&srv.url("m"), dest.path(), protocol, extra);
    r.assert_code(&[0]);
    srv.wait_idle(Duration::from_secs(5));
    let log = srv.log();
    assert!(log.errors.is_empty(), "evil server errors: {:?}\n{}", log.errors, r.show());
    assert_eq!(log.done, 1, "goodbye not completed");
    assert_oracle(&real.url("m"), dest.path(), protocol);
    evil::assert_no_temps(dest.path());
    drop(srv);
    drop(real);
    // Second round: changed contents → requests with a basis (sum heads echoed).
    let v2 = selftest_files(1);
    let (_src2, real2) = serve_both(&v2);
    let srv2 = EvilServer::honest(cfg, v2);
    let r = sync_p(&srv2.url("m"), dest.path(), protocol, extra);
    r.assert_code(&[0]);
    srv2.wait_idle(Duration::from_secs(5));
    let log = srv2.log();
    assert!(log.errors.is_empty(), "evil server errors: {:?}\n{}", log.errors, r.show());
    assert!(log.requests.iter().any(|q| q.3[0] > 0), "no delta request was made: {:?}", log.requests);
    assert_oracle(&real2.url("m"), dest.path(), protocol);
    evil::assert_no_temps(dest.path());
}

#[test]
fn evil_selftest_proto32() {
    selftest(32, Cfg::new(32), &[]);
}
#[test]
fn evil_selftest_proto31_xxh128_tiny_frames() {
    selftest(31, Cfg::new(31).csum(Csum::Xxh128).frame_max(7).chunk(1000), &[]);
}
#[test]
fn evil_selftest_proto30() {
    selftest(30, Cfg::new(30), &[]);
}
#[test]
fn evil_selftest_proto29() {
    selftest(29, Cfg::new(29), &[]);
}
#[test]
fn evil_selftest_proto27() {
    selftest(27, Cfg::new(27), &[]);
}
#[test]
fn evil_selftest_proto32_zstd() {
    selftest(32, Cfg::new(32).csum(Csum::Xxh64), &["-z"]);
}
