//! The one entry point planners and the CLI use: describe a pull as a
//! [`PullSpec`], get a [`SyncReport`]. It connects, builds the server argv and
//! the local job from one set of options, and runs the session engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::checksum::CsumType;
use crate::remote::RemoteSpec;
use crate::engine::commit::{DeleteOpts, LatePublish};
use crate::engine::generator::LocalOpts;
use crate::engine::monitor::Monitor;
use crate::engine::partial::PartialDir;
use crate::engine::{SyncError, SyncJob, SyncReport};
use crate::exit::ExitCode;
use crate::filter::FilterList;
use crate::proto::options::{CompressRequest, TransferOpts};
use crate::proto::options;
use crate::proto::session::{Mode, SessionConfig};
use crate::transport::Connection;

/// How to reach the server: shared by every session of a job.
#[derive(Debug, Clone, Default)]
pub struct ConnSettings {
    /// Overrides the URL's port; default 873.
    pub port: Option<u16>,
    /// Highest protocol to offer (default 32).
    pub protocol: Option<i32>,
    /// Login name; default the URL's user, `$USER`, `$LOGNAME`, then `nobody`.
    pub user: Option<String>,
    pub password: Option<Vec<u8>>,
    pub timeout: Option<Duration>,
    pub contimeout: Option<Duration>,
}

/// Everything that describes one pull.
#[derive(Clone)]
pub struct PullSpec {
    pub source: RemoteSpec,
    pub dest: PathBuf,
    /// How to reach the server (port, protocol, login, timeouts).
    pub conn: ConnSettings,
    pub delete: bool,
    pub max_delete: Option<u64>,
    pub dry_run: bool,
    pub checksum: bool,
    pub compress: CompressRequest,
    pub checksum_choice: Option<CsumType>,
    /// Preserve owner/group/devices (effective only as root).
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub hard_links: bool,
    pub numeric_ids: bool,
    pub bwlimit: Option<u32>,
    pub block_size: Option<u32>,
    pub filters: Arc<FilterList>,
    /// Pull exactly these names (relative to the source path) instead of a tree walk.
    pub files_from: Option<Vec<Vec<u8>>>,
    /// Recurse into directories (default true; with `files_from`, only when asked).
    pub recursive: bool,
    /// Use incremental recursion when the server supports it (protocol ≥ 30):
    /// the file list arrives per directory, so memory follows the directories
    /// in flight and transfers start before the whole tree is listed.
    pub inc_recurse: bool,
    /// Remote shell for `host:path` sources (`-e`/`--rsh`, default `ssh`).
    pub rsh: Option<String>,
    /// Program to run on the remote side (`--rsync-path`, default `rsync`).
    pub rsync_path: Option<String>,
    /// Glob patterns of paths published after everything else (e.g. `CURRENT`,
    /// `RECENT-*`, `InRelease`, `repodata/`); see [`LatePublish`].
    pub late_publish: Vec<String>,
    /// `--delay-updates`: rename every file into place together at the end
    /// of the run instead of each as soon as it is verified.
    pub delay_updates: bool,
    /// `--partial-dir`: keep the received part of an interrupted file there
    /// (never under its final name) and resume from it on the next run.
    pub partial_dir: Option<PartialDir>,
    /// Top-level names (globs) that mean the upstream is mid-update; see
    /// [`SyncJob::update_markers`]. Empty: never hold back.
    pub update_markers: Vec<String>,
    /// Refuse the whole transfer, before fetching anything, when the file
    /// list has a regular file larger than this; see [`SyncJob::max_file_size`].
    pub max_file_size: Option<u64>,
    /// `--safe-links` (on by default, as mirroring tools run rsync): symlinks
    /// that could point outside the tree are skipped with a warning
    /// ([`crate::proto::symlink::unsafe_symlink`]); off (`--no-safe-links`),
    /// every symlink is created verbatim (never followed when writing).
    pub safe_links: bool,
}

impl PullSpec {
    /// A plain `-rlptH` pull of `source` into `dest`.
    pub fn new(source: RemoteSpec, dest: impl Into<PathBuf>) -> Self {
        PullSpec {
            source,
            dest: dest.into(),
            conn: ConnSettings::default(),
            delete: false,
            max_delete: None,
            dry_run: false,
            checksum: false,
            compress: CompressRequest::Off,
            checksum_choice: None,
            owner: false,
            group: false,
            devices: false,
            hard_links: true,
            numeric_ids: false,
            bwlimit: None,
            block_size: None,
            filters: Arc::new(FilterList::new()),
            files_from: None,
            recursive: true,
            inc_recurse: true,
            late_publish: Vec::new(),
            delay_updates: false,
            partial_dir: None,
            update_markers: Vec::new(),
            max_file_size: None,
            safe_links: true,
            rsh: None,
            rsync_path: None,
        }
    }

    fn user(&self) -> String {
        self.conn.user
            .clone()
            .or_else(|| self.source.user.clone())
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_else(|| "nobody".into())
    }

    /// The session configuration and the local job this spec stands for.
    pub fn build(&self) -> Result<(SessionConfig, SyncJob), SyncError> {
        if self.source.module.is_empty() && !self.source.shell {
            return Err(SyncError::Local {
                msg: "the source names no module (use `rmirror ls` to list them)".into(),
                code: ExitCode::Syntax,
            });
        }
        let root = rustix::process::geteuid().is_root();
        // rsync adds a perishable exclude for a relative partial dir after the
        // user's rules: the sender's partial dirs stay out of the list, ours
        // out of --delete.
        let filters: Arc<FilterList> = match self.partial_dir.as_ref().and_then(|p| p.filter_rule()) {
            Some(rule) => {
                let mut f = (*self.filters).clone();
                f.add_rule_bytes(&rule).map_err(|e| SyncError::Local {
                    msg: format!("--partial-dir: {e}"),
                    code: ExitCode::Syntax,
                })?;
                Arc::new(f)
            }
            None => self.filters.clone(),
        };
        let filter_rules = filters
            .wire_rules(32, false)
            .map_err(|e| SyncError::Local { msg: e.to_string(), code: ExitCode::Syntax })?;
        let recursive = if self.files_from.is_some() { self.recursive } else { true };
        let opts = TransferOpts {
            recursive,
            dirs: self.files_from.is_some(),
            links: true,
            perms: true,
            times: true,
            hard_links: self.hard_links,
            owner: self.owner && root,
            group: self.group && root,
            devices: self.devices && root,
            specials: self.devices && root,
            checksum: self.checksum,
            relative: self.files_from.is_some(),
            numeric_ids: self.numeric_ids,
            compress: self.compress,
            checksum_choice: self.checksum_choice,
            timeout: self.conn.timeout.map(|t| t.as_secs() as u32),
            bwlimit: self.bwlimit,
            block_size: self.block_size,
            filter_rules,
            filter_rules_old: filters.wire_rules(28, false).map_err(|e| e.to_string()),
            files_from: self.files_from.clone(),
            inc_recurse: self.inc_recurse,
            safe_links: self.safe_links,
        };
        let cfg = SessionConfig {
            mode: if self.source.shell { Mode::RemoteShell } else { Mode::Daemon },
            max_protocol: self.conn.protocol.unwrap_or(32),
            module: Some(self.source.module.clone()),
            remote_paths: vec![self.source.remote_arg()],
            user: self.user(),
            password: self.conn.password.clone(),
            opts,
        };
        let job = SyncJob {
            dest: self.dest.clone(),
            local: LocalOpts {
                perms: true,
                times: true,
                links: true,
                owner: self.owner && root,
                group: self.group && root,
                devices: self.devices && root,
                specials: self.devices && root,
                hard_links: self.hard_links,
                checksum: self.checksum,
                dry_run: self.dry_run,
                am_root: root,
                block_size: self.block_size,
                safe_links: self.safe_links,
            },
            delete: DeleteOpts {
                delete: self.delete,
                max_delete: self.max_delete,
                dry_run: self.dry_run,
                ..Default::default()
            },
            filters,
            list_only: false,
            scope: match &self.files_from {
                Some(names) => crate::engine::Scope::for_names(names, recursive),
                None => crate::engine::Scope::for_path(&self.source.path, recursive),
            },
            numeric_ids: self.numeric_ids,
            late_publish: LatePublish::new(&self.late_publish),
            delay_updates: self.delay_updates,
            partial_dir: self.partial_dir.clone(),
            update_markers: self.update_markers.iter().map(|p| p.as_bytes().to_vec()).collect(),
            max_file_size: self.max_file_size,
        };
        Ok((cfg, job))
    }

    /// The remote-shell command line for a `host:path` source: the shell, the
    /// host, the remote rsync and the server argv, each quoted for the remote shell.
    pub fn shell_command(&self, cfg: &SessionConfig) -> Result<Vec<std::ffi::OsString>, SyncError> {
        use std::os::unix::ffi::OsStringExt;
        let rsh = self.rsh.clone().or_else(|| std::env::var("RSYNC_RSH").ok()).unwrap_or_else(|| "ssh".into());
        let mut argv: Vec<std::ffi::OsString> = split_command(&rsh)
            .map_err(|e| SyncError::Local { msg: format!("bad --rsh {rsh:?}: {e}"), code: ExitCode::Syntax })?
            .into_iter()
            .map(Into::into)
            .collect();
        if argv.is_empty() {
            return Err(SyncError::Local { msg: "empty --rsh command".into(), code: ExitCode::Syntax });
        }
        if let Some(u) = self.conn.user.clone().or_else(|| self.source.user.clone()) {
            argv.push("-l".into());
            argv.push(u.into());
        }
        argv.push(self.source.host.clone().into());
        let mut remote: Vec<u8> = Vec::new();
        for w in split_command(self.rsync_path.as_deref().unwrap_or("rsync"))
            .map_err(|e| SyncError::Local { msg: format!("bad --rsync-path: {e}"), code: ExitCode::Syntax })?
        {
            if !remote.is_empty() {
                remote.push(b' ');
            }
            remote.extend_from_slice(w.as_bytes());
        }
        for a in options::server_args(&cfg.opts, cfg.max_protocol, &cfg.remote_paths) {
            remote.push(b' ');
            remote.extend_from_slice(&crate::remote::shell_quote(&a));
        }
        argv.push(std::ffi::OsString::from_vec(remote));
        Ok(argv)
    }

    /// Connect to the daemon this spec names.
    pub async fn connect(&self) -> Result<Connection, SyncError> {
        let port = self.conn.port.or(self.source.port).unwrap_or(873);
        let mut c = Connection::connect(&self.source.host, port, self.conn.contimeout).await?;
        c.set_idle_timeout(self.conn.timeout.filter(|t| !t.is_zero()));
        c.set_handshake_timeout(self.conn.contimeout.filter(|t| !t.is_zero()));
        Ok(c)
    }
}

/// Run one pull to completion.
pub async fn pull(spec: &PullSpec, mon: Arc<dyn Monitor>) -> Result<SyncReport, SyncError> {
    let (cfg, job) = spec.build()?;
    // Past the overall deadline (a failover, a later step of a plan): don't start.
    if let Some(d) = crate::engine::deadline::current().filter(|d| d.passed()) {
        return Err(SyncError::Local { msg: d.message(), code: crate::exit::ExitCode::Timeout });
    }
    let conn = if spec.source.shell {
        let argv = spec.shell_command(&cfg)?;
        tracing::debug!(?argv, "starting remote shell");
        let mut c = Connection::spawn(&argv)?;
        c.set_idle_timeout(spec.conn.timeout.filter(|t| !t.is_zero()));
        c
    } else {
        spec.connect().await?
    };
    crate::engine::run(conn, cfg, Some(job), mon).await
}

/// Split a command like rsync's `-e` value: words on spaces, with '…' and "…"
/// quoting and backslash escapes.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next().ok_or("trailing backslash")?),
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '\\') => {
                cur.push(chars.next().ok_or("trailing backslash")?);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::split_command;

    #[test]
    fn split() {
        assert_eq!(split_command("ssh -p 22").unwrap(), ["ssh", "-p", "22"]);
        assert_eq!(split_command("ssh -o 'A B' \"c d\" e\\ f").unwrap(), ["ssh", "-o", "A B", "c d", "e f"]);
        assert!(split_command("ssh 'x").is_err());
        assert_eq!(split_command("").unwrap(), Vec::<String>::new());
    }
}
