//! The command line: declared once with clap, turned into validated settings,
//! exiting with rsync's codes. Only this layer prints.

pub use crate::remote as url;

mod iim;
mod gen;
pub mod log;
mod probe;
pub mod progress;
mod publish_args;
mod run;
mod status;
mod stop_args;

mod watch;

pub use iim::iim_main;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::checksum::CsumType;
use crate::engine::commit::DeleteOpts;
use crate::engine::generator::LocalOpts;
use crate::engine::monitor::{Item, Monitor};
use crate::engine::partial::PartialDir;
use crate::engine::pull::{ConnSettings, PullSpec};
use crate::engine::{SyncJob, SyncReport};
use crate::exit::ExitCode;
use crate::filter::FilterList;
use crate::proto::options::{self, CompressRequest, TransferOpts};
use crate::proto::session::{MsgKind, SessionConfig};
use crate::text::escape_bytes;
use crate::transport::Connection;


/// Print a line to stdout; a closed pipe is not a crash (rsync's output
/// functions ignore EPIPE too, and the run's exit status still tells).
macro_rules! say {
    ($($a:tt)*) => {{
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, $($a)*);
    }};
}

/// Print a line to stderr, never panicking.
macro_rules! warn {
    ($($a:tt)*) => {{
        let mut o = std::io::stderr().lock();
        let _ = writeln!(o, $($a)*);
    }};
}

const AFTER_HELP: &str = "Examples:\n  rmirror ls rsync://mirror.example.org/\n  rmirror sync -i --delete rsync://mirror.example.org/cpan/ /srv/cpan/\n  rmirror compare rsync://mirror.example.org/cpan/ /srv/cpan/";

#[derive(Parser, Debug)]
#[command(name = "rmirror", version, about = "Mirror public archives over the rsync protocol, without an rsync binary", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
    /// Log lines on stderr as text or JSON objects, one per line (or RMIRROR_LOG_FORMAT).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<log::LogFormat>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// List a daemon's modules, or the files at a path (like `rsync rsync://host/module/path/`).
    #[command(after_help = "Examples:\n  rmirror ls rsync://localhost/\n  rmirror ls rsync://localhost/pub/dir/")]
    Ls {
        /// rsync://[user@]host[:port]/[module[/path]] or host::module/path
        url: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Pull a tree from an rsync daemon into DEST (default -rlptH).
    #[command(disable_help_flag = true, after_help = "Example:\n  rmirror sync -i --delete rsync://localhost/pub/ /srv/mirror/pub/\n\n--help-all lists every option.")]
    Sync {
        src: String,
        dest: PathBuf,
        #[command(flatten)]
        help: gen::HelpArgs,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        xfer: XferArgs,
        /// Print one JSON document at the end (counts, bytes, exit; changes with -i). See docs/json.md.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        publish: publish_args::PublishArgs,
        #[command(flatten)]
        stop: stop_args::StopArgs,
    },
    /// Show what a sync would change, one itemized line per path; exit 0 if identical, 1 if not.
    #[command(disable_help_flag = true, after_help = "Example:\n  rmirror compare --json rsync://localhost/pub/ /srv/mirror/pub/\n\n--help-all lists every option.")]
    Compare {
        src: String,
        dest: PathBuf,
        #[command(flatten)]
        help: gen::HelpArgs,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        xfer: XferArgs,
        /// Print one JSON document instead of itemized lines.
        #[arg(long)]
        json: bool,
    },
    /// Follow the upstream's RECENT change logs and keep DEST seconds behind it (instant mirroring).
    #[command(disable_help_flag = true, after_help = "Examples:\n  rmirror watch rsync://cpan-rsync.perl.org/CPAN/ /srv/cpan/\n  rmirror watch --tree authors --tree modules rsync://cpan-rsync.perl.org/CPAN/ /srv/cpan/\n  rmirror watch --once --json --since -2h rsync://localhost/cpan/ /srv/cpan/\n\n--help-all lists every option.")]
    Watch {
        src: String,
        dest: PathBuf,
        #[command(flatten)]
        help: gen::HelpArgs,
        #[command(flatten)]
        conn: ConnArgs,
        #[command(flatten)]
        watch: watch::WatchArgs,
    },
    /// Run the mirror jobs of a TOML file on their timers (`--once` for cron, `--check` to validate).
    #[command(after_help = "Examples:\n  rmirror run --check -c /etc/rmirror/mirrors.toml\n  rmirror run -c mirrors.toml --once --only cpan")]
    Run(run::RunArgs),
    /// Show the jobs' last runs and next due times from the status file.
    #[command(after_help = "Example:\n  rmirror status -c /etc/rmirror/mirrors.toml --json")]
    Status(status::StatusArgs),
    /// Rank candidate upstreams by freshness signal and latency.
    #[command(after_help = "Example:\n  rmirror probe rsync://a.example/cpan/ rsync://b.example/cpan/")]
    Probe(probe::ProbeArgs),
    /// A drop-in for the iim instant-mirroring client: its command line and config
    /// (`rmirror iim -c iim.conf -daemon cpan`; also runs as `iim` via a symlink).
    #[command(disable_help_flag = true)]
    Iim {
        /// iim's options: [-v] [-q] [-d] [-t] [-f] [-m] [-daemon tag] [-e e] [-c conf] [--entry value ...]
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write the man pages (rmirror.1, rmirror-COMMAND.1) into DIR.
    #[command(hide = true, name = "gen-man")]
    GenMan { dir: PathBuf },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConnArgs {
    /// Daemon port (default 873, or the URL's).
    #[arg(long)]
    pub port: Option<u16>,
    /// Force an older protocol version (27..32).
    #[arg(long, value_parser = clap::value_parser!(i32).range(27..=32))]
    pub protocol: Option<i32>,
    /// Read the daemon password from FILE (first line).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// I/O timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Connect timeout in seconds.
    #[arg(long, value_name = "SECONDS")]
    pub contimeout: Option<u64>,
    /// Increase verbosity (-vv: debug logs on stderr).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Suppress non-error messages.
    #[arg(short, long)]
    pub quiet: bool,
    /// Debug logs on stderr (the same as -vv).
    #[arg(long, hide = true)]
    pub debug: bool,
}

impl ConnArgs {
    pub fn verbosity(&self) -> log::Verbosity {
        log::Verbosity::from_flags(self.quiet, self.verbose, self.debug)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct XferArgs {
    /// Archive mode (-rlptgoD; the default set here is -rlptH, with -o -g -D on request).
    #[arg(short = 'a', long)]
    pub archive: bool,
    #[arg(short = 'r', long, hide = true)]
    pub recursive: bool,
    #[arg(short = 'l', long, hide = true)]
    pub links: bool,
    #[arg(short = 'p', long, hide = true)]
    pub perms: bool,
    #[arg(short = 't', long, hide = true)]
    pub times: bool,
    #[arg(short = 'H', long, hide = true)]
    pub hard_links: bool,
    /// Do not preserve hard links.
    #[arg(long, hide_short_help = true)]
    pub no_hard_links: bool,
    /// Preserve owner (root only).
    #[arg(short = 'o', long, hide_short_help = true)]
    pub owner: bool,
    /// Preserve group (root only).
    #[arg(short = 'g', long, hide_short_help = true)]
    pub group: bool,
    /// Preserve devices and specials (root only).
    #[arg(short = 'D', hide_short_help = true)]
    pub devices: bool,
    /// Delete extraneous files from DEST (after the transfer).
    #[arg(long)]
    pub delete: bool,
    /// Do not delete more than NUM files.
    #[arg(long, value_name = "NUM")]
    pub max_delete: Option<u64>,
    /// Skip symlinks that point outside the tree (absolute, or `..` leaving it), with a
    /// warning. The default; accepted for rsync users' scripts.
    #[arg(long, overrides_with = "no_safe_links", hide_short_help = true)]
    pub safe_links: bool,
    /// Create every symlink as the server lists it, even `/etc/passwd` or `../../x`
    /// (never followed when writing).
    #[arg(long, overrides_with = "safe_links", hide_short_help = true)]
    pub no_safe_links: bool,
    /// Show what would be transferred, change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Output a change summary for all updates.
    #[arg(short = 'i', long)]
    pub itemize_changes: bool,
    /// Exclude files matching PATTERN.
    #[arg(long, value_name = "PATTERN", allow_hyphen_values = true)]
    pub exclude: Vec<String>,
    /// Don't exclude files matching PATTERN.
    #[arg(long, value_name = "PATTERN", allow_hyphen_values = true)]
    pub include: Vec<String>,
    /// Read exclude patterns from FILE.
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub exclude_from: Vec<PathBuf>,
    /// Read include patterns from FILE.
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub include_from: Vec<PathBuf>,
    /// Add a file-filtering RULE.
    #[arg(short = 'f', long, value_name = "RULE", allow_hyphen_values = true)]
    pub filter: Vec<String>,
    /// Read the list of source names from FILE.
    #[arg(long, value_name = "FILE", hide_short_help = true)]
    pub files_from: Option<PathBuf>,
    /// Skip based on checksum, not mod-time & size.
    #[arg(short = 'c', long)]
    pub checksum: bool,
    /// Compress file data during the transfer.
    #[arg(short = 'z', long)]
    pub compress: bool,
    /// Choose the checksum algorithm (xxh128, xxh3, xxh64, md5, md4).
    #[arg(long, value_name = "STR", hide_short_help = true)]
    pub checksum_choice: Option<String>,
    /// Choose the compression algorithm (zstd, zlibx, zlib).
    #[arg(long, value_name = "STR", hide_short_help = true)]
    pub compress_choice: Option<String>,
    /// Limit socket I/O bandwidth (KiB/s, applied by the server).
    #[arg(long, value_name = "RATE", hide_short_help = true)]
    pub bwlimit: Option<u32>,
    /// Don't map uid/gid values by user/group name.
    #[arg(long, hide_short_help = true)]
    pub numeric_ids: bool,
    /// Give some file-transfer stats.
    #[arg(long)]
    pub stats: bool,
    /// Show progress during transfer.
    #[arg(long)]
    pub progress: bool,
    /// Receive the whole file list before transferring (no incremental recursion).
    #[arg(long = "no-inc-recursive", visible_alias = "no-i-r", hide_short_help = true)]
    pub no_inc_recursive: bool,
    /// Remote shell for host:path sources (default ssh; also RSYNC_RSH).
    #[arg(short = 'e', long = "rsh", value_name = "COMMAND")]
    pub rsh: Option<String>,
    /// Program to run on the remote side (default rsync).
    #[arg(long, value_name = "PROGRAM", hide_short_help = true)]
    pub rsync_path: Option<String>,
    /// Force a fixed checksum block-size.
    #[arg(short = 'B', long, value_name = "SIZE", hide_short_help = true)]
    pub block_size: Option<u32>,
    /// Keep the received part of an interrupted file in DIR (relative: in the file's own
    /// directory, e.g. .rsync-partial) and resume from it next time; never under the final name.
    #[arg(long, value_name = "DIR", hide_short_help = true)]
    pub partial_dir: Option<std::ffi::OsString>,
    /// Put all updated files into place together at the end of the run (default: each
    /// as soon as it is verified).
    #[arg(long, hide_short_help = true)]
    pub delay_updates: bool,
}

/// Errors of the command-line layer, with their exit code.
#[derive(Debug)]
pub struct CliError {
    pub msg: String,
    pub code: ExitCode,
}

impl CliError {
    fn syntax(msg: impl Into<String>) -> Self {
        CliError { msg: msg.into(), code: ExitCode::Syntax }
    }
}

/// Parse a source argument. A scheme rmirror does not speak (`rsyncs://`
/// TLS, `https://`, …) is refused here, before any connection, with exit 4
/// (requested action not supported); other malformed sources are syntax
/// errors (1).
pub(crate) fn parse_source(src: &str) -> Result<url::RemoteSpec, CliError> {
    if let Some(why) = url::unsupported_scheme(src) {
        return Err(CliError { msg: why, code: ExitCode::Unsupported });
    }
    url::parse(src).map_err(CliError::syntax)
}

/// Entry point: parse argv, run, return the process exit status.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> i32 {
    let matches = match Cli::command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => ExitCode::Syntax.code(),
            };
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::Syntax.code();
        }
    };
    let format = match log::LogFormat::resolve(cli.log_format) {
        Ok(f) => f,
        Err(e) => {
            warn!("rmirror: {e}");
            return ExitCode::Syntax.code();
        }
    };
    if let Cmd::Iim { args } = cli.cmd {
        return iim::iim_main_with(args, Some(format));
    }
    let (style, verbosity) = match &cli.cmd {
        Cmd::Ls { conn, .. } | Cmd::Sync { conn, .. } | Cmd::Compare { conn, .. } => (log::Style::Plain, conn.verbosity()),
        Cmd::Watch { conn, .. } => (log::Style::Watch, conn.verbosity()),
        Cmd::Run(a) => (log::Style::Run, a.verbosity()),
        _ => (log::Style::Plain, log::Verbosity::Normal),
    };
    log::init(format, style, verbosity);
    let rt = match runtime(matches!(cli.cmd, Cmd::Run(_))) {
        Ok(rt) => rt,
        Err(e) => {
            log::fatal(&format!("cannot start the runtime: {e}"), ExitCode::Unsupported.code());
            return ExitCode::Unsupported.code();
        }
    };
    let sub = matches.subcommand().map(|(_, m)| m.clone());
    // `run` reloads its config on SIGHUP instead of stopping.
    let hup_stops = !matches!(cli.cmd, Cmd::Run(_));
    let r = rt.block_on(async move {
        let work = run(cli, sub);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            s = shutdown_signal(hup_stops) => {
                // Let running transfers stop cleanly (their temps removed, nothing
                // half-published), but never wait long.
                crate::engine::request_shutdown();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), &mut work).await;
                Err(CliError { msg: format!("received {s}, stopping"), code: ExitCode::Signal })
            }
        }
    });
    match r {
        Ok(code) => code.code(),
        Err(e) => {
            log::fatal(&e.msg, e.code.code());
            e.code.code()
        }
    }
}

/// The async runtime. One transfer at a time (`sync`, `ls`, `watch`, ...)
/// runs on a single-threaded one: its session task then reads the socket on
/// the thread that polls it, instead of being woken through another worker
/// thread for every read, and the receiver and generator still have their
/// own threads (`spawn_blocking`). Measured on bench scenario (a): ~10 % less
/// CPU, a third fewer context switches and lower peak RSS (fewer threads).
/// `run`, with many jobs in parallel, keeps a worker per core.
pub(crate) fn runtime(many_jobs: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if many_jobs {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
}

async fn shutdown_signal(hup_stops: bool) -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv(), if hup_stops => "SIGHUP",
    }
}

async fn run(cli: Cli, sub: Option<ArgMatches>) -> Result<ExitCode, CliError> {
    match cli.cmd {
        Cmd::Ls { url, conn } => cmd_ls(&url, &conn).await,
        Cmd::Sync { src, dest, conn, xfer, json, publish, stop, .. } => {
            let m = sub.ok_or_else(|| CliError::syntax("internal: no sub-matches"))?;
            // --stop-after counts from the start of the command.
            let deadline = stop.deadline()?;
            let mode = if json { Mode::SyncJson } else { Mode::Sync };
            cmd_sync(&src, dest, &conn, &xfer, &m, mode, Some(&publish), deadline).await
        }
        Cmd::Compare { src, dest, conn, xfer, json, .. } => {
            let m = sub.ok_or_else(|| CliError::syntax("internal: no sub-matches"))?;
            cmd_sync(&src, dest, &conn, &xfer, &m, if json { Mode::CompareJson } else { Mode::Compare }, None, None).await
        }
        Cmd::Watch { src, dest, conn, watch, .. } => watch::cmd_watch(&src, dest, &conn, &watch).await,
        Cmd::Run(a) => run::cmd_run(&a).await,
        Cmd::Status(a) => status::cmd_status(&a).await,
        Cmd::Probe(a) => probe::cmd_probe(&a).await,
        Cmd::Iim { .. } => Err(CliError::syntax("internal: iim runs before the runtime starts")),
        Cmd::GenMan { dir } => {
            for n in gen::gen_man(&dir)? {
                say!("{}", dir.join(n).display());
            }
            Ok(ExitCode::Ok)
        }
        Cmd::Completions { shell } => {
            gen::completions(shell);
            Ok(ExitCode::Ok)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sync,
    /// `sync --json`.
    SyncJson,
    Compare,
    CompareJson,
}

impl Mode {
    fn syncs(self) -> bool {
        matches!(self, Mode::Sync | Mode::SyncJson)
    }
}

/// The connection options of the command line, as every session uses them
/// (`--timeout 0` means none).
fn conn_settings(conn: &ConnArgs) -> Result<ConnSettings, CliError> {
    Ok(ConnSettings {
        port: conn.port,
        protocol: conn.protocol,
        user: None,
        password: password(conn)?,
        timeout: conn.timeout.filter(|&t| t > 0).map(Duration::from_secs),
        contimeout: conn.contimeout.map(Duration::from_secs),
    })
}

fn password(conn: &ConnArgs) -> Result<Option<Vec<u8>>, CliError> {
    if let Some(f) = &conn.password_file {
        let data = std::fs::read(f)
            .map_err(|e| CliError::syntax(format!("cannot read password file {}: {e}", f.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if let Ok(md) = std::fs::metadata(f) {
                if md.mode() & 0o004 != 0 {
                    return Err(CliError {
                        msg: format!("password file {} must not be other-accessible", f.display()),
                        code: ExitCode::Syntax,
                    });
                }
            }
        }
        let line = data.split(|&b| b == b'\n').next().unwrap_or(&[]);
        let line: Vec<u8> = line.iter().copied().filter(|&b| b != b'\r').collect();
        return Ok(Some(line));
    }
    Ok(std::env::var_os("RSYNC_PASSWORD").map(|p| {
        use std::os::unix::ffi::OsStringExt;
        p.into_vec()
    }))
}

fn user_for(spec: &url::RemoteSpec) -> String {
    spec.user
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "nobody".into())
}

async fn connect(spec: &url::RemoteSpec, conn: &ConnArgs) -> Result<Connection, CliError> {
    let port = conn.port.or(spec.port).unwrap_or(873);
    let mut c = Connection::connect(&spec.host, port, conn.contimeout.map(Duration::from_secs))
        .await
        .map_err(|e| CliError { msg: e.to_string(), code: e.exit_code() })?;
    c.set_idle_timeout(conn.timeout.filter(|&t| t > 0).map(Duration::from_secs));
    Ok(c)
}

/// Prints for a terminal (or pipe) user.
struct Printer {
    /// Items reported (changes a sync would make or made).
    items: std::sync::atomic::AtomicU64,
    quiet: bool,
    itemize: bool,
    collect: Option<Mutex<Vec<Item>>>,
    verbose: u8,
    /// `--progress`: one line per received file with its size and the running totals.
    progress: Option<Mutex<(u64, u64, std::time::Instant)>>,
    /// The terminal progress bar (stderr is a TTY, no -q); output goes around it.
    bar: Option<progress::Bar>,
}

impl Printer {
    /// Print with the bar (if any) taken off the screen.
    fn out(&self, f: impl FnOnce()) {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }
}

impl Monitor for Printer {
    fn text(&self, line: &[u8]) {
        if !self.quiet {
            self.out(|| {
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{}", escape_bytes(line, false));
            });
        }
    }
    fn message(&self, kind: MsgKind, text: &[u8]) {
        let t = escape_bytes(text, true);
        let t = t.trim_end_matches('\n');
        self.out(|| match kind {
            MsgKind::Info => {
                if !self.quiet {
                    say!("{t}");
                }
            }
            MsgKind::Warning => log::server_line(tracing::Level::WARN, t),
            MsgKind::Error | MsgKind::ErrorXfer => log::server_line(tracing::Level::ERROR, t),
        });
    }
    fn local_error(&self, text: &str) {
        self.out(|| log::line(tracing::Level::ERROR, None, text));
    }
    fn progress(&self, p: &crate::engine::monitor::Progress) {
        if let Some(b) = &self.bar {
            b.progress(p);
        }
    }
    fn file_done(&self, name: &[u8], bytes: u64) {
        let Some(p) = &self.progress else { return };
        let Ok(mut g) = p.lock() else { return };
        g.0 += 1;
        g.1 += bytes;
        let secs = g.2.elapsed().as_secs_f64().max(0.001);
        self.out(|| {
            say!(
                "{}\n{:>15} 100% {:>10.2}MB/s  (xfr#{}, total {})",
                crate::text::escape_name(name),
                crate::text::group_digits(bytes),
                g.1 as f64 / secs / 1e6,
                g.0,
                crate::text::group_digits(g.1)
            )
        });
    }
    fn item(&self, item: &Item) {
        self.items.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.item(item);
        }
        if let Some(c) = &self.collect {
            if let Ok(mut v) = c.lock() {
                v.push(item.clone());
            }
            return;
        }
        if self.itemize {
            self.out(|| say!("{}", item.line()));
        } else if self.verbose > 0 && !self.quiet {
            let mut s = crate::text::escape_name(&item.name);
            if item.is_dir {
                s.push('/');
            }
            if item.code == "*deleting" {
                s = format!("deleting {s}");
            }
            self.out(|| say!("{s}"));
        }
    }
}

async fn cmd_ls(u: &str, conn: &ConnArgs) -> Result<ExitCode, CliError> {
    let spec = parse_source(u)?;
    let c = connect(&spec, conn).await?;
    let listing = spec.module.is_empty();
    let mut opts = TransferOpts { recursive: false, dirs: true, hard_links: false, ..Default::default() };
    opts.timeout = conn.timeout.map(|t| t as u32);
    let path_arg = if spec.path.is_empty() { format!("{}/", spec.module).into_bytes() } else { spec.remote_arg() };
    let cfg = SessionConfig {
        mode: Default::default(),
        max_protocol: conn.protocol.unwrap_or(32),
        module: if listing { None } else { Some(spec.module.clone()) },
        remote_paths: vec![path_arg],
        user: user_for(&spec),
        password: password(conn)?,
        opts,
    };
    let mon: Arc<dyn Monitor> =
        Arc::new(Printer { items: Default::default(), quiet: conn.quiet, itemize: false, collect: None, verbose: 0, progress: None, bar: None });
    let job = (!listing).then(|| SyncJob {
        dest: PathBuf::new(),
        local: LocalOpts::listing(am_root()),
        delete: DeleteOpts::default(),
        filters: Arc::new(FilterList::new()),
        list_only: true,
        scope: crate::engine::Scope::whole_tree(),
        numeric_ids: false,
        late_publish: Default::default(),
        delay_updates: false,
        partial_dir: None,
        update_markers: Vec::new(),
        max_file_size: None,
    });
    let rep = crate::engine::run(c, cfg, job, mon).await.map_err(|e| CliError { msg: e.to_string(), code: e.exit_code() })?;
    if let Some(list) = &rep.list {
        let mut out = std::io::stdout().lock();
        for e in list.entries.iter().flatten() {
            let _ = writeln!(out, "{}", list_line(e));
        }
    }
    Ok(rep.exit_code())
}

/// One `rsync --list-only` line: mode, size, date, time, name.
pub fn list_line(e: &crate::proto::flist::FileEntry) -> String {
    let mode = mode_string(e.mode);
    let (date, time) = ymd_hms(e.mtime);
    let mut name = crate::text::escape_name(&e.name);
    if let Some(t) = e.link_target() {
        name.push_str(" -> ");
        name.push_str(&crate::text::escape_name(t));
    }
    format!("{mode} {:>14} {date} {time} {name}", crate::text::group_digits(e.size))
}

fn mode_string(m: u32) -> String {
    let t = match m & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut s = String::new();
    s.push(t);
    let bits = [(0o400, 'r'), (0o200, 'w'), (0o100, 'x'), (0o40, 'r'), (0o20, 'w'), (0o10, 'x'), (0o4, 'r'), (0o2, 'w'), (0o1, 'x')];
    for (b, c) in bits {
        s.push(if m & b != 0 { c } else { '-' });
    }
    s
}

/// Local-time-free rendering (UTC) of an epoch as `YYYY/MM/DD` and `HH:MM:SS`.
fn ymd_hms(t: i64) -> (String, String) {
    let u = crate::text::Utc::at(t);
    (format!("{:04}/{:02}/{:02}", u.year, u.month, u.day), format!("{:02}:{:02}:{:02}", u.hour, u.minute, u.second))
}

fn am_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Build the filter list in command-line order (--exclude/--include/--filter/-from interleave).
fn filters_in_order(m: &ArgMatches, first: &[String]) -> Result<FilterList, CliError> {
    let mut items: Vec<(usize, &str, String)> = Vec::new();
    for id in ["exclude", "include", "filter", "exclude_from", "include_from"] {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_raw(id)) {
            for (i, v) in idx.zip(vals) {
                items.push((i, id, v.to_string_lossy().into_owned()));
            }
        }
    }
    items.sort_by_key(|(i, _, _)| *i);
    let mut fl = FilterList::new();
    for r in first {
        fl.add_rule(r).map_err(|e| CliError::syntax(e.to_string()))?;
    }
    for (_, id, v) in items {
        let r = match id {
            "exclude" => fl.add_exclude(&v),
            "include" => fl.add_include(&v),
            "filter" => fl.add_rule(&v),
            _ => {
                let data = if v == "-" {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                        .map_err(|e| CliError::syntax(format!("cannot read stdin: {e}")))?;
                    b
                } else {
                    std::fs::read(&v).map_err(|e| CliError { msg: format!("cannot read {v}: {e}"), code: ExitCode::FileSelect })?
                };
                fl.add_from_file(&data, id == "include_from", &v)
            }
        };
        r.map_err(|e| CliError::syntax(e.to_string()))?;
    }
    Ok(fl)
}

async fn cmd_sync(
    src: &str,
    dest: PathBuf,
    conn: &ConnArgs,
    x: &XferArgs,
    m: &ArgMatches,
    mode: Mode,
    publish: Option<&publish_args::PublishArgs>,
    deadline: Option<crate::engine::deadline::Deadline>,
) -> Result<ExitCode, CliError> {
    let spec = parse_source(src)?;
    // --write-trace/--write-recent: only for a real sync; their files stay out of the transfer
    let publish = match publish {
        Some(p) if mode.syncs() && !x.dry_run => p.config()?,
        _ => None,
    };
    let first = publish.as_ref().map(|p| p.exclude_rules()).unwrap_or_default();
    let filters = filters_in_order(m, &first)?;
    let checksum_choice = match &x.checksum_choice {
        Some(s) if s.eq_ignore_ascii_case("auto") => None,
        Some(s) => Some(
            CsumType::from_name(s)
                .filter(|c| *c != CsumType::Md4Old)
                .ok_or_else(|| CliError { msg: format!("unknown checksum name: {s}"), code: ExitCode::Unsupported })?,
        ),
        None => None,
    };
    let compress = match &x.compress_choice {
        Some(s) if s.eq_ignore_ascii_case("auto") => {
            if x.compress {
                CompressRequest::Negotiate
            } else {
                CompressRequest::Off
            }
        }
        Some(s) => match options::compression_from_name(s) {
            Some(crate::proto::token::Compression::None) => CompressRequest::Off,
            Some(c) => CompressRequest::Explicit(c),
            None => {
                return Err(CliError {
                    msg: format!("unknown compress name: {s} (rmirror supports zstd, zlibx, zlib, none)"),
                    code: ExitCode::Unsupported,
                })
            }
        },
        None if x.compress => CompressRequest::Negotiate,
        None => CompressRequest::Off,
    };
    let files_from = match &x.files_from {
        Some(f) => {
            let data = std::fs::read(f)
                .map_err(|e| CliError { msg: format!("cannot read {}: {e}", f.display()), code: ExitCode::FileSelect })?;
            Some(
                data.split(|&b| b == b'\n' || b == b'\0')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| !l.is_empty())
                    .map(|l| l.to_vec())
                    .collect::<Vec<_>>(),
            )
        }
        None => None,
    };
    let dry = x.dry_run || !mode.syncs();
    let mut ps = PullSpec::new(spec, dest.clone());
    ps.conn = conn_settings(conn)?;
    ps.delete = x.delete || !mode.syncs();
    ps.max_delete = x.max_delete;
    ps.dry_run = dry;
    ps.checksum = x.checksum;
    ps.compress = compress;
    ps.checksum_choice = checksum_choice;
    ps.owner = x.owner;
    ps.group = x.group;
    ps.devices = x.devices;
    ps.hard_links = !x.no_hard_links;
    ps.safe_links = !x.no_safe_links;
    ps.numeric_ids = x.numeric_ids;
    ps.bwlimit = x.bwlimit;
    ps.block_size = x.block_size;
    ps.filters = Arc::new(filters);
    ps.recursive = files_from.is_none() || x.recursive;
    ps.rsh = x.rsh.clone();
    ps.inc_recurse = !x.no_inc_recursive;
    ps.rsync_path = x.rsync_path.clone();
    ps.files_from = files_from;
    ps.delay_updates = x.delay_updates;
    ps.partial_dir = match &x.partial_dir {
        Some(d) => PartialDir::parse(d).map_err(CliError::syntax)?,
        None => None,
    };
    let json = matches!(mode, Mode::CompareJson | Mode::SyncJson);
    let collect = json.then(|| Mutex::new(Vec::new()));
    let bar_kind = if mode.syncs() && !x.dry_run { progress::BarKind::Transfer } else { progress::BarKind::Compare };
    let printer = Arc::new(Printer {
        items: Default::default(),
        quiet: conn.quiet || json,
        itemize: x.itemize_changes || mode == Mode::Compare,
        collect,
        verbose: conn.verbose,
        progress: (x.progress && !conn.quiet && mode == Mode::Sync).then(|| Mutex::new((0, 0, std::time::Instant::now()))),
        bar: progress::Bar::for_terminal(bar_kind, conn.quiet),
    });
    let mut mon: Arc<dyn Monitor> = printer.clone();
    let recorder = publish.as_ref().map(|_| publish_args::recorder(mon.clone()));
    if let Some(r) = &recorder {
        mon = r.clone();
    }
    let started = std::time::Instant::now();
    let started_at = std::time::SystemTime::now();
    // The overall deadline stops the transfer cleanly (exit 30, no deletions).
    let rep = crate::engine::deadline::within(deadline, crate::engine::pull::pull(&ps, mon))
        .await
        .unwrap_or_else(|crate::engine::deadline::Expired(d)| {
            Err(crate::engine::SyncError::Local { msg: d.message(), code: ExitCode::Timeout })
        });
    let publish_err = match (&publish, &recorder) {
        (Some(cfg), Some(r)) => publish_args::after_sync(&dest, cfg, r, src, started_at, &rep),
        _ => None,
    };
    if let Some(b) = &printer.bar {
        b.finish();
    }
    if mode == Mode::SyncJson {
        let items = printer.collect.as_ref().and_then(|c| c.lock().ok().map(|v| v.clone())).unwrap_or_default();
        say!("{}", sync_json(src, &dest, x, rep.as_ref(), &items, started.elapsed()));
    }
    let rep = rep.map_err(|e| CliError { msg: e.to_string(), code: e.exit_code() })?;
    if let Some(e) = publish_err {
        return Err(e);
    }
    if x.stats && mode == Mode::Sync {
        say!("{}", progress::stats_text(&rep, started.elapsed()).trim_end_matches('\n'));
    }
    let code = rep.exit_code();
    match mode {
        Mode::Sync | Mode::SyncJson => Ok(code),
        Mode::Compare | Mode::CompareJson => {
            let items: Vec<Item> = printer.collect.as_ref().and_then(|c| c.lock().ok().map(|v| v.clone())).unwrap_or_default();
            let differ = printer.items.load(std::sync::atomic::Ordering::Relaxed) > 0;
            if mode == Mode::CompareJson {
                let doc = serde_json::json!({
                    "source": src,
                    "dest": dest.display().to_string(),
                    "identical": !differ,
                    "changes": items.iter().map(|i| serde_json::json!({
                        "code": i.code, "path": String::from_utf8_lossy(&i.name),
                        "is_dir": i.is_dir, "line": i.line(),
                    })).collect::<Vec<_>>(),
                    "exit": code.code(),
                });
                say!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            if code != ExitCode::Ok {
                Ok(code)
            } else if differ {
                Ok(ExitCode::Syntax) // 1: they differ
            } else {
                Ok(ExitCode::Ok)
            }
        }
    }
}

/// The `sync --json` document (schema in docs/json.md).
fn sync_json(
    src: &str,
    dest: &std::path::Path,
    x: &XferArgs,
    rep: Result<&SyncReport, &crate::engine::SyncError>,
    items: &[Item],
    elapsed: Duration,
) -> String {
    let (exit, error, stats) = match rep {
        Ok(r) => (
            r.exit_code().code(),
            None,
            Some(serde_json::json!({
                "files_in_list": r.files_in_list,
                "files_transferred": r.files_transferred,
                "deleted": r.deleted,
                "total_size": r.total_size,
                "literal_bytes": r.literal_bytes,
                "matched_bytes": r.matched_bytes,
                "bytes_sent": r.bytes_written,
                "bytes_received": r.bytes_read,
                "published": r.published,
                "local_errors": r.local_errors,
            })),
        ),
        Err(e) => (e.exit_code().code(), Some(e.to_string()), None),
    };
    let mut doc = serde_json::json!({
        "source": src,
        "dest": dest.display().to_string(),
        "dry_run": x.dry_run,
        "exit": exit,
        "error": error,
        "protocol": rep.ok().map(|r| r.protocol),
        "elapsed_secs": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "stats": stats,
    });
    if x.itemize_changes {
        doc["changes"] = serde_json::Value::Array(
            items
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "code": i.code, "path": String::from_utf8_lossy(&i.name), "is_dir": i.is_dir, "line": i.line(),
                        "link_target": i.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                        "hardlink_to": i.hardlink_to.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
                    })
                })
                .collect(),
        );
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

