//! `faultproxy`: a loopback TCP proxy owned by the test, in front of a real
//! (or evil) daemon, with toxiproxy-like faults (safety-plan §4.1):
//! latency, bandwidth cap, cut after N bytes (FIN or RST via SO_LINGER 0),
//! stall without closing, trickle one byte per interval, flip a byte at
//! offset N, or accept and never connect upstream ("never greets").
//!
//! ```ignore
//! let p = FaultProxy::start(daemon.port(), Faults::down(Dir::default().cut_after(100_000, Cut::Rst)));
//! // rmirror … rsync://127.0.0.1:{p.port}/mod/ DEST
//! ```
//!
//! Byte offsets count per connection and direction. `only_conn(k)` applies
//! the faults to the k-th connection only, so a rerun through the same proxy
//! is clean. Every thread stops by itself: sockets poll a stop flag every
//! 50 ms and a stalled connection is held at most `hold_max` (default 120 s)
//! or until the proxy is dropped.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Orderly close (FIN) of both sides.
    Fin,
    /// Abortive close (RST, SO_LINGER 0) of both sides.
    Rst,
}

/// Faults for one direction.
#[derive(Debug, Clone, Default)]
pub struct Dir {
    /// Delay before forwarding each chunk.
    pub latency: Option<Duration>,
    /// Bytes per second.
    pub bandwidth: Option<u64>,
    /// Forward N bytes, then cut the connection.
    pub cut_after: Option<(u64, Cut)>,
    /// Forward N bytes, then forward nothing more but keep both sockets open.
    pub stall_after: Option<u64>,
    /// From byte N on, forward one byte per interval.
    pub trickle: Option<(u64, Duration)>,
    /// XOR the byte at offset N with the mask.
    pub flip: Option<(u64, u8)>,
}

impl Dir {
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = Some(d);
        self
    }
    pub fn bandwidth(mut self, bps: u64) -> Self {
        self.bandwidth = Some(bps.max(1));
        self
    }
    pub fn cut_after(mut self, n: u64, how: Cut) -> Self {
        self.cut_after = Some((n, how));
        self
    }
    pub fn stall_after(mut self, n: u64) -> Self {
        self.stall_after = Some(n);
        self
    }
    pub fn trickle(mut self, from: u64, every: Duration) -> Self {
        self.trickle = Some((from, every));
        self
    }
    pub fn flip(mut self, at: u64, mask: u8) -> Self {
        self.flip = Some((at, mask));
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Server → client.
    pub down: Dir,
    /// Client → server.
    pub up: Dir,
    /// Accept the client but never connect upstream nor send anything.
    pub hold: bool,
    /// Apply faults only to this connection number (0-based).
    pub only_conn: Option<usize>,
    /// Longest a stalled/held connection is kept open.
    pub hold_max: Option<Duration>,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }
    pub fn down(d: Dir) -> Faults {
        Faults { down: d, ..Default::default() }
    }
    pub fn up(d: Dir) -> Faults {
        Faults { up: d, ..Default::default() }
    }
    pub fn hold() -> Faults {
        Faults { hold: true, ..Default::default() }
    }
    pub fn only_conn(mut self, k: usize) -> Self {
        self.only_conn = Some(k);
        self
    }
    pub fn hold_max(mut self, d: Duration) -> Self {
        self.hold_max = Some(d);
        self
    }
}

/// Counters a test can assert on.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub down_bytes: AtomicU64,
    pub up_bytes: AtomicU64,
    pub cuts: AtomicUsize,
    pub stalls: AtomicUsize,
}

pub struct FaultProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub stats: Arc<Stats>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, faults: Faults) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(vec![]));
        let (s2, st2, th2) = (stop.clone(), stats.clone(), threads.clone());
        let accept = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(900);
            let mut n = 0usize;
            while !s2.load(Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        st2.connections.fetch_add(1, Ordering::Relaxed);
                        let active = faults.only_conn.map(|k| k == n).unwrap_or(true);
                        n += 1;
                        let f = if active { faults.clone() } else { Faults::none() };
                        let (s3, st3, th3) = (s2.clone(), st2.clone(), th2.clone());
                        let h = std::thread::spawn(move || handle(client, upstream_port, f, s3, st3, th3));
                        th2.lock().unwrap().push(h);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FaultProxy { port, stop, accept: Some(accept), threads, stats }
    }

    pub fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{}/", self.port, module)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let hs: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap());
        for h in hs {
            let _ = h.join();
        }
    }
}

fn wait_stop(stop: &AtomicBool, max: Duration) {
    let end = Instant::now() + max;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn handle(
    client: TcpStream,
    upstream_port: u16,
    f: Faults,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    let hold_max = f.hold_max.unwrap_or(Duration::from_secs(120));
    if f.hold {
        stats.stalls.fetch_add(1, Ordering::Relaxed);
        wait_stop(&stop, hold_max);
        drop(client);
        return;
    }
    let Ok(up) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        return;
    };
    let _ = up.set_nodelay(true);
    let _ = client.set_nodelay(true);
    // Shared "cut" flag: once one direction cuts, both end.
    let cut = Arc::new(AtomicBool::new(false));
    let (c1, u1) = (client.try_clone().unwrap(), up.try_clone().unwrap());
    let (s1, st1, cut1, d_up) = (stop.clone(), stats.clone(), cut.clone(), f.up.clone());
    let h = std::thread::spawn(move || pump(c1, u1, d_up, s1, st1, cut1, false, hold_max));
    threads.lock().unwrap().push(h);
    pump(up, client, f.down, stop, stats, cut, true, hold_max);
}

#[allow(clippy::too_many_arguments)]
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    d: Dir,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    cut: Arc<AtomicBool>,
    down: bool,
    hold_max: Duration,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = to.set_write_timeout(Some(Duration::from_secs(30)));
    let mut off: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    let counter = if down { &stats.down_bytes } else { &stats.up_bytes };
    let end_both = |how: Cut, a: &TcpStream, b: &TcpStream| {
        if how == Cut::Rst {
            super::evil::set_linger0(a);
            super::evil::set_linger0(b);
        }
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    };
    loop {
        if stop.load(Ordering::Relaxed) || cut.load(Ordering::Relaxed) {
            break;
        }
        // How much may we read now?
        let mut want = buf.len() as u64;
        if let Some((n, _)) = d.cut_after {
            if off >= n {
                stats.cuts.fetch_add(1, Ordering::Relaxed);
                cut.store(true, Ordering::Relaxed);
                end_both(d.cut_after.unwrap().1, &from, &to);
                return;
            }
            want = want.min(n - off);
        }
        if let Some(n) = d.stall_after {
            if off >= n {
                stats.stalls.fetch_add(1, Ordering::Relaxed);
                // Keep both sockets open, forward nothing.
                let end = Instant::now() + hold_max;
                while !stop.load(Ordering::Relaxed) && !cut.load(Ordering::Relaxed) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(50));
                }
                break;
            }
            want = want.min(n - off);
        }
        if let Some((from_off, _)) = d.trickle {
            if off >= from_off {
                want = 1;
            } else {
                want = want.min(from_off - off);
            }
        }
        let r = from.read(&mut buf[..want as usize]);
        let n = match r {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                break;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
        };
        if let Some((at, mask)) = d.flip {
            if at >= off && at < off + n as u64 {
                buf[(at - off) as usize] ^= mask;
            }
        }
        if let Some(l) = d.latency {
            std::thread::sleep(l);
        }
        if let Some((from_off, every)) = d.trickle {
            if off >= from_off {
                std::thread::sleep(every);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            break;
        }
        off += n as u64;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(bps) = d.bandwidth {
            let due = Duration::from_secs_f64(off as f64 / bps as f64);
            let el = start.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
    }
}

/// Network namespace support: `ip netns add` works here (root + iproute2).
pub fn netns_available() -> Result<(), String> {
    let name = format!("rmt-probe-{}", std::process::id());
    let out = std::process::Command::new("ip").args(["netns", "add", &name]).output();
    match out {
        Ok(o) if o.status.success() => {
            let _ = std::process::Command::new("ip").args(["netns", "del", &name]).output();
            Ok(())
        }
        Ok(o) => Err(format!("ip netns add failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("cannot run ip: {e}")),
    }
}

/// A network namespace created for one test and removed on drop, with `lo` up.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Result<NetNs, String> {
        let name = format!("rmt-{tag}-{}", std::process::id());
        let run = |args: &[&str]| -> Result<(), String> {
            let o = std::process::Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
            if o.status.success() {
                Ok(())
            } else {
                Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
            }
        };
        run(&["netns", "add", &name])?;
        let ns = NetNs { name };
        run(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }
    /// `tc qdisc add dev lo root netem ARGS` inside the namespace.
    pub fn netem(&self, args: &[&str]) -> Result<(), String> {
        let mut a = vec!["netns", "exec", &self.name, "tc", "qdisc", "add", "dev", "lo", "root", "netem"];
        a.extend_from_slice(args);
        let o = std::process::Command::new("ip").args(&a).output().map_err(|e| e.to_string())?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("tc netem: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
    }
    /// A command that runs `prog args` inside the namespace.
    pub fn command(&self, prog: &str) -> std::process::Command {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
