//! rmirror vs the real rsync client, side by side against the real rsync
//! daemon (issue 3, item 1). See README.md § Speed.
//!
//! ```text
//! scripts/bench                        # all scenarios (a)–(f) and (r)
//! scripts/bench a d                    # just (a) and (d)
//! scripts/bench r                      # instant mirroring: pass time vs tree size
//! cargo bench --bench compare -- c     # same thing without the script
//! RMIRROR_BENCH_PAIRS=5 scripts/bench b
//! ```
//!
//! `cargo bench` builds `rmirror` with the bench profile (no LTO, 16
//! codegen units: not what users run) before running this, and passes
//! `--bench`; we run that binary (`CARGO_BIN_EXE_rmirror`) unless
//! `RMIRROR_BIN` names another. `scripts/bench` sets `RMIRROR_BIN` to a copy
//! of the release build (fat LTO, link/hot-text.ld), which is what the
//! README's numbers are meant to describe.
//! Without `--bench` (that is how `cargo test --all-targets` runs bench
//! targets) only a smoke version runs: one ~50-file fresh pull, one pair,
//! oracle checked, and a tiny (r) (40 and 400 files, one pass each), a few
//! seconds.
//!
//! (r) is not a comparison with rsync (which has no RECENT mode): it builds
//! two upstreams of different size (10,000 and 100,000 files) that publish
//! RECENT files (`tests/support/recent_producer.rs`), mirrors each once, then
//! times single `rmirror watch --once` passes that each follow 20 changes
//! (new, changed, deleted files, a deleted directory), and prints the pass
//! time of both sizes and their ratio (issue 4: the time must not grow with
//! the tree).  Each pass is checked: exactly the changed files sent by the
//! daemon, and the oracle empty.
//!
//! Environment:
//! * `RMIRROR_BENCH_PAIRS` (default 3) measured pairs per scenario,
//!   `RMIRROR_BENCH_WARMUP` (default 1) unmeasured pairs before them;
//! * `RMIRROR_BENCH_SCENARIOS="a b"` instead of arguments;
//! * `RMIRROR_BENCH_SCALE` (default 1.0) multiplies every file count (for a
//!   quick look on a small disk; the README numbers use 1.0);
//! * `RMIRROR_BENCH_PERF=1`: after the measurements, one more rmirror run of
//!   each selected scenario under `perf record -e cpu-clock -g`, report to
//!   stdout (top symbols);
//! * `TMPDIR` decides where the trees go (removed at the end;
//!   `RMIRROR_KEEP_TMP=1` keeps them).
//!
//! Per run we record wall time, CPU time (user+sys of the child and its
//! reaped children, from `wait4`'s rusage), peak RSS (the client's `ru_maxrss`
//! as `/usr/bin/time -f %M` reports it — measured through GNU time because
//! `ru_maxrss` survives exec, so a direct child of this big process would
//! report at least our own RSS; for the
//! two-process rsync client that is the larger of the two), the peak of the
//! client process tree's summed PSS (sampled from /proc every 50 ms, so it
//! counts both rsync processes without double-counting shared pages), and the
//! daemon's own `sent N bytes received M bytes` for that session.
//!
//! Every rmirror run is followed by the oracle (`rsync -anic --delete -H`,
//! must list nothing); a non-empty listing panics.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports, dead_code)]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use support::recent_producer::Producer;
use support::{oracle, tree, Rsyncd, TestDir};

/// rsync's flags for every comparison run: the like-for-like of rmirror's
/// defaults (`-rlptH`) plus `--delete` (rmirror runs `sync --delete`).
const RSYNC_FLAGS: &[&str] = &["-rlptH", "--delete", "--no-motd"];

// ------------------------------------------------------------ measurement

#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    /// ru_maxrss, KiB.
    maxrss_kb: u64,
    /// peak of the sampled summed PSS of the process tree, KiB.
    pss_kb: u64,
    /// daemon → client, from the daemon log.
    sent: u64,
    /// client → daemon.
    recv: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    Rmirror,
    Rsync,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Rmirror => "rmirror",
            Client::Rsync => "rsync",
        }
    }
}

/// PIDs of PID's descendants (scans /proc; there is no
/// /proc/PID/task/TID/children on every kernel).
fn descendants(root: i32) -> Vec<i32> {
    let mut parent: Vec<(i32, i32)> = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(pp) = after.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

fn pss_kb(pid: i32) -> u64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Finished {
    status: ExitStatus,
    sample: Sample,
    stdout: String,
    stderr: String,
}

/// Runs CMD to completion and measures it (wall, rusage via wait4, sampled
/// PSS of its process tree).
fn measure(cmd: Command, scratch: &Path) -> Finished {
    use std::os::unix::process::ExitStatusExt;
    let out_p = scratch.join("child.stdout");
    let err_p = scratch.join("child.stderr");
    let time_p = scratch.join("child.time");
    // ru_maxrss survives exec: a child forked from this (big) process
    // reports at least our own RSS. GNU time forks the client from a tiny
    // process, so its %M is the client's own peak.
    let gnu_time = Path::new("/usr/bin/time").exists();
    let mut cmd = if gnu_time {
        let _ = fs::remove_file(&time_p);
        let mut t = Command::new("/usr/bin/time");
        t.arg("-o").arg(&time_p).args(["-f", "%M"]).arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => t.env(k, v),
                None => t.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            t.current_dir(d);
        }
        t
    } else {
        cmd
    };
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&out_p).unwrap())
        .stderr(fs::File::create(&err_p).unwrap());
    // SAFETY: sync(2) has no preconditions; flushing dirty pages of the
    // previous run keeps its writeback out of this run's time.
    unsafe { libc::sync() };
    let start = Instant::now();
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id() as i32;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            let mut tree = vec![pid];
            let mut tick = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // the process tree settles early (rsync forks once)
                if tick < 10 || tick % 10 == 0 {
                    tree = descendants(pid);
                    if gnu_time {
                        tree.retain(|&p| p != pid);
                    }
                }
                let sum: u64 = tree.iter().map(|&p| pss_kb(p)).sum();
                peak.fetch_max(sum, Ordering::Relaxed);
                tick += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: PID is our unreaped child; both out-pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    drop(child); // already reaped; dropping a Child does not wait
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Finished {
        status: ExitStatus::from_raw(status),
        sample: Sample {
            wall,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            maxrss_kb: if gnu_time {
                fs::read_to_string(&time_p)
                    .ok()
                    .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()))
                    .unwrap_or(0)
            } else {
                ru.ru_maxrss as u64
            },
            pss_kb: peak.load(Ordering::Relaxed),
            sent: 0,
            recv: 0,
        },
        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

// ------------------------------------------------------------ daemons

/// Where the daemon for a scenario runs and how to read its log.
trait Server {
    fn url(&self, module: &str) -> String;
    /// (sent, received) of the most recent finished session.
    fn last_session(&self) -> (u64, u64);
}

impl Server for Rsyncd {
    fn url(&self, module: &str) -> String {
        Rsyncd::url(self, module)
    }
    fn last_session(&self) -> (u64, u64) {
        let s = self.sessions();
        let last = s.last().expect("daemon logged no session summary");
        (last.sent, last.received)
    }
}

/// The loopback daemon seen through [`DelayProxy`] (fallback for (e)).
struct Proxied<'a> {
    d: &'a Rsyncd,
    proxy: &'a DelayProxy,
}

impl Server for Proxied<'_> {
    fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/", self.proxy.port)
    }
    fn last_session(&self) -> (u64, u64) {
        self.d.last_session()
    }
}

// ------------------------------------------------------------ runs

struct Ctx {
    rmirror: PathBuf,
    scratch: TestDir,
    pairs: usize,
    warmup: usize,
    perf: bool,
}

/// What one scenario needs from the driver.
struct Plan<'a> {
    id: &'static str,
    title: String,
    server: &'a dyn Server,
    module: &'a str,
    dest: PathBuf,
    /// Run before every (measured or warm-up) run of either client.
    prepare: Box<dyn FnMut(Client) + 'a>,
    /// Extra rmirror arguments before URL (default `--delete`).
    rmirror_args: Vec<String>,
    /// Oracle after rmirror runs (always true in practice; rsync runs are
    /// not checked).
    floor: bool,
}

struct Outcome {
    id: &'static str,
    title: String,
    rm: Vec<Sample>,
    rs: Vec<Sample>,
    floor: Option<(f64, f64)>,
}

fn rmirror_cmd(ctx: &Ctx, plan: &Plan, url: &str) -> Command {
    let mut c = Command::new(&ctx.rmirror);
    c.arg("sync").args(&plan.rmirror_args).arg(url).arg(&plan.dest);
    c.env("LC_ALL", "C").env_remove("RSYNC_PASSWORD");
    c
}

fn rsync_cmd(plan: &Plan, url: &str) -> Command {
    let mut c = support::rsync_command();
    c.args(RSYNC_FLAGS).arg(url).arg(dir_slash(&plan.dest));
    c
}

fn dir_slash(p: &Path) -> String {
    format!("{}/", p.display().to_string().trim_end_matches('/'))
}

fn run_one(ctx: &Ctx, plan: &mut Plan, who: Client) -> Sample {
    (plan.prepare)(who);
    let url = plan.server.url(plan.module);
    let cmd = match who {
        Client::Rmirror => rmirror_cmd(ctx, plan, &url),
        Client::Rsync => rsync_cmd(plan, &url),
    };
    let desc = format!("{cmd:?}");
    let f = measure(cmd, ctx.scratch.path());
    if !f.status.success() {
        panic!(
            "({}) {} failed: {}\ncommand: {desc}\nstdout:\n{}\nstderr:\n{}",
            plan.id,
            who.name(),
            f.status,
            f.stdout,
            f.stderr
        );
    }
    let mut s = f.sample;
    (s.sent, s.recv) = plan.server.last_session();
    if who == Client::Rmirror {
        let t = Instant::now();
        let lines = oracle::diff(&url, &plan.dest, &[]);
        if !lines.is_empty() {
            let shown: Vec<&String> = lines.iter().take(40).collect();
            panic!(
                "({}) ORACLE: rmirror left {} differences in {} (first 40):\n{}",
                plan.id,
                lines.len(),
                plan.dest.display(),
                shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
            );
        }
        eprintln!("    oracle clean ({:.1} s)", t.elapsed().as_secs_f64());
    }
    eprintln!(
        "    {:<8} wall {:>8.3} s  cpu {:>8.3} s  maxrss {:>7.1} MiB  pss {:>7.1} MiB  sent {:>12}  recv {:>10}",
        who.name(),
        s.wall,
        s.cpu,
        s.maxrss_kb as f64 / 1024.0,
        s.pss_kb as f64 / 1024.0,
        s.sent,
        s.recv
    );
    s
}

/// `rsync --list-only -r URL`: what the server needs to produce the list
/// (and a minimal client to read it). Median of 3, (wall, cpu).
fn list_floor(ctx: &Ctx, url: &str) -> (f64, f64) {
    let mut w = Vec::new();
    let mut c = Vec::new();
    for _ in 0..3 {
        let mut cmd = support::rsync_command();
        cmd.args(["--list-only", "-r", "--no-motd", url]);
        let f = measure(cmd, ctx.scratch.path());
        assert!(f.status.success(), "rsync --list-only {url}: {}\n{}", f.status, f.stderr);
        w.push(f.sample.wall);
        c.push(f.sample.cpu);
    }
    (median(w), median(c))
}

fn run_plan(ctx: &Ctx, mut plan: Plan) -> Outcome {
    eprintln!("\n=== ({}) {}", plan.id, plan.title);
    let mut rm = Vec::new();
    let mut rs = Vec::new();
    for i in 0..ctx.warmup + ctx.pairs {
        let measured = i >= ctx.warmup;
        eprintln!(
            "  pair {} {}",
            i + 1,
            if measured { "" } else { "(warm-up, not counted)" }
        );
        // alternate who goes first, so order effects cancel
        let order = if i % 2 == 0 {
            [Client::Rmirror, Client::Rsync]
        } else {
            [Client::Rsync, Client::Rmirror]
        };
        for who in order {
            let s = run_one(ctx, &mut plan, who);
            if measured {
                match who {
                    Client::Rmirror => rm.push(s),
                    Client::Rsync => rs.push(s),
                }
            }
        }
    }
    let floor = plan.floor.then(|| list_floor(ctx, &plan.server.url(plan.module)));
    if ctx.perf {
        perf_profile(ctx, &mut plan);
    }
    let o = Outcome {
        id: plan.id,
        title: plan.title.clone(),
        rm,
        rs,
        floor,
    };
    print_outcome(&o);
    o
}

/// One more run of each client under `perf record -e cpu-clock -g`
/// (software clock: this VM has no hardware counters), top symbols to
/// stdout. rsync's forked receiver is followed (perf inherits).
fn perf_profile(ctx: &Ctx, plan: &mut Plan) {
    for who in [Client::Rmirror, Client::Rsync] {
        perf_one(ctx, plan, who);
    }
}

fn perf_one(ctx: &Ctx, plan: &mut Plan, who: Client) {
    (plan.prepare)(who);
    let url = plan.server.url(plan.module);
    let data = ctx.scratch.join(format!("perf-{}-{}.data", plan.id, who.name()));
    let inner = match who {
        Client::Rmirror => rmirror_cmd(ctx, plan, &url),
        Client::Rsync => rsync_cmd(plan, &url),
    };
    let mut cmd = Command::new("perf");
    cmd.args(["record", "-e", "cpu-clock", "-F", "999", "-g", "-o"])
        .arg(&data)
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let f = measure(cmd, ctx.scratch.path());
    if !f.status.success() {
        println!("({}) perf record failed ({}): {}", plan.id, f.status, f.stderr.trim());
        return;
    }
    if who == Client::Rmirror {
        oracle::assert_clean(&url, &plan.dest);
    }
    let plan_id = format!("{} {}", plan.id, who.name());
    let plan_id = plan_id.as_str();
    for (title, args) in [
        ("self", &["--no-children", "--sort", "symbol"][..]),
        ("children", &["--children", "--sort", "symbol"][..]),
    ] {
        let out = Command::new("perf")
            .args(["report", "--stdio", "-g", "none", "--percent-limit", "1.5", "-i"])
            .arg(&data)
            .args(args)
            .output();
        match out {
            Ok(o) => {
                println!("\n--- ({plan_id}) perf report ({title}) of one run ---");
                for l in String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                    .take(40)
                {
                    println!("{l}");
                }
            }
            Err(e) => println!("perf report: {e}"),
        }
    }
}

// ------------------------------------------------------------ output

fn mib(kb: f64) -> f64 {
    kb / 1024.0
}

fn print_outcome(o: &Outcome) {
    let col = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let fields: [(&str, fn(&Sample) -> f64); 6] = [
        ("wall s", |s| s.wall),
        ("cpu s", |s| s.cpu),
        ("maxrss MiB", |s| mib(s.maxrss_kb as f64)),
        ("pssΣ MiB", |s| mib(s.pss_kb as f64)),
        ("sent B", |s| s.sent as f64),
        ("recv B", |s| s.recv as f64),
    ];
    println!("\n({}) {}  [medians of {} pairs]", o.id, o.title, o.rm.len());
    print!("  {:<9}", "");
    for (n, _) in &fields {
        print!("{n:>14}");
    }
    println!();
    for (name, v) in [("rmirror", &o.rm), ("rsync", &o.rs)] {
        print!("  {name:<9}");
        for (n, f) in &fields {
            let m = col(v, *f);
            if n.ends_with(" B") {
                print!("{:>14.0}", m);
            } else {
                print!("{:>14.3}", m);
            }
        }
        println!();
    }
    print!("  {:<9}", "ratio");
    for (_, f) in &fields {
        print!("{:>14.3}", col(&o.rm, *f) / col(&o.rs, *f));
    }
    println!();
    let per_pair: Vec<String> = pair_wall_ratios(o).iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "  wall ratio per pair: {} (median {:.3})",
        per_pair.join(" "),
        median(pair_wall_ratios(o))
    );
    if let Some((w, c)) = o.floor {
        println!("  server floor (rsync --list-only -r): wall {w:.3} s, cpu {c:.3} s (client side)");
    }
}

/// rmirror's wall time over rsync's within each pair. The two runs of a pair
/// follow each other, so a slow spell of the host that spans both cancels
/// out here, where the ratio of the two medians can take it for a result.
fn pair_wall_ratios(o: &Outcome) -> Vec<f64> {
    o.rm.iter().zip(&o.rs).map(|(m, s)| m.wall / s.wall).collect()
}

fn summary_table(outs: &[Outcome], skipped: &[(String, String)]) {
    println!("\n## Summary (markdown, medians; ratio = rmirror/rsync)\n");
    println!("| scenario | rmirror wall s | rsync wall s | wall ratio | per-pair wall ratio | cpu ratio (s/s) | maxrss MiB rm/rs (ratio) | pssΣ MiB rm/rs | bytes rm/rs (ratio) | list-only floor s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for o in outs {
        let m = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let (rw, sw) = (m(&o.rm, |s| s.wall), m(&o.rs, |s| s.wall));
        let (rc, sc) = (m(&o.rm, |s| s.cpu), m(&o.rs, |s| s.cpu));
        let (rr, sr) = (m(&o.rm, |s| mib(s.maxrss_kb as f64)), m(&o.rs, |s| mib(s.maxrss_kb as f64)));
        let (rp, sp) = (m(&o.rm, |s| mib(s.pss_kb as f64)), m(&o.rs, |s| mib(s.pss_kb as f64)));
        let (rb, sb) = (
            m(&o.rm, |s| (s.sent + s.recv) as f64),
            m(&o.rs, |s| (s.sent + s.recv) as f64),
        );
        println!(
            "| ({}) {} | {rw:.2} | {sw:.2} | **{:.2}** | {:.2} | {:.2} ({rc:.2}/{sc:.2}) | {rr:.0}/{sr:.0} ({:.2}) | {rp:.0}/{sp:.0} | {rb:.0}/{sb:.0} ({:.3}) | {} |",
            o.id,
            o.title,
            rw / sw,
            median(pair_wall_ratios(o)),
            rc / sc,
            rr / sr,
            rb / sb,
            o.floor.map(|(w, _)| format!("{w:.2}")).unwrap_or_else(|| "–".into())
        );
    }
    for (id, why) in skipped {
        println!("| ({id}) skipped | {why} | | | | | | | | |");
    }
    println!();
}

// ------------------------------------------------------------ trees

/// ≈ N files in a CPAN-like tree (cpan_like adds one CHECKSUMS per author,
/// about one author per 8 distributions, so ask for 8/9 of N).
fn cpan(n_total: usize, seed: u64) -> tree::TreeSpec {
    tree::cpan_like((n_total * 8 / 9).max(8), seed)
}

fn count_files(t: &tree::TreeSpec) -> (usize, u64) {
    (t.files().len(), t.total_size())
}

fn write_tree(label: &str, t: &tree::TreeSpec, root: &Path) {
    let (n, bytes) = count_files(t);
    let start = Instant::now();
    t.write(root);
    eprintln!(
        "  built {label}: {n} files, {:.1} MB in {:.1} s",
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
}

/// `cp -a SRC DEST` (DEST must not exist): an identical destination,
/// including directory mtimes.
fn clone_tree(src: &Path, dest: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dest)
        .status()
        .expect("cp -a");
    assert!(st.success(), "cp -a {} {}", src.display(), dest.display());
}

fn remove_tree(p: &Path) {
    if p.exists() {
        support::make_writable(p);
        fs::remove_dir_all(p).unwrap_or_else(|e| panic!("rm -r {}: {e}", p.display()));
    }
}

/// Moves P (if it exists) into WORK/trash instead of deleting it; the
/// trash goes with WORK at the very end. Deleting a 20,000-file tree right
/// before a fresh pull makes every file creation of that pull slow on ext4
/// without a journal (as here): `find_inode_bit` skips inodes freed in the
/// last `dirty_expire_centisecs` (30 s) via `recently_deleted()`, reading
/// the inode table for each — in a first full run that was 58% of
/// rmirror's CPU in (a). A fresh mirror does not pay that, so we don't.
/// The trashed tree's dirty pages are then written out (`sync -f`) before
/// the next run starts, not by the kernel's flusher threads during it: a
/// 675 MB write-back overlapping a run took CPU and disk from whichever
/// client was measured at the time.
fn discard(work: &Path, p: &Path) {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    if fs::symlink_metadata(p).is_err() {
        return;
    }
    let trash = work.join("trash");
    fs::create_dir_all(&trash).unwrap();
    let to = trash.join(N.fetch_add(1, Ordering::Relaxed).to_string());
    fs::rename(p, &to).unwrap_or_else(|e| panic!("mv {} {}: {e}", p.display(), to.display()));
    let _ = Command::new("sync").arg("-f").arg(&trash).status();
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().nth(1)?;
    let avail: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail * 1024)
}

// ------------------------------------------------------------ (e): latency

/// Tries to build a network namespace with a veth pair and 25 ms netem on
/// each end (50 ms RTT). Drop removes it.
struct NetNs {
    name: String,
    host_if: String,
    host_addr: String,
    ns_addr: String,
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    fn create() -> Result<NetNs, String> {
        let pid = std::process::id();
        // a private /30 derived from our pid: 10.(200..249).X.{1,2}
        let (o2, o3) = (200 + (pid % 50), (pid / 50) % 256);
        let ns = NetNs {
            name: format!("rmbench{pid}"),
            host_if: format!("rmb{}h", pid % 1_000_000),
            host_addr: format!("10.{o2}.{o3}.1"),
            ns_addr: format!("10.{o2}.{o3}.2"),
        };
        let ns_if = format!("rmb{}n", pid % 1_000_000);
        sh(&["ip", "netns", "add", &ns.name])?;
        // from here on, Drop cleans up
        let host_cidr = format!("{}/30", ns.host_addr);
        let ns_cidr = format!("{}/30", ns.ns_addr);
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns.name],
            vec!["ip", "addr", "add", &host_cidr, "dev", &ns.host_if],
            vec!["ip", "link", "set", &ns.host_if, "up"],
            vec!["ip", "-n", &ns.name, "addr", "add", &ns_cidr, "dev", &ns_if],
            vec!["ip", "-n", &ns.name, "link", "set", &ns_if, "up"],
            vec!["ip", "-n", &ns.name, "link", "set", "lo", "up"],
            vec!["tc", "qdisc", "add", "dev", &ns.host_if, "root", "netem", "delay", "25ms", "limit", "100000"],
            vec!["ip", "netns", "exec", &ns.name, "tc", "qdisc", "add", "dev", &ns_if, "root", "netem", "delay", "25ms", "limit", "100000"],
        ];
        for s in steps {
            sh(&s)?;
        }
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = sh(&["ip", "link", "del", &self.host_if]);
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// An rsync daemon inside the namespace, bound to its address (port 873).
struct NsDaemon {
    pgid: i32,
    child: std::process::Child,
    addr: String,
    log: PathBuf,
    _dir: TestDir,
}

impl NsDaemon {
    fn start(ns: &NetNs, module: &str, path: &Path) -> Result<NsDaemon, String> {
        let dir = TestDir::new("nsd");
        let log = dir.join("rsyncd.log");
        let conf = dir.join("rsyncd.conf");
        fs::write(
            &conf,
            format!(
                "log file = {log}\nlock file = {lock}\nuid = root\ngid = root\n\n[{module}]\npath = {path}\nread only = yes\nuse chroot = no\n",
                log = log.display(),
                lock = dir.join("lock").display(),
                path = path.display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "rsync", "--daemon", "--no-detach"])
            .arg(format!("--config={}", conf.display()))
            .arg(format!("--address={}", ns.ns_addr))
            .arg("--port=873")
            .arg(format!("--log-file={}", log.display()))
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start rsync --daemon in {}: {e}", ns.name))?;
        let d = NsDaemon {
            pgid: child.id() as i32,
            child,
            addr: ns.ns_addr.clone(),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&format!("{}:873", d.addr).parse().unwrap(), Duration::from_secs(1)).is_ok() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("rsync daemon in {} never listened on {}:873", ns.name, d.addr))
    }
}

impl Drop for NsDaemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Server for NsDaemon {
    fn url(&self, module: &str) -> String {
        format!("rsync://{}/{module}/", self.addr)
    }
    fn last_session(&self) -> (u64, u64) {
        // the daemon child logs its summary just before exiting
        std::thread::sleep(Duration::from_millis(200));
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        parse_last_summary(&log).expect("no session summary in the namespace daemon's log")
    }
}

fn parse_last_summary(log: &str) -> Option<(u64, u64)> {
    log.lines().rev().find_map(|l| {
        let i = l.find("] sent ")?;
        let w: Vec<&str> = l[i + 2..].split_whitespace().collect();
        match w.as_slice() {
            ["sent", s, "bytes", "received", r, "bytes", ..] => {
                Some((s.replace(',', "").parse().ok()?, r.replace(',', "").parse().ok()?))
            }
            _ => None,
        }
    })
}

/// Fallback for (e) where netem is unavailable: a loopback TCP proxy that
/// holds every chunk for DELAY in each direction (an unlimited-bandwidth
/// 2×DELAY round trip; no TCP slow start or window effects).
struct DelayProxy {
    port: u16,
}

impl DelayProxy {
    fn start(upstream: u16, delay: Duration) -> DelayProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = c.set_nodelay(true);
                let _ = up.set_nodelay(true);
                for (a, b) in [
                    (c.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), c.try_clone().unwrap()),
                ] {
                    Self::pipe(a, b, delay);
                }
            }
        });
        DelayProxy { port }
    }

    fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
            // dropping tx ends the writer after it drained the queue
        });
        std::thread::spawn(move || {
            while let Ok((due, data)) = rx.recv() {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if to.write_all(&data).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

// ------------------------------------------------------------ scenarios

const SEED: u64 = 0x5EED_2024;

struct Bench {
    ctx: Ctx,
    selected: Vec<char>,
    scale: f64,
    smoke: bool,
    outs: Vec<Outcome>,
    skipped: Vec<(String, String)>,
}

impl Bench {
    fn n(&self, files: usize) -> usize {
        ((files as f64 * self.scale) as usize).max(20)
    }
    fn want(&self, c: char) -> bool {
        self.selected.contains(&c)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut selected: Vec<char> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .flat_map(|a| a.chars())
        .filter(|&c| is_scenario(c))
        .collect();
    if selected.is_empty() {
        if let Ok(v) = std::env::var("RMIRROR_BENCH_SCENARIOS") {
            selected = v.chars().filter(|&c| is_scenario(c)).collect();
        }
    }
    if selected.is_empty() {
        selected = "abcdefr".chars().collect();
    }
    let env_n = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{k}={v}: not a number")))
            .unwrap_or(d)
    };
    let rmirror = std::env::var_os("RMIRROR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rmirror")));
    assert!(
        rmirror.exists(),
        "{} does not exist: run through `cargo bench --bench compare` (which builds it) or set RMIRROR_BIN",
        rmirror.display()
    );
    if Command::new("rsync").arg("--version").output().is_err() {
        panic!("the real `rsync` is needed (daemon and reference client); scripts/test installs it");
    }

    if smoke {
        // cargo test --all-targets: tiny end-to-end check of the harness.
        let ctx = Ctx {
            rmirror,
            scratch: TestDir::new("bench-scratch"),
            pairs: 1,
            warmup: 0,
            perf: false,
        };
        let work = TestDir::new("bench-smoke");
        let src = work.join("src");
        write_tree("smoke tree", &cpan(50, SEED), &src);
        let d = Rsyncd::builder().module("smoke", &src).start();
        let dest = work.join("dest");
        let o = run_plan(
            &ctx,
            Plan {
                id: "smoke",
                title: "fresh pull of ~50 files (smoke test; `cargo bench` runs the real thing)".into(),
                server: &d,
                module: "smoke",
                dest: dest.clone(),
                prepare: Box::new(|_| {
                    remove_tree(&dest);
                }),
                rmirror_args: vec!["--delete".into()],
                floor: false,
            },
        );
        assert_eq!(o.rm.len(), 1);
        let r = run_r(&ctx, work.path(), [40, 400], 1, 0);
        println!("{}", r.markdown_row());
        println!("compare bench smoke test passed (binary {})", ctx.rmirror.display());
        return;
    }

    let mut b = Bench {
        ctx: Ctx {
            rmirror,
            scratch: TestDir::new("bench-scratch"),
            pairs: env_n("RMIRROR_BENCH_PAIRS", 3).max(1),
            warmup: env_n("RMIRROR_BENCH_WARMUP", 1),
            perf: std::env::var_os("RMIRROR_BENCH_PERF").is_some_and(|v| v != "0"),
        },
        scale: std::env::var("RMIRROR_BENCH_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0),
        selected,
        smoke,
        outs: Vec::new(),
        skipped: Vec::new(),
    };
    let _ = b.smoke;
    header(&b);
    let work = TestDir::new("bench");

    // disk check: rough need per scenario group (source + destination)
    let mut need: u64 = 0;
    if b.want('a') || b.want('b') {
        // the (a) destinations are kept until the end (see `discard`)
        let runs = 2 * (b.ctx.warmup + b.ctx.pairs) + 2;
        need += ((runs as f64 + 2.0) * 0.7e9 * b.scale) as u64;
    }
    if b.want('c') || b.want('f') {
        need += (2.0 * 4.3e9 * b.scale) as u64;
    }
    if b.want('d') {
        need += 2_100_000_000;
    }
    if b.want('e') {
        need += (2.0 * 45e6 * b.scale) as u64;
    }
    if b.want('r') {
        // upstream + mirror of 10,000 and of 100,000 files
        need += (2.0 * 1.25e9 * b.scale) as u64;
    }
    match free_bytes(work.path()) {
        Some(free) if free < need + need / 10 => {
            panic!(
                "not enough disk under {}: these scenarios need about {:.1} GB, {:.1} GB free. \
                 Set TMPDIR to a bigger filesystem, select fewer scenarios or set RMIRROR_BENCH_SCALE<1.",
                work.path().display(),
                need as f64 / 1e9,
                free as f64 / 1e9
            )
        }
        Some(free) => println!(
            "disk: {:.1} GB needed under {}, {:.1} GB free",
            need as f64 / 1e9,
            work.path().display(),
            free as f64 / 1e9
        ),
        None => println!("disk: could not run df; hoping {:.1} GB are free", need as f64 / 1e9),
    }

    // ---- build the trees (once) and start one loopback daemon for all
    eprintln!("\nbuilding trees under {}", work.path().display());
    let t20k = work.join("t20k");
    let t200k = work.join("t200k");
    let tdelta = work.join("delta");
    let tsmall = work.join("small");
    let mut n20k = (0, 0u64);
    let mut n200k = (0, 0u64);
    let mut nsmall = (0, 0u64);
    if b.want('a') || b.want('b') {
        let mut t = cpan(b.n(20_000), SEED);
        // a few large files, 0.45 GB, so the total is ~0.7 GB like the issue says
        for (i, size) in [150_000_000u64, 120_000_000, 100_000_000, 80_000_000].iter().enumerate() {
            t = t
                .random_file(
                    format!("authors/id/B/BI/BIGDATA/Big-Data-{i}.00.tar.gz"),
                    (*size as f64 * b.scale) as u64,
                    SEED ^ (0xB16 + i as u64),
                )
                .mtime(1_650_000_000 + i as i64, 0);
        }
        n20k = count_files(&t);
        write_tree("(a)/(b) tree", &t, &t20k);
    }
    if b.want('c') || b.want('f') {
        let t = cpan(b.n(200_000), SEED + 1);
        n200k = count_files(&t);
        write_tree("(c)/(f) tree", &t, &t200k);
    }
    let big_size: u64 = 500_000_000;
    let basis = work.join("delta-basis.bin");
    if b.want('d') {
        fs::create_dir_all(&tdelta).unwrap();
        let t = Instant::now();
        tree::large_file(&basis, big_size, SEED + 2);
        tree::set_mtime(&basis, 1_600_000_000, 0);
        let big = tdelta.join("big.bin");
        fs::copy(&basis, &big).unwrap();
        tree::set_mtime(&big, 1_600_000_000, 0);
        // 20 scattered 5 KB edits: one per 25 MB stripe, at a seeded spot in it
        let mut rng = tree::Rng::new(SEED + 3);
        let stripe = big_size / 20;
        let offsets: Vec<u64> = (0..20).map(|i| i * stripe + rng.below(stripe - 5120)).collect();
        tree::mutate_in_place(&big, &offsets, 5120, SEED + 4);
        tree::set_mtime(&tdelta, 1_600_000_000, 0);
        eprintln!("  built (d): 500 MB file + basis with 20 × 5 KiB edits in {:.1} s", t.elapsed().as_secs_f64());
    }
    if b.want('e') {
        let t = cpan(b.n(2_000), SEED + 5);
        nsmall = count_files(&t);
        write_tree("(e) tree", &t, &tsmall);
    }

    let mut builder = Rsyncd::builder();
    for (m, p) in [("t20k", &t20k), ("t200k", &t200k), ("delta", &tdelta), ("small", &tsmall)] {
        if p.exists() {
            builder = builder.module(m, p);
        }
    }
    let d = builder.start();

    if b.want('a') {
        let dest = work.join("dest-a");
        let o = run_plan(
            &b.ctx,
            Plan {
                id: "a",
                title: format!("fresh full pull, {} files, {:.0} MB", n20k.0, n20k.1 as f64 / 1e6),
                server: &d,
                module: "t20k",
                dest: dest.clone(),
                prepare: Box::new(|_| discard(work.path(), &dest)),
                rmirror_args: vec!["--delete".into()],
                floor: true,
            },
        );
        discard(work.path(), &dest);
        b.outs.push(o);
    }
    if b.want('b') {
        let dest = work.join("dest-b");
        clone_tree(&t20k, &dest);
        let o = run_plan(
            &b.ctx,
            Plan {
                id: "b",
                title: format!("no-change pull, {} files", n20k.0),
                server: &d,
                module: "t20k",
                dest: dest.clone(),
                prepare: Box::new(|_| {}),
                rmirror_args: vec!["--delete".into()],
                floor: true,
            },
        );
        remove_tree(&dest);
        b.outs.push(o);
    }
    let dest200k = work.join("dest-200k");
    if b.want('c') || b.want('f') {
        let t = Instant::now();
        clone_tree(&t200k, &dest200k);
        eprintln!("  cloned the 200k tree for (c)/(f) in {:.1} s", t.elapsed().as_secs_f64());
    }
    if b.want('c') {
        let o = run_plan(
            &b.ctx,
            Plan {
                id: "c",
                title: format!("no-change pull, {} files", n200k.0),
                server: &d,
                module: "t200k",
                dest: dest200k.clone(),
                prepare: Box::new(|_| {}),
                rmirror_args: vec!["--delete".into()],
                floor: true,
            },
        );
        b.outs.push(o);
    }
    if b.want('d') {
        let dest = work.join("dest-d");
        fs::create_dir_all(&dest).unwrap();
        let o = run_plan(
            &b.ctx,
            Plan {
                id: "d",
                title: "delta update of a 500 MB file, 20 scattered 5 KiB edits".into(),
                server: &d,
                module: "delta",
                dest: dest.clone(),
                prepare: Box::new(|_| {
                    // the old version as basis, every time
                    let p = dest.join("big.bin");
                    let _ = fs::remove_file(&p);
                    fs::copy(&basis, &p).unwrap();
                    tree::set_mtime(&p, 1_600_000_000, 0);
                }),
                rmirror_args: vec!["--delete".into()],
                floor: false,
            },
        );
        remove_tree(&dest);
        b.outs.push(o);
    }
    if b.want('e') {
        run_e(&mut b, &d, &work, &tsmall, nsmall);
    }
    if b.want('f') {
        // 100 .tar.gz files spread over the tree, changed before every run
        let mut files: Vec<PathBuf> = walk_files(&t200k)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tar.gz") && p.starts_with("authors"))
            .collect();
        files.sort();
        let mut rng = tree::Rng::new(SEED + 6);
        let mut pick = Vec::new();
        while pick.len() < 100.min(files.len()) {
            let i = rng.below(files.len() as u64) as usize;
            pick.push(files.swap_remove(i));
        }
        pick.sort();
        let list = work.join("files-from.txt");
        let mut txt = String::new();
        for p in &pick {
            txt.push_str(&p.to_string_lossy());
            txt.push('\n');
        }
        fs::write(&list, txt).unwrap();
        let mut round = 0u64;
        let src = t200k.clone();
        let o = run_plan(
            &b.ctx,
            Plan {
                id: "f",
                title: format!(
                    "100 changed files in {} files: rmirror --files-from vs rsync full walk",
                    n200k.0
                ),
                server: &d,
                module: "t200k",
                dest: dest200k.clone(),
                prepare: Box::new(move |_| {
                    round += 1;
                    for (i, p) in pick.iter().enumerate() {
                        let f = src.join(p);
                        let len = fs::metadata(&f).unwrap().len();
                        tree::mutate_in_place(&f, &[0, len / 2], 512, SEED ^ (round << 20) ^ i as u64);
                    }
                }),
                rmirror_args: vec!["--files-from".into(), list.display().to_string()],
                floor: true,
            },
        );
        b.outs.push(o);
    }
    remove_tree(&dest200k);
    drop(d);
    let r = b.want('r').then(|| run_r(&b.ctx, work.path(), [b.n(10_000), b.n(100_000)], b.ctx.pairs, b.ctx.warmup));

    if !b.outs.is_empty() || !b.skipped.is_empty() {
        summary_table(&b.outs, &b.skipped);
    }
    if let Some(r) = r {
        println!("| scenario | small: files, pass wall s (cpu s, maxrss MiB) | large: files, pass wall s (cpu s, maxrss MiB) | **wall ratio large/small** | oracle |");
        println!("|---|---|---|---|---|");
        println!("{}\n", r.markdown_row());
    }
}

fn is_scenario(c: char) -> bool {
    ('a'..='f').contains(&c) || c == 'r'
}

// ------------------------------------------------------------ (r): RECENT

/// One size of (r): medians of the measured passes.
struct RSize {
    files: usize,
    wall: f64,
    cpu: f64,
    maxrss_mib: f64,
    /// The pass's own `seconds` (inside the process, from `--json`).
    in_pass: f64,
    /// Files the daemon sent per pass (always the 14 new or changed ones).
    fetched: usize,
    passes: usize,
}

struct RResult {
    sizes: [RSize; 2],
}

impl RResult {
    fn ratio(&self) -> f64 {
        self.sizes[1].wall / self.sizes[0].wall
    }

    fn markdown_row(&self) -> String {
        let c = |s: &RSize| format!("{}, {:.3} ({:.3}, {:.1})", s.files, s.wall, s.cpu, s.maxrss_mib);
        format!(
            "| (r) one `watch --once` pass, 20 changes, medians of {} | {} | {} | **{:.2}** | empty after every pass |",
            self.sizes[0].passes,
            c(&self.sizes[0]),
            c(&self.sizes[1]),
            self.ratio()
        )
    }
}

/// An upstream that publishes RECENT files, its daemon module and a mirror.
struct RTree {
    files: usize,
    module: String,
    dest: PathBuf,
    prod: Producer,
    /// Existing files not yet touched by a change, shuffled.
    pool: Vec<String>,
    round: usize,
}

/// 20 changes like the acceptance of issue 4: 8 new files (4 of them in a
/// new directory), 6 changed, 5 deleted, 1 deleted directory (an author with
/// all their files).  Returns the files whose content must be sent.
fn r_changes(t: &mut RTree) -> Vec<String> {
    t.round += 1;
    let r = t.round;
    let mut sent = Vec::new();
    fn take(t: &mut RTree) -> String {
        t.pool.pop().expect("(r): the tree ran out of untouched files")
    }
    for i in 0..4 {
        let p = format!("authors/id/R/RB/RBENCH{r}/RBench-{i}.{r}.tar.gz");
        t.prod.write_file(&p, &tree::random_bytes(2_000 + i * 1_000, (r * 100 + i) as u64));
        sent.push(p);
    }
    for i in 0..4 {
        let next_to = take(t);
        let dir = next_to.rsplit_once('/').map_or("", |(d, _)| d).to_string();
        let p = format!("{dir}/Fresh-{r}-{i}.tar.gz");
        t.prod.write_file(&p, &tree::random_bytes(3_000, (r * 100 + 10 + i) as u64));
        sent.push(p);
    }
    for i in 0..6 {
        let p = take(t);
        t.prod.write_file(&p, &tree::random_bytes(5_000 + i * 7, (r * 100 + 20 + i) as u64));
        sent.push(p);
    }
    for _ in 0..5 {
        let p = take(t);
        t.prod.delete_file(&p);
    }
    let victim = take(t);
    let dir = victim.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let prefix = format!("{dir}/");
    t.pool.retain(|p| !p.starts_with(&prefix));
    sent.retain(|p| !p.starts_with(&prefix));
    t.prod.delete_dir(&dir);
    t.prod.publish();
    sent.sort();
    sent
}

fn watch_once_cmd(ctx: &Ctx, url: &str, dest: &Path) -> Command {
    let mut c = Command::new(&ctx.rmirror);
    c.args(["watch", "--once", "--json"]).arg(url).arg(dest);
    c.env("LC_ALL", "C").env_remove("RSYNC_PASSWORD");
    c
}

/// Scenario (r): pass time of `rmirror watch --once` with 20 changes, for
/// two upstream sizes.  `warmup` unmeasured and `passes` measured passes per
/// size, the sizes alternating.
fn run_r(ctx: &Ctx, work: &Path, sizes: [usize; 2], passes: usize, warmup: usize) -> RResult {
    eprintln!("\n=== (r) instant mirroring: one `watch --once` pass with 20 changes, {} vs {} files", sizes[0], sizes[1]);
    let mut trees: Vec<RTree> = Vec::new();
    let mut builder = Rsyncd::builder();
    for (k, &n) in sizes.iter().enumerate() {
        let base = work.join(format!("r{k}"));
        let src = base.join("src");
        let t = cpan(n, SEED + 10 + k as u64);
        let files = count_files(&t).0;
        write_tree(&format!("(r) tree {k}"), &t, &src);
        let mut prod = Producer::new(&src);
        let mut pool: Vec<String> = walk_files(&src)
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| p.starts_with("authors/") && !p.ends_with("CHECKSUMS"))
            .collect();
        pool.sort();
        let mut rng = tree::Rng::new(SEED + 20 + k as u64);
        for i in (1..pool.len()).rev() {
            pool.swap(i, rng.below(i as u64 + 1) as usize);
        }
        // some history, so that the chain's files exist and have content
        for p in pool.iter().rev().take(50) {
            prod.record(p, true);
        }
        prod.publish();
        let module = format!("r{k}");
        builder = builder.module(&module, &src);
        trees.push(RTree { files, module, dest: base.join("mirror"), prod, pool, round: 0 });
    }
    let d = builder.start();
    for t in &trees {
        // the mirror starts as a copy; the first pass (no state yet) is a
        // full sync that finds nothing to transfer
        clone_tree(&work.join(&t.module).join("src"), &t.dest);
        let url = d.url(&t.module);
        let f = measure(watch_once_cmd(ctx, &url, &t.dest), ctx.scratch.path());
        assert!(f.status.success(), "(r) first pass failed: {}\n{}\n{}", f.status, f.stdout, f.stderr);
        let doc: serde_json::Value = serde_json::from_str(&f.stdout).expect("(r) watch --json output");
        assert_eq!(doc["passes"][0]["kind"], "full", "(r) first pass: {doc}");
        eprintln!("  {} files: first pass (full sync, no state) {:.2} s", t.files, f.sample.wall);
    }
    let mut samples: Vec<Vec<(Sample, f64, usize)>> = vec![Vec::new(), Vec::new()];
    for round in 0..warmup + passes {
        let measured = round >= warmup;
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let t = &mut trees[k];
            let want = r_changes(t);
            let url = d.url(&t.module);
            let before = d.transfer_log().len();
            let f = measure(watch_once_cmd(ctx, &url, &t.dest), ctx.scratch.path());
            assert!(f.status.success(), "(r) pass failed: {}\n{}\n{}", f.status, f.stdout, f.stderr);
            let doc: serde_json::Value = serde_json::from_str(&f.stdout).expect("(r) watch --json output");
            let p = &doc["passes"][0];
            assert_eq!(p["kind"], "incremental", "(r) {doc}");
            assert_eq!(p["complete"], true, "(r) {doc}");
            let mut sent: Vec<String> = d
                .transfer_log()
                .into_iter()
                .skip(before)
                .filter(|x| x.op == "send" && !x.name.ends_with('/'))
                .map(|x| x.name)
                .filter(|n| !n.rsplit('/').next().unwrap_or(n).starts_with("RECENT"))
                .collect();
            sent.sort();
            assert_eq!(sent, want, "(r) the daemon must send exactly the changed files");
            let lines = oracle::diff(&url, &t.dest, &[]);
            assert!(lines.is_empty(), "(r) ORACLE after the pass on {} files:\n{}", t.files, lines.join("\n"));
            let in_pass = p["seconds"].as_f64().unwrap_or(f64::NAN);
            eprintln!(
                "  {:>7} files{}: pass wall {:.3} s (in-pass {:.3} s), cpu {:.3} s, maxrss {:.1} MiB, {} events, {} sent; oracle clean",
                t.files,
                if measured { "" } else { " (warm-up)" },
                f.sample.wall,
                in_pass,
                f.sample.cpu,
                mib(f.sample.maxrss_kb as f64),
                p["events"],
                sent.len()
            );
            if measured {
                samples[k].push((f.sample, in_pass, sent.len()));
            }
        }
    }
    let size = |k: usize| {
        let v = &samples[k];
        RSize {
            files: trees[k].files,
            wall: median(v.iter().map(|s| s.0.wall).collect()),
            cpu: median(v.iter().map(|s| s.0.cpu).collect()),
            maxrss_mib: median(v.iter().map(|s| mib(s.0.maxrss_kb as f64)).collect()),
            in_pass: median(v.iter().map(|s| s.1).collect()),
            fetched: v.first().map_or(0, |s| s.2),
            passes: v.len(),
        }
    };
    let r = RResult { sizes: [size(0), size(1)] };
    println!("\n(r) one `rmirror watch --once` pass following 20 changes  [medians of {} passes per size]", passes);
    println!("  {:>9} {:>12} {:>12} {:>10} {:>12} {:>9}", "files", "wall s", "in-pass s", "cpu s", "maxrss MiB", "fetched");
    for s in &r.sizes {
        println!(
            "  {:>9} {:>12.3} {:>12.3} {:>10.3} {:>12.1} {:>9}",
            s.files, s.wall, s.in_pass, s.cpu, s.maxrss_mib, s.fetched
        );
    }
    println!(
        "  ratio {}/{} files: wall {:.2}, in-pass {:.2}, cpu {:.2}  (target: wall ratio near 1, at most 1.5)",
        r.sizes[1].files,
        r.sizes[0].files,
        r.ratio(),
        r.sizes[1].in_pass / r.sizes[0].in_pass,
        r.sizes[1].cpu / r.sizes[0].cpu
    );
    drop(d);
    for t in &trees {
        // upstream, mirror and the mirror's state (`mirror.rmirror/`)
        remove_tree(&work.join(&t.module));
    }
    r
}

fn run_e(b: &mut Bench, d: &Rsyncd, work: &TestDir, tsmall: &Path, n: (usize, u64)) {
    let dest = work.join("dest-e");
    let title = format!(
        "fresh pull, {} small files ({:.0} MB) over a 50 ms RTT link",
        n.0,
        n.1 as f64 / 1e6
    );
    match NetNs::create() {
        Ok(ns) => match NsDaemon::start(&ns, "small", tsmall) {
            Ok(nd) => {
                let o = run_plan(
                    &b.ctx,
                    Plan {
                        id: "e",
                        title: format!("{title} (netns + veth + tc netem 25 ms each way)"),
                        server: &nd,
                        module: "small",
                        dest: dest.clone(),
                        prepare: Box::new(|_| discard(work.path(), &dest)),
                        rmirror_args: vec!["--delete".into()],
                        floor: true,
                    },
                );
                b.outs.push(o);
            }
            Err(e) => {
                println!("\n(e) SKIPPED: {e}");
                b.skipped.push(("e".into(), e));
            }
        },
        Err(e) => {
            let why = format!("network namespace with tc netem not available here: {e}");
            println!("\n(e) SKIPPED (netem row): {why}");
            b.skipped.push(("e".into(), why));
            // Not a substitute for netem, but it shows per-file round trips:
            // the same tree through a userspace proxy that delays each
            // direction by 25 ms.
            let proxy = DelayProxy::start(d.port(), Duration::from_millis(25));
            let server = Proxied { d, proxy: &proxy };
            let o = run_plan(
                &b.ctx,
                Plan {
                    id: "e*",
                    title: format!("{title} — userspace 25 ms/direction delay proxy, NOT netem"),
                    server: &server,
                    module: "small",
                    dest: dest.clone(),
                    prepare: Box::new(|_| discard(work.path(), &dest)),
                    rmirror_args: vec!["--delete".into()],
                    floor: true,
                },
            );
            b.outs.push(o);
        }
    }
    discard(work.path(), &dest);
}

/// Regular files under ROOT, relative to it.
fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap().flatten() {
            let r = rel.join(e.file_name());
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file() {
                out.push(r);
            }
        }
    }
    out
}

fn header(b: &Bench) {
    let cmd = |c: &str, a: &[&str]| {
        Command::new(c)
            .args(a)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| format!("({c}: {e})"))
    };
    let mut m = BTreeMap::new();
    m.insert("date", cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]));
    m.insert("nproc", cmd("nproc", &[]));
    m.insert("kernel", cmd("uname", &["-srm"]));
    m.insert(
        "memory",
        cmd("free", &["-h"]).lines().nth(1).unwrap_or("").split_whitespace().nth(1).unwrap_or("?").to_string(),
    );
    m.insert("rsync", cmd("rsync", &["--version"]).lines().next().unwrap_or("").to_string());
    m.insert("rmirror", b.ctx.rmirror.display().to_string());
    let commit = std::env::var("RMIRROR_BENCH_COMMIT").unwrap_or_else(|_| {
        let head = cmd("git", &["rev-parse", "--short", "HEAD"]);
        let dirty = !cmd("git", &["status", "--porcelain", "--untracked-files=no", "src"]).is_empty();
        if head.is_empty() {
            "(not a git checkout; set RMIRROR_BENCH_COMMIT)".into()
        } else if dirty {
            head + " + uncommitted src changes"
        } else {
            head
        }
    });
    m.insert("commit", commit);
    println!("rmirror vs rsync comparison (benches/compare.rs)");
    for (k, v) in &m {
        println!("  {k:<8} {v}");
    }
    println!(
        "  pairs    {} measured after {} warm-up; scenarios {}; scale {}",
        b.ctx.pairs,
        b.ctx.warmup,
        b.selected.iter().collect::<String>(),
        b.scale
    );
    println!("  rsync    rsync {} URL DEST/", RSYNC_FLAGS.join(" "));
    println!("  rmirror  rmirror sync --delete URL DEST   ((f): sync --files-from LIST; (r): watch --once --json URL DEST)");
    if !b.ctx.rmirror.to_string_lossy().contains("/release/") {
        println!("  WARNING: {} is not a release build", b.ctx.rmirror.display());
    }
}
