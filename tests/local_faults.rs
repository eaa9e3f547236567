//! Faults that come from the machine rmirror runs on rather than from the
//! server (safety-plan §4.4, §4.5): a local process racing rmirror by swapping
//! DEST entries for symlinks (F19), a file-size limit or a full filesystem
//! exactly when the run publishes (F10), and a mass deletion (L8). Each checks
//! the plan's invariants: I1 (nothing outside DEST changed: `Sandbox`), I2
//! (every final name holds an old or a new complete file, no temp left), I3
//! (no panic, rsync's exit code) and I4 (a clean rerun leaves the oracle
//! empty).

mod support;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::evil::{self, Sandbox};
use support::{oracle, tree, Module, Rsyncd, TestDir};

/// Content of every regular file under `root`, by relative path.
fn contents(root: &Path) -> BTreeMap<PathBuf, Vec<Vec<u8>>> {
    evil::snapshot(root, None).into_iter().filter(|(_, n)| n.kind == 'f').map(|(p, n)| (p, vec![n.data])).collect()
}

fn merge(a: &mut BTreeMap<PathBuf, Vec<Vec<u8>>>, b: BTreeMap<PathBuf, Vec<Vec<u8>>>) {
    for (k, mut v) in b {
        a.entry(k).or_default().append(&mut v);
    }
}

fn cstr(p: &[u8]) -> CString {
    CString::new(p).unwrap()
}

// ---------------------------------------------------------------------------
// F19: a local attacker swaps DEST entries for symlinks while rmirror runs
// ---------------------------------------------------------------------------

/// One attacked name: `real` (a directory or file rmirror syncs) is swapped
/// atomically (`renameat2(RENAME_EXCHANGE)`) with `decoy`, a symlink to
/// somewhere outside DEST, and back, in a tight loop. Both names are relative
/// to `parent` (`""` = DEST, else a directory below DEST that the attacker
/// opens with `O_NOFOLLOW`, so the attacker itself never reaches outside).
struct Swap {
    parent: &'static str,
    real: &'static str,
    decoy: &'static str,
    target: PathBuf,
}

/// The attacker thread: swaps until `stop`; parks (with every decoy back to
/// a symlink and every real name back in place, see [`normalize`]) while
/// `pause` is set, acknowledging with `parked`.
struct Attacker {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    parked: Arc<AtomicBool>,
    swaps: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn open_dir_nofollow(at: libc::c_int, rel: &[u8]) -> Option<libc::c_int> {
    let c = cstr(rel);
    let fd = unsafe { libc::openat(at, c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

fn exchange(dfd: libc::c_int, a: &CString, b: &CString) -> bool {
    unsafe { libc::renameat2(dfd, a.as_ptr(), dfd, b.as_ptr(), libc::RENAME_EXCHANGE) == 0 }
}

/// Put every swap back in its starting position: the real name is not a
/// symlink, the decoy is a symlink to its target (recreated when rmirror
/// replaced or deleted it). Runs only while rmirror is not running; touches
/// only DEST.
fn normalize(dest: &Path, swaps: &[Swap]) {
    for s in swaps {
        let parent = dest.join(s.parent);
        match std::fs::symlink_metadata(&parent) {
            Ok(m) if m.is_dir() => {}
            _ => continue, // the parent itself is gone or a symlink: nothing to put back in it
        }
        let real = parent.join(s.real);
        let decoy = parent.join(s.decoy);
        let is_link = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.file_type().is_symlink()).unwrap_or(false);
        if is_link(&real) {
            if std::fs::symlink_metadata(&decoy).is_ok() && !is_link(&decoy) {
                let dfd = open_dir_nofollow(libc::AT_FDCWD, parent.as_os_str().as_bytes()).unwrap();
                assert!(exchange(dfd, &cstr(s.real.as_bytes()), &cstr(s.decoy.as_bytes())));
                unsafe { libc::close(dfd) };
            } else {
                std::fs::remove_file(&real).unwrap();
            }
        }
        if !is_link(&decoy) {
            tree::remove_any(&decoy);
            std::os::unix::fs::symlink(&s.target, &decoy).unwrap();
        }
    }
}

impl Attacker {
    fn start(dest: PathBuf, swaps: Vec<Swap>, seed: u64) -> Attacker {
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(AtomicBool::new(true));
        let parked = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (st, pa, pk, n) = (stop.clone(), pause.clone(), parked.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let dest_c = cstr(dest.as_os_str().as_bytes());
            let root = unsafe { libc::open(dest_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            assert!(root >= 0);
            let names: Vec<(CString, CString)> =
                swaps.iter().map(|s| (cstr(s.real.as_bytes()), cstr(s.decoy.as_bytes()))).collect();
            let mut rng = tree::Rng::new(seed);
            while !st.load(Ordering::Relaxed) {
                if pa.load(Ordering::Acquire) {
                    normalize(&dest, &swaps);
                    pk.store(true, Ordering::Release);
                    while pa.load(Ordering::Acquire) && !st.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    pk.store(false, Ordering::Release);
                    continue;
                }
                for (s, (real, decoy)) in swaps.iter().zip(&names) {
                    let dfd = if s.parent.is_empty() {
                        root
                    } else {
                        match open_dir_nofollow(root, s.parent.as_bytes()) {
                            Some(fd) => fd,
                            None => continue,
                        }
                    };
                    if exchange(dfd, real, decoy) {
                        n.fetch_add(1, Ordering::Relaxed);
                        // Hold the swapped state for a random short while (often not at all).
                        for _ in 0..rng.below(3) * 500 {
                            std::hint::spin_loop();
                        }
                        exchange(dfd, real, decoy);
                    }
                    if dfd != root {
                        unsafe { libc::close(dfd) };
                    }
                }
            }
            unsafe { libc::close(root) };
        });
        Attacker { stop, pause, parked, swaps: count, thread: Some(thread) }
    }

    fn release(&self) {
        self.pause.store(false, Ordering::Release);
        while self.parked.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    }

    /// Park the attacker with everything in its starting position.
    fn park(&self) {
        self.pause.store(true, Ordering::Release);
        let t0 = Instant::now();
        while !self.parked.load(Ordering::Acquire) {
            assert!(t0.elapsed() < Duration::from_secs(30), "attacker did not park");
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let r = t.join();
            if !std::thread::panicking() {
                r.unwrap();
            }
        }
    }
}

/// Two versions of a tree that differ in every file's content, in file and
/// directory modes and mtimes, and in which files exist, so each sync between
/// them creates, replaces, deletes, chmods and sets times under `sub/`,
/// `sub/deep/` and the top level.
fn race_versions() -> (TestDir, TestDir) {
    let v1 = TestDir::new("f19v1");
    let v2 = TestDir::new("f19v2");
    for (k, root) in [(1u64, v1.path()), (2, v2.path())] {
        let (dmode, fmode) = if k == 1 { (0o755, 0o644) } else { (0o750, 0o600) };
        let mut t = tree::TreeSpec::new();
        // Content (and so a temp and a rename) changes for every file but
        // `sub/f05` and `t3`: only their mode changes, which rmirror applies by
        // name after a `stat` (the window a swap to a symlink would exploit).
        for i in 0..20u64 {
            let (size, seed) = if i == 5 { (999, 5) } else { (200 + i * 37 + k, i * 10 + k) };
            t = t.random_file(format!("sub/f{i:02}"), size, seed).mode(fmode).mtime(1_600_000_000 + (i != 5) as i64 * k as i64, 0);
        }
        for i in 0..5u64 {
            t = t.random_file(format!("sub/deep/g{i}"), 100 + i + k, 100 + i * 10 + k).mtime(1_600_000_100 + k as i64, 0);
        }
        for i in 0..8u64 {
            let (size, seed) = if i == 3 { (333, 3) } else { (300 + i + k, 200 + i * 10 + k) };
            t = t.random_file(format!("t{i}"), size, seed).mode(fmode);
        }
        t = t.file(format!("sub/only-v{k}"), format!("only in v{k}\n")).file(format!("only-v{k}"), "x\n");
        t = t.dir("sub/deep").mode(dmode).mtime(1_600_000_200 + k as i64, 0);
        t = t.dir("sub").mode(dmode).mtime(1_600_000_300 + k as i64, 0);
        t.write(root);
    }
    (v1, v2)
}

/// `runs` syncs alternating between v1 and v2 (with `--delete`, half of them
/// with the O_NOFOLLOW walk instead of openat2) while the attacker swaps
/// `sub` and `sub/deep` with symlinks to directories outside DEST (holding
/// files of the same names) and `t3`, `sub/f05` with symlinks to files
/// outside. After each run (attacker parked): I1, I2, no temp, no panic, exit
/// 0 or 23. At the end: the attacker stops, a clean rerun converges (I4).
fn symlink_race(runs: usize, seed: u64) {
    let (v1, v2) = race_versions();
    let d = Rsyncd::builder().add_module(Module::new("v1", v1.path())).add_module(Module::new("v2", v2.path())).start();
    let mut sb = Sandbox::new();
    // Victims outside with the names rmirror writes under the swapped paths.
    let out = sb.outside.clone();
    std::fs::create_dir_all(out.join("deep")).unwrap();
    for i in 0..20 {
        std::fs::write(out.join(format!("f{i:02}")), format!("outside f{i:02}\n")).unwrap();
    }
    for i in 0..5 {
        std::fs::write(out.join(format!("deep/g{i}")), format!("outside g{i}\n")).unwrap();
    }
    std::fs::write(out.join("deep/only-v1"), "outside\n").unwrap();
    let swaps = vec![
        Swap { parent: "", real: "sub", decoy: ".atk-sub", target: out.clone() },
        Swap { parent: "sub", real: "deep", decoy: ".atk-deep", target: out.join("deep") },
        Swap { parent: "", real: "t3", decoy: ".atk-t3", target: out.join("victim") },
        Swap { parent: "sub", real: "f05", decoy: ".atk-f05", target: out.join("f05") },
    ];
    // Seed DEST with v1 (the real client), then take the "outside" snapshot.
    support::pull(&d.url("v1"), &sb.dest, &[]);
    sb.rebase();
    let mut ok = contents(v1.path());
    merge(&mut ok, contents(v2.path()));
    let attacker = Attacker::start(sb.dest.clone(), swaps, seed);
    attacker.park();
    let mut codes: BTreeMap<i32, usize> = BTreeMap::new();
    let mut leftovers = 0;
    let t0 = Instant::now();
    for run in 0..runs {
        let module = if run % 2 == 0 { "v2" } else { "v1" };
        let args: Vec<std::ffi::OsString> = vec![
            "sync".into(),
            "--delete".into(),
            "--exclude=.atk-*".into(),
            d.url(module).into(),
            sb.dest.as_os_str().to_owned(),
        ];
        let walk = run % 4 >= 2;
        attacker.release();
        let r = evil::spawn_rmirror_with(&args, |c| {
            if walk {
                c.env("RMIRROR_NO_OPENAT2", "1");
            }
        })
        .wait(Duration::from_secs(60));
        attacker.park();
        r.assert_code(&[0, 23]);
        *codes.entry(r.code.unwrap_or(-1)).or_default() += 1;
        sb.assert_outside_unchanged();
        evil::assert_old_or_new(&sb.dest, &ok);
        // A temp whose directory was swapped for a symlink when the run
        // published it (or scanned it for leftovers) cannot be reached safely
        // by path: it stays, inside DEST, for a later run to remove (checked
        // at the end). Under this attacker that is the price of never
        // following the symlink.
        if !evil::temps_under(&sb.dest).is_empty() {
            leftovers += 1;
        }
    }
    let elapsed = t0.elapsed();
    let swapped = attacker.swaps.load(Ordering::Relaxed);
    drop(attacker);
    eprintln!("F19: {runs} runs in {elapsed:?}, {swapped} swaps, exit codes {codes:?}, {leftovers} runs left temps for the next");
    assert!(swapped > runs as u64, "the attacker hardly ran: {swapped} swaps in {runs} runs");
    // Attacker gone: remove its decoys; a clean rerun converges.
    for p in [".atk-sub", ".atk-t3", "sub/.atk-deep", "sub/.atk-f05"] {
        tree::remove_any(&sb.dest.join(p));
    }
    let r = evil::sync(&d.url("v2"), &sb.dest, &["--delete"]);
    r.assert_code(&[0]);
    evil::assert_no_temps(&sb.dest);
    oracle::Oracle::new(&d.url("v2"), &sb.dest).assert_clean();
    sb.assert_outside_unchanged();
}

#[test]
fn f19_local_symlink_race() {
    symlink_race(24, 19);
}

#[test]
#[ignore = "nightly: 1000 runs against the swapping attacker (~4 min on 2 cores); run: cargo test --test local_faults f19_local_symlink_race_1000 -- --ignored"]
fn f19_local_symlink_race_1000() {
    symlink_race(1000, 1919);
}

// ---------------------------------------------------------------------------
// F10: the filesystem refuses at publish time
// ---------------------------------------------------------------------------

/// v1 → v2 where every file changes; `zz-big` (the one that grows) and
/// `zz-last` are where failures are arranged.
fn publish_versions(big: u64) -> (TestDir, TestDir) {
    let v1 = TestDir::new("f10v1");
    let v2 = TestDir::new("f10v2");
    for (k, root, big) in [(1u64, v1.path(), 100_000), (2, v2.path(), big)] {
        let mut t = tree::TreeSpec::new();
        for i in 0..20u64 {
            t = t.random_file(format!("a{i:02}"), 1000 + i * 100 + k, i * 10 + k);
        }
        for i in 0..5u64 {
            t = t.random_file(format!("sub/b{i}"), 2000 + i + k, 100 + i * 10 + k);
        }
        t = t.random_file("zz-big", big + k, 500 + k).random_file("zz-last", 700 + k, 600 + k);
        t.write(root);
    }
    (v1, v2)
}

/// DEST seeded with v1 plus an extraneous file that `--delete` would remove.
fn publish_sandbox(d1: &Rsyncd) -> Sandbox {
    let mut sb = Sandbox::new();
    support::pull(&d1.url("v1"), &sb.dest, &[]);
    std::fs::write(sb.dest.join("extraneous"), b"kept: a failed run deletes nothing\n").unwrap();
    sb.rebase();
    sb
}

/// After a run that failed at publish time: I3 (exit 23, no panic), I1, I2
/// (each final name old or new, the named `failed` ones old), no temp, no
/// deletion.
#[track_caller]
fn check_failed_publish(sb: &Sandbox, r: &evil::Run, ok: &BTreeMap<PathBuf, Vec<Vec<u8>>>, old: &BTreeMap<PathBuf, Vec<Vec<u8>>>, failed: &[&str]) {
    // rsync gives 11 for a failed write (it stops there) and 23 for a failed
    // rename; rmirror carries on with the other files and says 23 for both.
    r.assert_code(&[23]);
    sb.assert_outside_unchanged();
    evil::assert_no_temps(&sb.dest);
    evil::assert_old_or_new(&sb.dest, ok);
    for f in failed {
        let now = std::fs::read(sb.dest.join(f)).unwrap();
        assert!(old[Path::new(f)][0] == now, "{f} is not its old version\n{}", r.show());
    }
    assert!(sb.dest.join("extraneous").exists(), "deleted during a failed run\n{}", r.show());
}

/// I4: with the fault gone, a rerun converges.
#[track_caller]
fn rerun_converges(sb: &Sandbox, url: &str) {
    let r = evil::sync(url, &sb.dest, &["--delete"]);
    r.assert_code(&[0]);
    evil::assert_no_temps(&sb.dest);
    oracle::Oracle::new(url, &sb.dest).assert_clean();
    sb.assert_outside_unchanged();
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn mount(args: &[&str], at: &Path) -> Result<Mount, String> {
    let o = std::process::Command::new("mount").args(args).arg(at).output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(Mount(at.to_path_buf()))
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// EFBIG: `RLIMIT_FSIZE` of 1 MiB on the rmirror process (SIGXFSZ ignored,
/// so the write returns EFBIG instead of killing it); the last file grows to
/// 3 MiB, so its temp cannot be written, after every other file was.
#[test]
fn f10_efbig_rlimit_fsize_on_the_last_file() {
    use std::os::unix::process::CommandExt;
    let (v1, v2) = publish_versions(3 << 20);
    let d = Rsyncd::builder().add_module(Module::new("v1", v1.path())).add_module(Module::new("v2", v2.path())).start();
    let sb = publish_sandbox(&d);
    let old = contents(&sb.dest);
    let mut ok = old.clone();
    merge(&mut ok, contents(v2.path()));
    let args = ["sync".to_string(), "--delete".into(), d.url("v2"), sb.dest.display().to_string()];
    let r = evil::spawn_rmirror_with(&args, |c| unsafe {
        c.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    })
    .wait(Duration::from_secs(60));
    check_failed_publish(&sb, &r, &ok, &old, &["zz-big"]);
    assert!(r.stderr.contains("zz-big") && r.stderr.contains("File too large"), "{}", r.show());
    // Everything else was published.
    let v2c = contents(v2.path());
    for f in ["a00", "a19", "sub/b4", "zz-last"] {
        assert_eq!(std::fs::read(sb.dest.join(f)).unwrap(), v2c[Path::new(f)][0], "{f} not updated\n{}", r.show());
    }
    rerun_converges(&sb, &d.url("v2"));
}

/// ENOSPC for the last temps: DEST on a tmpfs whose inode limit leaves room
/// for all but the last two temps. With `--delay-updates` every old file
/// stays until the publish at the end, so creating those fails (without it
/// each temp replaces its old file at once and one spare inode would do).
#[test]
fn f10_enospc_no_inodes_for_the_last_temps() {
    let (v1, v2) = publish_versions(200_000);
    let d = Rsyncd::builder().add_module(Module::new("v1", v1.path())).add_module(Module::new("v2", v2.path())).start();
    let mut sb = Sandbox::new();
    let m = match mount(&["-t", "tmpfs", "-o", "size=64m", "tmpfs"], &sb.dest) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIP f10 (inodes): cannot mount tmpfs here: {e}");
            return;
        }
    };
    support::pull(&d.url("v1"), &sb.dest, &[]);
    std::fs::write(sb.dest.join("extraneous"), b"kept: a failed run deletes nothing\n").unwrap();
    sb.rebase();
    let st = rustix::fs::statvfs(&sb.dest).unwrap();
    let used = st.f_files - st.f_ffree;
    // 27 files change; allow 25 temps.
    let dest = sb.dest.display().to_string();
    let o = std::process::Command::new("mount").args(["-o", &format!("remount,nr_inodes={}", used + 25), &dest]).output().unwrap();
    assert!(o.status.success(), "remount: {}", String::from_utf8_lossy(&o.stderr));
    let old = contents(&sb.dest);
    let mut ok = old.clone();
    merge(&mut ok, contents(v2.path()));
    let r = evil::sync(&d.url("v2"), &sb.dest, &["--delete", "--delay-updates"]);
    // The list puts a directory's files before its subdirectories: the last
    // two temps are sub/b3 and sub/b4.
    check_failed_publish(&sb, &r, &ok, &old, &["sub/b3", "sub/b4"]);
    assert!(r.stderr.contains("No space left on device"), "{}", r.show());
    let v2c = contents(v2.path());
    assert_eq!(std::fs::read(sb.dest.join("zz-big")).unwrap(), v2c[Path::new("zz-big")][0]);
    let o = std::process::Command::new("mount").args(["-o", "remount,nr_inodes=100000", &dest]).output().unwrap();
    assert!(o.status.success(), "remount: {}", String::from_utf8_lossy(&o.stderr));
    rerun_converges(&sb, &d.url("v2"));
    drop(m);
}

/// The rename itself fails: `zz-last` is a bind mount (of a file outside
/// DEST), so `renameat` over it gives EBUSY at publish time. The temp is
/// removed, the mounted file (outside) is untouched, nothing is deleted.
#[test]
fn f10_rename_fails_at_publish() {
    let (v1, v2) = publish_versions(200_000);
    let d = Rsyncd::builder().add_module(Module::new("v1", v1.path())).add_module(Module::new("v2", v2.path())).start();
    let mut sb = publish_sandbox(&d);
    let src = sb.outside.join("bound");
    std::fs::copy(sb.dest.join("zz-last"), &src).unwrap();
    sb.rebase();
    let m = match mount(&["--bind", &src.display().to_string()], &sb.dest.join("zz-last")) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIP f10 (rename): cannot bind-mount here: {e}");
            return;
        }
    };
    let old = contents(&sb.dest);
    let mut ok = old.clone();
    merge(&mut ok, contents(v2.path()));
    let r = evil::sync(&d.url("v2"), &sb.dest, &["--delete"]);
    check_failed_publish(&sb, &r, &ok, &old, &["zz-last"]);
    assert!(r.stderr.contains("zz-last") && r.stderr.contains("busy"), "{}", r.show());
    let v2c = contents(v2.path());
    assert_eq!(std::fs::read(sb.dest.join("zz-big")).unwrap(), v2c[Path::new("zz-big")][0]);
    drop(m);
    rerun_converges(&sb, &d.url("v2"));
}

// ---------------------------------------------------------------------------
// L8: mass deletion within a budget
// ---------------------------------------------------------------------------

/// Fill DEST with `dirs * per_dir` extraneous empty files, half of them
/// loose in directories the source has (`dNNNN/xNNN`, each one its own
/// extraneous entry), half in a tree the source lacks (`junk/dNNNN/xNNN`,
/// one extraneous entry deleted recursively). Written directly, one
/// `openat(O_CREAT)` each.
fn make_junk(dest: &Path, dirs: usize, per_dir: usize) -> usize {
    let mut n = 0;
    for i in 0..dirs {
        for base in [dest.join(format!("d{i:04}")), dest.join(format!("junk/d{i:04}"))] {
            std::fs::create_dir_all(&base).unwrap();
            let c = cstr(base.as_os_str().as_bytes());
            let dfd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
            assert!(dfd >= 0);
            for j in 0..per_dir / 2 {
                let name = cstr(format!("x{j:03}").as_bytes());
                let fd = unsafe { libc::openat(dfd, name.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0o644) };
                assert!(fd >= 0, "create: {}", std::io::Error::last_os_error());
                unsafe { libc::close(fd) };
                n += 1;
            }
            unsafe { libc::close(dfd) };
        }
    }
    n
}

/// The source: `dirs` directories with one file each, plus `changed` (v1 →
/// v2) so the run has a transfer before its deletions.
fn mass_delete_versions(dirs: usize) -> (TestDir, TestDir) {
    let v1 = TestDir::new("l8v1");
    let v2 = TestDir::new("l8v2");
    for (k, root) in [(1u64, v1.path()), (2, v2.path())] {
        let mut t = tree::TreeSpec::new().random_file("changed", 50_000 + k, k);
        for i in 0..dirs {
            t = t.file(format!("d{i:04}/keep"), format!("{i}\n"));
        }
        t.write(root);
    }
    (v1, v2)
}

/// L8: `sync -i --delete --max-delete=2000000` over DEST with `dirs *
/// per_dir` extraneous files: exit 0; every `*deleting` line comes after the
/// transfer's `>f` line (deletions after the transfer); nothing extraneous
/// left; I1; oracle empty; wall time within `budget`, peak RSS under 256 MiB
/// (the plan's I3 bound). With `vs_rsync`, the
/// real client (`rsync -rlptH --delete --max-delete=2000000`, rmirror's
/// defaults) deletes the same junk in a second DEST, created beforehand so
/// neither run pays for the other's freed inodes; rmirror must stay within
/// 3× its time + 30 s.
fn mass_delete(dirs: usize, per_dir: usize, budget: Duration, vs_rsync: bool) {
    let (v1, v2) = mass_delete_versions(dirs);
    let d = Rsyncd::builder().add_module(Module::new("v1", v1.path())).add_module(Module::new("v2", v2.path())).start();
    let mut sb = Sandbox::new();
    support::pull(&d.url("v1"), &sb.dest, &[]);
    let t0 = Instant::now();
    let n = make_junk(&sb.dest, dirs, per_dir);
    let other = TestDir::new("l8rsync");
    if vs_rsync {
        support::pull(&d.url("v1"), other.path(), &[]);
        make_junk(other.path(), dirs, per_dir);
    }
    eprintln!("L8: created {n} extraneous files{} in {:?}", if vs_rsync { " (twice)" } else { "" }, t0.elapsed());
    sb.rebase();
    let max = "--max-delete=2000000";
    let r = evil::run_rmirror(
        &["sync".to_string(), "-i".into(), "--delete".into(), max.into(), d.url("v2"), sb.dest.display().to_string()],
        budget + Duration::from_secs(60),
    );
    r.assert_code(&[0]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    let transfer = lines.iter().position(|l| l.starts_with(">f") && l.ends_with(" changed"));
    let first_delete = lines.iter().position(|l| l.starts_with("*deleting"));
    let deletes = lines.iter().filter(|l| l.starts_with("*deleting")).count();
    assert!(transfer.is_some() && first_delete.is_some(), "no transfer or no deletion itemized\n{}", r.show());
    assert!(transfer < first_delete, "a deletion came before the transfer\n{}", r.show());
    // Files, plus the junk tree's directories.
    assert_eq!(deletes, n + dirs + 1, "{}", r.show());
    assert!(!sb.dest.join("junk").exists());
    for i in [0, dirs / 2, dirs - 1] {
        let left: Vec<_> = std::fs::read_dir(sb.dest.join(format!("d{i:04}"))).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("keep")]);
    }
    sb.assert_outside_unchanged();
    oracle::Oracle::new(&d.url("v2"), &sb.dest).assert_clean();
    eprintln!("L8: rmirror deleted {n} files in {:?} (budget {budget:?}), peak RSS {} MiB", r.elapsed, r.maxrss_kb / 1024);
    assert!(r.elapsed <= budget, "rmirror took {:?}, over the {budget:?} budget", r.elapsed);
    r.assert_rss_below_mb(256);
    if vs_rsync {
        let t = Instant::now();
        let o = support::rsync_command()
            .args(["-rlptH", "--delete", max, "--no-motd"])
            .arg(d.url("v2"))
            .arg(format!("{}/", other.path().display()))
            .output()
            .unwrap();
        let rs = t.elapsed();
        assert!(o.status.success(), "rsync: {}", String::from_utf8_lossy(&o.stderr));
        assert!(!other.path().join("junk").exists());
        eprintln!("L8: rsync --delete took {rs:?}; rmirror/rsync = {:.2}", r.elapsed.as_secs_f64() / rs.as_secs_f64());
        assert!(r.elapsed <= rs * 3 + Duration::from_secs(30), "rmirror {:?} vs rsync {rs:?}", r.elapsed);
    }
}

#[test]
fn l08_mass_delete_20k() {
    mass_delete(100, 200, Duration::from_secs(30), false);
}

#[test]
#[ignore = "nightly: 1,000,000 extraneous files (2M created, rsync compared; ~3 min, ~2M inodes); run: cargo test --test local_faults l08_mass_delete_1m -- --ignored --nocapture"]
fn l08_mass_delete_1m() {
    // Measured 2026-11-22 on 2 loaded cores: rmirror 21.9 s, rsync 18.8 s, 65 MiB.
    mass_delete(2000, 500, Duration::from_secs(180), true);
}
