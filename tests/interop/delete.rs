//! 5. `--delete` skipped on a server I/O error (exit 23), `--max-delete`
//! (exit 25), `-n` changes nothing and itemizes, `compare` exit codes/JSON.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;
use crate::support::{oracle, pull, rsync_command, tree, Module, Rsyncd, TestDir};

fn small_tree() -> tree::TreeSpec {
    tree::TreeSpec::new()
        .file("a.txt", "a\n")
        .file("keep/b.txt", "b\n")
        .random_file("keep/c.bin", 70_000, 4)
        .symlink("ln", "a.txt")
        .dir("empty")
}

/// A module whose daemon process runs as `nobody`, with an unreadable
/// (mode 000) directory in it: the sender reports an I/O error in the file
/// list. rmirror must not delete anything (not even at the top level) and
/// exit 23; everything readable is still transferred.
#[test]
fn delete_skipped_on_server_io_error_exit_23() {
    let src = TestDir::new("src");
    let mut t = small_tree().file("secret/inside.txt", "hidden\n").dir("secret").mode(0o000);
    t.root_mode = Some(0o755);
    t.write(src.path());
    fs::set_permissions(src.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let d = Rsyncd::builder()
        .add_module(
            Module::new("pub", src.path())
                .param("uid", "nobody")
                .param("gid", "nogroup"),
        )
        .start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    fs::write(dest.join("extraneous.txt"), "must survive\n").unwrap();
    fs::create_dir(dest.join("extra-dir")).unwrap();
    fs::write(dest.join("extra-dir/f"), "must survive too\n").unwrap();
    fs::create_dir_all(dest.join("keep/old-sub")).unwrap();
    fs::write(dest.join("keep/old-sub/g"), "nested extraneous\n").unwrap();

    let out = sync(&url, dest.path(), &["-i", "--delete"]);
    out.expect_code(23);
    assert!(dest.join("extraneous.txt").is_file(), "deleted despite I/O error:\n{}", out.show());
    assert!(dest.join("extra-dir/f").is_file(), "deleted despite I/O error:\n{}", out.show());
    assert!(dest.join("keep/old-sub/g").is_file(), "deleted despite I/O error:\n{}", out.show());
    assert!(!out.stdout().contains("*deleting"), "{}", out.show());
    // the readable part arrived
    assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"a\n");
    assert_eq!(
        fs::read(dest.join("keep/c.bin")).unwrap(),
        fs::read(src.join("keep/c.bin")).unwrap()
    );
    // the server's words reach the user, and the reason for not deleting
    let err = out.stderr();
    assert!(
        err.contains("opendir \"secret\"") && err.contains("Permission denied"),
        "server error not relayed:\n{}",
        out.show()
    );
    assert!(err.contains("IO error encountered -- skipping file deletion"), "{}", out.show());
}

/// `--max-delete N` deletes at most N and exits 25; the real rsync deletes
/// the same number.
#[test]
fn max_delete_stops_after_n_exit_25() {
    let src = TestDir::new("src");
    small_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    let real = TestDir::new("real");
    for dir in [dest.path(), real.path()] {
        pull(&url, dir, &[]);
        for i in 0..5 {
            fs::write(dir.join(format!("x{i}")), "extra\n").unwrap();
        }
    }
    let count = |dir: &std::path::Path| {
        (0..5).filter(|i| dir.join(format!("x{i}")).exists()).count()
    };
    let out = sync(&url, dest.path(), &["-i", "--delete", "--max-delete=2"]);
    out.expect_code(25);
    let r = rsync_command()
        .args(["-rlptH", "--delete", "--max-delete=2", "--no-motd"])
        .arg(&url)
        .arg(crate::support::dir_arg(real.path()))
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(25), "real rsync: {r:?}");
    assert_eq!(count(real.path()), 3, "real rsync left a different number");
    assert_eq!(count(dest.path()), 3, "rmirror: expected exactly 2 of 5 deleted:\n{}", out.show());
    assert_eq!(out.stdout().matches("*deleting").count(), 2, "{}", out.show());
    assert!(out.stderr().contains("max-delete"), "no --max-delete message:\n{}", out.show());

    // --max-delete=0: nothing deleted, still 25 (rsync: warn, skip all)
    let out = sync(&url, dest.path(), &["--delete", "--max-delete=0"]);
    out.expect_code(25);
    assert_eq!(count(dest.path()), 3, "--max-delete=0 deleted something:\n{}", out.show());

    // without a limit the rest goes, exit 0, oracle clean
    sync(&url, dest.path(), &["--delete"]).ok();
    assert_eq!(count(dest.path()), 0);
    oracle::assert_clean(&url, dest.path());
}

/// `-n -i --delete`: DEST untouched (bit for bit, inodes included), the
/// itemized lines are the ones the real rsync prints for the same dry run.
#[test]
fn dry_run_changes_nothing_and_itemizes() {
    let src = TestDir::new("src");
    small_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    pull(&url, dest.path(), &[]);
    // server-side changes
    fs::write(src.join("new.txt"), "new\n").unwrap();
    tree::mutate_in_place(&src.join("keep/c.bin"), &[1000], 10, 1);
    fs::set_permissions(src.join("a.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::create_dir(src.join("newdir")).unwrap();
    fs::write(src.join("newdir/f"), "f\n").unwrap();
    settle_times(src.path(), 32);
    // local extras
    fs::write(dest.join("extra.txt"), "x\n").unwrap();
    fs::create_dir(dest.join("extra-dir")).unwrap();
    fs::write(dest.join("extra-dir/y"), "y\n").unwrap();
    let before = snapshot(dest.path());

    let out = sync(&url, dest.path(), &["-n", "-i", "--delete"]);
    out.ok();
    assert_unchanged(&before, dest.path(), "dry run");
    let got: BTreeSet<String> = out
        .stdout()
        .lines()
        .filter(|l| l.len() > 12 && !l.starts_with("Welcome"))
        .map(str::to_owned)
        .collect();
    let r = rsync_command()
        .args(["-n", "-i", "-rlptH", "--delete", "--no-motd"])
        .arg(&url)
        .arg(crate::support::dir_arg(dest.path()))
        .output()
        .unwrap();
    assert!(r.status.success());
    let want: BTreeSet<String> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    for must in [
        ">f+++++++++ new.txt",
        "cd+++++++++ newdir/",
        ">f+++++++++ newdir/f",
        "*deleting   extra.txt",
        "*deleting   extra-dir/",
    ] {
        assert!(got.contains(must), "missing {must:?} in -n -i output:\n{}", out.show());
    }
    // rsync also itemizes every entry inside a deleted directory; that part
    // is covered by `itemize_lists_contents_of_deleted_dir` (BUG), so drop
    // rsync's nested lines here.
    let want: BTreeSet<String> = want
        .into_iter()
        .filter(|l| !(l.starts_with("*deleting   extra-dir/") && l != "*deleting   extra-dir/"))
        .collect();
    assert_eq!(got, want, "rmirror -n -i vs rsync -n -i (as sets)\n{}", out.show());
    assert_unchanged(&before, dest.path(), "dry run");
}

/// `compare`: 0 when identical, 1 when not (with the itemized lines), DEST
/// never modified; `--json` parses with `identical` and `changes`.
#[test]
fn compare_exit_codes_and_json() {
    let src = TestDir::new("src");
    small_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    sync(&url, dest.path(), &[]).ok();
    oracle::assert_clean(&url, dest.path());

    let cmp = |json: bool| {
        let mut r = rm(["compare"]);
        if json {
            r = r.arg("--json");
        }
        r.arg(&url).arg(crate::support::dir_arg(dest.path())).run()
    };
    let out = cmp(false);
    out.expect_code(0);
    let out = cmp(true);
    out.expect_code(0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{}", out.show()));
    assert_eq!(v["identical"], serde_json::json!(true), "{v}");
    assert_eq!(v["changes"].as_array().map(|a| a.len()), Some(0), "{v}");

    // change DEST in three ways (keep the root mtime, so exactly these show)
    let root_t = tree::mtime(dest.path());
    fs::write(dest.join("keep/b.txt"), "B changed locally\n").unwrap();
    fs::remove_file(dest.join("a.txt")).unwrap();
    fs::write(dest.join("stray"), "stray\n").unwrap();
    tree::set_mtime(dest.path(), root_t.0, root_t.1 as u32);
    tree::set_mtime(&dest.join("keep"), 1_600_000_000, 0);
    let before = snapshot(dest.path());

    let out = cmp(false);
    out.expect_code(1);
    let so = out.stdout();
    for must in [">f+++++++++ a.txt", "*deleting   stray", "keep/b.txt"] {
        assert!(so.contains(must), "compare output lacks {must:?}:\n{}", out.show());
    }
    let out = cmp(true);
    out.expect_code(1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}):\n{}", out.show()));
    assert_eq!(v["identical"], serde_json::json!(false), "{v}");
    let changes = v["changes"].as_array().expect("changes array");
    let text = serde_json::to_string(changes).unwrap();
    for p in ["a.txt", "stray", "keep/b.txt"] {
        assert!(text.contains(p), "JSON changes lack {p}: {v}");
    }
    assert_unchanged(&before, dest.path(), "compare");

    // unknown module: an error code, neither 0 nor 1
    let out = rm(["compare"])
        .arg(format!("rsync://127.0.0.1:{}/nope/", d.port()))
        .arg(dest.path())
        .run();
    out.expect_code(5);
}

/// Extraneous directory with six files, `--delete --max-delete=2`: rsync
/// counts every deleted entry, deletes two files, keeps the directory and
/// exits 25. rmirror must not remove the whole directory.
#[test]
fn max_delete_counts_entries_inside_deleted_dir() {
    let src = TestDir::new("src");
    small_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    pull(&url, dest.path(), &[]);
    fs::create_dir(dest.join("extra-dir")).unwrap();
    for i in 0..6 {
        fs::write(dest.join(format!("extra-dir/f{i}")), "extra\n").unwrap();
    }
    let out = sync(&url, dest.path(), &["-i", "--delete", "--max-delete=2"]);
    let left = fs::read_dir(dest.join("extra-dir")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(
        (out.code, left),
        (Some(25), 4),
        "expected exit 25 and 4 of 6 files left (real rsync), got exit {:?}, {left} left:\n{}",
        out.code,
        out.show()
    );
}

/// rsync -i --delete prints a `*deleting` line for every entry of a deleted
/// directory tree (deepest first), not just for the directory.
#[test]
fn itemize_lists_contents_of_deleted_dir() {
    let src = TestDir::new("src");
    small_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    let real = TestDir::new("real");
    for dir in [dest.path(), real.path()] {
        pull(&url, dir, &[]);
        fs::create_dir_all(dir.join("extra-dir/sub")).unwrap();
        fs::write(dir.join("extra-dir/y"), "y\n").unwrap();
        fs::write(dir.join("extra-dir/sub/z"), "z\n").unwrap();
    }
    let out = sync(&url, dest.path(), &["-i", "--delete"]);
    out.ok();
    let r = rsync_command()
        .args(["-i", "-rlptH", "--delete", "--no-motd"])
        .arg(&url)
        .arg(crate::support::dir_arg(real.path()))
        .output()
        .unwrap();
    assert!(r.status.success());
    let dels = |s: &str| -> BTreeSet<String> {
        s.lines().filter(|l| l.starts_with("*deleting")).map(str::to_owned).collect()
    };
    assert_eq!(
        dels(&out.stdout()),
        dels(&String::from_utf8_lossy(&r.stdout)),
        "rmirror vs rsync *deleting lines\n{}",
        out.show()
    );
}
