//! The many-mirrors runner end to end: `rmirror run` / `status` / `probe`
//! against several real rsync daemons on loopback ports playing fresh, stale,
//! broken (HTML instead of YAML) and slow (a throttling proxy in this file)
//! upstreams. Everything talks to 127.0.0.1 only.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{oracle, tree, Rsyncd, TestDir};

// ---------------------------------------------------------------- helpers

fn rmirror(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(args)
        .env_remove("RSYNC_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run rmirror")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn mirror_yml(ts: u64, master: Option<&str>) -> String {
    let mut s = format!("---\nname: test mirror\ntimestamp: {ts}\n");
    if let Some(m) = master {
        s.push_str(&format!("master: {m}\n"));
    }
    s
}

fn status_json(cfg: &Path) -> serde_json::Value {
    let o = rmirror(&["status", "--json", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Number of sessions (summary lines) a daemon logged.
fn session_count(d: &Rsyncd) -> usize {
    d.sessions().len()
}

/// Non-zombie children of PID (the daemon's per-connection processes).
fn children_of(pid: u32) -> usize {
    let mut n = 0;
    let Ok(rd) = std::fs::read_dir("/proc") else { return 0 };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut f = after.split_whitespace();
        let state = f.next();
        if f.next().and_then(|s| s.parse::<u32>().ok()) == Some(pid) && state != Some("Z") {
            n += 1;
        }
    }
    n
}

/// Samples the number of live daemon sessions across daemons every few ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, usize)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let n: usize = pids.iter().map(|&p| children_of(p)).sum();
                v2.lock().unwrap().push((Instant::now(), n));
                std::thread::sleep(Duration::from_millis(3));
            }
        });
        Sampler { stop, samples, handle: Some(handle) }
    }
    /// (highest count held for at least `hold`, highest count seen at all).
    fn finish(mut self, hold: Duration) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap();
        let v = self.samples.lock().unwrap().clone();
        let raw = v.iter().map(|x| x.1).max().unwrap_or(0);
        let mut sustained = 0;
        for (i, &(t0, _)) in v.iter().enumerate() {
            // The minimum count over [t0, t0 + hold].
            let mut min = usize::MAX;
            let mut reached = false;
            for &(t, n) in &v[i..] {
                min = min.min(n);
                if t.duration_since(t0) >= hold {
                    reached = true;
                    break;
                }
            }
            if reached {
                sustained = sustained.max(min);
            }
        }
        (sustained, raw)
    }
}

/// A loopback TCP proxy that delays and/or throttles what the daemon sends,
/// and can cut every connection at once.
struct SlowProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl SlowProxy {
    /// `delay`: before each chunk from the daemon; `bps`: bytes/second cap.
    fn start(target: u16, delay: Duration, bps: Option<u64>) -> SlowProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (st, fw, cs) = (stop.clone(), forwarded.clone(), conns.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(170);
            while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let Ok(s) = TcpStream::connect(("127.0.0.1", target)) else {
                            let _ = c.shutdown(Shutdown::Both);
                            continue;
                        };
                        cs.lock().unwrap().push(c.try_clone().unwrap());
                        cs.lock().unwrap().push(s.try_clone().unwrap());
                        let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                        std::thread::spawn(move || pump(c2, s2, Duration::ZERO, None, None));
                        let fw = fw.clone();
                        std::thread::spawn(move || pump(s, c, delay, bps, Some(fw)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        SlowProxy { port, stop, forwarded, conns }
    }
    fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/", self.port)
    }
    /// Cut every connection and stop accepting.
    fn kill(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, delay: Duration, bps: Option<u64>, count: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 8192];
    let start = Instant::now();
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        total += n as u64;
        if let Some(bps) = bps {
            let due = Duration::from_secs_f64(total as f64 / bps as f64);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = &count {
            c.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn write_cfg(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("mirrors.toml");
    std::fs::write(&p, text).unwrap();
    p
}

// ---------------------------------------------------------------- tests

#[test]
fn check_names_line_and_key_of_every_error() {
    let t = TestDir::new("check");
    let cfg = write_cfg(
        t.path(),
        r#"max_parallel = 3
state_dir = "state"

[[job]]
name = "good"
destination = "dest/good"
upstreams = ["rsync://127.0.0.1:1/m/"]

[[job]]
name = "bad"
destination = "dest/bad"
upstreams = ["rsync://127.0.0.1:1/m/"]
interval = "5 parsecs"
strategy = "telepathy"
max_delet = 10

[[job]]
name = "worse"
destination = "dest/worse"
upstream = "/not/a/url"
strategy = "fast"
"#,
    );
    let o = rmirror(&["run", "--check", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for (line, key) in [(13, "interval"), (14, "strategy"), (15, "max_delet"), (20, "upstream"), (21, "strategy")] {
        let want = format!("line {line}: key `{key}`");
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("unknown strategy \"telepathy\""), "{err}");
    assert!(err.contains("did you mean `max_delete`"), "{err}");
    // A syntax error names its line too.
    let cfg2 = write_cfg(t.path(), "[[job]]\nname = \"x\"\ndestination = \n");
    let o = rmirror(&["run", "--check", "-c", cfg2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("line 3"), "{}", show(&o));
    // A clean file passes and nothing runs.
    let cfg3 = write_cfg(t.path(), "[[job]]\nname = \"x\"\ndestination = \"d\"\nupstream = \"rsync://127.0.0.1:1/m/\"\n");
    let o = rmirror(&["run", "--check", "-c", cfg3.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!t.join("d").exists());
}

#[test]
fn ten_jobs_five_daemons_never_more_than_max_parallel() {
    let srcs: Vec<TestDir> = (0..10).map(|i| TestDir::new(&format!("src{i}"))).collect();
    for (i, s) in srcs.iter().enumerate() {
        let mut spec = tree::TreeSpec::new();
        for f in 0..12 {
            spec = spec.random_file(format!("d{}/f{f}.bin", f % 3), 40_000 + (f as u64) * 3000, (i * 100 + f) as u64);
        }
        spec.file("README", format!("tree {i}\n")).write(s.path());
    }
    let daemons: Vec<Rsyncd> = (0..5)
        .map(|k| Rsyncd::builder().module(&format!("m{}", 2 * k), srcs[2 * k].path()).module(&format!("m{}", 2 * k + 1), srcs[2 * k + 1].path()).start())
        .collect();
    // Each daemon behind a 4 MB/s link, so a job's session (~0.7 MB) lasts
    // ~0.2 s: long enough for the sampler to see sessions overlap. On bare
    // loopback a session now ends in a few ms and no overlap is observable.
    let proxies: Vec<SlowProxy> = daemons.iter().map(|d| SlowProxy::start(d.port(), Duration::ZERO, Some(4_000_000))).collect();
    let t = TestDir::new("jobs10");
    let mut cfg = String::from("max_parallel = 3\nstate_dir = \"state\"\n");
    for i in 0..10 {
        let p = &proxies[i / 2];
        cfg.push_str(&format!(
            "\n[[job]]\nname = \"j{i}\"\ndestination = \"dest/j{i}\"\nupstream = \"{}\"\ninterval = \"1h\"\nmin_wait_ok = \"10m\"\n",
            p.url(&format!("m{i}"))
        ));
    }
    let cfg = write_cfg(t.path(), &cfg);
    let c = cfg.to_str().unwrap();

    let sampler = Sampler::start(daemons.iter().map(|d| d.pid()).collect());
    let t0 = now();
    let o = rmirror(&["run", "--once", "-c", c]);
    let (sustained, raw) = sampler.finish(Duration::from_millis(30));
    assert!(o.status.success(), "{}", show(&o));
    eprintln!("concurrent daemon sessions: sustained max {sustained}, raw max {raw}");
    assert!(sustained <= 3, "more than 3 sessions at once (sustained {sustained}, raw {raw})");
    assert!(sustained >= 2, "jobs did not run in parallel at all (max {sustained})");
    // Every job: exactly one session on its daemon, for its module; clean.
    for (k, d) in daemons.iter().enumerate() {
        let s = d.sessions();
        let mut mods: Vec<String> = s.iter().filter_map(|x| x.module.clone()).collect();
        mods.sort();
        assert_eq!(mods, vec![format!("m{}", 2 * k), format!("m{}", 2 * k + 1)], "{s:?}");
    }
    let st = status_json(&cfg);
    for i in 0..10 {
        let j = &st["jobs"][format!("j{i}")];
        assert_eq!(j["result"], "ok", "{j}");
        assert_eq!(j["exit_code"], 0);
        assert!(j["files"].as_u64().unwrap() >= 13, "{j}");
        assert!(j["bytes"].as_u64().unwrap() > 480_000, "{j}");
        let start = j["last_start"].as_f64().unwrap();
        assert!(start >= t0 as f64 - 1.0);
        let due = j["next_due"].as_f64().unwrap();
        assert!((due - (start + 3600.0)).abs() < 1.0, "next due {due} vs start {start}: {j}");
    }
    // The status file is a plain JSON document on disk, and the table prints.
    let on_disk: serde_json::Value = serde_json::from_slice(&std::fs::read(t.join("state/status.json")).unwrap()).unwrap();
    assert_eq!(on_disk["jobs"]["j3"]["result"], "ok");
    let o = rmirror(&["status", "-c", c]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("j9"), "{}", show(&o));

    // Restart: nothing is due, so nothing runs and the status is unchanged.
    let o = rmirror(&["run", "--once", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(daemons.iter().map(session_count).sum::<usize>(), 10);
    let st2 = status_json(&cfg);
    for i in 0..10 {
        assert_eq!(st2["jobs"][format!("j{i}")]["last_start"], st["jobs"][format!("j{i}")]["last_start"]);
    }
    // Timers ignored for one job: exactly one more session, on its daemon.
    let o = rmirror(&["run", "--once", "--ignore-timers", "--only", "j3", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(session_count(&daemons[1]), 3);
    assert_eq!(daemons.iter().map(session_count).sum::<usize>(), 11);
    let st3 = status_json(&cfg);
    assert!(st3["jobs"]["j3"]["last_start"].as_f64() > st["jobs"]["j3"]["last_start"].as_f64());
    assert_eq!(st3["jobs"]["j3"]["files"], 0, "an unchanged tree moves no file");
    assert_eq!(st3["jobs"]["j4"]["last_start"], st["jobs"]["j4"]["last_start"]);
    // --skip leaves a job alone even with --ignore-timers.
    let o = rmirror(&["run", "--once", "--ignore-timers", "--skip", "j0", "--skip", "j1", "--only", "j1", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(daemons.iter().map(session_count).sum::<usize>(), 11);
    // Every destination is what rsync itself says it should be.
    for i in 0..10 {
        oracle::assert_clean(&daemons[i / 2].url(&format!("m{i}")), &t.join(format!("dest/j{i}")));
    }
}

#[test]
fn unchanged_marker_costs_one_small_fetch() {
    let src = TestDir::new("ius");
    tree::TreeSpec::new()
        .random_file("repo/a.rpm", 200_000, 1)
        .random_file("repo/b.rpm", 50_000, 2)
        .file("repo/repodata/repomd.xml", "<repomd>1</repomd>\n")
        .file("CURRENT", "1700000000\n")
        .write(src.path());
    let d = Rsyncd::builder().module("ius", src.path()).start();
    let t = TestDir::new("marker");
    let hook_out = t.join("hook.env");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n\n[[job]]\nname = \"ius\"\ndestination = \"dest\"\nupstream = \"{}\"\nstrategy = \"marker\"\nlate_publish = [\"repodata/\"]\nafter = \"env | grep ^RMIRROR_ | sort > {}\"\n",
            d.url("ius"),
            hook_out.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let o = rmirror(&["run", "--once", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    // Marker fetch, then the tree without the marker (repodata/ is renamed
    // into place last by the engine, in the same session).
    let s = d.sessions();
    assert_eq!(s.len(), 2, "{s:?}");
    let log = d.transfer_log();
    let sent_in = |pid: u32| -> Vec<String> { log.iter().filter(|x| x.pid == pid && x.op == "send").map(|x| x.name.clone()).collect() };
    assert_eq!(sent_in(s[0].pid), vec!["CURRENT".to_string()]);
    let tree_sent = sent_in(s[1].pid);
    assert!(tree_sent.iter().any(|n| n.ends_with("a.rpm")), "{tree_sent:?}");
    assert!(tree_sent.iter().any(|n| n.ends_with("repomd.xml")), "{tree_sent:?}");
    assert!(!tree_sent.iter().any(|n| n.contains("CURRENT")), "{tree_sent:?}");
    oracle::assert_clean(&d.url("ius"), &t.join("dest"));
    let env = std::fs::read_to_string(&hook_out).unwrap();
    assert!(env.contains("RMIRROR_RESULT=ok") && env.contains("RMIRROR_JOB=ius") && env.contains("RMIRROR_EXIT=0"), "{env}");

    // Unchanged marker: one session whose file list holds only the marker,
    // and no file sent.
    let before = d.sessions().len();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    let s2 = d.sessions();
    assert_eq!(s2.len(), before + 1, "{s2:?}");
    let last = &s2[before];
    assert_eq!(last.total_size, "1700000000\n".len() as u64, "file list must hold only the marker: {last:?}");
    assert!(last.sent < 1000, "{last:?}");
    assert!(sent_in(last.pid).is_empty());
    assert!(d.transfer_log().iter().all(|x| x.pid != last.pid || x.op != "send"));
    let st = status_json(&cfg);
    assert_eq!(st["jobs"]["ius"]["result"], "unchanged");
    assert!(std::fs::read_to_string(&hook_out).unwrap().contains("RMIRROR_RESULT=unchanged"));

    // Upstream changes tree and marker: a full sync, marker published last.
    std::fs::write(src.path().join("repo/c.rpm"), b"new package").unwrap();
    std::fs::remove_file(src.path().join("repo/b.rpm")).unwrap();
    std::fs::write(src.path().join("CURRENT"), "1700000100\n").unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    oracle::assert_clean(&d.url("ius"), &t.join("dest"));
    assert!(!t.join("dest/repo/b.rpm").exists());
    assert_eq!(std::fs::read_to_string(t.join("dest/CURRENT")).unwrap(), "1700000100\n");
    assert_eq!(status_json(&cfg)["jobs"]["ius"]["result"], "ok");
}

#[test]
fn debian_trace_file_as_marker() {
    let src = TestDir::new("deb");
    let trace = |date: &str, serial: &str| format!("{date}\nDate: {date}\nArchive serial: {serial}\n");
    tree::TreeSpec::new()
        .random_file("dists/stable/Release", 3000, 7)
        .random_file("pool/main/p/pkg.deb", 100_000, 8)
        .file("project/trace/master", trace("Mon, 01 Jan 2024 00:00:00 +0000", "2024010101"))
        .write(src.path());
    let d = Rsyncd::builder().module("debian", src.path()).start();
    let t = TestDir::new("trace");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n[[job]]\nname = \"debian\"\ndestination = \"dest\"\nupstream = \"{}\"\nstrategy = \"marker\"\nmarker = \"project/trace/master\"\n",
            d.url("debian")
        ),
    );
    let c = cfg.to_str().unwrap();
    let o = rmirror(&["run", "--once", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    oracle::assert_clean(&d.url("debian"), &t.join("dest"));
    let n = d.sessions().len();
    // Same serial, different date line: nothing to do.
    std::fs::write(src.path().join("project/trace/master"), trace("Mon, 01 Jan 2024 06:00:00 +0000", "2024010101")).unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(d.sessions().len(), n + 1);
    assert_eq!(status_json(&cfg)["jobs"]["debian"]["result"], "unchanged");
    // New serial: sync.
    std::fs::write(src.path().join("dists/stable/Release"), "new release\n").unwrap();
    std::fs::write(src.path().join("project/trace/master"), trace("Tue, 02 Jan 2024 00:00:00 +0000", "2024010201")).unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(status_json(&cfg)["jobs"]["debian"]["result"], "ok");
    oracle::assert_clean(&d.url("debian"), &t.join("dest"));
}

#[test]
fn fails_over_when_the_best_upstream_dies_and_never_uses_a_stale_one() {
    let n = now();
    // One tree, published by three upstreams with different freshness.
    let mk = |label: &str, ts: u64| {
        let dir = TestDir::new(label);
        let mut spec = tree::TreeSpec::new();
        for f in 0..8 {
            spec = spec.random_file(format!("pool/f{f}.bin"), 250_000, 40 + f);
        }
        spec.file("mirror.yml", mirror_yml(ts, None)).mtime(ts as i64, 0).write(dir.path());
        dir
    };
    let a_dir = mk("fresh-a", n - 60);
    let b_dir = mk("fresh-b", n - 120);
    let c_dir = mk("stale-c", n - 3 * 86400);
    std::fs::write(c_dir.path().join("pool/only-on-stale"), "old\n").unwrap();
    let mut a = Rsyncd::builder().module("pub", a_dir.path()).start();
    let b = Rsyncd::builder().module("pub", b_dir.path()).start();
    let c = Rsyncd::builder().module("pub", c_dir.path()).start();
    // A, the freshest, is behind a slow link so that it can die mid-run.
    let pa = SlowProxy::start(a.port(), Duration::ZERO, Some(1_000_000));
    let t = TestDir::new("failover");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n[[job]]\nname = \"pub\"\ndestination = \"dest\"\nupstreams = [\"{}\", \"{}\", \"{}\"]\nfreshness = \"mirror.yml\"\ntimeout = \"20s\"\n",
            c.url("pub"),
            pa.url("pub"),
            b.url("pub")
        ),
    );
    let c_path = cfg.to_str().unwrap().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(["run", "--once", "-c", &c_path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tree transfer from A is under way, then kill A.
    let deadline = Instant::now() + Duration::from_secs(30);
    while pa.forwarded.load(Ordering::Relaxed) < 400_000 {
        assert!(Instant::now() < deadline, "the transfer from A never got going");
        std::thread::sleep(Duration::from_millis(10));
    }
    a.kill();
    pa.kill();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failing over"), "{err}");
    oracle::assert_clean(&b.url("pub"), &t.join("dest"));
    let st = status_json(&cfg);
    assert_eq!(st["jobs"]["pub"]["upstream"], b.url("pub"), "{st}");
    assert_eq!(st["jobs"]["pub"]["result"], "ok");
    // The stale upstream only ever served its mirror.yml (the probe).
    assert_eq!(c.transfers("pub"), vec!["mirror.yml".to_string()]);
    assert!(!t.join("dest/pool/only-on-stale").exists());

    // An upstream fresh by age but older than the local copy is not used.
    let d_dir = mk("older-than-local", n - 600);
    std::fs::write(d_dir.path().join("pool/only-on-d"), "d\n").unwrap();
    let d = Rsyncd::builder().module("pub", d_dir.path()).start();
    let cfg2 = write_cfg(
        t.path(),
        &format!("state_dir = \"state\"\n[[job]]\nname = \"pub\"\ndestination = \"dest\"\nupstream = \"{}\"\nfreshness = \"mirror.yml\"\n", d.url("pub")),
    );
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", cfg2.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("older than the local copy"), "{}", show(&o));
    assert_eq!(d.transfers("pub"), vec!["mirror.yml".to_string()]);
    assert!(!t.join("dest/pool/only-on-d").exists());
    oracle::assert_clean(&b.url("pub"), &t.join("dest"));
    assert_eq!(status_json(&cfg2)["jobs"]["pub"]["result"], "failed");
}

#[test]
fn probe_ranks_by_freshness_then_latency() {
    let n = now();
    // Loopback only: a master nobody listens on (port 1), never a DNS name.
    let master = "rsync://127.0.0.1:1/pub/";
    let mk = |label: &str, content: String| {
        let dir = TestDir::new(label);
        std::fs::write(dir.path().join("mirror.yml"), content).unwrap();
        dir
    };
    let fast = mk("fast", mirror_yml(n - 30, Some(master)));
    let slow = mk("slow", mirror_yml(n - 30, Some(master)));
    let older = mk("older", mirror_yml(n - 3600, Some("rsync://127.0.0.1:2/pub/")));
    let stale = mk("stale", mirror_yml(n - 2 * 86400, Some(master)));
    let broken = mk("broken", "<!DOCTYPE html>\n<html><body>Welcome to the hotel wifi</body></html>\n".into());
    let d1 = Rsyncd::builder().module("fast", fast.path()).module("older", older.path()).module("broken", broken.path()).start();
    let d2 = Rsyncd::builder().module("slow", slow.path()).module("stale", stale.path()).start();
    let ps = SlowProxy::start(d2.port(), Duration::from_millis(60), None);
    let urls = [d1.url("broken"), d2.url("stale"), ps.url("slow"), d1.url("older"), d1.url("fast")];
    let mut args = vec!["probe", "--json"];
    args.extend(urls.iter().map(String::as_str));
    let o = rmirror(&args);
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cands = v["candidates"].as_array().unwrap();
    let order: Vec<(&str, &str)> = cands.iter().map(|c| (c["url"].as_str().unwrap(), c["status"].as_str().unwrap())).collect();
    assert_eq!(order[0], (d1.url("fast").as_str(), "fresh"), "{order:?}");
    assert_eq!(order[1], (ps.url("slow").as_str(), "fresh"), "{order:?}");
    assert_eq!(order[2], (d1.url("older").as_str(), "fresh"), "{order:?}");
    let rest: Vec<(&str, &str)> = order[3..].to_vec();
    assert!(rest.contains(&(d2.url("stale").as_str(), "stale")), "{order:?}");
    assert!(rest.contains(&(d1.url("broken").as_str(), "invalid")), "{order:?}");
    assert!(cands[1]["latency_ms"].as_u64() > cands[0]["latency_ms"].as_u64(), "{v}");
    assert!(cands.iter().any(|c| c["detail"].as_str().unwrap_or("").contains("HTML")), "{v}");
    // --max-age makes the one-hour-old mirror stale too.
    let mut args2 = vec!["probe", "--json", "--max-age", "30m"];
    args2.extend(urls.iter().map(String::as_str));
    let v2: serde_json::Value = serde_json::from_slice(&rmirror(&args2).stdout).unwrap();
    let older_c = v2["candidates"].as_array().unwrap().iter().find(|c| c["url"] == d1.url("older")).unwrap().clone();
    assert_eq!(older_c["status"], "stale", "{v2}");

    // A mirror list: its mirrors are probed; the master is accepted because
    // two fresh mirrors (fast, slow) name it; the stale one's vote is not counted.
    let list_dir = TestDir::new("list");
    let list = format!(
        "---\ntimestamp: {n}\nmirrors:\n  - {}\n  - {}\n  - {}\n  - {}\n",
        d1.url("fast"),
        ps.url("slow"),
        d1.url("older"),
        d2.url("stale")
    );
    std::fs::write(list_dir.path().join("mirror.yml"), list).unwrap();
    let dl = Rsyncd::builder().module("list", list_dir.path()).start();
    let list_url = format!("{}mirror.yml", dl.url("list"));
    let o = rmirror(&["probe", "--json", &list_url]);
    assert!(o.status.success(), "{}", show(&o));
    let v3: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v3["masters"][0]["master"], master, "{v3}");
    assert_eq!(v3["masters"][0]["votes"], 2, "{v3}");
    assert_eq!(v3["candidates"][0]["url"], d1.url("fast"), "{v3}");
    // A job that discovers its upstreams from the list uses the best fresh
    // mirror (the agreed master is probed too, and is down here).
    let t = TestDir::new("discover");
    let cfg = write_cfg(t.path(), &format!("state_dir = \"state\"\n[[job]]\nname = \"d\"\ndestination = \"dest\"\ndiscover = \"{list_url}\"\n"));
    let o = rmirror(&["run", "--once", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("master {master} (named by 2 fresh mirrors)")), "{}", show(&o));
    assert_eq!(status_json(&cfg)["jobs"]["d"]["upstream"], d1.url("fast"));
    oracle::assert_clean(&d1.url("fast"), &t.join("dest"));
    // The table form.
    let o = rmirror(&["probe", &d1.url("fast"), &d1.url("broken")]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("RANK") && out.contains("invalid") && out.contains("fresh"), "{}", show(&o));
}

#[test]
fn sighup_reloads_without_dropping_running_jobs_and_locks_are_per_destination() {
    let src = TestDir::new("hup-src");
    tree::TreeSpec::new().random_file("big.bin", 1_500_000, 3).file("small", "x\n").write(src.path());
    let d = Rsyncd::builder().module("a", src.path()).module("b", src.path()).start();
    // A slow path for job a, so it is still running when the reload comes.
    let p = SlowProxy::start(d.port(), Duration::ZERO, Some(1_000_000));
    let t = TestDir::new("hup");
    let job = |name: &str, url: &str| format!("\n[[job]]\nname = \"{name}\"\ndestination = \"dest/{name}\"\nupstream = \"{url}\"\n");
    let base = format!("state_dir = \"state\"\nreload_poll = 0\n{}", job("a", &p.url("a")));
    let cfg = write_cfg(t.path(), &base);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.forwarded.load(Ordering::Relaxed) < 200_000 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&cfg, format!("{base}{}", job("b", &d.url("b")))).unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let read_status = || -> serde_json::Value {
        std::fs::read(t.join("state/status.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = read_status();
        if s["jobs"]["a"]["result"] == "ok" && s["jobs"]["b"]["result"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish after the reload: {s}");
        assert!(child.try_wait().unwrap().is_none(), "rmirror exited on SIGHUP");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(child.try_wait().unwrap().is_none(), "rmirror exited");
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("SIGHUP: reloading"), "{err}");
    // Job a ran once (one session for module a), not restarted by the reload.
    assert_eq!(d.sessions().iter().filter(|s| s.module.as_deref() == Some("a")).count(), 1);
    oracle::assert_clean(&d.url("a"), &t.join("dest/a"));
    oracle::assert_clean(&d.url("b"), &t.join("dest/b"));

    // A destination lock held by another live process: the job is skipped.
    let lock = rmirror::daemon::lock::lock_path(&t.join("state/locks"), &t.join("dest/b").canonicalize().unwrap());
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).unwrap();
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let o = rmirror(&["run", "--once", "--ignore-timers", "--only", "b", "-c", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("locked"), "{}", show(&o));
    assert_eq!(read_status()["jobs"]["b"]["result"], "skipped");
    drop(f);
    // A lock file left by a dead process is taken over.
    std::fs::write(&lock, "999999999 b\n").unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "--only", "b", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stale lock of dead pid 999999999"), "{}", show(&o));
}

#[test]
fn wall_clock_timeout_fails_the_run_and_runs_the_failure_hook() {
    let src = TestDir::new("wall-src");
    tree::TreeSpec::new().random_file("big.bin", 1_000_000, 9).write(src.path());
    let d = Rsyncd::builder().module("m", src.path()).start();
    let p = SlowProxy::start(d.port(), Duration::ZERO, Some(50_000));
    let t = TestDir::new("wall");
    let out = t.join("failed.env");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n[[job]]\nname = \"w\"\ndestination = \"dest\"\nupstream = \"{}\"\nwall_timeout = \"1s\"\nmin_wait_fail = \"2m\"\non_failure = \"env | grep ^RMIRROR_ | sort > {}\"\nafter = \"touch {}\"\n",
            p.url("m"),
            out.display(),
            t.join("after-ran").display()
        ),
    );
    let t0 = Instant::now();
    let o = rmirror(&["run", "--once", "-c", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(30), "{}", show(&o));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let env = std::fs::read_to_string(&out).unwrap();
    assert!(env.contains("RMIRROR_RESULT=failed") && env.contains("RMIRROR_EXIT=30") && env.contains("wall-clock timeout"), "{env}");
    assert!(!t.join("after-ran").exists());
    let st = status_json(&cfg);
    let j = &st["jobs"]["w"];
    assert_eq!(j["result"], "failed");
    assert_eq!(j["exit_code"], 30);
    let due = j["next_due"].as_f64().unwrap() - j["last_end"].as_f64().unwrap();
    assert!((due - 120.0).abs() < 1.0, "retry after min_wait_fail: {j}");
    assert!(!t.join("dest/big.bin").exists());
}

/// A one-thread HTTP/1.0 server on 127.0.0.1 serving fixed bodies by path.
fn http_server(routes: Vec<(&'static str, String)>) -> (u16, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !st.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((mut c, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            c.set_nonblocking(false).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req).lines().next().unwrap_or("").to_string();
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = match routes.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()),
                None => "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
            };
            let _ = c.write_all(resp.as_bytes());
        }
    });
    (port, stop)
}

#[test]
fn probe_over_http_rejects_a_captive_portal() {
    let n = now();
    let (port, stop) = http_server(vec![
        ("/good/mirror.yml", mirror_yml(n - 10, None)),
        ("/portal/mirror.yml", "<html><head><title>Sign in</title></head></html>\n".into()),
        ("/json/mirror.json", format!("{{\"timestamp\": {}}}", n - 100)),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    let o = rmirror(&["probe", "--json", &format!("{base}/portal/"), &format!("{base}/good/"), &format!("{base}/json/mirror.json"), &format!("{base}/missing/")]);
    stop.store(true, Ordering::Relaxed);
    assert!(o.status.success(), "{}", show(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = v["candidates"].as_array().unwrap();
    let got: Vec<(String, String)> = c.iter().map(|x| (x["url"].as_str().unwrap().to_string(), x["status"].as_str().unwrap().to_string())).collect();
    assert_eq!(got[0], (format!("{base}/good/"), "fresh".to_string()), "{v}");
    assert_eq!(got[1], (format!("{base}/json/"), "fresh".to_string()), "{v}");
    assert!(got.contains(&(format!("{base}/portal/"), "invalid".to_string())), "{v}");
    assert!(got.contains(&(format!("{base}/missing/"), "error".to_string())), "{v}");
}

#[test]
fn recent_strategy_follows_the_change_logs() {
    // An upstream that publishes RECENT files (File::Rsync::Mirror::Recent).
    let src = TestDir::new("recent-up");
    let mut p = support::recent_producer::Producer::new(src.path());
    for i in 0..30 {
        p.write_file(&format!("authors/id/A/AB/ABC/Dist-{i}.tar.gz"), format!("dist {i}").as_bytes());
    }
    p.publish();
    let d = Rsyncd::builder().module("cpan", src.path()).start();
    let t = TestDir::new("recent-job");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n\n[[job]]\nname = \"cpan\"\ndestination = \"dest\"\nupstream = \"{}\"\nstrategy = \"recent\"\n",
            d.url("cpan")
        ),
    );
    let c = cfg.to_str().unwrap();
    let check = rmirror(&["run", "--check", "-c", c]);
    assert!(check.status.success(), "recent must be a valid strategy now: {}", show(&check));
    // First run: no local state, so the planner does a full sync.
    let o = rmirror(&["run", "--once", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    oracle::assert_clean(&d.url("cpan"), &t.join("dest"));
    assert_eq!(status_json(&cfg)["jobs"]["cpan"]["result"], "ok");
    // One upload and one deletion upstream: the next run fetches exactly that file.
    p.write_file("authors/id/A/AB/ABC/Dist-new.tar.gz", b"fresh");
    p.delete_file("authors/id/A/AB/ABC/Dist-3.tar.gz");
    p.publish();
    let before = d.transfer_log().len();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    oracle::assert_clean(&d.url("cpan"), &t.join("dest"));
    let sent: Vec<String> = d.transfer_log()[before..]
        .iter()
        .filter(|x| x.op == "send" && !x.name.contains("RECENT"))
        .map(|x| x.name.clone())
        .collect();
    assert_eq!(sent.len(), 1, "only the new upload may be sent: {sent:?}");
    assert!(sent[0].ends_with("Dist-new.tar.gz"), "{sent:?}");
    assert!(!t.join("dest/authors/id/A/AB/ABC/Dist-3.tar.gz").exists());
}

/// F17 (safety plan): the upstream exposes ftpsync's
/// `Archive-Update-in-Progress-*` at its top level while it updates itself.
/// Both tree strategies (full and marker) then fetch the new pool files but
/// hold back the late phase — the index files (`late_publish`) and the
/// deletions — and, for marker jobs, the marker; the run is `retry` (exit
/// 23, not a success, no `after` hook, shown in the status file and on the
/// scoreboard). Once the lock file is gone the next run completes. With a
/// partial dir the held-back index file waits there, so the completing run
/// transfers almost nothing for it.
#[test]
fn f17_upstream_update_in_progress_holds_the_late_phase() {
    let src = TestDir::new("f17-up");
    let trace = |serial: &str| format!("Mon, 01 Jan 2024 00:00:00 +0000\nArchive serial: {serial}\n");
    tree::TreeSpec::new()
        .random_file("pool/main/a.deb", 60_000, 1)
        .random_file("dists/stable/Release", 40_000, 2)
        .mtime(1_700_000_000, 0)
        .file("project/trace/master", trace("2024010101"))
        .write(src.path());
    let d = Rsyncd::builder().module("debian", src.path()).start();
    let t = TestDir::new("f17");
    let hook_out = t.join("after.env");
    let cfg = write_cfg(
        t.path(),
        &format!(
            "state_dir = \"state\"\n\
             [[job]]\nname = \"deb-marker\"\ndestination = \"dest-marker\"\nupstream = \"{u}\"\nstrategy = \"marker\"\n\
             marker = \"project/trace/master\"\nlate_publish = [\"dists/\"]\nafter = \"echo $RMIRROR_JOB $RMIRROR_RESULT >> {h}\"\n\
             [[job]]\nname = \"deb-full\"\ndestination = \"dest-full\"\nupstream = \"{u}\"\nlate_publish = [\"dists/\"]\n\
             partial_dir = \".rsync-partial\"\nafter = \"echo $RMIRROR_JOB $RMIRROR_RESULT >> {h}\"\n",
            u = d.url("debian"),
            h = hook_out.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    let check = rmirror(&["run", "--check", "-c", c]);
    assert!(check.status.success(), "{}", show(&check));
    let o = rmirror(&["run", "--once", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    for dest in ["dest-marker", "dest-full"] {
        oracle::assert_clean(&d.url("debian"), &t.join(dest));
    }
    let st = status_json(&cfg);
    let first_success = st["jobs"]["deb-full"]["last_success"].as_f64().unwrap();
    std::fs::remove_file(&hook_out).unwrap();

    // The upstream starts updating itself: new pool file, new index, an old
    // file about to go, a new serial — and its lock file at the top.
    let old_release = std::fs::read(src.join("dists/stable/Release")).unwrap();
    std::fs::write(src.join("pool/main/b.deb"), tree::random_bytes(50_000, 3)).unwrap();
    tree::large_file(&src.join("dists/stable/Release"), 40_000, 4);
    std::fs::remove_file(src.join("pool/main/a.deb")).unwrap();
    std::fs::write(src.join("project/trace/master"), trace("2024010201")).unwrap();
    let lock = "Archive-Update-in-Progress-upstream.example.org";
    std::fs::write(src.join(lock), "").unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert_eq!(o.status.code(), Some(23), "a held-back run is not a success:\n{}", show(&o));
    let st = status_json(&cfg);
    for (job, dest) in [("deb-marker", "dest-marker"), ("deb-full", "dest-full")] {
        let j = &st["jobs"][job];
        assert_eq!(j["result"], "retry", "{job}: {j}");
        assert_eq!(j["exit_code"], 23, "{job}: {j}");
        let msg = j["message"].as_str().unwrap();
        assert!(msg.contains(lock) && msg.contains("held back"), "{job}: {msg}");
        assert_eq!(j["failures"], 0, "{job}: a retry is not a failure");
        let dest = t.join(dest);
        // Stage one happened: the new pool file is there.
        assert_eq!(std::fs::read(dest.join("pool/main/b.deb")).unwrap(), tree::random_bytes(50_000, 3), "{job}");
        // The late phase did not: old index, no deletion.
        assert_eq!(std::fs::read(dest.join("dists/stable/Release")).unwrap(), old_release, "{job}: index published early");
        assert!(dest.join("pool/main/a.deb").exists(), "{job}: deleted while the upstream was updating");
        assert!(support::evil::temps_under(&dest).is_empty(), "{job}");
    }
    assert_eq!(st["jobs"]["deb-full"]["last_success"].as_f64().unwrap(), first_success, "last_success must not move");
    // The marker job keeps its old marker (the trace is published last).
    assert!(std::fs::read_to_string(t.join("dest-marker/project/trace/master")).unwrap().contains("2024010101"));
    // The full job with a partial dir keeps the held-back index there.
    assert_eq!(
        std::fs::read(t.join("dest-full/dists/stable/.rsync-partial/Release")).unwrap(),
        std::fs::read(src.join("dists/stable/Release")).unwrap()
    );
    assert!(!hook_out.exists(), "the after hook ran for a held-back run: {:?}", std::fs::read_to_string(&hook_out));
    let html = std::fs::read_to_string(t.join("state/status.html")).unwrap();
    assert!(html.contains("data-job=\"deb-full\" data-result=\"retry\""), "{html}");
    assert!(html.contains(lock), "the scoreboard says why");
    assert_eq!(st["jobs"]["deb-full"]["next_due"].as_f64().unwrap().round(), (st["jobs"]["deb-full"]["last_end"].as_f64().unwrap() + 600.0).round(), "retried after min_wait_fail");

    // The upstream is done: the lock goes, the next run completes.
    std::fs::remove_file(src.join(lock)).unwrap();
    let before = d.sessions().len();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", c]);
    assert!(o.status.success(), "{}", show(&o));
    let st = status_json(&cfg);
    for (job, dest) in [("deb-marker", "dest-marker"), ("deb-full", "dest-full")] {
        assert_eq!(st["jobs"][job]["result"], "ok", "{job}");
        let dest = t.join(dest);
        oracle::assert_clean(&d.url("debian"), &dest);
        assert!(!dest.join(lock).exists() && !dest.join("pool/main/a.deb").exists(), "{job}");
    }
    assert!(!t.join("dest-full/dists/stable/.rsync-partial").exists());
    let hooks = std::fs::read_to_string(&hook_out).unwrap();
    assert!(hooks.contains("deb-marker ok") && hooks.contains("deb-full ok"), "{hooks}");
    // The index the full job held back was resumed from its partial dir:
    // of the two sessions that sent Release now, the marker job's sent the
    // whole 40 kB, the full job's almost nothing.
    let log = d.transfer_log();
    let mut sent: Vec<u64> = d.sessions()[before..]
        .iter()
        .filter(|x| log.iter().any(|l| l.pid == x.pid && l.op == "send" && l.name.ends_with("dists/stable/Release")))
        .map(|x| x.sent)
        .collect();
    sent.sort();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[0] < 15_000 && sent[1] > 40_000, "sent bytes per session: {sent:?}");
}

/// F18 (safety plan §4.4): two `rmirror run` processes on one destination.
/// While the first is transferring, the second refuses on the destination
/// lock (naming the holder's pid), opens no session and leaves DEST alone;
/// the first completes oracle-clean. A run killed with SIGKILL mid-transfer
/// leaves no lock behind (flock dies with its holder — rmirror's stale-lock
/// rule, with no timeout to wait out): the next run takes over and converges.
#[test]
fn f18_concurrent_run_refuses_on_the_destination_lock() {
    let src = TestDir::new("f18-src");
    tree::TreeSpec::new().random_file("big.bin", 2_000_000, 18).file("small", "x\n").write(src.path());
    let d = Rsyncd::builder().module("m", src.path()).start();
    let p = SlowProxy::start(d.port(), Duration::ZERO, Some(400_000));
    let t = TestDir::new("f18");
    let cfg = write_cfg(
        t.path(),
        &format!("state_dir = \"state\"\n[[job]]\nname = \"a\"\ndestination = \"dest\"\nupstream = \"{}\"\n", p.url("m")),
    );
    let c = cfg.to_str().unwrap();
    // The same job and state dir (so the same lock) straight to the daemon, for the fast reruns.
    let direct = t.join("direct.toml");
    std::fs::write(&direct, format!("state_dir = \"state\"\n[[job]]\nname = \"a\"\ndestination = \"dest\"\nupstream = \"{}\"\n", d.url("m"))).unwrap();
    let direct = direct.to_str().unwrap();
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_rmirror"))
            .args(["run", "--once", "--ignore-timers", "-c", c])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_forwarded = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.forwarded.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the first run never got going");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let first = spawn();
    let o1_pid = first.id();
    wait_forwarded(150_000);
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", direct]);
    let err = String::from_utf8_lossy(&o.stderr);
    let o1 = first.wait_with_output().unwrap();
    assert!(err.contains(&format!("destination locked by pid {}", o1_pid)), "{}\nfirst run:\n{}", show(&o), String::from_utf8_lossy(&o1.stderr));
    assert!(o1.status.success(), "first run: {}", String::from_utf8_lossy(&o1.stderr));
    // (Read after the first run: the daemon log is complete only then.)
    assert_eq!(d.sessions().len(), 1, "the refused run opened a session");
    oracle::assert_clean(&d.url("m"), &t.join("dest"));

    // A run killed mid-transfer: the lock goes with it.
    std::fs::write(src.join("big.bin"), tree::random_bytes(2_000_000, 19)).unwrap();
    let before = p.forwarded.load(Ordering::Relaxed);
    let mut killed = spawn();
    wait_forwarded(before + 150_000);
    unsafe {
        libc::kill(killed.id() as i32, libc::SIGKILL);
    }
    killed.wait().unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", direct]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("locked"), "{}", show(&o));
    oracle::assert_clean(&d.url("m"), &t.join("dest"));
}

/// F7 (safety plan §4.4), slowloris: the upstream trickles (a burst every
/// few seconds, so the idle `timeout` of 10 s never fires) and only the
/// job's overall deadline, `wall_timeout`, ends the run: exit 30 within
/// seconds, no deletions, old or new content only, no temp left in DEST;
/// the next run without the trickle converges (and does delete).
#[test]
fn f07_slowloris_ends_at_the_wall_timeout_without_deletions() {
    let src = TestDir::new("f07-src");
    tree::TreeSpec::new().random_file("big.bin", 400_000, 7).file("small", "new\n").write(src.path());
    let d = Rsyncd::builder().module("m", src.path()).start();
    let p = SlowProxy::start(d.port(), Duration::ZERO, Some(2_000));
    let t = TestDir::new("f07");
    let dest = t.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::write(dest.join("small"), "old\n").unwrap();
    std::fs::write(dest.join("extraneous"), "not upstream\n").unwrap();
    let job = |url: &str| format!("state_dir = \"state\"\n[[job]]\nname = \"s\"\ndestination = \"dest\"\nupstream = \"{url}\"\ntimeout = \"10s\"\nwall_timeout = \"3s\"\n");
    let cfg = write_cfg(t.path(), &job(&p.url("m")));
    let t0 = Instant::now();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", cfg.to_str().unwrap()]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(30), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("wall-clock timeout"), "{}", show(&o));
    assert!(took < Duration::from_secs(9), "took {took:?}: {}", show(&o));
    assert!(p.forwarded.load(Ordering::Relaxed) > 0, "the trickle never started");
    assert_eq!(std::fs::read(dest.join("extraneous")).unwrap(), b"not upstream\n", "deleted in a timed-out run");
    let small = std::fs::read(dest.join("small")).unwrap();
    assert!(small == b"old\n" || small == b"new\n", "torn: {small:?}");
    if let Ok(b) = std::fs::read(dest.join("big.bin")) {
        assert_eq!(b, std::fs::read(src.join("big.bin")).unwrap(), "big.bin published torn");
    }
    let names: Vec<_> = std::fs::read_dir(&dest).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| ["small", "extraneous", "big.bin"].contains(&n.as_str())), "left behind in DEST: {names:?}");
    // Without the trickle: converges, deletions included.
    std::fs::write(&cfg, job(&d.url("m"))).unwrap();
    let o = rmirror(&["run", "--once", "--ignore-timers", "-c", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(!dest.join("extraneous").exists(), "the honest run did not delete: {}", show(&o));
    oracle::assert_clean(&d.url("m"), &dest);
}
