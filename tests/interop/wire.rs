//! 4. Bytes on the wire: a 24 MiB file changed in a dozen places costs
//! rmirror about what it costs the real rsync (daemon log "sent N bytes").

use crate::common::*;
use crate::support::{oracle, pull, rsync_command, tree, Module, Rsyncd, TestDir};

const SIZE: u64 = 24 << 20;

fn offsets() -> Vec<u64> {
    // a dozen places: start, spread through the middle, the very tail
    let mut v: Vec<u64> = (0..11).map(|i| 1000 + i * (SIZE / 11)).collect();
    v.push(SIZE - 500);
    v
}

fn delta_bytes_vs_rsync(extra: &[&str]) -> (u64, u64) {
    let src = TestDir::new("src");
    tree::large_file(&src.join("huge.bin"), SIZE, 24);
    tree::set_mtime(&src.join("huge.bin"), 1_600_000_000, 0);
    // A root mtime from "now" would race with the seeding pulls (same
    // second, only nanoseconds differ, rsync leaves it): make it old.
    tree::set_mtime(src.path(), 1_600_000_000, 5);
    let d = Rsyncd::builder().add_module(Module::new("pub", src.path())).start();
    let url = d.url("pub");
    let dest_rm = TestDir::new("dest-rm");
    let dest_rs = TestDir::new("dest-rs");
    pull(&url, dest_rm.path(), &[]);
    pull(&url, dest_rs.path(), &[]);
    tree::mutate_in_place(&src.join("huge.bin"), &offsets(), 100, 99);

    let n0 = d.sessions().len();
    let out = sync(&url, dest_rm.path(), extra);
    out.ok();
    let s = d.sessions();
    assert_eq!(s.len(), n0 + 1, "{s:?}");
    let rm_sent = s[n0].sent;

    let real = rsync_command()
        .args(["-a", "--no-motd"])
        .args(extra)
        .arg(&url)
        .arg(crate::support::dir_arg(dest_rs.path()))
        .output()
        .unwrap();
    assert!(real.status.success(), "{real:?}");
    let s = d.sessions();
    assert_eq!(s.len(), n0 + 2, "{s:?}");
    let rs_sent = s[n0 + 1].sent;

    oracle::assert_clean(&url, dest_rm.path());
    oracle::assert_clean(&url, dest_rs.path());
    println!("bytes sent by the daemon {extra:?}: rmirror {rm_sent}, rsync {rs_sent}");
    assert!(
        (rm_sent as f64) <= rs_sent as f64 * 1.10 && (rm_sent as f64) >= rs_sent as f64 * 0.90,
        "daemon sent rmirror {rm_sent} bytes but rsync {rs_sent} bytes (not within 10%)"
    );
    // and it really was a delta transfer
    assert!(rm_sent < SIZE / 20, "rmirror got {rm_sent} bytes for a 24 MiB file: no delta?");
    (rm_sent, rs_sent)
}

#[test]
fn wire_bytes_24mib_dozen_changes_within_10pct_of_rsync() {
    delta_bytes_vs_rsync(&[]);
}

#[test]
fn wire_bytes_24mib_dozen_changes_compressed_within_10pct_of_rsync() {
    delta_bytes_vs_rsync(&["-z"]);
}
