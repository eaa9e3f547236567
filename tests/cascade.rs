//! Cascades (issue 7, item 3): upstream rsyncd (no RECENT files) → rmirror A
//! (`sync --delete --write-recent --write-trace`) → a second rsyncd over A's
//! tree → rmirror B (`watch --once`).  After every change upstream and one
//! run of A, one pass of B brings B level with A (and with the upstream),
//! following only A's RECENT files (an incremental pass, not a full sync).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{oracle, tree, Rsyncd, TestDir};

const BIN: &str = env!("CARGO_BIN_EXE_rmirror");
const HOST_A: &str = "a.mirror.example";

/// What A writes itself: not part of the upstream's tree.
const PUBLISHED: [&str; 3] = ["--exclude=/RECENT-*.json", "--exclude=/RECENT.recent", "--exclude=/project/"];

fn run_ok(mut c: Command, what: &str) -> String {
    let out = c.stdin(Stdio::null()).env_remove("RSYNC_PASSWORD").output().expect("run rmirror");
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sync_a(up: &Rsyncd, a: &Path) {
    let mut c = Command::new(BIN);
    c.args(["sync", "--delete", "--write-recent"]).arg(format!("--write-trace={HOST_A}")).arg(up.url("pub")).arg(a);
    run_ok(c, "rmirror A (sync)");
}

fn watch_b(ad: &Rsyncd, b: &Path, state: &Path) -> serde_json::Value {
    let mut c = Command::new(BIN);
    c.args(["watch", "--once", "--json", "--state-dir"]).arg(state).arg(ad.url("a")).arg(b);
    let out = run_ok(c, "rmirror B (watch --once)");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

/// A's RECENT chain: every file valid for rmirror's own reader; the principal's paths.
fn check_recent_files(a: &Path) -> Vec<String> {
    let link = std::fs::read_link(a.join("RECENT.recent")).expect("RECENT.recent is a symlink");
    assert_eq!(link.to_string_lossy(), "RECENT-1h.json");
    let mut principal = Vec::new();
    for iv in ["1h", "6h", "1d", "1W", "1M", "1Q", "1Y", "Z"] {
        let name = format!("RECENT-{iv}.json");
        let data = std::fs::read(a.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let rf = rmirror::recent::parse_recent(&data, &name).unwrap_or_else(|e| panic!("{name} is not valid: {e}"));
        assert!(rf.meta.dirtymark.is_some(), "{name} has no dirtymark");
        for w in rf.events.windows(2) {
            assert!(w[0].epoch > w[1].epoch, "{name}: epochs not strictly decreasing");
        }
        if iv == "1h" {
            principal = rf.events.iter().map(|e| e.path.clone()).collect();
            // epochs are JSON strings, as the Perl writer makes them
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert!(v["recent"].as_array().unwrap().iter().all(|e| e["epoch"].is_string()));
            assert!(v["meta"]["minmax"]["max"].is_string());
        }
    }
    principal
}

fn write(root: &Path, rel: &str, data: &[u8], mtime: i64) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    tree::set_mtime(&p, mtime, 0);
}

/// Author directories (`authors/id/X/XY/XYZ`) of the upstream, sorted.
fn author_dirs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let base = root.join("authors/id");
    for a in std::fs::read_dir(&base).unwrap().flatten() {
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            for c in std::fs::read_dir(b.path()).unwrap().flatten() {
                if c.file_type().unwrap().is_dir() {
                    out.push(c.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
    }
    out.sort();
    out
}

fn files_in(root: &Path, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| format!("{dir}/{}", e.file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

fn assert_level(up: &Rsyncd, ad: &Rsyncd, a: &Path, b: &Path, round: usize) {
    let d = oracle::diff(&up.url("pub"), a, &PUBLISHED);
    assert!(d.is_empty(), "round {round}: A differs from the upstream: {d:#?}");
    let d = oracle::diff(&ad.url("a"), b, &[]);
    assert!(d.is_empty(), "round {round}: B differs from A: {d:#?}");
    let d = oracle::diff(&up.url("pub"), b, &PUBLISHED);
    assert!(d.is_empty(), "round {round}: B differs from the upstream: {d:#?}");
}

#[test]
fn b_converges_within_one_pass_of_a_without_upstream_recent_files() {
    let up_dir = TestDir::new("cascade-up");
    let work = TestDir::new("cascade-work");
    let (a, b, state) = (work.join("a"), work.join("b"), work.join("b-state"));
    std::fs::create_dir_all(&a).unwrap();
    tree::cpan_like(400, 7).write(up_dir.path());
    // the upstream publishes no RECENT files at all
    let _ = std::fs::remove_file(up_dir.join("indices/RECENT-1h.json"));
    let up = Rsyncd::builder().module("pub", up_dir.path()).start();
    let ad = Rsyncd::builder().module("a", &a).start();

    // round 0: first sync of A, first (full) pass of B
    sync_a(&up, &a);
    let principal = check_recent_files(&a);
    assert!(principal.len() > 400, "the first run records every file it fetched ({} events)", principal.len());
    let trace = std::fs::read_to_string(a.join(format!("project/trace/{HOST_A}"))).expect("trace file");
    assert!(trace.contains("\nArchive serial: ") && trace.contains("\nCreator: rmirror "), "{trace}");
    let doc = watch_b(&ad, &b, &state);
    assert_eq!(doc["passes"][0]["kind"], "full", "{doc:#}");
    assert_level(&up, &ad, &a, &b, 0);

    let mut mtime = 1_700_000_000i64;
    let dirs = author_dirs(up_dir.path());
    assert!(dirs.len() > 20);
    for round in 1..=3usize {
        // Each round in a new second: files rewritten with the same size in
        // the same second (the index, A's trace file) look unchanged to the
        // size+mtime quick check, for rsync as for rmirror.
        next_second();
        // change the upstream: uploads, replacements, a mode change, a
        // symlink, single deletes, and a whole author gone
        let u = up_dir.path();
        for k in 0..5 {
            mtime += 1;
            write(u, &format!("authors/id/N/NE/NEW{round}/New-Dist-{k}.{round}.tar.gz"), format!("new {round} {k}").repeat(50 + k).as_bytes(), mtime);
        }
        let victim_dir = &dirs[round * 5];
        let files = files_in(u, victim_dir);
        mtime += 1;
        write(u, &files[0], format!("replaced in round {round}").as_bytes(), mtime);
        if files.len() > 1 {
            std::fs::remove_file(u.join(&files[1])).unwrap();
        }
        let other = files_in(u, &dirs[round * 5 + 1]);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(u.join(&other[0]), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(files[0].rsplit('/').next().unwrap(), u.join(format!("{victim_dir}/LATEST-{round}"))).unwrap();
        std::fs::remove_dir_all(u.join(&dirs[round * 5 + 2])).unwrap();
        std::fs::write(u.join("modules/02packages.details.txt.gz"), format!("index of round {round}")).unwrap();

        sync_a(&up, &a);
        let principal = check_recent_files(&a);
        for want in [format!("authors/id/N/NE/NEW{round}/New-Dist-0.{round}.tar.gz"), files[0].clone(), other[0].clone(), dirs[round * 5 + 2].clone()] {
            assert!(principal.contains(&want), "round {round}: {want} not in A's RECENT-1h.json");
        }
        let doc = watch_b(&ad, &b, &state);
        let passes = doc["passes"].as_array().unwrap();
        assert_eq!(passes.len(), 1, "round {round}: B needed more than one pass: {doc:#}");
        assert_eq!(passes[0]["kind"], "incremental", "round {round}: B did a full sync: {doc:#}");
        assert_eq!(passes[0]["complete"], true, "{doc:#}");
        // it fetched the changes, not the tree
        let fetched = passes[0]["fetched"].as_u64().unwrap();
        assert!((1..60).contains(&fetched), "round {round}: B fetched {fetched} files: {doc:#}");
        assert_level(&up, &ad, &a, &b, round);
    }

    // a run of A with no upstream change still leaves a fresh trace; B follows
    next_second();
    sync_a(&up, &a);
    let doc = watch_b(&ad, &b, &state);
    assert_eq!(doc["passes"][0]["kind"], "incremental", "{doc:#}");
    assert_level(&up, &ad, &a, &b, 4);
    // no temp files left behind
    let temps: Vec<_> = walk(&a).into_iter().filter(|p| p.contains(".rmirror-tmp")).collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// Sleep until the wall clock's next whole second.
fn next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    std::thread::sleep(std::time::Duration::from_nanos(1_000_000_000 - now.subsec_nanos() as u64 + 1_000_000));
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn run_jobs_write_the_cascade_files() {
    // the same writers from `rmirror run` (config keys), checked file by file
    let up_dir = TestDir::new("cascade-run-up");
    tree::cpan_like(40, 3).write(up_dir.path());
    let up = Rsyncd::builder().module("pub", up_dir.path()).start();
    let work = TestDir::new("cascade-run");
    let dest = work.join("mirror");
    let cfg = work.join("mirrors.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n\n[[job]]\nname = \"cpan\"\ndestination = \"{}\"\nupstream = \"{}\"\ntrace = {{ host = \"{HOST_A}\", maintainer = \"Admins <root@example.org>\" }}\ntimestamp_file = \"TIMESTAMP\"\nmirror_yml = {{ path = \"mirror.yml\", mirrors = [\"rsync://b.example/cpan/\"] }}\nwrite_recent = true\n",
            work.join("state").display(),
            dest.display(),
            up.url("pub")
        ),
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["run", "--once", "-c"]).arg(&cfg);
    run_ok(c, "rmirror run --once");
    let principal = check_recent_files(&dest);
    for want in [format!("project/trace/{HOST_A}"), "TIMESTAMP".into(), "mirror.yml".into()] {
        assert!(principal.contains(&want), "{want} not in RECENT-1h.json: {principal:?}");
    }
    let trace = std::fs::read_to_string(dest.join(format!("project/trace/{HOST_A}"))).unwrap();
    assert!(trace.contains("\nMaintainer: Admins <root@example.org>\n") && trace.contains("\nTrigger: run\n"), "{trace}");
    let ts: u64 = std::fs::read_to_string(dest.join("TIMESTAMP")).unwrap().trim().parse().unwrap();
    assert!(ts > 1_700_000_000);
    let yml = std::fs::read_to_string(dest.join("mirror.yml")).unwrap();
    assert!(yml.starts_with("---\n") && yml.contains("rsync://b.example/cpan/") && yml.contains(&up.url("pub")), "{yml}");
    // the job's own files survive its next --delete sync and the tree stays the upstream's
    std::fs::write(up_dir.join("late.txt"), b"late").unwrap();
    let mut c = Command::new(BIN);
    c.args(["run", "--once", "--ignore-timers", "-c"]).arg(&cfg);
    run_ok(c, "rmirror run --once (2)");
    assert!(dest.join("TIMESTAMP").exists() && dest.join("RECENT-Z.json").exists());
    let principal = check_recent_files(&dest);
    assert!(principal.contains(&"late.txt".to_string()), "{principal:?}");
    let d = oracle::diff(&up.url("pub"), &dest, &["--exclude=/RECENT-*.json", "--exclude=/RECENT.recent", "--exclude=/project/", "--exclude=/TIMESTAMP", "--exclude=/mirror.yml"]);
    assert!(d.is_empty(), "{d:#?}");
}
