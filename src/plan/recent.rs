//! One pass over one tree: fetch the principal RECENT file into private
//! staging, walk to longer files only as far as needed, then either follow
//! the index (fetch exactly the changed paths in one session per chunk,
//! publish content, then the RECENT files, then deletes) or fall back to a
//! full sync.  All effects in the published tree go through
//! [`crate::engine::dest::Dest`] (no-follow, confined below DEST).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::engine::dest::{self, Dest, Kind};
use crate::engine::monitor::Monitor;
use crate::engine::pull::{pull, PullSpec};
use crate::engine::SyncReport;
use crate::exit::ExitCode;
use crate::filter::FilterList;
use crate::proto::session::MsgKind;
use crate::recent::plan::{interval_chain, order_deletes, DeleteOp, LocalKind, PathEvent};
use crate::recent::{check_principal_symlink, parse_recent, principal_root, Epoch, EventType, RecentFile};

use super::actions::{self, chunk_len, full_sync_reason, parents_to_refresh, pending_actions, Action, FullReason, FullSyncPolicy, WalkStep};
use super::state::{PendingDelete, TreeState};
use super::{Level, PassError, PassKind, PassReport, TreeConfig, WatchConfig, WatchLogger};

/// Everything a pass needs to know about its tree.
pub(crate) struct TreeCtx<'a> {
    pub cfg: &'a WatchConfig,
    pub tree: &'a TreeConfig,
    pub label: String,
    pub source: crate::remote::RemoteSpec,
    pub source_display: String,
    pub dest: PathBuf,
    pub state_path: PathBuf,
    pub staging: PathBuf,
    pub log: Arc<dyn WatchLogger>,
}

impl TreeCtx<'_> {
    fn log(&self, level: Level, msg: &str) {
        self.log.log(level, &self.label, msg);
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn now_epoch() -> Epoch {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Epoch::parse(&format!("{}.{:06}", d.as_secs(), d.subsec_micros())).unwrap_or_else(|_| Epoch::from_secs(d.as_secs()))
}

/// Seconds between two epochs (lossy, for logs only).
fn secs_between(newer: &Epoch, older: &Epoch) -> f64 {
    (newer.as_f64_lossy() - older.as_f64_lossy()).max(0.0)
}

/// Collects what the server says during one pull.
struct PullMon {
    log: Arc<dyn WatchLogger>,
    label: String,
    vanished: Mutex<Vec<String>>,
    errors: Mutex<Vec<String>>,
}

/// `rsync: [sender] link_stat "a/b" (in mod) failed: No such file or directory (2)`
/// or `file has vanished: "a/b" (in mod)` → `a/b`.
fn vanished_name(msg: &str) -> Option<String> {
    let vanished = (msg.contains("link_stat") && msg.contains("No such file or directory")) || msg.contains("file has vanished");
    if !vanished {
        return None;
    }
    let start = msg.find('"')? + 1;
    let end = start + msg[start..].rfind('"')?;
    Some(msg[start..end].to_string())
}

/// Did the server report `name` (relative to the tree) as missing?  Its
/// messages name paths relative to the module, so match the tail too.
fn vanished_has(list: &[String], name: &str) -> bool {
    list.iter().any(|v| v == name || v.ends_with(&format!("/{name}")))
}

impl Monitor for PullMon {
    fn message(&self, kind: MsgKind, text: &[u8]) {
        let t = crate::text::escape_bytes(text, true);
        let t = t.trim_end_matches('\n');
        match kind {
            MsgKind::Error | MsgKind::ErrorXfer => {
                if let Some(n) = vanished_name(t) {
                    self.log.log(Level::Debug, &self.label, &format!("vanished upstream: {n}"));
                    self.vanished.lock().unwrap().push(n);
                } else {
                    self.log.log(Level::Warn, &self.label, t);
                    self.errors.lock().unwrap().push(t.to_string());
                }
            }
            MsgKind::Warning => {
                // "file has vanished" comes as a warning (exit 24)
                if let Some(n) = vanished_name(t) {
                    self.log.log(Level::Debug, &self.label, &format!("vanished upstream: {n}"));
                    self.vanished.lock().unwrap().push(n);
                } else {
                    self.log.log(Level::Warn, &self.label, t);
                }
            }
            MsgKind::Info => self.log.log(Level::Debug, &self.label, t),
        }
    }
    fn local_error(&self, text: &str) {
        self.log.log(Level::Warn, &self.label, text);
        self.errors.lock().unwrap().push(text.to_string());
    }
    fn progress(&self, p: &crate::engine::monitor::Progress) {
        self.log.progress(p);
    }
}

/// The result of one pull that did not fail.
struct Pulled {
    report: SyncReport,
    vanished: Vec<String>,
}

impl Pulled {
    /// The symlink target the received list gives `name`, if it lists a symlink by that name.
    fn listed_link(&self, name: &str) -> Option<Vec<u8>> {
        let l = self.report.list.as_ref()?;
        l.entries
            .iter()
            .flatten()
            .find(|e| e.name == name.as_bytes() && crate::engine::generator::is_lnk(e.mode))
            .map(|e| e.link_target().unwrap_or_default().to_vec())
    }

    /// Directory entries of the received list by name.
    fn dirs(&self) -> HashMap<Vec<u8>, (i64, u32, u32)> {
        let mut m = HashMap::new();
        if let Some(l) = &self.report.list {
            for e in l.entries.iter().flatten() {
                if e.is_dir() {
                    m.insert(e.name.to_vec(), (e.mtime, e.mtime_nsec, e.mode));
                }
            }
        }
        m
    }
}

enum PullWhat<'n> {
    Names(&'n [String]),
    Tree { delete: bool },
}

async fn run_pull(ctx: &TreeCtx<'_>, into: &Path, what: PullWhat<'_>, checksum: bool, filters: FilterList) -> Result<Pulled, PassError> {
    let mut spec = PullSpec::new(ctx.source.clone(), into.to_path_buf());
    spec.conn = ctx.cfg.conn.clone();
    spec.checksum = checksum || ctx.cfg.checksum;
    spec.safe_links = ctx.cfg.safe_links;
    spec.filters = Arc::new(filters);
    // What goes into staging is RECENT files, which the parser refuses above
    // its size limit anyway: refuse a larger one in the file list, before a
    // hostile server can make us download (and store) it.
    if into == ctx.staging.as_path() {
        spec.max_file_size = Some(crate::recent::file::MAX_RECENT_BYTES as u64);
    }
    // A pass's content appears all at once, before the RECENT files that name it.
    spec.delay_updates = true;
    match what {
        PullWhat::Names(n) => {
            spec.files_from = Some(n.iter().map(|s| s.as_bytes().to_vec()).collect());
            spec.recursive = false;
        }
        PullWhat::Tree { delete } => {
            spec.delete = delete;
            spec.max_delete = ctx.cfg.max_delete;
        }
    }
    let mon = Arc::new(PullMon { log: ctx.log.clone(), label: ctx.label.clone(), vanished: Mutex::new(vec![]), errors: Mutex::new(vec![]) });
    let report = pull(&spec, mon.clone()).await;
    ctx.log.pull_ended();
    let report = report.map_err(|e| PassError::Pull { msg: e.to_string(), code: e.exit_code() })?;
    let vanished = std::mem::take(&mut *mon.vanished.lock().unwrap());
    let errors = std::mem::take(&mut *mon.errors.lock().unwrap());
    let code = report.exit_code();
    // A path that vanished upstream since its event is not an error.
    let acceptable = code == ExitCode::Ok
        || (matches!(code, ExitCode::Partial | ExitCode::Vanished) && errors.is_empty() && report.local_errors == 0 && !vanished.is_empty());
    if !acceptable {
        let detail = errors.first().cloned().unwrap_or_else(|| format!("exit code {}", code.code()));
        return Err(PassError::Pull { msg: format!("pull from {} failed: {detail}", ctx.source_display), code });
    }
    Ok(Pulled { report, vanished })
}

/// Prefix the first name with `./` so the server also sends the root
/// directory's entry (rsync `-R` semantics), which gives its mtime.
fn with_root_entry(names: &[String]) -> Vec<String> {
    let mut v: Vec<String> = names.to_vec();
    if let Some(first) = v.first_mut() {
        if !first.starts_with("./") {
            *first = format!("./{first}");
        }
    }
    v
}

/// The principal (shortest) file and what `RECENT.recent` points at.
struct Principal {
    file: RecentFile,
    /// The real file name (`RECENT-1h.json`).
    name: String,
    /// `Some(target)` when the pointer is a symlink.
    link: Option<String>,
}

fn read_staged(staging: &Path, name: &str) -> Result<Option<RecentFile>, PassError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let p = staging.join(name);
    // Never through a symlink: under --no-safe-links the upstream can stage
    // `RECENT-1d.json -> /some/local/file`, which must not be read (and then
    // republished) from the local disk. The principal pointer is resolved by
    // hand before this is called, so a symlink here is always refused.
    let opened = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&p);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PassError::Io(format!("{name} is a symlink at the upstream, not a RECENT file; refused")))
        }
        Err(e) => return Err(PassError::Io(format!("cannot read {}: {e}", p.display()))),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| PassError::Io(format!("cannot read {}: {e}", p.display())))?;
    parse_recent(&data, name).map(Some).map_err(PassError::Recent)
}

/// Fetch the principal pointer (and the file it names) into staging.
async fn fetch_principal(ctx: &TreeCtx<'_>, st: &TreeState) -> Result<(Principal, Pulled), PassError> {
    let pname = ctx.tree.principal.clone();
    let mut names = vec![pname.clone()];
    if let Some(t) = &st.principal_file {
        if *t != pname {
            names.push(t.clone());
        }
    }
    let mut pulled = run_pull(ctx, &ctx.staging, PullWhat::Names(&with_root_entry(&names)), true, FilterList::new()).await?;
    // Judge the pointer the upstream lists, not only what staging holds: a
    // link that --safe-links skipped leaves the previous pointer in staging.
    if let Some(t) = pulled.listed_link(&pname) {
        let root = principal_root(&pname).unwrap_or("RECENT");
        check_principal_symlink(root, &String::from_utf8_lossy(&t)).map_err(|e| PassError::Io(e.to_string()))?;
    }
    let ppath = ctx.staging.join(&pname);
    let md = std::fs::symlink_metadata(&ppath)
        .map_err(|e| PassError::Io(format!("{pname} was not fetched from {}: {e}", ctx.source_display)))?;
    if vanished_has(&pulled.vanished, &pname) {
        return Err(PassError::Io(format!("{pname} does not exist at {}", ctx.source_display)));
    }
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(&ppath).map_err(|e| PassError::Io(e.to_string()))?;
        let target = target.to_string_lossy().into_owned();
        let root = principal_root(&pname).unwrap_or("RECENT");
        check_principal_symlink(root, &target).map_err(|e| PassError::Io(e.to_string()))?;
        if !names.contains(&target) || vanished_has(&pulled.vanished, &target) {
            let again = run_pull(ctx, &ctx.staging, PullWhat::Names(std::slice::from_ref(&target)), true, FilterList::new()).await?;
            if vanished_has(&again.vanished, &target) {
                return Err(PassError::Io(format!("{pname} points at {target}, which does not exist")));
            }
            pulled.vanished.extend(again.vanished);
        }
        let file = read_staged(&ctx.staging, &target)?
            .ok_or_else(|| PassError::Io(format!("{target} was not fetched")))?;
        Ok((Principal { file, name: target.clone(), link: Some(target) }, pulled))
    } else {
        let file = read_staged(&ctx.staging, &pname)?.ok_or_else(|| PassError::Io(format!("{pname} was not fetched")))?;
        let name = file.rfilename();
        // The file under its real name is published with the set: fetch it
        // too (with its own mtime), unless it came with the pointer.  Only
        // when upstream has no such file, stage the copy under that name.
        let mut have = names.contains(&name) && !vanished_has(&pulled.vanished, &name);
        if !have && crate::recent::split_rfilename(&name).is_some() {
            let again = run_pull(ctx, &ctx.staging, PullWhat::Names(std::slice::from_ref(&name)), true, FilterList::new()).await?;
            have = !vanished_has(&again.vanished, &name);
            pulled.vanished.extend(again.vanished);
        }
        if !have {
            let _ = std::fs::copy(&ppath, ctx.staging.join(&name));
        }
        Ok((Principal { file, name, link: None }, pulled))
    }
}

/// Publish the staged RECENT files (chain + pointer) into the tree,
/// atomically each, only where they differ.  Returns how many changed.
fn publish_recent(ctx: &TreeCtx<'_>, dest: &Dest, chain_names: &[String], principal: &Principal) -> Result<usize, PassError> {
    let root = dest.root();
    let mut n = 0;
    let mut counter = 0u64;
    let mut uniq = || {
        counter += 1;
        (std::process::id() as u64) << 20 | counter
    };
    for name in chain_names {
        let src = ctx.staging.join(name);
        let Ok(md) = std::fs::symlink_metadata(&src) else { continue };
        if !md.is_file() {
            continue;
        }
        let (mt, mns) = (md.mtime(), md.mtime_nsec() as u32);
        // Staged copies keep the upstream mtime (to the nanosecond) and we
        // publish with it, so size + mtime identify what is already published
        // (no need to re-read a multi-megabyte Z file every pass).
        let same = matches!(root.stat(name.as_bytes()),
            Ok(Some(m)) if m.kind == Kind::File && m.size == md.len() as i64 && m.mtime == mt && m.mtime_nsec == mns);
        if same {
            continue;
        }
        let bytes = std::fs::read(&src).map_err(|e| PassError::Io(format!("{}: {e}", src.display())))?;
        let cannot = |e: std::io::Error| PassError::Io(format!("cannot publish {name}: {e}"));
        let (tmp, mut f) = dest::under_tmp_name(name.as_bytes(), &mut uniq, |t| root.create_excl(t)).map_err(cannot)?;
        let r = (|| -> std::io::Result<()> {
            f.write_all(&bytes)?;
            dest::set_file_attrs(&f, Some(md.mode() & 0o7777), Some((mt, mns)))?;
            f.sync_all()?;
            drop(f);
            if let Some(m) = root.stat(name.as_bytes())? {
                if m.kind == Kind::Dir {
                    root.remove_all(name.as_bytes())?;
                }
            }
            root.rename(&tmp, root, name.as_bytes())
        })();
        if let Err(e) = r {
            let _ = root.unlink(&tmp);
            return Err(cannot(e));
        }
        n += 1;
    }
    // the pointer: a symlink (as upstream) or a copy
    let pname = ctx.tree.principal.as_bytes();
    let src = ctx.staging.join(&ctx.tree.principal);
    if let Some(target) = &principal.link {
        let md = std::fs::symlink_metadata(&src).ok();
        let cur = root.stat(pname).ok().flatten();
        let same = cur.is_some_and(|m| m.kind == Kind::Symlink)
            && root.readlink(pname).ok().as_deref() == Some(target.as_bytes())
            && md.as_ref().map_or(true, |md| cur.is_some_and(|m| m.mtime == md.mtime() && m.mtime_nsec == md.mtime_nsec() as u32));
        if !same {
            let cannot = |e: std::io::Error| PassError::Io(format!("cannot publish {}: {e}", ctx.tree.principal));
            let (tmp, ()) =
                dest::under_tmp_name(pname, &mut uniq, |t| root.symlink(target.as_bytes(), t)).map_err(cannot)?;
            let r = (|| -> std::io::Result<()> {
                if let Some(md) = &md {
                    root.set_mtime(&tmp, md.mtime(), md.mtime_nsec() as u32)?;
                }
                root.rename(&tmp, root, pname)
            })();
            if let Err(e) = r {
                let _ = root.unlink(&tmp);
                return Err(cannot(e));
            }
            n += 1;
        }
    } else if !chain_names.iter().any(|c| c == &ctx.tree.principal) {
        // a plain copy upstream: publish it as a file like the others
        let names = vec![ctx.tree.principal.clone()];
        n += publish_recent(ctx, dest, &names, &Principal { file: principal.file.clone(), name: principal.name.clone(), link: None })
            .unwrap_or(0);
    }
    let _ = rustix::fs::fsync(root.fd());
    Ok(n)
}

/// How many local entries deleting `paths` (relative to `dest`) would remove,
/// counting a directory with everything below it; counting stops at `cap`.
/// It walks through `dest`'s no-follow handles, as [`apply_deletes`] and
/// [`dest::DirHandle::remove_all`] do, so it counts exactly what they would
/// remove and never looks through a symlink.
fn count_local_entries(dest: &Dest, paths: &[&str], cap: u64) -> u64 {
    let mut n = 0u64;
    for p in paths {
        let (parent, base) = dest::split_parent(p.as_bytes());
        let Ok(dir) = dest.dir(parent) else { continue };
        let mut stack = vec![(dir, base.to_vec())];
        while let Some((dir, name)) = stack.pop() {
            if n >= cap {
                return n;
            }
            let Ok(Some(m)) = dir.stat(&name) else { continue };
            n += 1;
            if m.kind == Kind::Dir {
                if let Ok((sub, children)) = dir.open_dir(&name).and_then(|sub| Ok((sub.clone(), sub.list()?))) {
                    stack.extend(children.into_iter().map(|c| (sub.clone(), c)));
                }
            }
        }
    }
    n
}

/// Apply deletes through no-follow operations: files and symlinks first,
/// then directories deepest first.  Returns (removed, not found).
fn apply_deletes(ctx: &TreeCtx<'_>, dest: &Dest, dels: &[PathEvent]) -> (u64, u64) {
    let kind_of = |p: &str| -> LocalKind {
        let (parent, base) = dest::split_parent(p.as_bytes());
        let Ok(dir) = dest.dir(parent) else { return LocalKind::Missing };
        match dir.stat(base) {
            Ok(Some(m)) if m.kind == Kind::Dir => LocalKind::Dir,
            Ok(Some(_)) => LocalKind::NotDir,
            _ => LocalKind::Missing,
        }
    };
    let ops = order_deletes(dels, kind_of);
    let (mut removed, mut missing) = (0u64, 0u64);
    for op in ops {
        let (path, is_dir) = match &op {
            DeleteOp::Unlink(p) => (p, false),
            DeleteOp::Rmdir(p) => (p, true),
            DeleteOp::NotFound(_) => {
                missing += 1;
                continue;
            }
        };
        let (parent, base) = dest::split_parent(path.as_bytes());
        let r = dest.dir(parent).and_then(|dir| {
            if !is_dir {
                return dir.unlink(base).map(|_| 1);
            }
            match dir.rmdir(base) {
                Ok(()) => Ok(1),
                // upstream removed the whole directory: so do we (never following links)
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) || e.raw_os_error() == Some(libc::EEXIST) => {
                    dir.remove_all(base)
                }
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(k) => {
                removed += k.max(1);
                ctx.log(Level::Debug, &format!("deleted {path}"));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
            Err(e) => ctx.log(Level::Warn, &format!("cannot delete {path}: {e}")),
        }
    }
    (removed, missing)
}

/// Set directory times (and modes) to the upstream values after we touched
/// their contents.  `root` is the tree root's entry.
fn fix_dir_times(dest: &Dest, dirs: &HashMap<Vec<u8>, (i64, u32, u32)>, which: &[String], root: Option<(i64, u32, u32)>) {
    for d in which {
        if let Some(&(mt, ns, _)) = dirs.get(d.as_bytes()) {
            let (parent, base) = dest::split_parent(d.as_bytes());
            if let Ok(dir) = dest.dir(parent) {
                if let Ok(Some(m)) = dir.stat(base) {
                    if m.kind == Kind::Dir && (m.mtime != mt || m.mtime_nsec != ns) {
                        let _ = dir.set_mtime(base, mt, ns);
                    }
                }
            }
        }
    }
    if let Some((mt, ns, _)) = root {
        if let Ok(Some(m)) = dest.root().stat(b".") {
            if m.mtime != mt || m.mtime_nsec != ns {
                let _ = dest.root().set_mtime(b".", mt, ns);
            }
        }
    }
}

/// Remove rmirror temp files a killed run left in `dirs`.
fn clean_temps(dest: &Dest, dirs: &[String]) {
    for d in dirs {
        let Ok(dir) = dest.dir(d.as_bytes()) else { continue };
        let Ok(names) = dir.list() else { continue };
        for n in names {
            if dest::is_tmp_name(&n) {
                let _ = dir.remove_all(&n);
            }
        }
    }
}

fn parent_dirs(paths: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    let mut s: Vec<String> = paths
        .into_iter()
        .map(|p| p.as_ref().rsplit_once('/').map(|(a, _)| a.to_string()).unwrap_or_default())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    s.sort();
    s
}

/// Is the published principal present (pointer and, if a symlink, its target)?
fn local_recent_present(dest: &Path, principal: &str) -> bool {
    let p = dest.join(principal);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_symlink() => std::fs::metadata(&p).is_ok_and(|m| m.is_file()),
        Ok(m) => m.is_file(),
        Err(_) => false,
    }
}

fn load_state(ctx: &TreeCtx<'_>) -> Result<(TreeState, bool), PassError> {
    match TreeState::load(&ctx.state_path) {
        Ok(Some(s)) if s.source == ctx.source_display => Ok((s, true)),
        Ok(Some(_)) => {
            ctx.log(Level::Warn, "state belongs to a different source; starting afresh");
            Ok((TreeState::fresh(&ctx.source_display), false))
        }
        Ok(None) => Ok((TreeState::fresh(&ctx.source_display), false)),
        Err(e) => {
            ctx.log(Level::Warn, &format!("{e}; starting afresh"));
            Ok((TreeState::fresh(&ctx.source_display), false))
        }
    }
}

fn save_state(ctx: &TreeCtx<'_>, st: &TreeState) -> Result<(), PassError> {
    st.save(&ctx.state_path).map_err(|e| PassError::Io(format!("cannot save state {}: {e}", ctx.state_path.display())))
}

/// Run one pass over one tree.  `budget` bounds the time spent on a long
/// catch-up (the pass then ends incomplete and the caller comes straight
/// back, re-reading the principal file first); `None` = until caught up.
pub(crate) async fn pass(ctx: &TreeCtx<'_>, budget: Option<Duration>, force_full: bool) -> Result<PassReport, PassError> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&ctx.staging).map_err(|e| PassError::Io(format!("cannot create {}: {e}", ctx.staging.display())))?;
    let (mut st, had_state) = load_state(ctx)?;
    let mut rep = PassReport::new(&ctx.label);

    // 1. the principal file, into staging
    let (principal, staged) = fetch_principal(ctx, &st).await?;
    rep.recent_files_fetched += staged.report.files_transferred as usize;
    let root_entry = staged.dirs().get(&b"."[..]).copied();
    let chain = interval_chain(&principal.file);
    let root = principal.file.filenameroot().to_string();
    let suffix = principal.file.serializer_suffix().to_string();
    let chain_names: Vec<String> = chain.iter().map(|i| crate::recent::rfilename(&root, i, &suffix)).collect();
    rep.upstream_newest = principal.file.max_epoch().cloned();

    // 2. --since
    let mut since_now = false;
    if let Some(s) = &ctx.cfg.since {
        if st.since_applied.as_ref() != Some(s) {
            ctx.log(Level::Info, &format!("--since {s}: following the index from there"));
            st.applied = Some(s.clone());
            st.done = Default::default();
            st.pending_deletes.clear();
            st.since_applied = Some(s.clone());
            st.dirtymark = principal.file.meta.dirtymark.clone();
            since_now = true;
        }
    }

    // leftovers of a killed content pull
    let dest = Dest::open(&ctx.dest, true).map_err(|e| PassError::Io(format!("cannot open {}: {e}", ctx.dest.display())))?;
    if !st.in_progress_dirs.is_empty() {
        clean_temps(&dest, &st.in_progress_dirs);
        st.in_progress_dirs.clear();
    }

    // 3. full sync?  A dirtymark that flaps is rate-limited: the full sync
    // the last change caused was too recent, so this one waits (the recorded
    // dirtymark stays the old one, so the change is not forgotten).
    let dirtymark_held = crate::recent::check_dirtymark(st.dirtymark.as_ref(), principal.file.meta.dirtymark.as_ref())
        == crate::recent::DirtymarkCheck::Changed
        && match (ctx.cfg.dirtymark_min_interval, st.last_dirtymark_full) {
            (Some(min), Some(last)) => now_secs().saturating_sub(last) < min.as_secs(),
            _ => false,
        };
    let policy = FullSyncPolicy {
        now_secs: now_secs(),
        full_every: ctx.cfg.full_every,
        max_age: ctx.cfg.max_age,
        local_recent_present: since_now || !had_state || local_recent_present(&ctx.dest, &ctx.tree.principal),
        forced: force_full,
        dirtymark_held,
    };
    let mut reason = full_sync_reason(&st, &principal.file, &policy);
    if dirtymark_held && reason.is_none() {
        rep.dirtymark_deferred = true;
        let wait = ctx.cfg.dirtymark_min_interval.map_or(0, |d| d.as_secs());
        let since = st.last_dirtymark_full.map_or(0, |l| now_secs().saturating_sub(l));
        ctx.log(
            Level::Warn,
            &format!(
                "dirtymark changed again {since}s after the full sync the last change caused; the next one waits until {wait}s have passed (--dirtymark-min-interval), following the index meanwhile"
            ),
        );
    }

    // 4. walk the chain as far as needed
    let mut files: Vec<Option<RecentFile>> = vec![None; chain.len()];
    files[0] = Some(principal.file.clone());
    for i in 1..chain.len() {
        files[i] = read_staged(&ctx.staging, &chain_names[i]).unwrap_or_else(|e| {
            ctx.log(Level::Debug, &format!("ignoring staged copy: {e}"));
            None
        });
    }
    if reason.is_none() {
        let applied = st.applied.clone().expect("checked by full_sync_reason");
        let mut fetched: Vec<usize> = Vec::new();
        // Chain files never fetched yet are fetched once, so the published
        // local set is complete and coherent; the overlap rule keeps them fresh.
        let mut first: Vec<usize> = (1..chain.len()).filter(|&i| files[i].is_none()).collect();
        loop {
            let refs: Vec<Option<&RecentFile>> = files.iter().map(|f| f.as_ref()).collect();
            let step = if first.is_empty() {
                actions::walk_step(&chain, &refs, &applied, &fetched)
            } else {
                WalkStep::Fetch(std::mem::take(&mut first))
            };
            match step {
                WalkStep::Done => break,
                WalkStep::Gap(why) => {
                    reason = Some(FullReason::Gap(why));
                    break;
                }
                WalkStep::Fetch(idx) => {
                    let names: Vec<String> = idx.iter().map(|&i| chain_names[i].clone()).collect();
                    ctx.log(Level::Debug, &format!("fetching {}", names.join(" ")));
                    let p = run_pull(ctx, &ctx.staging, PullWhat::Names(&names), true, FilterList::new()).await?;
                    rep.recent_files_fetched += p.report.files_transferred as usize;
                    for &i in &idx {
                        files[i] = match read_staged(&ctx.staging, &chain_names[i]) {
                            Ok(f) if !vanished_has(&p.vanished, &chain_names[i]) => f,
                            Ok(_) => None,
                            Err(e) => {
                                ctx.log(Level::Warn, &e.to_string());
                                None
                            }
                        };
                        fetched.push(i);
                    }
                }
            }
        }
    }
    let max_seen: Option<Epoch> = files.iter().flatten().filter_map(|f| f.max_epoch()).max().cloned();

    if let Some(why) = reason {
        if !ctx.cfg.allow_full_syncs {
            return Err(PassError::FullSyncNotAllowed(why));
        }
        return full_sync(ctx, st, rep, &dest, principal, chain_names, why, t0).await;
    }

    // 5. follow the index
    let applied = st.applied.clone().expect("checked");
    let all_events = files.iter().flatten().flat_map(|f| f.events.iter());
    let todo = pending_actions(all_events, &applied, &st.done, &st.pending_deletes);
    rep.kind = PassKind::Incremental;
    rep.events = todo.len();
    // --max-delete: count what the delete events would remove here (a
    // directory with everything below it) before anything is changed.
    if let Some(max) = ctx.cfg.max_delete {
        let dels: Vec<&str> = todo.iter().filter(|a| a.kind == EventType::Delete).map(|a| a.path.as_str()).collect();
        let n = count_local_entries(&dest, &dels, max.saturating_add(1));
        if n > max {
            return Err(PassError::Pull {
                msg: format!(
                    "{} delete event(s) in the RECENT files would remove more than {max} local entries (--max-delete={max}): nothing fetched or deleted, the events stay pending",
                    dels.len()
                ),
                code: ExitCode::DelLimit,
            });
        }
    }
    let max_seen = max_seen.unwrap_or_else(|| applied.clone());
    let mut rest: &[Action] = &todo;
    // deletes of every chunk of this pass, applied once the RECENT files are published
    let mut pass_deletes: Vec<PathEvent> = Vec::new();
    loop {
        let n = chunk_len(rest, ctx.cfg.max_files_per_pull);
        let (chunk, after) = rest.split_at(n);
        let complete = after.is_empty();
        let fetch: Vec<String> = chunk.iter().filter(|a| a.kind == EventType::New).map(|a| a.path.clone()).collect();
        let dels: Vec<&Action> = chunk.iter().filter(|a| a.kind == EventType::Delete).collect();
        for d in &dels {
            if !pass_deletes.iter().any(|p| p.path == d.path) {
                pass_deletes.push(PathEvent { path: d.path.clone(), epoch: d.epoch.clone() });
            }
        }
        let del_set: HashSet<&str> = pass_deletes.iter().map(|a| a.path.as_str()).collect();
        let refresh =
            if complete { parents_to_refresh(pass_deletes.iter().map(|a| a.path.as_str()), &del_set) } else { vec![] };
        let mut names = fetch.clone();
        names.extend(refresh.iter().cloned());
        let mut content_dirs: HashMap<Vec<u8>, (i64, u32, u32)> = HashMap::new();
        if !names.is_empty() {
            let mut inprog = parent_dirs(&fetch);
            inprog.extend(refresh.iter().cloned());
            st.in_progress_dirs = inprog;
            save_state(ctx, &st)?;
            let p = run_pull(ctx, &ctx.dest, PullWhat::Names(&names), false, FilterList::new()).await?;
            rep.fetched += p.report.files_transferred;
            rep.requested += fetch.len();
            rep.vanished += p.vanished.len();
            rep.bytes_received += p.report.bytes_read;
            content_dirs = p.dirs();
        }
        if complete {
            rep.published_recent += publish_recent(ctx, &dest, &chain_names, &principal)?;
            let (removed, missing) = apply_deletes(ctx, &dest, &pass_deletes);
            rep.deleted += removed;
            rep.delete_not_found += missing;
            fix_dir_times(&dest, &content_dirs, &refresh, root_entry);
            st.applied = Some(if max_seen > applied { max_seen.clone() } else { applied.clone() });
            st.done = Default::default();
            st.pending_deletes.clear();
            st.last_caught_up = Some(now_secs());
            rep.complete = true;
        } else {
            let lo = chunk.last().map(|a| a.epoch.clone()).unwrap_or_else(|| max_seen.clone());
            st.done.insert(lo, max_seen.clone());
            for d in &dels {
                let pd = PendingDelete { path: d.path.clone(), epoch: d.epoch.clone() };
                if !st.pending_deletes.contains(&pd) {
                    st.pending_deletes.push(pd);
                }
            }
        }
        if !dirtymark_held {
            st.dirtymark = principal.file.meta.dirtymark.clone();
        }
        st.principal_file = principal.link.clone().or(Some(principal.name.clone()));
        st.principal_max = principal.file.max_epoch().cloned();
        st.in_progress_dirs.clear();
        save_state(ctx, &st)?;
        if complete {
            break;
        }
        rest = after;
        if budget.is_some_and(|b| t0.elapsed() >= b) {
            ctx.log(Level::Info, &format!("time budget used up with {} actions left; returning to the principal file", rest.len()));
            break;
        }
    }
    finish_report(&mut rep, &st, t0);
    Ok(rep)
}

fn finish_report(rep: &mut PassReport, st: &TreeState, t0: Instant) {
    rep.applied = st.applied.clone();
    if let (Some(up), Some(ap)) = (&rep.upstream_newest, &st.applied) {
        rep.lag_secs = if rep.complete { 0.0 } else { secs_between(up, ap) };
        rep.age_secs = Some(secs_between(&now_epoch(), up));
    }
    rep.seconds = t0.elapsed().as_secs_f64();
}

#[allow(clippy::too_many_arguments)]
async fn full_sync(
    ctx: &TreeCtx<'_>,
    mut st: TreeState,
    mut rep: PassReport,
    dest: &Dest,
    principal: Principal,
    chain_names: Vec<String>,
    why: FullReason,
    t0: Instant,
) -> Result<PassReport, PassError> {
    ctx.log(Level::Info, &format!("full sync: {why}"));
    let why_dirtymark = why == FullReason::Dirtymark;
    rep.kind = PassKind::Full;
    rep.full_reason = Some(why);
    // the whole chain into staging, so the published set is coherent
    let rest: Vec<String> = chain_names.iter().skip(1).cloned().collect();
    let mut newest = principal.file.max_epoch().cloned();
    if !rest.is_empty() {
        let p = run_pull(ctx, &ctx.staging, PullWhat::Names(&rest), true, FilterList::new()).await?;
        rep.recent_files_fetched += p.report.files_transferred as usize;
        for n in &rest {
            if let Ok(Some(f)) = read_staged(&ctx.staging, n) {
                if let Some(m) = f.max_epoch() {
                    if newest.as_ref().map_or(true, |x| m > x) {
                        newest = Some(m.clone());
                    }
                }
            }
        }
    }
    // the RECENT files are published by us, after the content
    let mut filters = FilterList::new();
    let mut excl = vec![ctx.tree.principal.clone()];
    excl.extend(chain_names.iter().cloned());
    for n in &excl {
        filters.add_exclude(&format!("/{n}")).map_err(|e| PassError::Io(e.to_string()))?;
    }
    // content first, without deleting (old local RECENT files still list them) ...
    let a = run_pull(ctx, &ctx.dest, PullWhat::Tree { delete: false }, false, filters.clone()).await?;
    rep.fetched += a.report.files_transferred;
    rep.vanished += a.vanished.len();
    rep.bytes_received += a.report.bytes_read;
    // ... then the RECENT files that describe it ...
    rep.published_recent += publish_recent(ctx, dest, &chain_names, &principal)?;
    // ... then deletions (a second, normally transfer-free session)
    let b = run_pull(ctx, &ctx.dest, PullWhat::Tree { delete: true }, false, filters).await?;
    rep.fetched += b.report.files_transferred;
    rep.deleted += b.report.deleted;
    rep.bytes_received += b.report.bytes_read;
    let root_entry = b.dirs().get(&b"."[..]).copied();
    fix_dir_times(dest, &HashMap::new(), &[], root_entry);
    let now = now_secs();
    st.applied = newest.or_else(|| Some(now_epoch()));
    st.done = Default::default();
    st.pending_deletes.clear();
    st.in_progress_dirs.clear();
    st.dirtymark = principal.file.meta.dirtymark.clone();
    st.principal_file = principal.link.clone().or(Some(principal.name.clone()));
    st.principal_max = principal.file.max_epoch().cloned();
    st.last_full_sync = Some(now);
    if why_dirtymark {
        st.last_dirtymark_full = Some(now);
    }
    st.last_caught_up = Some(now);
    save_state(ctx, &st)?;
    rep.complete = true;
    finish_report(&mut rep, &st, t0);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_messages() {
        assert_eq!(
            vanished_name(r#"rsync: [sender] link_stat "missing/x" (in pub) failed: No such file or directory (2)"#).as_deref(),
            Some("missing/x")
        );
        assert_eq!(vanished_name(r#"file has vanished: "a b/c" (in pub)"#).as_deref(), Some("a b/c"));
        assert_eq!(vanished_name(r#"rsync: [sender] send_files failed to open "x" (in pub): Permission denied (13)"#), None);
    }

    /// A staged chain file that is a symlink (possible under --no-safe-links)
    /// is refused, never read through; a plain one is parsed.
    #[test]
    fn staged_recent_files_are_never_read_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let json = r#"{"meta":{"interval":"1d","protocol":1,"aggregator":["Z"]},"recent":[{"epoch":"1700000000.5","path":"a/b","type":"new"}]}"#;
        let outside = d.path().join("local-secret.json");
        std::fs::write(&outside, json).unwrap();
        let staging = d.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        std::os::unix::fs::symlink(&outside, staging.join("RECENT-1d.json")).unwrap();
        match read_staged(&staging, "RECENT-1d.json") {
            Err(PassError::Io(m)) => assert!(m.contains("symlink"), "{m}"),
            other => panic!("a symlinked RECENT file was not refused: {other:?}"),
        }
        std::fs::write(staging.join("RECENT-1h.json"), json.replace("1d", "1h")).unwrap();
        assert!(matches!(read_staged(&staging, "RECENT-1h.json"), Ok(Some(_))));
        assert!(matches!(read_staged(&staging, "RECENT-6h.json"), Ok(None)));
    }

    #[test]
    fn root_entry_prefix() {
        assert_eq!(with_root_entry(&["a".into(), "b".into()]), vec!["./a".to_string(), "b".into()]);
        assert!(with_root_entry(&[]).is_empty());
        assert_eq!(parent_dirs(["a/b/c", "a/b/d", "top"]), vec!["".to_string(), "a/b".into()]);
    }
}
