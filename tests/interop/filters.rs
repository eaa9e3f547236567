//! Extra: `-c` finds same-size same-mtime edits; filters protect excluded
//! DEST files from `--delete`; rsync's filter/exclude argument forms;
//! `host::module` URLs.

use std::fs;

use crate::common::*;
use crate::support::{oracle, pull, tree, Module, Rsyncd, TestDir};

fn daemon() -> (TestDir, Rsyncd) {
    let src = TestDir::new("src");
    tree::TreeSpec::new()
        .file("a.txt", "a\n")
        .file("b.log", "server log\n")
        .file("-rf", "dash\n")
        .random_file("data/blob.bin", 200_000, 8)
        .file("data/c.txt", "c\n")
        .write(src.path());
    let d = Rsyncd::builder().add_module(Module::new("pub", src.path())).start();
    (src, d)
}

/// An in-place edit that keeps size and mtime is invisible to the quick
/// check; `-c` must find and fix it (without -c it must be left alone, as
/// rsync does).
#[test]
fn checksum_flag_finds_same_size_same_mtime_edit() {
    let (src, d) = daemon();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    sync(&url, dest.path(), &[]).ok();
    tree::mutate_in_place_keep_mtime(&src.join("data/blob.bin"), &[100_000], 50, 3);
    let out = sync(&url, dest.path(), &["-i"]);
    out.ok();
    assert_ne!(
        fs::read(dest.join("data/blob.bin")).unwrap(),
        fs::read(src.join("data/blob.bin")).unwrap(),
        "without -c the quick check should have skipped the file (rsync does)"
    );
    let out = sync(&url, dest.path(), &["-i", "-c"]);
    out.ok();
    assert!(out.stdout().contains(">fc"), "-c did not itemize a checksum change:\n{}", out.show());
    assert_eq!(
        fs::read(dest.join("data/blob.bin")).unwrap(),
        fs::read(src.join("data/blob.bin")).unwrap()
    );
    oracle::assert_clean(&url, dest.path());
}

/// `--exclude '*.log' --delete`: excluded names are neither fetched nor
/// deleted from DEST (rsync semantics); other extraneous files go.
#[test]
fn exclude_protects_dest_files_from_delete() {
    let (_src, d) = daemon();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    fs::write(dest.join("local.log"), "mine\n").unwrap();
    fs::write(dest.join("extra.txt"), "extra\n").unwrap();
    fs::create_dir(dest.join("data")).unwrap();
    fs::write(dest.join("data/x.log"), "mine too\n").unwrap();
    let out = sync(&url, dest.path(), &["-i", "--delete", "--exclude=*.log"]);
    out.ok();
    assert!(dest.join("local.log").exists(), "excluded file deleted:\n{}", out.show());
    assert!(dest.join("data/x.log").exists(), "excluded file deleted:\n{}", out.show());
    assert!(!dest.join("b.log").exists(), "excluded file fetched:\n{}", out.show());
    assert!(!dest.join("extra.txt").exists(), "extraneous file kept:\n{}", out.show());
    oracle::Oracle::new(&url, dest.path()).args(&["--exclude=*.log"]).assert_clean();
    // the same with a filter rule
    fs::write(dest.join("extra.txt"), "extra\n").unwrap();
    let out = sync(&url, dest.path(), &["--delete", "--filter=- *.log"]);
    out.ok();
    assert!(dest.join("local.log").exists() && !dest.join("extra.txt").exists());
}

/// rsync accepts option values that start with '-' as a separate argument:
/// `--filter '- *.log'`, `-f '- *.log'`, `--exclude '-rf'`.
#[test]
fn filter_values_starting_with_dash() {
    let (_src, d) = daemon();
    let url = d.url("pub");
    for args in [&["--filter", "- *.log"][..], &["-f", "- *.log"], &["--exclude", "*.log"]] {
        let dest = TestDir::new("dest");
        let out = rm(["sync"]).arg(args[0]).arg(args[1]).arg(&url).arg(dest.path()).run();
        out.ok();
        assert!(!dest.join("b.log").exists(), "{}", out.show());
        assert!(dest.join("a.txt").exists(), "{}", out.show());
    }
    let dest = TestDir::new("dest");
    let out = rm(["sync", "--exclude", "-rf"]).arg(&url).arg(dest.path()).run();
    out.ok();
    assert!(!dest.join("-rf").exists(), "{}", out.show());
    assert!(dest.join("a.txt").exists(), "{}", out.show());
}

/// `host::module/path` and `--port` (rsync's other daemon syntax), and a
/// sub-path of a module.
#[test]
fn double_colon_url_and_subpath() {
    let (src, d) = daemon();
    let dest = TestDir::new("dest");
    let out = rm(["sync", "--port"])
        .arg(d.port().to_string())
        .arg("127.0.0.1::pub/data/")
        .arg(dest.path())
        .run();
    out.ok();
    assert_eq!(fs::read(dest.join("c.txt")).unwrap(), b"c\n");
    assert!(!dest.join("a.txt").exists());
    let real = TestDir::new("real");
    pull(&format!("{}data/", d.url("pub")), real.path(), &[]);
    assert_eq!(
        snapshot(dest.path()).keys().collect::<Vec<_>>(),
        snapshot(real.path()).keys().collect::<Vec<_>>()
    );
    oracle::assert_clean(&format!("{}data/", d.url("pub")), dest.path());
    let _ = src;
}
