//! 6. `ls`: module listing with comments; path listing with
//! mode/size/date/time/name lines, compared with the real client's.

use crate::common::*;
use crate::support::{rsync_command, tree, Module, Rsyncd, TestDir};

fn ls_daemon() -> (TestDir, Rsyncd) {
    let src = TestDir::new("src");
    tree::TreeSpec::new()
        .file("a.txt", "hello\n")
        .mode(0o640)
        .mtime(1_500_000_000, 0)
        .random_file("sub/big.bin", 1_234_567, 1)
        .mtime(1_600_000_123, 0)
        .file("sub/with space", "s\n")
        .mode(0o755)
        .dir("sub")
        .mtime(1_600_000_200, 0)
        .symlink("ln", "a.txt")
        .mtime(1_400_000_000, 0)
        .write(src.path());
    let d = Rsyncd::builder()
        .add_module(Module::new("pub", src.path()).comment("Public files"))
        .add_module(Module::new("other", src.path()).comment("Another one, with commas"))
        .add_module(Module::new("hidden", src.path()).comment("not listed").list(false))
        .start();
    (src, d)
}

/// The real client's listing (no MOTD is configured; note that
/// `--no-motd` would also hide rsync's module list).
fn real_ls(url: &str) -> String {
    let out = rsync_command().arg(url).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ls_module_listing_shows_comments() {
    let (_src, d) = ls_daemon();
    let out = rm(["ls"]).arg(d.root_url()).run();
    out.ok();
    let so = out.stdout();
    let lines: Vec<&str> = so.lines().collect();
    let find = |m: &str| lines.iter().find(|l| l.split_whitespace().next() == Some(m)).copied();
    let pubm = find("pub").unwrap_or_else(|| panic!("no `pub` line:\n{}", out.show()));
    assert!(pubm.ends_with("Public files"), "{pubm:?}");
    let other = find("other").unwrap_or_else(|| panic!("no `other` line:\n{}", out.show()));
    assert!(other.ends_with("Another one, with commas"), "{other:?}");
    assert!(find("hidden").is_none(), "unlisted module shown:\n{}", out.show());
    // exactly what the real client prints
    assert_eq!(so, real_ls(&d.root_url()), "rmirror ls vs rsync module listing");
}

#[test]
fn ls_path_listing_matches_rsync() {
    let (_src, d) = ls_daemon();
    for path in ["", "sub/"] {
        let url = format!("{}{}", d.url("pub"), path);
        let out = rm(["ls"]).arg(&url).run();
        out.ok();
        let ours: Vec<String> = out
            .stdout()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        let theirs: Vec<String> =
            real_ls(&url).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
        assert_eq!(ours.len(), theirs.len(), "{url}: rmirror {ours:#?}\nrsync {theirs:#?}");
        for (o, t) in ours.iter().zip(&theirs) {
            // rmirror may add ` -> target` to symlinks; the rest is identical
            assert!(
                o == t || (t.starts_with('l') && o.starts_with(&format!("{t} -> "))),
                "{url}: line differs\n rmirror: {o:?}\n   rsync: {t:?}"
            );
        }
    }
    // spot checks: mode, size with thousands separators, date, name
    let out = rm(["ls"]).arg(format!("{}sub/", d.url("pub"))).run();
    let so = out.stdout();
    assert!(
        so.lines().any(|l| l.starts_with("-rw-r--r--")
            && l.contains("1,234,567")
            && l.ends_with(" big.bin")
            && l.contains(&date_of(1_600_000_123))),
        "{}",
        out.show()
    );
    assert!(
        so.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with(" with space")),
        "{}",
        out.show()
    );
    let out = rm(["ls"]).arg(d.url("pub")).run();
    assert!(
        out.stdout().lines().any(|l| l.starts_with("-rw-r-----") && l.ends_with(" a.txt")),
        "{}",
        out.show()
    );
}

/// `YYYY/MM/DD HH:MM:SS` in local time, as rsync prints it.
fn date_of(secs: i64) -> String {
    let t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&t, &mut tm) };
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[test]
fn ls_unknown_module_exit_5() {
    let (_src, d) = ls_daemon();
    let out = rm(["ls"]).arg(format!("{}nope/", d.root_url())).run();
    out.expect_code(5);
    assert!(out.stderr().contains("Unknown module 'nope'"), "{}", out.show());
}
