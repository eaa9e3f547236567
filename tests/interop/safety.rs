//! 7. Safety smoke tests with the real server: symlinks planted in DEST,
//! stale temp files, escape sequences from the server.

use std::fs;
use std::os::unix::fs::symlink;

use crate::common::*;
use crate::support::{oracle, tree, Module, Rsyncd, TestDir};

fn daemon_with(t: tree::TreeSpec) -> (TestDir, Rsyncd) {
    let src = TestDir::new("src");
    t.write(src.path());
    let d = Rsyncd::builder().add_module(Module::new("pub", src.path())).start();
    (src, d)
}

/// DEST/sub is a symlink to a directory outside DEST, the server has a
/// directory `sub/` (with a file whose name also exists outside) and a file
/// `victim` that is a symlink to an outside file in DEST. Nothing outside
/// may change; rsync replaces the symlinks with a real directory / file.
#[test]
fn safety_symlink_in_dest_is_not_followed() {
    let (_src, d) = daemon_with(
        tree::TreeSpec::new()
            .file("sub/f1", "server f1\n")
            .file("sub/deeper/f2", "server f2\n")
            .file("victim", "server victim\n")
            .file("plain", "p\n"),
    );
    let url = d.url("pub");
    let outside = TestDir::new("outside");
    fs::write(outside.join("f1"), "outside f1, must stay\n").unwrap();
    fs::write(outside.join("victim-target"), "outside victim, must stay\n").unwrap();
    let outside_before = snapshot(outside.path());
    for delete in [false, true] {
        let dest = TestDir::new("dest");
        symlink(outside.path(), dest.join("sub")).unwrap();
        symlink(outside.join("victim-target"), dest.join("victim")).unwrap();
        let args: &[&str] = if delete { &["-i", "--delete"] } else { &["-i"] };
        let out = sync(&url, dest.path(), args);
        assert!(!out.timed_out, "{}", out.show());
        assert_unchanged(&outside_before, outside.path(), &format!("outside dir (delete={delete})"));
        println!("delete={delete}: exit {:?}", out.code);
        if out.code == Some(0) {
            let m = fs::symlink_metadata(dest.join("sub")).unwrap();
            assert!(m.is_dir(), "DEST/sub still a symlink after a successful run:\n{}", out.show());
            let m = fs::symlink_metadata(dest.join("victim")).unwrap();
            assert!(m.is_file(), "DEST/victim not replaced by a file:\n{}", out.show());
            assert_eq!(fs::read(dest.join("sub/deeper/f2")).unwrap(), b"server f2\n");
            oracle::assert_clean(&url, dest.path());
        } else {
            assert!(
                !out.stderr().is_empty(),
                "run failed without saying why:\n{}",
                out.show()
            );
        }
    }
}

/// Stale `.~rmirror.*` temp files (from a killed run) are removed by the
/// next ordinary sync (no --delete), at the top and in subdirectories.
#[test]
fn safety_stale_temp_files_removed_by_next_sync() {
    let (_src, d) = daemon_with(
        tree::TreeSpec::new()
            .file("foo", "foo\n")
            .file("sub/bar", "bar\n")
            .random_file("sub/big", 300_000, 5),
    );
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    sync(&url, dest.path(), &[]).ok();
    let stale = [".~rmirror.foo.123", "sub/.~rmirror.bar.4567", "sub/.~rmirror.big.99"];
    for s in stale {
        fs::write(dest.join(s), "half-written leftover").unwrap();
    }
    // also a leftover for a file that will be updated now
    fs::write(_src.join("sub/bar"), "bar v2\n").unwrap();
    settle_times(_src.path(), 32);
    let out = sync(&url, dest.path(), &[]);
    out.ok();
    for s in stale {
        assert!(!dest.join(s).exists(), "stale temp file {s} survived:\n{}", out.show());
    }
    oracle::assert_clean(&url, dest.path());
    // a run with nothing to transfer cleans up as well
    fs::write(dest.join(".~rmirror.foo.777"), "x").unwrap();
    sync(&url, dest.path(), &[]).ok();
    assert!(!dest.join(".~rmirror.foo.777").exists(), "stale temp survived a no-op run");
}

/// The MOTD and file names with ESC (and other control bytes) are printed
/// escaped (`\#033`), never raw, by `sync -i` and `ls`.
#[test]
fn safety_motd_and_names_escaped() {
    let src = TestDir::new("src");
    tree::TreeSpec::new()
        .file(tree::bpath(b"evil\x1b[2Jname"), "x\n")
        .file(tree::bpath(b"bell\x07\x9b1m"), "y\n")
        .write(src.path());
    let d = Rsyncd::builder()
        .motd("Welcome \x1b[31mRED\x1b[0m to the test\n")
        .add_module(Module::new("pub", src.path()).comment("c\x1b[5m"))
        .start();
    let dest = TestDir::new("dest");
    let runs = [
        sync(&d.url("pub"), dest.path(), &["-i"]),
        rm(["ls"]).arg(d.root_url()).run(),
        rm(["ls"]).arg(d.url("pub")).run(),
    ];
    for out in &runs {
        out.ok();
        for (name, s) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !s.iter().any(|&b| b == 0x1b || b == 0x07 || b == 0x9b),
                "raw control byte in {name}:\n{}",
                out.show()
            );
        }
    }
    let motd = runs[0].stdout();
    assert!(motd.contains("Welcome \\#033[31mRED\\#033[0m to the test"), "{}", runs[0].show());
    assert!(motd.contains(">f+++++++++ evil\\#033[2Jname"), "{}", runs[0].show());
    assert!(runs[2].stdout().contains("evil\\#033[2Jname"), "{}", runs[2].show());
    assert!(runs[1].stdout().contains("Welcome \\#033[31mRED"), "{}", runs[1].show());
    assert_eq!(fs::read(dest.join(tree::bpath(b"evil\x1b[2Jname"))).unwrap(), b"x\n");
}

/// L6 (safety plan §4.5): odd bytes in names. Control characters, non-UTF-8
/// bytes (C1 range too), leading dashes, spaces, glob characters, an NFC and
/// an NFD spelling of the same word side by side, trailing dots and spaces,
/// as files and as directories. DEST must hold exactly the upstream's names,
/// byte for byte, with their contents; `-i` output must carry no raw control
/// character (everything escaped); the oracle is clean and a rerun is a no-op.
#[test]
fn l06_odd_byte_names_exact_and_escaped() {
    let names: Vec<&[u8]> = vec![
        b"new\nline",
        b"cr\rname",
        b"tab\tname",
        b"esc\x1b[2Jclear",
        b"bell\x07",
        b"del\x7f",
        b"latin1-\xe9t\xe9",
        b"c1-\x80\x9b\x9f",
        b"high-\xff\xfe",
        b"-rf",
        b"--delete",
        b" two  spaces ",
        b"*?[]\\",
        b"caf\xc3\xa9",  // NFC
        b"cafe\xcc\x81", // NFD
        b"trailing.",
        b"trailing ",
        b"...",
    ];
    let mut t = tree::TreeSpec::new();
    for (i, n) in names.iter().enumerate() {
        t = t.file(tree::bpath(n), format!("file {i}\n"));
        let mut d = n.to_vec();
        d.extend_from_slice(b".d/inner");
        t = t.file(tree::bpath(&d), format!("inner {i}\n"));
    }
    let (src, d) = daemon_with(t);
    let dest = TestDir::new("dest");
    let out = sync(&d.url("pub"), dest.path(), &["-i"]);
    out.ok();
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let s = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what} is not UTF-8 ({e}): raw name bytes\n{}", out.show()));
        assert!(!s.chars().any(|c| c.is_control() && c != '\n'), "raw control character in {what}:\n{}", out.show());
    }
    let itemized = out.stdout().lines().filter(|l| l.starts_with(">f")).count();
    assert_eq!(itemized, 2 * names.len(), "one itemized line per file, no name split by a newline:\n{}", out.show());
    assert!(out.stdout().contains("esc\\#033[2Jclear"), "{}", out.show());
    let (a, b) = (snapshot(src.path()), snapshot(dest.path()));
    let strip = |m: &std::collections::BTreeMap<Vec<u8>, Snap>| -> Vec<(Vec<u8>, char, Vec<u8>)> {
        m.iter().map(|(k, v)| (k.clone(), v.kind, v.data.clone())).collect()
    };
    assert_eq!(strip(&a), strip(&b), "names or contents differ");
    assert!(b.contains_key(&b"caf\xc3\xa9"[..]) && b.contains_key(&b"cafe\xcc\x81"[..]), "NFC/NFD pair folded");
    oracle::assert_clean(&d.url("pub"), dest.path());
    let before = snapshot(dest.path());
    sync(&d.url("pub"), dest.path(), &["-i"]).ok();
    assert_unchanged(&before, dest.path(), "rerun");
}

/// `--safe-links` is the default (mirroring tools run rsync with it; rsync
/// 3.4+'s CVE-2024-12088 rules): against the real daemon, a default pull
/// leaves out exactly the links the real client leaves out with
/// `--safe-links`, warning once per link; `--no-safe-links` creates them all
/// verbatim, as the plain real client does.
#[test]
fn safety_safe_links_default_matches_rsync() {
    let unsafe_links: &[(&str, &str)] = &[
        ("abs", "/etc/passwd"),
        ("abs-root", "/"),
        ("up-out", "../x"),
        ("sub/up-up-out", "../../x"),
        ("mid-dotdot", "sub/../f"),
        ("sub/ends-dotdot", "sub2/.."),
        ("sub/a3", "a/a/a/../../../x"),
    ];
    let safe_links: &[(&str, &str)] = &[
        ("in-tree", "f"),
        ("dot", "./f"),
        ("dangling", "does-not-exist"),
        ("sub/up", "../f"),
        ("sub/sub2/up-up", "../../f"),
        ("sub/parent", ".."),
    ];
    let mut t = tree::TreeSpec::new().file("f", "f\n").file("sub/g", "g\n").file("sub/sub2/h", "h\n");
    for (n, target) in unsafe_links.iter().chain(safe_links) {
        t = t.symlink(n, target);
    }
    let (_src, d) = daemon_with(t);
    let url = d.url("pub");
    let warning = |n: &str, t: &str| format!("ignoring unsafe symlink \"{n}\" -> \"{t}\"");

    // Default: the real client with --safe-links finds nothing to do.
    let dest = TestDir::new("dest");
    fs::write(dest.join("extraneous"), "x\n").unwrap();
    let out = sync(&url, dest.path(), &["--delete"]);
    out.ok();
    oracle::Oracle::new(&url, dest.path()).args(&["--safe-links"]).assert_clean();
    for (n, target) in unsafe_links {
        assert!(fs::symlink_metadata(dest.join(n)).is_err(), "unsafe {n} -> {target} created:\n{}", out.show());
        assert_eq!(out.stderr().matches(&warning(n, target)).count(), 1, "one warning for {n}:\n{}", out.show());
    }
    for (n, target) in safe_links {
        assert_eq!(fs::read_link(dest.join(n)).unwrap().as_os_str(), *target, "{n}");
        assert!(!out.stderr().contains(&warning(n, target)), "safe {n} warned about:\n{}", out.show());
    }
    assert!(!dest.join("extraneous").exists(), "--delete did not run:\n{}", out.show());
    // The plain oracle sees exactly the skipped links as missing.
    let mut missing: Vec<String> = oracle::diff(&url, dest.path(), &[]);
    missing.sort();
    let mut want: Vec<String> = unsafe_links.iter().map(|(n, t)| format!("cL+++++++++ {n} -> {t}")).collect();
    want.sort();
    assert_eq!(missing, want);

    // --no-safe-links: every link verbatim; the plain oracle is clean.
    let dest2 = TestDir::new("dest2");
    let out = sync(&url, dest2.path(), &["--no-safe-links"]);
    out.ok();
    oracle::assert_clean(&url, dest2.path());
    for (n, target) in unsafe_links.iter().chain(safe_links) {
        assert_eq!(fs::read_link(dest2.join(n)).unwrap().as_os_str(), *target, "{n}");
    }
    assert!(!out.stderr().contains("unsafe symlink"), "{}", out.show());

    // A default run over that copy with --delete leaves the unsafe links it
    // skips in place (their names are listed), as the real client does.
    let before = snapshot(dest2.path());
    let out = sync(&url, dest2.path(), &["--delete"]);
    out.ok();
    assert_unchanged(&before, dest2.path(), "default pull over a --no-safe-links copy");
    oracle::Oracle::new(&url, dest2.path()).args(&["--safe-links"]).assert_clean();
    oracle::assert_clean(&url, dest2.path());
}
