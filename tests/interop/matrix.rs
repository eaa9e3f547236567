//! 1. protocols 27..=32 × {plain, -z}: first sync, then an update with
//!    deletions; 2. each checksum choice and compress choice at protocol 32.

use std::fs;

use crate::common::*;
use crate::support::{oracle, Module, Rsyncd, TestDir};

/// First sync into an empty DEST then an update with `--delete`, each
/// followed by the full-strength oracle (nanosecond mtimes, -c, -H). One
/// daemon; one source tree per protocol (tree limited to what the protocol
/// can carry). EXTRA goes to every rmirror run, after `--no-safe-links`:
/// the nasty tree's absolute links (`links/abs`, `links/abs-root`) are part
/// of what must arrive byte-exact here (the default skips them, see
/// `safety::safety_safe_links_default_matches_rsync`).
fn first_then_update(proto: u32, extra: &[&str]) {
    let src = TestDir::new("src");
    matrix_tree(proto).write(src.path());
    let d = Rsyncd::builder()
        .add_module(Module::new("pub", src.path()).comment("matrix"))
        .start();
    let url = d.url("pub");
    let dest = TestDir::new("dest");
    let p = format!("--protocol={proto}");
    let mut args: Vec<&str> = vec![&p, "--no-safe-links"];
    args.extend_from_slice(extra);

    let out = sync(&url, dest.path(), &args);
    out.ok();
    oracle::assert_clean(&url, dest.path());
    assert_eq!(
        fs::read(dest.join("large.bin")).unwrap(),
        fs::read(src.join("large.bin")).unwrap()
    );

    mutate_source(src.path());
    settle_times(src.path(), proto);
    let mut args2 = args.clone();
    args2.push("--delete");
    let n_before = d.sessions().len();
    let out = sync(&url, dest.path(), &args2);
    out.ok();
    let update = d.sessions()[n_before].clone();
    oracle::assert_clean(&url, dest.path());
    check_update_spots(src.path(), dest.path());

    // The second session must have used the delta algorithm on large.bin:
    // the daemon sent far less than the file.
    assert!(
        update.sent < LARGE / 4,
        "update sent {} bytes for a 3 MiB file changed in 3 places (no delta?)",
        update.sent
    );

    // A third run changes nothing and transfers nothing.
    let before = snapshot(dest.path());
    let out = sync(&url, dest.path(), &args2);
    out.ok();
    assert_unchanged(&before, dest.path(), "no-op re-sync");
}

macro_rules! matrix {
    ($($name:ident: $proto:expr, [$($extra:expr),*];)*) => {$(
        #[test]
        fn $name() {
            first_then_update($proto, &[$($extra),*]);
        }
    )*};
}

matrix! {
    matrix_p27_plain: 27, [];
    matrix_p27_z: 27, ["-z"];
    matrix_p28_plain: 28, [];
    matrix_p28_z: 28, ["-z"];
    matrix_p29_plain: 29, [];
    matrix_p29_z: 29, ["-z"];
    matrix_p30_plain: 30, [];
    matrix_p30_z: 30, ["-z"];
    matrix_p31_plain: 31, [];
    matrix_p31_z: 31, ["-z"];
    matrix_p32_plain: 32, [];
    matrix_p32_z: 32, ["-z"];
    checksum_xxh128: 32, ["--checksum-choice=xxh128"];
    checksum_xxh3: 32, ["--checksum-choice=xxh3"];
    checksum_xxh64: 32, ["--checksum-choice=xxh64"];
    checksum_md5: 32, ["--checksum-choice=md5"];
    checksum_md4: 32, ["--checksum-choice=md4"];
    compress_zstd: 32, ["-z", "--compress-choice=zstd"];
    compress_zlibx: 32, ["-z", "--compress-choice=zlibx"];
    compress_zlib: 32, ["-z", "--compress-choice=zlib"];
    checksum_flag_c: 32, ["-c"];
}

/// Nanoseconds of PATH's mtime.
fn mtime_nsec(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).unwrap().mtime_nsec() as u32
}

/// Files whose content and whole-second mtime are current but whose
/// sub-second part is not (`g.txt`: its permissions too): with `-c` rsync
/// sets the exact time (generator.c, `maybe_ATTRS_ACCURATE_TIME`), without
/// `-c` it leaves the time alone (the quick check compares whole seconds).
/// rmirror must end where the real client ends, in both modes. (Seen as a
/// rare RECENT-file mtime left stale after a killed pass: the staging pull
/// uses `-c`.)
#[test]
fn subsecond_mtime_is_set_as_rsync_sets_it() {
    use std::os::unix::fs::PermissionsExt;
    const SECS: i64 = 1_700_000_000;
    const BODY: &[u8] = b"same content on both sides\n";
    let src = TestDir::new("src");
    for f in ["f.txt", "g.txt"] {
        fs::write(src.join(f), BODY).unwrap();
        fs::set_permissions(src.join(f), fs::Permissions::from_mode(0o644)).unwrap();
        crate::support::tree::set_mtime(&src.join(f), SECS, 123_456_789);
    }
    let d = Rsyncd::builder().add_module(Module::new("pub", src.path())).start();
    let url = d.url("pub");
    let dests = TestDir::new("dest");
    for (mode, flag) in [("c", Some("-c")), ("quick", None)] {
        let mut got = Vec::new();
        for who in ["rsync", "rmirror"] {
            let dest = dests.join(format!("{mode}-{who}"));
            fs::create_dir_all(&dest).unwrap();
            for (f, perm) in [("f.txt", 0o644), ("g.txt", 0o600)] {
                fs::write(dest.join(f), BODY).unwrap();
                fs::set_permissions(dest.join(f), fs::Permissions::from_mode(perm)).unwrap();
                crate::support::tree::set_mtime(&dest.join(f), SECS, 987_654_321);
            }
            if who == "rsync" {
                let mut c = crate::support::rsync_command();
                c.args(["-rtp", "--no-motd"]).args(flag).arg(&url).arg(crate::support::dir_arg(&dest));
                let o = c.output().expect("run rsync");
                assert!(o.status.success(), "rsync failed: {}", String::from_utf8_lossy(&o.stderr));
            } else {
                let mut args = vec!["-i"];
                args.extend(flag);
                let out = sync(&url, &dest, &args);
                out.ok();
                // rsync itemizes whole seconds: a sub-second fix alone is silent
                let files: Vec<String> = out.stdout().lines().filter(|l| l.starts_with(".f")).map(str::to_owned).collect();
                assert_eq!(files, [".f...p..... g.txt"], "{}", out.show());
            }
            let md = |f: &str| fs::symlink_metadata(dest.join(f)).unwrap();
            got.push((mtime_nsec(&dest.join("f.txt")), mtime_nsec(&dest.join("g.txt")), md("g.txt").permissions().mode() & 0o7777));
        }
        assert_eq!(got[1], got[0], "{mode}: rmirror (left) and rsync (right) differ: (f ns, g ns, g mode)");
        let want = if flag.is_some() { 123_456_789 } else { 987_654_321 };
        assert_eq!(got[0], (want, want, 0o644), "{mode}: the real rsync did not do what this test expects");
    }
}
