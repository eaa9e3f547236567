//! A real `rsync --daemon` (Debian's `rsync` package) on 127.0.0.1 and a
//! free port, owned by the test and killed (with its per-connection
//! children) on drop. See the module doc of `support` for the API summary.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestDir;

/// How long `start()` waits for the daemon to listen before panicking.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times `start()` retries with a fresh port after a bind race.
const BIND_ATTEMPTS: usize = 8;
/// How long the log accessors wait for in-flight sessions to finish.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Log format the harness configures on every module (unless overridden with
/// [`RsyncdBuilder::log_format`]). The parse in [`Rsyncd::transfers`] relies
/// on it: `<op> <module> <length> <name>` where the name comes last so that
/// names with spaces survive.
pub const DEFAULT_LOG_FORMAT: &str = "%o %m %l %n";

/// One `[module]` section of rsyncd.conf.
#[derive(Clone, Debug)]
pub struct Module {
    name: String,
    path: PathBuf,
    read_only: bool,
    list: bool,
    comment: Option<String>,
    auth: Option<(String, String)>,
    use_chroot: bool,
    numeric_ids: Option<bool>,
    max_connections: Option<u32>,
    timeout: Option<u32>,
    refuse_options: Option<String>,
    extra: Vec<(String, String)>,
}

#[allow(dead_code)]
impl Module {
    /// A read-only, listed module without auth and with `use chroot = no`.
    pub fn new(name: &str, path: impl AsRef<Path>) -> Module {
        assert!(
            !name.is_empty() && !name.contains(|c: char| c.is_whitespace() || "[]/".contains(c)),
            "module name {name:?}: the harness only supports names without whitespace, [, ] or /"
        );
        Module {
            name: name.to_owned(),
            path: path.as_ref().to_path_buf(),
            read_only: true,
            list: true,
            comment: None,
            auth: None,
            use_chroot: false,
            numeric_ids: None,
            max_connections: None,
            timeout: None,
            refuse_options: None,
            extra: Vec::new(),
        }
    }
    /// `read only = yes|no` (default yes).
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }
    /// `list = yes|no` (default yes).
    pub fn list(mut self, yes: bool) -> Self {
        self.list = yes;
        self
    }
    /// `comment = ...` (shown in the module listing).
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.to_owned());
        self
    }
    /// `auth users = USER` plus a per-module secrets file `USER:PASSWORD`
    /// (mode 0600, `strict modes` stays on).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }
    /// `use chroot = yes|no` (default **no**, so the harness also works for
    /// non-root users; `yes` needs root).
    pub fn use_chroot(mut self, yes: bool) -> Self {
        self.use_chroot = yes;
        self
    }
    /// `numeric ids = yes|no` (unset: rsync's default, i.e. yes with chroot,
    /// no without).
    pub fn numeric_ids(mut self, yes: bool) -> Self {
        self.numeric_ids = Some(yes);
        self
    }
    /// `max connections = N` (the lock file goes into the daemon's temp dir).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n);
        self
    }
    /// `timeout = SECONDS`.
    pub fn timeout(mut self, secs: u32) -> Self {
        self.timeout = Some(secs);
        self
    }
    /// `refuse options = LIST` (space separated, e.g. `"delete compress"`).
    pub fn refuse_options(mut self, list: &str) -> Self {
        self.refuse_options = Some(list.to_owned());
        self
    }
    /// Any other `key = value` line for this module.
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// Builder for [`Rsyncd`]; get one with [`Rsyncd::builder`].
#[derive(Clone, Debug, Default)]
pub struct RsyncdBuilder {
    modules: Vec<Module>,
    motd: Option<String>,
    log_format: Option<String>,
    globals: Vec<(String, String)>,
}

#[allow(dead_code)]
impl RsyncdBuilder {
    /// Adds a module with default options (see [`Module::new`]).
    pub fn module(self, name: &str, path: impl AsRef<Path>) -> Self {
        self.add_module(Module::new(name, path))
    }
    /// Adds a fully configured module.
    pub fn add_module(mut self, module: Module) -> Self {
        assert!(
            !self.modules.iter().any(|m| m.name == module.name),
            "duplicate module {:?}",
            module.name
        );
        self.modules.push(module);
        self
    }
    /// Writes TEXT to a file and sets the global `motd file` to it.
    pub fn motd(mut self, text: &str) -> Self {
        self.motd = Some(text.to_owned());
        self
    }
    /// Overrides the per-module `log format` (default [`DEFAULT_LOG_FORMAT`]).
    /// [`Rsyncd::transfers`] only understands the default format.
    pub fn log_format(mut self, format: &str) -> Self {
        self.log_format = Some(format.to_owned());
        self
    }
    /// Any other global `key = value` line.
    pub fn global(mut self, key: &str, value: &str) -> Self {
        self.globals.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the config, starts the daemon on a free port and waits until it
    /// listens. Panics (with the daemon log) if it never comes up.
    pub fn start(self) -> Rsyncd {
        let dir = TestDir::new("rsyncd");
        let log_path = dir.join("rsyncd.log");
        let conf_path = dir.join("rsyncd.conf");
        let stderr_path = dir.join("rsyncd.stderr");
        let conf = self.render(dir.path(), &log_path);
        fs::write(&conf_path, &conf).expect("write rsyncd.conf");

        let mut last_failure = String::new();
        for _attempt in 0..BIND_ATTEMPTS {
            let port = super::free_port();
            // Start every attempt with an empty log so failures are readable.
            let _ = fs::remove_file(&log_path);
            let stderr = fs::File::create(&stderr_path).expect("create rsyncd.stderr");
            let mut cmd = Command::new("rsync");
            cmd.arg("--daemon")
                .arg("--no-detach")
                .arg(format!("--config={}", conf_path.display()))
                .arg(format!("--port={port}"))
                .arg("--address=127.0.0.1")
                // Must equal the `log file` line in the config: rsync
                // re-initialises logging per module and falls back to syslog
                // when the command-line name differs from the config's.
                .arg(format!("--log-file={}", log_path.display()))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .env("LC_ALL", "C")
                // Own process group, so drop can kill the per-connection
                // children too.
                .process_group(0);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => panic!(
                    "cannot run `rsync --daemon`: {e}. Install Debian's rsync package \
                     (scripts/test does that) — tests need the real daemon."
                ),
            };
            match wait_listening(&mut child, port, dir.path(), &log_path, &conf) {
                Ok(()) => {
                    return Rsyncd {
                        child: Some(child),
                        port,
                        dir,
                        log_path,
                        conf,
                    };
                }
                Err(e) => {
                    kill_group(&mut child);
                    match e {
                        Startup::BindRace(msg) => last_failure = msg,
                        Startup::Fatal(msg) => panic!("{msg}"),
                    }
                }
            }
        }
        panic!("rsync daemon never managed to bind a free port after {BIND_ATTEMPTS} attempts:\n{last_failure}");
    }

    fn render(&self, dir: &Path, log_path: &Path) -> String {
        let mut c = String::new();
        let root = unsafe { libc::geteuid() } == 0;
        writeln!(c, "# written by tests/support/rsyncd.rs").unwrap();
        writeln!(c, "log file = {}", log_path.display()).unwrap();
        writeln!(c, "lock file = {}", dir.join("rsyncd.lock").display()).unwrap();
        if root {
            // As root the daemon would otherwise drop to `nobody` and fail to
            // read 0600/0400 fixtures owned by root.
            writeln!(c, "uid = root\ngid = root").unwrap();
        }
        if let Some(motd) = &self.motd {
            let p = dir.join("motd.txt");
            fs::write(&p, motd).expect("write motd");
            writeln!(c, "motd file = {}", p.display()).unwrap();
        }
        for (k, v) in &self.globals {
            writeln!(c, "{k} = {v}").unwrap();
        }
        let format = self.log_format.as_deref().unwrap_or(DEFAULT_LOG_FORMAT);
        for m in &self.modules {
            writeln!(c, "\n[{}]", m.name).unwrap();
            writeln!(c, "path = {}", m.path.display()).unwrap();
            writeln!(c, "read only = {}", yn(m.read_only)).unwrap();
            writeln!(c, "list = {}", yn(m.list)).unwrap();
            writeln!(c, "use chroot = {}", yn(m.use_chroot)).unwrap();
            writeln!(c, "transfer logging = yes").unwrap();
            writeln!(c, "log format = {format}").unwrap();
            if let Some(v) = &m.comment {
                writeln!(c, "comment = {v}").unwrap();
            }
            if let Some(v) = m.numeric_ids {
                writeln!(c, "numeric ids = {}", yn(v)).unwrap();
            }
            if let Some(v) = m.max_connections {
                writeln!(c, "max connections = {v}").unwrap();
            }
            if let Some(v) = m.timeout {
                writeln!(c, "timeout = {v}").unwrap();
            }
            if let Some(v) = &m.refuse_options {
                writeln!(c, "refuse options = {v}").unwrap();
            }
            if let Some((user, password)) = &m.auth {
                let p = dir.join(format!("secrets.{}", m.name));
                fs::write(&p, format!("{user}:{password}\n")).expect("write secrets");
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
                writeln!(c, "auth users = {user}").unwrap();
                writeln!(c, "secrets file = {}", p.display()).unwrap();
            }
            for (k, v) in &m.extra {
                writeln!(c, "{k} = {v}").unwrap();
            }
        }
        c
    }
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

enum Startup {
    BindRace(String),
    Fatal(String),
}

/// A running rsync daemon. Killed (SIGKILL to its process group) and reaped on
/// drop; its config, log and secrets live in a temp dir that goes with it.
pub struct Rsyncd {
    child: Option<Child>,
    port: u16,
    dir: TestDir,
    log_path: PathBuf,
    conf: String,
}

/// The per-session summary a daemon child logs when it exits normally:
/// `sent N bytes  received M bytes  total size T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// PID of the daemon child that served the connection.
    pub pid: u32,
    /// Module name from the session's `rsync on MODULE/... from` line.
    pub module: Option<String>,
    pub sent: u64,
    pub received: u64,
    pub total_size: u64,
}

/// One transfer-log line (format [`DEFAULT_LOG_FORMAT`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub pid: u32,
    /// `%o`: "send" when the daemon sent the file (a pull), "recv", "del.".
    pub op: String,
    pub module: String,
    /// `%l`: the file's length in bytes.
    pub length: u64,
    /// `%n`: path relative to the transfer root, dirs end in `/`; rsync
    /// escapes control characters (except tab) as `\#ooo` in the log.
    pub name: String,
}

#[allow(dead_code)]
impl Rsyncd {
    pub fn builder() -> RsyncdBuilder {
        RsyncdBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// PID of the listening daemon process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon already stopped").id()
    }

    /// `rsync://127.0.0.1:PORT/MODULE/` (trailing slash: "the module's
    /// contents", which is what you pair with `DEST/`).
    pub fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{}/", self.port, module)
    }

    /// `rsync://USER@127.0.0.1:PORT/MODULE/`.
    pub fn url_with_user(&self, module: &str, user: &str) -> String {
        format!("rsync://{}@127.0.0.1:{}/{}/", user, self.port, module)
    }

    /// `rsync://127.0.0.1:PORT/` (module listing).
    pub fn root_url(&self) -> String {
        format!("rsync://127.0.0.1:{}/", self.port)
    }

    /// The generated rsyncd.conf text.
    pub fn config(&self) -> &str {
        &self.conf
    }

    /// Directory holding config, log, secrets and motd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Full log text right now (does not wait for running sessions).
    pub fn log_now(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Full log text after all in-flight sessions have finished (waits up
    /// to 10 s for the daemon's per-connection children to exit, so the
    /// summary lines of a just-finished client are present).
    pub fn log(&self) -> String {
        self.quiesce();
        self.log_now()
    }

    /// Waits (bounded) until the daemon has no per-connection children.
    pub fn quiesce(&self) {
        let Some(child) = self.child.as_ref() else {
            return;
        };
        let pid = child.id();
        let deadline = Instant::now() + QUIESCE_TIMEOUT;
        while Instant::now() < deadline {
            if children_of(pid).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Parsed per-session summaries, in log order.
    ///
    /// Parse: every log line is `YYYY/MM/DD HH:MM:SS [PID] MESSAGE`; a session
    /// is identified by PID; `rsync on MODULE/PATH from HOST (ADDR)` gives its
    /// module, `sent N bytes  received M bytes  total size T` its numbers.
    /// Sessions that failed (e.g. bad auth) log no summary and are absent.
    pub fn sessions(&self) -> Vec<Session> {
        let log = self.log();
        let mut modules: Vec<(u32, String)> = Vec::new();
        let mut out = Vec::new();
        for line in log.lines() {
            let Some((pid, msg)) = split_log_line(line) else {
                continue;
            };
            if let Some(rest) = msg.strip_prefix("rsync on ") {
                if let Some(m) = rest.split('/').next() {
                    modules.push((pid, m.to_owned()));
                }
            } else if let Some(s) = parse_summary(msg) {
                let module = modules
                    .iter()
                    .rev()
                    .find(|(p, _)| *p == pid)
                    .map(|(_, m)| m.clone());
                out.push(Session {
                    pid,
                    module,
                    sent: s.0,
                    received: s.1,
                    total_size: s.2,
                });
            }
        }
        out
    }

    /// The "sent N bytes" number of every finished session, in log order.
    pub fn sent_bytes(&self) -> Vec<u64> {
        self.sessions().iter().map(|s| s.sent).collect()
    }

    /// Every transfer-log line (needs the default log format).
    pub fn transfer_log(&self) -> Vec<Transfer> {
        let log = self.log();
        let mut out = Vec::new();
        for line in log.lines() {
            let Some((pid, msg)) = split_log_line(line) else {
                continue;
            };
            let mut it = msg.splitn(4, ' ');
            let (Some(op), Some(module), Some(len), Some(name)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            if !matches!(op, "send" | "recv" | "del.") {
                continue;
            }
            let Ok(length) = len.parse() else { continue };
            out.push(Transfer {
                pid,
                op: op.to_owned(),
                module: module.to_owned(),
                length,
                name: name.to_owned(),
            });
        }
        out
    }

    /// Names the daemon logged as *sent* from MODULE (all sessions, log
    /// order). A file that the client already had and did not request is
    /// not in this list — that is how tests check "only X was transferred".
    pub fn transfers(&self, module: &str) -> Vec<String> {
        self.transfer_log()
            .into_iter()
            .filter(|t| t.op == "send" && t.module == module)
            .map(|t| t.name)
            .collect()
    }

    /// Kills the daemon and its session children now (drop does the same).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

/// SIGKILL to the child's process group (daemon + session children), then
/// reap the daemon.
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain kill(2) on the process group created by process_group(0).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn wait_listening(
    child: &mut Child,
    port: u16,
    dir: &Path,
    log_path: &Path,
    conf: &str,
) -> Result<(), Startup> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = read_lossy(log_path);
            let stderr = read_lossy(&dir.join("rsyncd.stderr"));
            let msg = format!(
                "rsync daemon exited during startup ({status}) on port {port}.\n--- log ---\n{log}\n--- stderr ---\n{stderr}\n--- rsyncd.conf ---\n{conf}"
            );
            if log.contains("Address already in use") || stderr.contains("Address already in use") {
                return Err(Startup::BindRace(msg));
            }
            return Err(Startup::Fatal(msg));
        }
        match is_listening(child.id(), port) {
            Some(true) => return Ok(()),
            Some(false) => {}
            // No /proc/net/tcp: fall back to a connection probe (the daemon
            // logs it as a connection that closed early).
            None => {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            let log = read_lossy(log_path);
            return Err(Startup::Fatal(format!(
                "rsync daemon (pid {}) did not listen on 127.0.0.1:{port} within {STARTUP_TIMEOUT:?}.\n--- log ---\n{log}\n--- rsyncd.conf ---\n{conf}",
                child.id()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Rsyncd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `YYYY/MM/DD HH:MM:SS [PID] MESSAGE` → (PID, MESSAGE).
fn split_log_line(line: &str) -> Option<(u32, &str)> {
    let open = line.find(" [")?;
    let rest = &line[open + 2..];
    let close = rest.find("] ")?;
    let pid = rest[..close].parse().ok()?;
    Some((pid, &rest[close + 2..]))
}

/// `sent 238 bytes  received 78 bytes  total size 8` → (238, 78, 8).
fn parse_summary(msg: &str) -> Option<(u64, u64, u64)> {
    let w: Vec<&str> = msg.split_whitespace().collect();
    match w.as_slice() {
        ["sent", s, "bytes", "received", r, "bytes", "total", "size", t] => {
            let n = |x: &str| x.replace(',', "").parse::<u64>().ok();
            Some((n(s)?, n(r)?, n(t)?))
        }
        _ => None,
    }
}

/// PIDs whose parent is PID (scans /proc; empty if /proc is unavailable).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces/parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let state = f.next();
        // A zombie has exited, so all its log writes are done.
        if f.next().and_then(|s| s.parse::<u32>().ok()) == Some(pid) && state != Some("Z") {
            out.push(p);
        }
    }
    out
}

/// Is PID listening on 127.0.0.1:PORT? Matches the LISTEN socket's inode in
/// /proc/net/tcp against PID's fds, so another process that grabbed the port
/// does not count. None if /proc is not usable.
fn is_listening(pid: u32, port: u16) -> Option<bool> {
    let tcp = fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("0100007F:{port:04X}");
    let mut inodes = Vec::new();
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 9 && f[1] == want && f[3] == "0A" {
            inodes.push(format!("socket:[{}]", f[9]));
        }
    }
    if inodes.is_empty() {
        return Some(false);
    }
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for fd in fds.flatten() {
        if let Ok(target) = fs::read_link(fd.path()) {
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                return Some(true);
            }
        }
    }
    Some(false)
}
