//! Operator experience (issue 7) against a real rsync daemon:
//!
//! * `progress_*` – the engine's progress events carry the totals of what the
//!   generator requested (regular files, their list sizes), grow in step with
//!   the transfer, and end at exactly the tree's numbers.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rmirror::engine::monitor::{Monitor, Progress};
use rmirror::engine::pull::{pull, PullSpec};
use support::{oracle, tree, Rsyncd, TestDir};

/// Records every progress event and every finished file.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Progress>>,
    done: Mutex<Vec<(Vec<u8>, u64)>>,
}

impl Monitor for Recorder {
    fn progress(&self, p: &Progress) {
        self.events.lock().unwrap().push(*p);
    }
    fn file_done(&self, name: &[u8], bytes: u64) {
        self.done.lock().unwrap().push((name.to_vec(), bytes));
    }
}

/// A tree with regular files of many sizes (one empty, one of 1.5 MiB),
/// symlinks, a hard-link pair and nested directories.
fn progress_tree() -> tree::TreeSpec {
    tree::TreeSpec::new()
        .file("a.txt", "hello\n")
        .file("empty", "")
        .random_file("sub/big.bin", 1_536_000, 1)
        .random_file("sub/deeper/mid.bin", 70_000, 2)
        .random_file("sub/deeper/same.bin", 5_000, 3)
        .random_file("other/x.dat", 123_457, 4)
        .hardlink("other/x-link.dat", "other/x.dat")
        .symlink("sub/link", "../a.txt")
        .dir("emptydir")
        .random_file("changed.bin", 40_000, 5)
}

fn run_pull(spec: &PullSpec) -> (Vec<Progress>, Vec<(Vec<u8>, u64)>) {
    let rec = Arc::new(Recorder::default());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let rep = rt.block_on(pull(spec, rec.clone())).expect("pull");
    assert_eq!(rep.exit_code().code(), 0, "pull exit");
    let ev = rec.events.lock().unwrap().clone();
    let done = rec.done.lock().unwrap().clone();
    (ev, done)
}

/// Events are consistent snapshots, in order: totals and done counts never go
/// back, done never passes the totals, and the last event is complete.
fn check_events(ev: &[Progress], files: u64, bytes: u64) {
    assert!(!ev.is_empty(), "no progress events");
    for w in ev.windows(2) {
        let (a, b) = (w[0], w[1]);
        assert!(b.files_total >= a.files_total && b.bytes_total >= a.bytes_total, "totals went back: {a:?} -> {b:?}");
        assert!(b.files_done >= a.files_done && b.bytes_done >= a.bytes_done, "done went back: {a:?} -> {b:?}");
        assert!(b.bytes_received >= a.bytes_received);
        assert!(!a.totals_final || b.totals_final, "totals_final was withdrawn");
        if a.totals_final {
            assert_eq!((a.files_total, a.bytes_total), (b.files_total, b.bytes_total), "totals grew after totals_final");
        }
    }
    for p in ev {
        assert!(p.files_done <= p.files_total && p.bytes_done <= p.bytes_total, "done beyond total: {p:?}");
    }
    let last = ev.last().unwrap();
    assert_eq!(
        *last,
        Progress { files_total: files, bytes_total: bytes, files_done: files, bytes_done: bytes, bytes_received: bytes, totals_final: true },
        "the last event"
    );
}

fn size_of(root: &Path, rel: &str) -> u64 {
    std::fs::metadata(root.join(rel)).unwrap().len()
}

#[test]
fn progress_totals_match_the_tree_with_and_without_inc_recursion() {
    let src = TestDir::new("prog-src");
    let spec = progress_tree();
    spec.write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    for inc in [true, false] {
        let dest = TestDir::new("prog-dest");
        // DEST already has same.bin up to date (not requested) and an older,
        // different changed.bin (requested: its new size counts).
        std::fs::create_dir_all(dest.join("sub/deeper")).unwrap();
        std::fs::copy(src.join("sub/deeper/same.bin"), dest.join("sub/deeper/same.bin")).unwrap();
        let (m, n) = tree::mtime(&src.join("sub/deeper/same.bin"));
        tree::set_mtime(&dest.join("sub/deeper/same.bin"), m, n);
        std::fs::write(dest.join("changed.bin"), vec![7u8; 1000]).unwrap();

        // Expected from the tree as built: every regular file but the one
        // already there, the hard-link pair once.
        let wanted = ["a.txt", "empty", "sub/big.bin", "sub/deeper/mid.bin", "other/x.dat", "changed.bin"];
        let bytes: u64 = wanted.iter().map(|f| size_of(src.path(), f)).sum();
        assert_eq!(bytes, spec.total_size() - 5_000, "the fixture itself");

        let mut ps = PullSpec::new(rmirror::remote::parse(&d.url("pub")).unwrap(), dest.path());
        ps.inc_recurse = inc;
        // slow the big file down (server side) so bytes of a file in flight are reported
        ps.bwlimit = Some(4000);
        let (ev, done) = run_pull(&ps);
        oracle::assert_clean(&d.url("pub"), dest.path());
        check_events(&ev, wanted.len() as u64, bytes);

        // file_done agrees with the totals, name by name
        let got: HashMap<String, u64> = done.iter().map(|(n, b)| (String::from_utf8_lossy(n).into_owned(), *b)).collect();
        assert_eq!(got.len(), 6, "inc={inc}: {got:?}");
        for f in wanted {
            assert!(
                got.get(f) == Some(&size_of(src.path(), f)) || (f == "other/x.dat" && got.get("other/x-link.dat") == Some(&123_457)),
                "inc={inc}: {f} in {got:?}"
            );
        }
        // The big file was seen part-way: an event with bytes_done inside a file.
        let ends: Vec<u64> = ev.iter().map(|p| p.bytes_done).collect();
        let inside = ev.windows(2).any(|w| w[1].files_done == w[0].files_done && w[1].bytes_done > w[0].bytes_done);
        assert!(inside, "inc={inc}: no in-flight progress in {ends:?}");
        // The totals were known (final) before the last file ended.
        let first_final = ev.iter().position(|p| p.totals_final).unwrap();
        assert!(ev[first_final].files_done < wanted.len() as u64 || first_final + 1 == ev.len(), "inc={inc}");
    }
}

#[test]
fn progress_nothing_to_fetch_and_dry_run_report_no_files() {
    let src = TestDir::new("prog2-src");
    progress_tree().write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let dest = TestDir::new("prog2-dest");
    // a dry run requests nothing
    let mut ps = PullSpec::new(rmirror::remote::parse(&d.url("pub")).unwrap(), dest.path());
    ps.dry_run = true;
    let (ev, _) = run_pull(&ps);
    assert!(ev.iter().all(|p| p.files_total == 0 && p.bytes_total == 0), "{ev:?}");
    // a real pull, then a second one that finds everything up to date
    ps.dry_run = false;
    let (ev, _) = run_pull(&ps);
    assert_eq!(ev.last().map(|p| p.files_total), Some(7), "every regular file, the hard-link pair once");
    let (ev, done) = run_pull(&ps);
    assert!(done.is_empty());
    assert!(ev.iter().all(|p| p.files_total == 0), "{ev:?}");
    assert!(ev.last().is_some_and(|p| p.totals_final), "totals_final is still reported: {ev:?}");
}
