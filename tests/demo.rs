//! Installing and learning (issue 7, item 5): the README quickstart
//! (`scripts/demo`) mirrors something and leaves no process behind; the
//! example `contrib/mirrors.toml` is valid; every `--help` fits a screen and
//! shows an example.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::TestDir;

const BIN: &str = env!("CARGO_BIN_EXE_rmirror");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || name == me {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(format!("{name}: {c}"));
            }
        }
    }
    out
}

#[test]
fn demo_mirrors_something_and_cleans_up() {
    let work = TestDir::new("demo");
    let dir = work.join("run");
    let mut c = Command::new(repo().join("scripts/demo"));
    c.env("DEMO_SECONDS", "8").env("DEMO_DIR", &dir).env("RMIRROR_BIN", BIN).stdin(Stdio::null());
    // the example is built with the tests; else the script builds it
    let ex = Path::new(BIN).parent().unwrap().join("examples/demo_upstream");
    if ex.exists() {
        c.env("DEMO_UPSTREAM_BIN", &ex);
    }
    let out = c.output().expect("run scripts/demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/demo failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let n: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo: mirrored ")?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{stdout}\n{stderr}"));
    assert!(n >= 100, "mirrored only {n} distributions:\n{stdout}");
    assert!(stdout.contains("full sync") && stdout.contains("pass:"), "watch did not follow the changes:\n{stdout}");
    assert!(dir.join("mirror/RECENT.recent").exists() && dir.join("mirror/modules/02packages.details.txt").exists());
    // every process it started is gone (daemon and its children, upstream, watch)
    let left = processes_mentioning(&dir.to_string_lossy());
    assert!(left.is_empty(), "left behind: {left:#?}");
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    assert_eq!(pids.lines().count(), 3, "{pids}");
    for l in pids.lines() {
        let pid = l.split_whitespace().nth(1).unwrap();
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{l} still runs");
    }
}

#[test]
fn contrib_mirrors_toml_is_valid() {
    let out = Command::new(BIN).args(["run", "--check", "-c"]).arg(repo().join("contrib/mirrors.toml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("OK, 3 jobs"), "{text}");
    // the units run commands that exist, with the example's path
    for unit in ["rmirror.service", "rmirror-once.service", "rmirror-once.timer", "rmirror-watch@.service"] {
        let t = std::fs::read_to_string(repo().join("contrib/systemd").join(unit)).unwrap();
        assert!(t.contains("[Unit]") && t.contains("[Install]") || unit.ends_with(".service"), "{unit}");
        for l in t.lines().filter(|l| l.starts_with("ExecStart")) {
            let args: Vec<&str> = l.split('=').nth(1).unwrap().split_whitespace().collect();
            assert_eq!(args[0], "/usr/local/bin/rmirror", "{unit}: {l}");
            assert!(["run", "watch"].contains(&args[1]), "{unit}: {l}");
            if args[1] == "run" {
                assert!(l.contains("-c /etc/rmirror/mirrors.toml"), "{unit}: {l}");
                // the same flags parse here (with the example file)
                let mut a: Vec<String> = args[1..].iter().map(|s| s.to_string()).collect();
                let i = a.iter().position(|x| x == "/etc/rmirror/mirrors.toml").unwrap();
                a[i] = repo().join("contrib/mirrors.toml").display().to_string();
                if !a.iter().any(|x| x == "--check") {
                    a.push("--check".into());
                }
                let st = Command::new(BIN).args(&a).stdout(Stdio::null()).status().unwrap();
                assert!(st.success(), "{unit}: rmirror {a:?}");
            }
        }
    }
}

#[test]
fn every_help_fits_a_screen_and_shows_an_example() {
    for cmd in ["", "ls", "sync", "compare", "watch", "run", "status", "probe"] {
        let mut c = Command::new(BIN);
        if !cmd.is_empty() {
            c.arg(cmd);
        }
        let out = c.arg("--help").output().unwrap();
        assert!(out.status.success(), "rmirror {cmd} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text.lines().count();
        assert!(n <= 40, "rmirror {cmd} --help has {n} lines:\n{text}");
        assert!(text.contains("Example"), "rmirror {cmd} --help shows no example:\n{text}");
    }
    // the full list is still there
    let all = Command::new(BIN).args(["sync", "--help-all"]).output().unwrap();
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("--checksum-choice") && text.contains("--write-recent"), "{text}");
    let all = Command::new(BIN).args(["watch", "--help-all"]).output().unwrap();
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(text.contains("--dirtymark-min-interval") && text.contains("--stop-after"), "{text}");
}

#[test]
fn man_pages_and_completions_generate() {
    let d = TestDir::new("man");
    let out = Command::new(BIN).arg("gen-man").arg(d.path()).output().unwrap();
    assert!(out.status.success());
    for p in ["rmirror.1", "rmirror-sync.1", "rmirror-watch.1", "rmirror-run.1"] {
        let t = std::fs::read_to_string(d.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(t.starts_with(".ie") || t.contains(".TH"), "{p}");
    }
    for sh in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", sh]).output().unwrap();
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("rmirror"), "{sh}");
    }
}
