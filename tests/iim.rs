//! The iim drop-in (issue 4, item 4): `rmirror iim …` and the binary run as
//! `iim`, against a real rsync daemon whose tree a RECENT producer drives.
//! An iim.conf and command lines in the style of the iim manual (`-daemon`,
//! `-e -30m`, `-t`) work unchanged.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::recent_producer::Producer;
use support::{oracle, tree, Rsyncd, TestDir};

const BIN: &str = env!("CARGO_BIN_EXE_rmirror");

struct Upstream {
    src: TestDir,
    prod: Producer,
    d: Rsyncd,
}

/// `n` small files under authors/, a history of events over 10 days (newest
/// a minute ago) so every RECENT file has content, and a daemon serving it.
fn upstream(n: usize, seed: u64) -> Upstream {
    let src = TestDir::new("iim-src");
    let mut rng = tree::Rng::new(seed);
    let mut buf = vec![0u8; 300];
    let mut paths = Vec::new();
    for i in 0..n {
        let a = i / 20;
        let dir = format!("authors/id/A/AU/AUTH{a}");
        std::fs::create_dir_all(src.join(&dir)).unwrap();
        let len = 20 + rng.below(280) as usize;
        rng.fill(&mut buf[..len]);
        let p = format!("{dir}/Dist-{i}.tar.gz");
        std::fs::write(src.join(&p), &buf[..len]).unwrap();
        tree::set_mtime(&src.join(&p), 1_500_000_000 + i as i64, 0);
        paths.push(p);
    }
    let mut prod = Producer::new(src.path());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    // 60 events over 10 days, as in tests/recent.rs
    let hist: Vec<&String> = paths.iter().cycle().take(60).collect();
    for (i, p) in hist.iter().enumerate() {
        prod.set_clock(Some(now - 10.0 * 86_400.0 * (1.0 - i as f64 / hist.len() as f64) - 60.0));
        prod.record(p, true);
        prod.publish();
    }
    prod.set_clock(None);
    let d = Rsyncd::builder().module("pub", src.path()).start();
    Upstream { src, prod, d }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).env_remove("RSYNC_PASSWORD").output().expect("run iim")
}

/// `rmirror iim ARGS` in `dir`.
fn iim(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(BIN).current_dir(dir).arg("iim").args(args))
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json(p: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

fn sent_since(d: &Rsyncd, from: usize) -> Vec<String> {
    let mut v: Vec<String> = d
        .transfer_log()
        .into_iter()
        .skip(from)
        .filter(|t| t.op == "send" && !t.name.ends_with('/') && !t.name.rsplit('/').next().unwrap().starts_with("RECENT"))
        .map(|t| t.name)
        .collect();
    v.sort();
    v
}

fn alive(pid: i32) -> bool {
    // a zombie (not reaped yet by whoever inherited it) counts as gone
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

/// Kills the daemon on drop if a test failed before stopping it.
struct DaemonGuard(i32);
impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if self.0 > 0 && alive(self.0) {
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
}

fn logs(dir: &Path) -> String {
    let mut s = String::new();
    for n in ["iim.log.3", "iim.log.2", "iim.log.1", "iim.log"] {
        s.push_str(&std::fs::read_to_string(dir.join(n)).unwrap_or_default());
    }
    s
}

/// An iim.conf in the manual's style: comments, an include, `+` and
/// indented-line glue, tabs, several scoreboards, and the entries rmirror
/// does not need.
fn manual_conf(work: &Path, port: u16, extra: &str) -> String {
    std::fs::write(
        work.join("common.conf"),
        "# shared settings\nsleep_main_loop\t1\ntimeout 30\niim_umask 022\nsleep_init_epoch 5\n",
    )
    .unwrap();
    format!(
        "# iim.conf -- instant mirroring of a CPAN-like tree\n\
         #\n\
         local\t\tCPAN\n\
         remote rsync://127.0.0.1:{port}\n\
         + /pub/\n\
         \n\
         include common.conf\n\
         loglevel terse\n\
         hot_config 1\n\
         max_run_time 1h\n\
         rotate 3 2s\n\
         allow_full_syncs yes\n\
         scoreboard_file sb.txt\n\
         scoreboard_file sb.html\n\
         scoreboard_file\n  sb.json\n\
         # not needed by rmirror, accepted\n\
         temp /tmp\n\
         prog_rsync /usr/bin/rsync\n\
         prog_iim /usr/local/bin/iim\n\
         {extra}"
    )
}

#[test]
fn manual_conf_daemon_e_30m_scoreboards_rotation_hot_config() {
    let mut up = upstream(200, 1);
    let work = TestDir::new("iim-work");
    let dest = work.join("CPAN");
    // a local copy made by plain rsync; -e -30m says it is complete up to 30 minutes ago
    support::pull(&up.d.url("pub"), &dest, &["--modify-window=-1"]);
    let conf = manual_conf(work.path(), up.d.port(), "");
    std::fs::write(work.join("iim.conf"), &conf).unwrap();

    // -t checks and exits
    let o = iim(work.path(), &["-t", "-c", "iim.conf"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("OK"), "{}", text(&o));
    for k in ["temp", "prog_rsync", "prog_iim"] {
        assert!(out.contains(&format!("{k} (iim.conf:")) && out.contains("not needed"), "{}", text(&o));
    }
    std::fs::write(work.join("bad.conf"), format!("{conf}include common.conf\n")).unwrap();
    let o = iim(work.path(), &["-t", "-c", "bad.conf"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("included twice"), "{}", text(&o));
    let o = iim(work.path(), &["-t", "-c", "iim.conf", "--timeout", "soon"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("timeout"), "{}", text(&o));

    up.prod.write_file("authors/id/I/II/IIM/Fresh-1.0.tar.gz", b"fresh upload");
    up.prod.publish();
    let before = up.d.transfer_log().len();

    // the manual's daemon start
    let o = iim(work.path(), &["-v", "-c", "iim.conf", "-daemon", "run/cpan", "-e", "-30m"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("daemon started"), "{}", text(&o));
    let rundir = work.join("run/cpan");
    let pid: i32 = std::fs::read_to_string(rundir.join("iim.pid")).unwrap().trim().parse().unwrap();
    let _guard = DaemonGuard(pid);
    assert!(alive(pid));
    let sb = work.join("sb.json");
    wait_for("the first loop", Duration::from_secs(20), || json(&sb).is_some_and(|j| j["loops"].as_u64() >= Some(1)));
    assert!(logs(&rundir).contains("starting"), "{}", logs(&rundir));
    let j = json(&sb).unwrap();
    assert_eq!(j["last_pass"]["kind"], "incremental", "{j:#}");
    assert_eq!(j["full_syncs"], 0, "{j:#}");
    assert_eq!(j["fetched"], 1, "{j:#}");
    assert_eq!(sent_since(&up.d, before), vec!["authors/id/I/II/IIM/Fresh-1.0.tar.gz".to_string()]);
    // config values and defaults in the JSON scoreboard
    assert_eq!(j["config"]["sleep_main_loop"], 1.0, "{j:#}");
    assert_eq!(j["config"]["remote"], format!("rsync://127.0.0.1:{}/pub/", up.d.port()));
    assert_eq!(j["config"]["rotate"]["count"], 3);
    assert_eq!(j["config"]["iim_umask"], "022");
    assert_eq!(j["config"]["effective_loglevel"], "verbose");
    assert!(j["defaults"]["timeout"].is_number() && j["defaults"]["loglevel"] == "terse", "{j:#}");

    // more changes: two uploads and a delete
    let gone = "authors/id/A/AU/AUTH3/Dist-60.tar.gz";
    up.prod.write_file("authors/id/I/II/IIM/Fresh-1.1.tar.gz", b"second upload");
    up.prod.write_file("authors/id/N/NE/NEW/New-0.01.tar.gz", b"new author");
    up.prod.delete_file(gone);
    up.prod.publish();
    wait_for("the changes", Duration::from_secs(20), || {
        json(&sb).is_some_and(|j| j["fetched"] == 3 && j["deleted"] == 1)
    });
    assert!(!dest.join(gone).exists());
    oracle::assert_clean(&up.d.url("pub"), &dest);
    let t = std::fs::read_to_string(work.join("sb.txt")).unwrap();
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["fetched", "3"]), "{t}");
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["deleted", "1"]), "{t}");
    let h = std::fs::read_to_string(work.join("sb.html")).unwrap();
    assert!(h.contains("<tr><th>files fetched</th><td>3</td></tr>"), "{h}");
    assert!(h.contains("<tr><th>files deleted</th><td>1</td></tr>"), "{h}");
    // no temp files left by the atomic writes
    let leftovers: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // one daemon per tag: a second start says so (or not, with -q) and exits 0
    let o = iim(work.path(), &["-q", "-c", "iim.conf", "-daemon", "run/cpan"]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(), "{}", text(&o));
    let o = iim(work.path(), &["-c", "iim.conf", "-daemon", "run/cpan"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already running"), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(rundir.join("iim.pid")).unwrap().trim(), pid.to_string());

    // the log is rotated (rotate 3 2s)
    wait_for("a rotated log", Duration::from_secs(10), || rundir.join("iim.log.1").exists());
    assert!(rundir.join("iim.log").exists());
    wait_for("log rotation to keep 3", Duration::from_secs(15), || rundir.join("iim.log.3").exists());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!rundir.join("iim.log.4").exists());

    // hot config: a bad edit is logged and the old config kept
    std::fs::write(work.join("iim.conf"), format!("{conf}loglevel loud\n")).unwrap();
    wait_for("the bad edit to be reported", Duration::from_secs(10), || {
        logs(&rundir).contains("keeping the old config")
    });
    assert!(logs(&rundir).contains("loud"));
    let loops = json(&sb).unwrap()["loops"].as_u64().unwrap();
    wait_for("loops to go on", Duration::from_secs(10), || json(&sb).unwrap()["loops"].as_u64().unwrap() >= loops + 2);
    assert!(!work.join("sb2.txt").exists());
    // a good edit takes effect
    std::fs::write(work.join("iim.conf"), format!("{conf}scoreboard_file sb2.txt\n")).unwrap();
    wait_for("the reloaded config", Duration::from_secs(10), || work.join("sb2.txt").exists());
    assert!(logs(&rundir).contains("config reloaded"), "{}", logs(&rundir));
    let t2 = std::fs::read_to_string(work.join("sb2.txt")).unwrap();
    assert!(t2.contains("config_reloads   1"), "{t2}");

    // stop it by the pid in the pid file
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    wait_for("the daemon to stop", Duration::from_secs(15), || !alive(pid));
    assert!(!rundir.join("iim.pid").exists());
    assert!(logs(&rundir).contains("received SIGTERM; stopping"), "{}", logs(&rundir));
    assert!(json(&sb).unwrap()["status"].as_str().unwrap().starts_with("stopped"));
    drop(up.src);
}

#[test]
fn startup_rule_full_sync_max_run_time_and_quiet() {
    let mut up = upstream(120, 2);
    let work = TestDir::new("iim-start");
    let dest = work.join("CPAN");
    std::fs::write(
        work.join("iim.conf"),
        "local CPAN\nremote 127.0.0.1::pub\n+/RECENT.recent\nsleep_main_loop 1\nallow_full_syncs 0\nfull_sync_interval 7d+24h\ntimeout 20\nscoreboard_file sb.json\nscoreboard_file sb.php\n",
    )
    .unwrap();
    // the daemon's port on the command line: --entry value overrides the file
    let remote = format!("rsync://127.0.0.1:{}/pub/RECENT.recent", up.d.port());

    // no local RECENT files and full syncs not allowed: a clear exit
    let o = iim(work.path(), &["-c", "iim.conf", "--remote", &remote, "--max_run_time", "30"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("full sync is needed") && err.contains("not allowed"), "{}", text(&o));
    assert!(!dest.join("authors").exists());

    // -f: full sync allowed and done; max_run_time ends the run with 0
    let t = Instant::now();
    let o = iim(work.path(), &["-f", "-c", "iim.conf", "--remote", &remote, "--max_run_time", "3s"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&o.stdout).contains("max_run_time"), "{}", text(&o));
    oracle::assert_clean(&up.d.url("pub"), &dest);
    let j = json(&work.join("sb.json")).unwrap();
    assert_eq!(j["full_syncs"], 1, "{j:#}");
    assert_eq!(j["status"], "stopped (max_run_time)", "{j:#}");
    assert!(j["loops"].as_u64().unwrap() >= 2, "{j:#}");
    let html = std::fs::read_to_string(work.join("sb.php")).unwrap();
    assert!(html.contains("<html>") || html.contains("<html"), "{html}");
    assert!(html.contains("<tr><th>full syncs</th><td>1</td></tr>"), "{html}");

    // with state and fresh local RECENT files: incremental, no full sync needed; -q is silent
    up.prod.write_file("authors/id/Q/QU/QUIET/Quiet-1.tar.gz", b"quiet");
    up.prod.publish();
    let before = up.d.transfer_log().len();
    let t = Instant::now();
    let o = iim(work.path(), &["-q", "-c", "iim.conf", "--remote", &remote, "--max_run_time", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(12), "{:?}", t.elapsed());
    assert_eq!(sent_since(&up.d, before), vec!["authors/id/Q/QU/QUIET/Quiet-1.tar.gz".to_string()]);
    let j = json(&work.join("sb.json")).unwrap();
    assert_eq!((j["full_syncs"].as_u64(), j["fetched"].as_u64()), (Some(0), Some(1)), "{j:#}");
    oracle::assert_clean(&up.d.url("pub"), &dest);
}

/// F7 for iim: `pass_timeout` (an rmirror extension, `watch --stop-after`
/// per pass) ends a pass that a server trickles below the I/O timeout: the
/// pass fails with the deadline named, nothing is left half-written, the
/// loop carries on, and without the trickle the next run converges.
#[test]
fn pass_timeout_ends_a_trickled_pass() {
    use support::faultproxy::{Dir, FaultProxy, Faults};
    let mut up = upstream(40, 7);
    up.prod.write_file("authors/id/S/SL/SLOW/Slow-1.0.tar.gz", &vec![7u8; 200_000]);
    up.prod.publish();
    let work = TestDir::new("iim-slow");
    let dest = work.join("CPAN");
    std::fs::write(work.join("iim.conf"), "local CPAN\nremote 127.0.0.1::pub\n+/RECENT.recent\nsleep_main_loop 1\nsleep_init_epoch 1\ntimeout 30\nscoreboard_file sb.json\n").unwrap();
    let p = FaultProxy::start(up.d.port(), Faults::down(Dir::default().trickle(3000, Duration::from_millis(300))).hold_max(Duration::from_secs(30)));
    let remote = format!("{}RECENT.recent", p.url("pub"));
    let t = Instant::now();
    let o = iim(work.path(), &["-f", "-c", "iim.conf", "--remote", &remote, "--pass_timeout", "2", "--max_run_time", "7"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    let out = text(&o);
    assert!(out.contains("overall deadline reached (pass_timeout 2"), "{out}");
    let j = json(&work.join("sb.json")).unwrap();
    assert!(j["failures"].as_u64().unwrap() >= 2, "each pass should hit the deadline: {j:#}");
    assert!(j["last_error"]["message"].as_str().unwrap_or("").contains("overall deadline reached"), "{j:#}");
    assert!(support::evil::temps_under(&dest).is_empty(), "temps left: {:?}", support::evil::temps_under(&dest));
    drop(p);
    let remote = format!("rsync://127.0.0.1:{}/pub/RECENT.recent", up.d.port());
    let o = iim(work.path(), &["-f", "-c", "iim.conf", "--remote", &remote, "--pass_timeout", "60", "--max_run_time", "3"]);
    assert!(o.status.success(), "{}", text(&o));
    oracle::assert_clean(&up.d.url("pub"), &dest);
}

#[test]
fn runs_as_iim_through_a_symlink_and_compares_with_m() {
    let mut up = upstream(80, 3);
    let work = TestDir::new("iim-argv0");
    let dest = work.join("CPAN");
    support::pull(&up.d.url("pub"), &dest, &["--modify-window=-1"]);
    std::fs::create_dir_all(work.join("bin")).unwrap();
    let link: PathBuf = work.join("bin/iim");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    std::fs::write(work.join("iim.conf"), format!("local CPAN\nremote rsync://127.0.0.1:{}/pub/\n", up.d.port())).unwrap();
    let as_iim = |args: &[&str]| run(Command::new(&link).current_dir(work.path()).args(args));

    let o = as_iim(&["-t", "-c", "iim.conf"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("OK"), "{}", text(&o));
    let o = as_iim(&["-q", "-t", "-c", "iim.conf"]);
    assert!(o.status.success() && o.stdout.is_empty(), "{}", text(&o));
    let o = as_iim(&["-t", "-c", "iim.conf", "-x"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("usage: iim"), "{}", text(&o));

    // -m: compare the local copy with the remote
    let o = as_iim(&["-m", "-c", "iim.conf"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("identical"), "{}", text(&o));
    up.prod.write_file("authors/id/M/MM/MMM/M-1.tar.gz", b"m");
    up.prod.delete_file("authors/id/A/AU/AUTH1/Dist-20.tar.gz");
    let o = as_iim(&["-m", "-v", "-c", "iim.conf"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("*deleting") && out.contains("M-1.tar.gz"), "{}", text(&o));
    assert!(out.contains("to delete"), "{}", text(&o));
    // nothing was changed by the compare
    assert!(dest.join("authors/id/A/AU/AUTH1/Dist-20.tar.gz").exists());
    assert!(!dest.join("authors/id/M/MM/MMM/M-1.tar.gz").exists());
    // the subcommand form, quiet: only the exit status
    let o = iim(work.path(), &["-m", "-q", "-c", "iim.conf"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", text(&o));

    // start-up rule: no state, but the local RECENT files (from the rsync
    // copy) are less than a day old: follow the index from them, no full sync
    up.prod.publish();
    let o = as_iim(&["-c", "iim.conf", "--allow_full_syncs", "0", "--max_run_time", "2", "--scoreboard_file", "sb.json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("local RECENT files are current"), "{}", text(&o));
    let j = json(&work.join("sb.json")).unwrap();
    assert_eq!((j["full_syncs"].as_u64(), j["fetched"].as_u64(), j["deleted"].as_u64()), (Some(0), Some(1), Some(1)), "{j:#}");
    oracle::assert_clean(&up.d.url("pub"), &dest);
}
