//! Self-tests for tests/support: prove the harness works AND can fail.
//! Uses only the real rsync daemon and the real rsync client; does not
//! touch the rmirror crate.

mod support;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::tree::{self, bpath};
use support::{oracle, pull, rsync_command, Module, Rsyncd, TestDir};

/// Source tree + daemon serving it as module "pub".
fn nasty_daemon() -> (TestDir, Rsyncd) {
    let src = TestDir::new("src");
    tree::nasty().write(src.path());
    let d = Rsyncd::builder()
        .add_module(Module::new("pub", src.path()).comment("nasty tree"))
        .start();
    (src, d)
}

/// Restores DEST to the module (checksumming, so same-size/same-mtime
/// edits are repaired too) and checks the oracle agrees.
fn restore(d: &Rsyncd, dest: &Path) {
    // -@-1: without it the real client ignores nanosecond-only differences
    // (e.g. on a directory) and would not repair them.
    pull(
        &d.url("pub"),
        dest,
        &["-c", "--delete", "--modify-window=-1"],
    );
    oracle::assert_clean(&d.url("pub"), dest);
}

/// Runs MUTATE on DEST, restores the mtime of every directory listed in
/// KEEP_DIR_TIMES (so only the intended change shows), returns the oracle.
fn diff_after(
    d: &Rsyncd,
    dest: &Path,
    keep_dir_times: &[&str],
    mutate: impl FnOnce(&Path),
) -> Vec<String> {
    let saved: Vec<_> = keep_dir_times
        .iter()
        .map(|rel| {
            let p = dest.join(rel);
            let t = tree::mtime(&p);
            (p, t)
        })
        .collect();
    mutate(dest);
    for (p, (s, n)) in saved {
        tree::set_mtime(&p, s, n);
    }
    let lines = oracle::diff(&d.url("pub"), dest, &[]);
    restore(d, dest);
    lines
}

#[test]
fn nasty_tree_pulled_by_real_client_is_clean() {
    let (_src, d) = nasty_daemon();
    let dest = TestDir::new("dest");
    pull(&d.url("pub"), dest.path(), &[]);
    oracle::assert_clean(&d.url("pub"), dest.path());

    // spot-check the tree really has the nasty cases
    let p = dest.path();
    assert!(p.join("new\nline").is_file());
    assert!(p.join(bpath(b"bad-\xff\xfe-bytes")).is_file());
    assert_eq!(
        fs::read_link(p.join("links/abs")).unwrap(),
        Path::new("/nonexistent/rmirror/absolute/target")
    );
    assert_eq!(
        tree::mtime(&p.join("times/nsec")),
        (1_700_000_000, 123_456_789)
    );
    assert_eq!(
        tree::mtime(&p.join("times/1968-nsec")),
        (-31_536_001, 500_000_000)
    );
    assert_eq!(
        tree::mtime(&p.join("times/2100")),
        (4_102_444_800, 123_000_000)
    );
    assert_eq!(
        tree::mtime(&p.join("times/link-nsec")),
        (1_111_111_111, 111_111_111)
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |r: &str| fs::symlink_metadata(p.join(r)).unwrap().ino();
    assert_eq!(ino("hard/a"), ino("hard/sub/c"));
    assert_ne!(ino("hard/a"), ino("hard2-x"));
    let mode = |r: &str| {
        fs::symlink_metadata(p.join(r))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(mode("modes/0000"), 0);
    }
    assert_eq!(mode("modes/dir-0555"), 0o555);
    assert_eq!(mode("modes/sticky"), 0o1755);
    let mut deep = p.join("deep");
    for i in 0..tree::NASTY_DEPTH {
        deep.push(format!("d{i:02}"));
    }
    assert_eq!(fs::read(deep.join("leaf.txt")).unwrap(), b"bottom\n");
}

#[test]
fn oracle_reports_every_change_kind() {
    let (_src, d) = nasty_daemon();
    let dest = TestDir::new("dest");
    pull(&d.url("pub"), dest.path(), &[]);
    oracle::assert_clean(&d.url("pub"), dest.path());
    let dp = dest.path();

    // content change with identical size AND mtime: only -c can see it
    let before = fs::metadata(dp.join("big.bin")).unwrap();
    let lines = diff_after(&d, dp, &[], |p| {
        tree::mutate_in_place_keep_mtime(&p.join("big.bin"), &[150_000, 299_990], 10, 7)
    });
    let after_restore = fs::metadata(dp.join("big.bin")).unwrap();
    assert_eq!(before.len(), after_restore.len());
    assert_eq!(lines, [">fc........ big.bin"]);

    let lines = diff_after(&d, dp, &["."], |p| {
        fs::remove_file(p.join("plain.txt")).unwrap()
    });
    assert_eq!(lines, [">f+++++++++ plain.txt"]);

    let lines = diff_after(&d, dp, &["."], |p| {
        fs::write(p.join("extra file"), "x").unwrap()
    });
    assert_eq!(lines, ["*deleting   extra file"]);

    let lines = diff_after(&d, dp, &["."], |p| {
        fs::create_dir_all(p.join("extra-dir/sub")).unwrap();
        fs::write(p.join("extra-dir/sub/f"), "x").unwrap();
    });
    assert_eq!(
        lines,
        [
            "*deleting   extra-dir/sub/f",
            "*deleting   extra-dir/sub/",
            "*deleting   extra-dir/"
        ]
    );

    let lines = diff_after(&d, dp, &[], |p| {
        fs::set_permissions(p.join("modes/0644"), fs::Permissions::from_mode(0o600)).unwrap()
    });
    assert_eq!(lines, [".f...p..... modes/0644"]);

    // a whole-second mtime change, and a nanoseconds-only one
    let lines = diff_after(&d, dp, &[], |p| {
        tree::set_mtime(&p.join("plain.txt"), 1_600_000_001, 0)
    });
    assert_eq!(lines, [".f..t...... plain.txt"]);
    let lines = diff_after(&d, dp, &[], |p| {
        tree::set_mtime(&p.join("times/nsec"), 1_700_000_000, 123_456_788)
    });
    assert_eq!(lines, [".f..t...... times/nsec"]);
    // ... which rsync's default (seconds-only) comparison would miss:
    tree::set_mtime(&dp.join("times/nsec"), 1_700_000_000, 1);
    let lines = oracle::Oracle::new(&d.url("pub"), dp)
        .nanoseconds(false)
        .diff();
    assert!(lines.is_empty(), "{lines:?}");
    restore(&d, dp);

    // directory mtimes (only the time differs)
    let lines = diff_after(&d, dp, &[], |p| tree::set_mtime(&p.join("empty-dir"), 1, 0));
    assert_eq!(lines, [".d..t...... empty-dir/"]);
    let lines = diff_after(&d, dp, &[], |p| tree::set_mtime(p, 1, 0));
    assert_eq!(lines, [".d..t...... ./"]);
    let lines = diff_after(&d, dp, &[], |p| {
        tree::set_mtime(&p.join("times/dir-nsec"), 1_234_567_890, 0)
    });
    assert_eq!(lines, [".d..t...... times/dir-nsec/"]);

    // symlinks: target and time
    let lines = diff_after(&d, dp, &["links"], |p| {
        tree::to_symlink(&p.join("links/rel"), "plain.txt")
    });
    assert_eq!(lines, ["cLc.t...... links/rel -> target.txt"]);
    let lines = diff_after(&d, dp, &[], |p| {
        tree::set_mtime(&p.join("links/dangling"), 5, 0)
    });
    assert_eq!(lines, [".L..t...... links/dangling -> does-not-exist"]);

    // hard link group broken: same content and metadata, separate inode
    let lines = diff_after(&d, dp, &["."], |p| {
        fs::remove_file(p.join("hard2-y")).unwrap();
        fs::copy(p.join("hard2-x"), p.join("hard2-y")).unwrap();
        let (s, n) = tree::mtime(&p.join("hard2-x"));
        tree::set_mtime(&p.join("hard2-y"), s, n);
    });
    assert_eq!(lines, ["hf          hard2-y => hard2-x"]);

    // type changes
    let lines = diff_after(&d, dp, &["."], |p| tree::to_dir(&p.join("one-byte")));
    assert!(
        lines.contains(&">f+++++++++ one-byte".to_string()),
        "{lines:?}"
    );
    let lines = diff_after(&d, dp, &["."], |p| {
        tree::to_file(&p.join("empty-dir"), b"was a dir")
    });
    assert_eq!(lines, ["cd+++++++++ empty-dir/"]);
    let lines = diff_after(&d, dp, &["links"], |p| {
        tree::to_file(&p.join("links/rel"), b"was a link")
    });
    assert_eq!(lines, ["cL+++++++++ links/rel -> target.txt"]);

    // owner/group (only root can chown)
    if unsafe { libc::geteuid() } == 0 {
        let lines = diff_after(&d, dp, &[], |p| {
            std::os::unix::fs::lchown(p.join("plain.txt"), Some(1000), Some(1000)).unwrap()
        });
        assert_eq!(lines, [".f....og... plain.txt"]);
    }

    // names are escaped \#ooo (LC_ALL=C)
    let lines = diff_after(&d, dp, &[], |p| {
        tree::mutate_in_place_keep_mtime(&p.join(bpath(b"bad-\xff\xfe-bytes")), &[0], 1, 1)
    });
    assert_eq!(lines, [">fc........ bad-\\#377\\#376-bytes"]);
    let lines = diff_after(&d, dp, &[], |p| {
        tree::mutate_in_place_keep_mtime(&p.join("new\nline"), &[0], 1, 1)
    });
    assert_eq!(lines, [">fc........ new\\#012line"]);
}

#[test]
fn oracle_refuses_missing_or_foreign_dest() {
    let (_src, d) = nasty_daemon();
    let empty = TestDir::new("empty");
    let lines = oracle::diff(&d.url("pub"), empty.path(), &[]);
    assert!(
        lines.len() > 50,
        "an empty dest must differ in every entry: {lines:?}"
    );
    let r = std::panic::catch_unwind(|| oracle::assert_clean(&d.url("pub"), empty.path()));
    assert!(r.is_err());
}

#[test]
fn auth_module_right_and_wrong_password() {
    let src = TestDir::new("src");
    tree::TreeSpec::new()
        .file("secret.txt", "for alice only\n")
        .write(src.path());
    let d = Rsyncd::builder()
        .add_module(
            Module::new("priv", src.path())
                .auth("alice", "s3cret pass")
                .list(false),
        )
        .start();
    let url = d.url_with_user("priv", "alice");
    let dest = TestDir::new("dest");

    let ok = rsync_command()
        .args(["-a", "--no-motd"])
        .arg(&url)
        .arg(dest.path())
        .env("RSYNC_PASSWORD", "s3cret pass")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        fs::read(dest.join("secret.txt")).unwrap(),
        b"for alice only\n"
    );
    assert!(oracle::diff_auth(&url, dest.path(), "s3cret pass", &[]).is_empty());

    let bad_dest = TestDir::new("bad");
    let bad = rsync_command()
        .args(["-a", "--no-motd"])
        .arg(&url)
        .arg(bad_dest.path())
        .env("RSYNC_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(5),
        "auth failure is exit 5: {}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("auth failed"));
    assert!(!bad_dest.join("secret.txt").exists());

    // the oracle without a password fails loudly instead of reporting "clean"
    let r = oracle::Oracle::new(&url, dest.path())
        .password("wrong")
        .run();
    assert!(!r.status.success());
    assert!(
        d.log().contains("auth failed on module priv"),
        "{}",
        d.log()
    );
}

#[test]
fn motd_and_module_listing() {
    let a = TestDir::new("a");
    let d = Rsyncd::builder()
        .motd("Welcome to the rmirror test daemon\nsecond motd line\n")
        .add_module(Module::new("pub", a.path()).comment("Public stuff"))
        .add_module(Module::new("hidden", a.path()).list(false))
        .start();
    let out = rsync_command().arg(d.root_url()).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Welcome to the rmirror test daemon\nsecond motd line\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("pub") && l.ends_with("Public stuff")),
        "{text}"
    );
    assert!(!text.contains("hidden"), "{text}");
}

#[test]
fn sent_bytes_and_transfer_log() {
    let src = TestDir::new("src");
    let spec = tree::TreeSpec::new()
        .random_file("big.bin", 1_000_000, 3)
        .file("small.txt", "small\n")
        .file("dir with space/f", "f\n");
    spec.write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let dest = TestDir::new("dest");

    pull(&d.url("pub"), dest.path(), &[]);
    let s = d.sessions();
    assert_eq!(s.len(), 1, "{s:?}\n{}", d.log());
    assert_eq!(s[0].module.as_deref(), Some("pub"));
    assert_eq!(s[0].total_size, spec.total_size());
    assert!(
        s[0].sent > 1_000_000 && s[0].sent < 1_100_000,
        "random data, no compression: {s:?}"
    );
    let mut names = d.transfers("pub");
    names.sort();
    assert_eq!(names, ["big.bin", "dir with space/f", "small.txt"]);

    // no-op pull: little traffic, nothing sent
    pull(&d.url("pub"), dest.path(), &[]);
    let sent = d.sent_bytes();
    assert_eq!(sent.len(), 2);
    assert!(sent[1] < 2_000, "no-op pull sent {} bytes", sent[1]);
    assert_eq!(d.transfers("pub").len(), 3);

    // change 2 x 100 bytes of the big file: only it is sent, as a delta
    tree::mutate_in_place(&src.join("big.bin"), &[500_000, 999_950], 100, 9);
    pull(&d.url("pub"), dest.path(), &[]);
    oracle::assert_clean(&d.url("pub"), dest.path());
    let log = d.transfer_log();
    let last_pid = d.sessions()[2].pid;
    let last: Vec<_> = log.iter().filter(|t| t.pid == last_pid).collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (last[0].op.as_str(), last[0].name.as_str(), last[0].length),
        ("send", "big.bin", 1_000_000)
    );
    let sent = d.sent_bytes();
    assert!(
        sent[2] < 100_000,
        "delta transfer should be small, sent {}",
        sent[2]
    );
}

#[test]
fn drop_kills_daemon_and_session_children() {
    let a = TestDir::new("a");
    let d = Rsyncd::builder().module("pub", a.path()).start();
    let pid = d.pid();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // an idle connection makes the daemon fork a session child
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    let mut greeting = [0u8; 9];
    conn.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"@RSYNCD: ");
    let deadline = Instant::now() + Duration::from_secs(5);
    let session = loop {
        if let Some(c) = child_pids(pid).first() {
            break *c;
        }
        assert!(Instant::now() < deadline, "no session child appeared");
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(d);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} survived drop"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{session}")).exists() && !is_zombie(session) {
        assert!(
            Instant::now() < deadline,
            "session child {session} survived drop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn parallel_daemons_get_distinct_ports() {
    let a = TestDir::new("a");
    let path = a.path().to_path_buf();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || Rsyncd::builder().module("pub", path).start())
        })
        .collect();
    let daemons: Vec<Rsyncd> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut ports: Vec<u16> = daemons.iter().map(|d| d.port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 6);
    for d in &daemons {
        assert!(support::rsync_command()
            .arg(d.root_url())
            .output()
            .unwrap()
            .status
            .success());
    }
}

#[test]
fn startup_failure_panics_with_log() {
    let a = TestDir::new("a");
    let r = std::panic::catch_unwind(|| {
        Rsyncd::builder()
            .global("pid file", "/nonexistent-dir/rsyncd.pid")
            .module("pub", a.path())
            .start()
    });
    let msg = match r {
        Ok(_) => panic!("daemon with an impossible pid file started"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        msg.contains("--- log ---") && msg.contains("rsyncd.conf"),
        "{msg}"
    );
}

#[test]
fn module_options_render_and_work() {
    let src = TestDir::new("src");
    tree::TreeSpec::new().file("f", "x").write(src.path());
    let d = Rsyncd::builder()
        .add_module(
            Module::new("opts", src.path())
                .numeric_ids(true)
                .max_connections(2)
                .timeout(30)
                .refuse_options("compress")
                .param("dont compress", "*.gz"),
        )
        .start();
    for needle in [
        "numeric ids = yes",
        "max connections = 2",
        "timeout = 30",
        "refuse options = compress",
    ] {
        assert!(d.config().contains(needle), "{}", d.config());
    }
    let dest = TestDir::new("dest");
    pull(&d.url("opts"), dest.path(), &[]);
    oracle::assert_clean(&d.url("opts"), dest.path());
    // the refused option is refused by the daemon. (Note: refusing
    // "delete" has no effect on pulls — a pulling client never sends
    // --delete to the daemon.)
    let out = rsync_command()
        .args(["-az", "--no-motd"])
        .arg(d.url("opts"))
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("The server is configured to refuse --compress"),
        "{err}"
    );
}

#[test]
fn chroot_module_as_root() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: use chroot = yes needs root");
        return;
    }
    let src = TestDir::new("src");
    tree::nasty().write(src.path());
    let d = Rsyncd::builder()
        .add_module(Module::new("pub", src.path()).use_chroot(true))
        .start();
    let dest = TestDir::new("dest");
    pull(&d.url("pub"), dest.path(), &[]);
    oracle::assert_clean(&d.url("pub"), dest.path());
}

#[test]
fn trees_are_deterministic() {
    let a = TestDir::new("a");
    let b = TestDir::new("b");
    tree::nasty().write(a.path());
    tree::nasty().write(b.path());
    let out = rsync_command()
        .args(["-anicH", "--delete", "--modify-window=-1"])
        .arg(format!("{}/", a.path().display()))
        .arg(format!("{}/", b.path().display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let c1 = tree::cpan_like(300, 42);
    assert_eq!(c1, tree::cpan_like(300, 42));
    assert_ne!(c1, tree::cpan_like(300, 43));
    let tarballs: Vec<u64> = c1
        .entries
        .iter()
        .filter(|e| e.path.to_string_lossy().ends_with(".tar.gz"))
        .map(|e| match &e.node {
            tree::Node::File(tree::Content::Random { size, .. }) => *size,
            _ => unreachable!(),
        })
        .collect();
    let mut sorted = tarballs.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    assert!((8_000..20_000).contains(&median), "median {median}");
    assert!(c1
        .files()
        .iter()
        .all(|p| p.starts_with("authors") || p.starts_with("modules") || p.starts_with("indices")));
    assert!(c1.files().iter().any(|p| {
        let s = p.to_string_lossy();
        s.starts_with("authors/id/") && s.matches('/').count() == 5
    }));

    // large_file / mutate_in_place
    let f = a.join("lf");
    tree::large_file(&f, 100_000, 5);
    assert_eq!(fs::read(&f).unwrap(), tree::random_bytes(100_000, 5));
    let t0 = tree::mtime(&f);
    tree::mutate_in_place(&f, &[50_000, 99_990], 64, 1);
    let data = fs::read(&f).unwrap();
    assert_eq!(data.len(), 100_000);
    assert_ne!(
        data[50_000..50_064],
        tree::random_bytes(100_000, 5)[50_000..50_064]
    );
    assert_eq!(tree::mtime(&f), (t0.0 + 1, t0.1));
}

fn child_pids(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        if after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s[s.rfind(')').unwrap() + 1..].split_whitespace().next() == Some("Z"))
        .unwrap_or(true)
}

/// `support::casefs`: the case-insensitive FUSE filesystem H35 uses as DEST
/// is a faithful filesystem (the real client's pull of the nasty tree into
/// it is oracle-clean: modes, nanosecond and pre-1970 mtimes, symlinks,
/// hard links, odd bytes) and really folds case while preserving it.
#[test]
fn casefs_is_faithful_and_case_insensitive() {
    let (_src, d) = nasty_daemon();
    let dir = TestDir::new("casefs");
    let Some(m) = support::casefs::mount_for_test(dir.path(), "casefs_is_faithful_and_case_insensitive") else {
        return;
    };
    let dest = m.path();
    pull(&d.url("pub"), dest, &["--modify-window=-1"]);
    oracle::assert_clean(&d.url("pub"), dest);
    // The oracle sees a change made through the mount.
    fs::write(dest.join("plain.txt"), b"changed through casefs\n").unwrap();
    let diff = oracle::diff(&d.url("pub"), dest, &[]);
    assert!(diff.iter().any(|l| l.ends_with(" plain.txt")), "{diff:?}");

    // Case folding, case preserving.
    let c = dest.join("case");
    fs::create_dir(&c).unwrap();
    fs::write(c.join("MiXed"), b"1").unwrap();
    assert_eq!(fs::read(c.join("mixed")).unwrap(), b"1");
    assert_eq!(fs::read(c.join("MIXED")).unwrap(), b"1");
    let e = fs::OpenOptions::new().write(true).create_new(true).open(c.join("mixed")).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(fs::create_dir(c.join("MIXED")).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&c), ["MiXed"]);
    // Unicode folding: KELVIN SIGN is the same name as 'k'.
    fs::write(c.join("\u{212A}ey"), b"2").unwrap();
    assert_eq!(fs::read(c.join("key")).unwrap(), b"2");
    // A symlink found under another case is still a symlink: O_NOFOLLOW refuses it.
    let outside = TestDir::new("casefs-outside");
    std::os::unix::fs::symlink(outside.path(), c.join("Link")).unwrap();
    let md = fs::symlink_metadata(c.join("LINK")).unwrap();
    assert!(md.file_type().is_symlink());
    {
        use std::os::unix::fs::OpenOptionsExt;
        let e = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(c.join("lInK")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
    // Rename over another case of an existing file replaces it.
    fs::write(c.join("new"), b"3").unwrap();
    fs::rename(c.join("new"), c.join("mIxEd")).unwrap();
    assert_eq!(fs::read(c.join("MIXED")).unwrap(), b"3");
    assert_eq!(names(&c), ["Link", "mIxEd", "\u{212A}ey"]);
    drop(m);
    // Unmounted: the mount point is an empty directory again.
    assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
}

/// The case table in tests/README.md ("Hostile, fault and load cases") is the
/// issue-6 acceptance map: every safety-plan case H1–H38, F1–F20, L1–L11 has
/// exactly one row, every row names at least one test function that exists
/// (`file::name` → `fn name` in tests/file.rs or tests/file/*.rs; a bare
/// `h01_…`-style name after it means the same file), and a row says **BUG**
/// exactly when one of its tests is `#[ignore = "BUG…"]`.
#[test]
fn case_table_names_real_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("tests/README.md")).unwrap();
    let start = readme.find("## Hostile, fault and load cases").expect("section missing");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map(|i| i + 3).unwrap_or(section.len())];
    // Test sources by file stem: tests/X.rs plus tests/X/*.rs.
    let source = |stem: &str| -> Option<String> {
        let mut s = fs::read_to_string(root.join(format!("tests/{stem}.rs"))).ok()?;
        if let Ok(rd) = fs::read_dir(root.join(format!("tests/{stem}"))) {
            for e in rd.flatten() {
                s.push_str(&fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        Some(s)
    };
    // The attribute lines right above `fn name(` (or a `name:` macro row).
    let find = |src: &str, name: &str| -> Option<String> {
        let lines: Vec<&str> = src.lines().collect();
        let i = lines.iter().position(|l| {
            let t = l.trim_start();
            t.starts_with(&format!("fn {name}(")) || t.starts_with(&format!("{name}:"))
        })?;
        let mut attrs = String::new();
        for l in lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("#[") || l.trim_start().starts_with("///")) {
            attrs.push_str(l);
        }
        Some(attrs)
    };
    let mut seen = std::collections::BTreeMap::new();
    let mut problems = vec![];
    for row in section.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| case") && !l.starts_with("|---")) {
        let cells: Vec<&str> = row.split(" | ").collect();
        let case = cells[0].trim_start_matches("| ").trim();
        *seen.entry(case.to_string()).or_insert(0) += 1;
        let test_cell = cells.get(1).copied().unwrap_or("");
        let mut file: Option<String> = None;
        let mut named = 0;
        let mut any_bug = false;
        for (k, tok) in test_cell.split('`').enumerate() {
            if k % 2 == 0 {
                continue;
            }
            let (stem, name) = match tok.split_once("::") {
                Some((f, n)) if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !f.contains(' ') => (f.to_string(), n),
                _ => {
                    let bare = tok.len() > 4
                        && tok.as_bytes()[0].is_ascii_lowercase()
                        && tok[1..3].bytes().all(|b| b.is_ascii_digit())
                        && tok.as_bytes()[3] == b'_';
                    match (&file, bare) {
                        (Some(f), true) => (f.clone(), tok),
                        _ => continue,
                    }
                }
            };
            file = Some(stem.clone());
            match source(&stem).as_deref().and_then(|src| find(src, name)) {
                Some(attrs) => {
                    named += 1;
                    any_bug |= attrs.contains("#[ignore = \"BUG");
                }
                None => problems.push(format!("{case}: `{stem}::{name}` does not exist")),
            }
        }
        if named == 0 {
            problems.push(format!("{case}: names no test"));
        }
        if any_bug != row.contains("BUG") {
            problems.push(format!("{case}: row says BUG = {}, its tests' BUG ignores = {any_bug}", row.contains("BUG")));
        }
    }
    let want: Vec<String> = (1..=38).map(|i| format!("H{i}")).chain((1..=20).map(|i| format!("F{i}"))).chain((1..=11).map(|i| format!("L{i}"))).collect();
    for c in &want {
        match seen.get(c) {
            Some(1) => {}
            n => problems.push(format!("{c}: {} rows", n.copied().unwrap_or(0))),
        }
    }
    assert!(problems.is_empty(), "tests/README.md case table:\n{}", problems.join("\n"));
}
