//! The generator: walks the sorted file list, decides per entry (skip, fix
//! attributes, create, transfer whole, transfer as a delta), creates
//! directories, stages symlinks and devices, and produces file requests with
//! the block sums of the basis file (`generator.c recv_generator`).
//!
//! Runs on a blocking thread: it stats and reads the destination.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::checksum::{self, CsumType, FileHasher, SumHead, SumParams};
use crate::engine::dest::{self, DirCache, Kind, Meta};
use crate::engine::monitor::{Item, Monitor};
use crate::engine::partial::{Found, PartialDir, Partials};
use crate::proto::flist::{FileEntry, FileList, HardLinkKey, FLAG_CONTENT_DIR};
use crate::proto::session::{ITEM_IS_NEW, ITEM_REPORT_SIZE, ITEM_REPORT_TIME};

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;

pub fn is_reg(m: u32) -> bool {
    m & S_IFMT == S_IFREG
}
pub fn is_dir(m: u32) -> bool {
    m & S_IFMT == S_IFDIR
}
pub fn is_lnk(m: u32) -> bool {
    m & S_IFMT == S_IFLNK
}

/// Local options that shape decisions (not sent to the server).
#[derive(Debug, Clone)]
pub struct LocalOpts {
    pub perms: bool,
    pub times: bool,
    pub links: bool,
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub specials: bool,
    pub hard_links: bool,
    pub checksum: bool,
    pub dry_run: bool,
    pub am_root: bool,
    pub block_size: Option<u32>,
    /// `--safe-links`: skip symlinks whose target could lie outside the tree
    /// ([`crate::proto::symlink::unsafe_symlink`]).
    pub safe_links: bool,
}

impl LocalOpts {
    /// For a list-only session (`ls`): rsync's `-a` view of the entries,
    /// nothing written (`dry_run`).
    pub fn listing(am_root: bool) -> LocalOpts {
        LocalOpts {
            perms: true,
            times: true,
            links: true,
            owner: false,
            group: false,
            devices: false,
            specials: false,
            hard_links: true,
            checksum: false,
            dry_run: true,
            am_root,
            block_size: None,
            safe_links: true,
        }
    }
}

/// Everything the generator, receiver and commit share for one run.
pub struct Ctx {
    /// File lists still in use, by `ndx_start` (one list, or with incremental
    /// recursion the lists not yet finished: memory follows the work in flight).
    lists: Mutex<BTreeMap<i32, Arc<FileList>>>,
    pub dest: dest::Dest,
    pub opts: LocalOpts,
    pub protocol: i32,
    pub sums: SumParams,
    pub monitor: Arc<dyn Monitor>,
    /// Incremental recursion: lists arrive per directory.
    pub inc: bool,
    /// What was requested (names allowed, directories that may be complete).
    pub scope: crate::engine::Scope,
    pub numeric_ids: bool,
    /// Remote id → local id, mapped by name (empty with --numeric-ids).
    uid_map: Mutex<HashMap<u32, u32>>,
    gid_map: Mutex<HashMap<u32, u32>>,
    pub tmp_counter: AtomicU64,
    /// Our process id, for temp names (asked once, not once per file).
    pid: u32,
    /// Files and bytes requested and done, for the monitor's progress view.
    pub progress: crate::engine::monitor::ProgressCounter,
    /// `--partial-dir`: where interrupted transfers are kept and resumed from.
    pub partial: Option<Partials>,
    /// Files whose request used their partial file as the basis.
    partial_basis: Mutex<HashSet<i32>>,
    /// Files that had a partial file when the generator looked (it is removed
    /// once the file is published).
    partial_seen: Mutex<HashSet<i32>>,
    /// `--delay-updates`: stage every file until the end of the run.
    pub delay_updates: bool,
    /// Paths staged and renamed into place after everything else, in any mode.
    pub late: crate::engine::commit::LatePublish,
}

impl Ctx {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dest: dest::Dest,
        opts: LocalOpts,
        protocol: i32,
        sums: SumParams,
        monitor: Arc<dyn Monitor>,
        inc: bool,
        scope: crate::engine::Scope,
        numeric_ids: bool,
        tmp_seed: u64,
    ) -> Self {
        Ctx {
            lists: Mutex::new(BTreeMap::new()),
            dest,
            opts,
            protocol,
            sums,
            monitor,
            inc,
            scope,
            numeric_ids,
            uid_map: Mutex::new(HashMap::new()),
            gid_map: Mutex::new(HashMap::new()),
            tmp_counter: AtomicU64::new(tmp_seed),
            pid: std::process::id(),
            progress: Default::default(),
            partial: None,
            partial_basis: Mutex::new(HashSet::new()),
            partial_seen: Mutex::new(HashSet::new()),
            delay_updates: true,
            late: Default::default(),
        }
    }

    /// How finished files reach their final names: at once (`delay = false`,
    /// rsync's default) or all together at the end (`--delay-updates`); paths
    /// matching `late` wait for the end either way.
    pub fn with_publishing(mut self, delay: bool, late: crate::engine::commit::LatePublish) -> Self {
        self.delay_updates = delay;
        self.late = late;
        self
    }

    /// Whether the finished temp of `name` is renamed into place as soon as it
    /// is complete, rather than staged for the end of the run.
    pub fn publishes_at_once(&self, name: &[u8]) -> bool {
        !self.delay_updates && !self.opts.dry_run && (self.late.is_empty() || !self.late.matches(name))
    }

    /// Keep interrupted transfers in `dir` (`--partial-dir`).
    pub fn with_partial(mut self, dir: Option<PartialDir>) -> Self {
        self.partial = dir.map(Partials::new);
        self
    }

    /// Whether the request for `ndx` used its partial file as the basis.
    pub fn partial_is_basis(&self, ndx: i32) -> bool {
        self.partial_basis.lock().map(|s| s.contains(&ndx)).unwrap_or(false)
    }

    /// Whether `ndx` had a partial file when its request was made.
    pub fn partial_seen(&self, ndx: i32) -> bool {
        self.partial_seen.lock().map(|s| s.contains(&ndx)).unwrap_or(false)
    }

    fn note_partial(&self, ndx: i32, basis: bool) {
        if let Ok(mut s) = self.partial_seen.lock() {
            s.insert(ndx);
        }
        if let Ok(mut s) = self.partial_basis.lock() {
            if basis {
                s.insert(ndx);
            } else {
                s.remove(&ndx);
            }
        }
    }

    /// Make a list's entries reachable by index (and map its owner names).
    pub fn add_list(&self, list: Arc<FileList>) {
        if self.opts.am_root && !self.numeric_ids {
            if self.opts.owner {
                let m = map_ids(&list.uid_names, false);
                if let Ok(mut g) = self.uid_map.lock() {
                    g.extend(m);
                }
            }
            if self.opts.group {
                let m = map_ids(&list.gid_names, true);
                if let Ok(mut g) = self.gid_map.lock() {
                    g.extend(m);
                }
            }
        }
        if let Ok(mut l) = self.lists.lock() {
            l.insert(list.ndx_start, list);
        }
    }

    /// Forget a finished list.
    pub fn remove_list(&self, ndx_start: i32) {
        if let Ok(mut l) = self.lists.lock() {
            l.remove(&ndx_start);
        }
    }

    /// The list holding global index `ndx`, and the slot in it.
    pub fn lookup(&self, ndx: i32) -> Option<(Arc<FileList>, usize)> {
        let l = self.lists.lock().ok()?;
        let (start, list) = l.range(..=ndx).next_back()?;
        let i = (ndx - start) as usize;
        (i < list.entries.len()).then(|| (list.clone(), i))
    }

    /// A copy of the entry at global index `ndx`.
    pub fn entry_at(&self, ndx: i32) -> Option<FileEntry> {
        let (l, i) = self.lookup(ndx)?;
        l.entries[i].clone()
    }

    /// The local owner for an entry (`-o`, root only), mapped by name like rsync.
    pub fn owner_of(&self, e: &FileEntry) -> Option<u32> {
        if !(self.opts.am_root && self.opts.owner) {
            return None;
        }
        let u = e.uid?;
        Some(self.uid_map.lock().ok().and_then(|m| m.get(&u).copied()).unwrap_or(u))
    }

    /// The local group for an entry (`-g`, root only), mapped by name like rsync.
    pub fn group_of(&self, e: &FileEntry) -> Option<u32> {
        if !(self.opts.am_root && self.opts.group) {
            return None;
        }
        let g = e.gid?;
        Some(self.gid_map.lock().ok().and_then(|m| m.get(&g).copied()).unwrap_or(g))
    }

    /// A fresh unique suffix for temp names.
    pub fn unique(&self) -> u64 {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        (self.pid as u64) << 32 | (n & 0xFFFF_FFFF)
    }
}

/// Group hard-linked entries: the first in sorted order leads, the rest follow.
pub fn hard_link_leaders(list: &FileList) -> HashMap<usize, usize> {
    let mut first: HashMap<_, usize> = HashMap::new();
    let mut out = HashMap::new();
    for (i, e) in list.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        if !is_reg(e.mode) {
            continue;
        }
        if let Some(key) = e.hlink() {
            match first.get(&key) {
                Some(&l) => {
                    out.insert(i, l);
                }
                None => {
                    first.insert(key, i);
                }
            }
        }
    }
    out
}

/// Something staged under a temp name, to be renamed into place at commit
/// (`--delay-updates`, late-publish paths).
#[derive(Debug, Clone)]
pub struct Staged {
    /// Global index (orders publishing: parents before children).
    pub ndx: i32,
    pub name: Vec<u8>,
    pub tmp: Vec<u8>,
}

/// A hard-link follower to link to its leader at commit.
#[derive(Debug, Clone)]
pub struct Link {
    pub follower: Vec<u8>,
    pub leader: Vec<u8>,
}

/// A directory whose attributes are set at the end, deepest first.
#[derive(Debug, Clone)]
pub struct DirAttr {
    pub name: Vec<u8>,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Work for the generator thread.
#[derive(Debug)]
pub enum GenCmd {
    /// A list to walk; `parent` is the directory an inc-recursion sub-list
    /// describes (`None` for the first or only list).
    List { list: Arc<FileList>, parent: Option<Vec<u8>> },
    /// Re-request these files with full-length sums.
    Redo(Vec<i32>),
}

/// Messages from the generator to the driver.
#[derive(Debug)]
pub enum GenOut {
    Request { ndx: i32, iflags: u16, head: SumHead, sums: Vec<u8> },
    /// Every request for this list was sent.
    ListDone { ndx_start: i32, report: GenReport },
    /// Every redo request was sent.
    RedoDone(GenReport),
}

/// What a generator pass leaves for the commit step.
#[derive(Debug, Default)]
pub struct GenReport {
    pub staged: Vec<Staged>,
    /// Symlinks and devices already renamed into place.
    pub published: u64,
    pub links: Vec<Link>,
    /// Local entries the list lacks, in directories it describes completely
    /// (candidates for --delete).
    pub extraneous: Vec<Vec<u8>>,
    pub dirs: Vec<DirAttr>,
    pub requested: Vec<i32>,
    pub errors: u64,
    /// Bytes of regular files considered (for --stats).
    pub total_size: i64,
    pub entries: u64,
}

impl GenReport {
    /// Add a later pass's report to this one (what the commit step needs:
    /// the lists and counters; the requested indices are not kept).
    pub fn absorb(&mut self, mut o: GenReport) {
        self.staged.append(&mut o.staged);
        self.published += o.published;
        self.links.append(&mut o.links);
        self.extraneous.append(&mut o.extraneous);
        self.dirs.append(&mut o.dirs);
        self.errors += o.errors;
        self.total_size += o.total_size;
        self.entries += o.entries;
    }
}

/// The generator thread's state: it outlives one list.
pub struct Generator {
    ctx: Arc<Ctx>,
    cache: DirCache,
    /// Hard-link group → leader's name (the first member met, in list order).
    leaders: HashMap<HardLinkKey, Vec<u8>>,
    /// Directories flagged as complete by the server (inc-recursion sub-lists
    /// may come long after their directory's list was freed).
    content_dirs: HashSet<Vec<u8>>,
    /// `--partial-dir`: the partial dir of the last directory looked at
    /// (lists come grouped by directory, so one lookup serves a directory).
    partial_dir: Option<(Vec<u8>, Option<dest::DirHandle>)>,
}

/// Run the generator until its command queue closes.
pub fn run_generator(ctx: Arc<Ctx>, mut cmds: mpsc::UnboundedReceiver<GenCmd>, tx: mpsc::Sender<GenOut>) {
    let mut g = Generator {
        cache: DirCache::new(ctx.dest.clone()),
        ctx,
        leaders: HashMap::new(),
        content_dirs: HashSet::new(),
        partial_dir: None,
    };
    while let Some(cmd) = cmds.blocking_recv() {
        let out = match cmd {
            GenCmd::List { list, parent } => {
                let report = g.list(&list, parent.as_deref(), &tx);
                GenOut::ListDone { ndx_start: list.ndx_start, report }
            }
            GenCmd::Redo(ndxs) => GenOut::RedoDone(g.redo(&ndxs, &tx)),
        };
        if tx.blocking_send(out).is_err() {
            return;
        }
    }
}

impl Generator {
    fn list(&mut self, list: &FileList, parent: Option<&[u8]>, tx: &mpsc::Sender<GenOut>) -> GenReport {
        let ctx = self.ctx.clone();
        let mut rep = GenReport::default();
        for e in list.entries.iter().flatten() {
            if is_dir(e.mode) && e.flags & FLAG_CONTENT_DIR != 0 {
                self.content_dirs.insert(e.name.to_vec());
            }
        }
        self.scan_extraneous(list, parent, &mut rep);
        for (i, e) in list.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            rep.entries += 1;
            rep.total_size += if is_reg(e.mode) { e.size } else { 0 };
            if is_dir(e.mode) {
                rep.dirs.push(DirAttr {
                    name: e.name.to_vec(),
                    mode: e.mode,
                    mtime: e.mtime,
                    mtime_nsec: e.mtime_nsec,
                    uid: ctx.owner_of(e),
                    gid: ctx.group_of(e),
                });
            }
            let ndx = list.ndx_start + i as i32;
            if let Err(err) = self.one_entry(ndx, e, &mut rep, tx) {
                if err.kind() == std::io::ErrorKind::BrokenPipe {
                    break; // the transfer ended
                }
                rep.errors += 1;
                ctx.monitor.local_error(&format!("{}: {}", crate::text::escape_name(&e.name), err));
            }
        }
        rep
    }

    /// Record what DEST has and this list lacks, in each directory the list
    /// describes completely; remove leftover temps of killed runs there.
    fn scan_extraneous(&mut self, list: &FileList, parent: Option<&[u8]>, rep: &mut GenReport) {
        let ctx = self.ctx.clone();
        // Which directories does this list describe, and with which names?
        let mut described: Vec<(Vec<u8>, HashSet<&[u8]>)> = Vec::new();
        let allowed = |d: &[u8]| ctx.scope.allows_content_dir(d);
        if ctx.inc {
            let dir: Vec<u8> = match parent {
                Some(p) => p.to_vec(),
                None => b".".to_vec(),
            };
            let complete = if parent.is_some() {
                self.content_dirs.contains(&dir)
            } else {
                list.entries.iter().flatten().any(|e| e.name == b"." && e.flags & FLAG_CONTENT_DIR != 0)
            };
            if complete && allowed(&dir) {
                let names = list
                    .entries
                    .iter()
                    .flatten()
                    .filter(|e| e.name != b".")
                    .map(|e| dest::split_parent(&e.name).1)
                    .collect();
                described.push((dir, names));
            }
        } else {
            let mut children: HashMap<&[u8], HashSet<&[u8]>> = HashMap::new();
            for e in list.entries.iter().flatten() {
                if e.name == b"." {
                    continue;
                }
                let (p, b) = dest::split_parent(&e.name);
                children.entry(p).or_default().insert(b);
            }
            for e in list.entries.iter().flatten() {
                if is_dir(e.mode) && e.flags & FLAG_CONTENT_DIR != 0 && allowed(&e.name) {
                    let key: &[u8] = if e.name == b"." { b"" } else { &e.name };
                    described.push((e.name.to_vec(), children.remove(key).unwrap_or_default()));
                }
            }
        }
        for (dir_name, keep) in described {
            let rel: &[u8] = if dir_name == b"." { b"" } else { &dir_name };
            let Ok(dir) = self.cache.dir(rel) else { continue };
            let Ok(mut names) = dir.names() else { continue };
            names.sort();
            let mut by_case_key: Option<HashMap<Vec<u8>, &[u8]>> = None;
            for n in names.iter() {
                if keep.contains(n) {
                    continue;
                }
                if dest::is_tmp_name(n) {
                    if !ctx.opts.dry_run {
                        let _ = dir.remove_all(n);
                    }
                    continue;
                }
                // On a case-insensitive DEST a listed name can be here under
                // another case (upstream renamed `Foo` to `foo`, or an entry
                // replaced during this run will take the listed name's place):
                // that is the listed entry, not an extraneous one, and deleting
                // it after the transfer would delete what was just written.
                // It is the same entry when the listed spelling is not in the
                // directory yet resolves to the same inode; give it that spelling.
                let keys = by_case_key.get_or_insert_with(|| keep.iter().map(|k| (dest::case_key(k), *k)).collect());
                if let Some(&k) = keys.get(&dest::case_key(n)) {
                    if !names.contains_sorted(k) && same_entry(&dir, n, k) {
                        if !ctx.opts.dry_run {
                            if let Err(e) = recase(&dir, n, k, ctx.unique()) {
                                rep.errors += 1;
                                ctx.monitor.local_error(&format!(
                                    "{}: cannot rename to {}: {e}",
                                    crate::text::escape_name(n),
                                    crate::text::escape_name(k)
                                ));
                            }
                            self.cache.invalidate();
                        }
                        continue;
                    }
                }
                let mut full = rel.to_vec();
                if !full.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(n);
                rep.extraneous.push(full);
            }
        }
    }

    fn redo(&mut self, ndxs: &[i32], tx: &mpsc::Sender<GenOut>) -> GenReport {
        let ctx = self.ctx.clone();
        let mut rep = GenReport::default();
        for &ndx in ndxs {
            let Some(e) = ctx.entry_at(ndx) else { continue };
            let r = (|| -> std::io::Result<()> {
                let (dir, base) = self.cache.parent_of(&e.name)?;
                let local = dir.stat(base)?;
                let partial = self.find_partial(&e.name, &dir, base);
                let (head, sums) = request_sums(&ctx, ndx, &dir, base, local, partial, true)?;
                tx.blocking_send(GenOut::Request { ndx, iflags: 0, head, sums })
                    .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "transfer ended"))?;
                rep.requested.push(ndx);
                Ok(())
            })();
            if let Err(err) = r {
                rep.errors += 1;
                ctx.monitor.local_error(&format!("{}: {}", crate::text::escape_name(&e.name), err));
            }
        }
        rep
    }
}

impl Generator {
    /// A finished symlink or device temp: renamed into place at once, or
    /// staged for the end of the run ([`crate::engine::commit::place`]).
    fn place(&mut self, ndx: i32, e: &FileEntry, dir: &dest::DirHandle, tmp: Vec<u8>, rep: &mut GenReport) -> std::io::Result<()> {
        match crate::engine::commit::place(&self.ctx, dir, &e.name, tmp, ndx)? {
            Some(staged) => rep.staged.push(staged),
            None => rep.published += 1,
        }
        Ok(())
    }

    /// `--partial-dir`: the partial file kept for `name` (in `dir`, as `base`).
    /// A partial dir that cannot be read is treated as absent (reported once
    /// per directory): it only ever speeds a transfer up.
    fn find_partial(&mut self, name: &[u8], dir: &dest::DirHandle, base: &[u8]) -> Option<Found> {
        let p = self.ctx.partial.as_ref()?;
        let (dname, _) = dest::split_parent(name);
        let cached = matches!(&self.partial_dir, Some((d, _)) if d == dname);
        if !cached {
            let h = match p.open(dir) {
                Ok(h) => h,
                Err(e) => {
                    self.ctx.monitor.local_error(&format!(
                        "{}: cannot read the partial dir: {e}",
                        crate::text::escape_name(name)
                    ));
                    None
                }
            };
            self.partial_dir = Some((dname.to_vec(), h));
        }
        let h = self.partial_dir.as_ref().and_then(|(_, h)| h.clone())?;
        Partials::find_in(h, base).ok().flatten()
    }

    /// Drop the partial file of an up-to-date `name`.
    fn drop_partial(&mut self, dir: &dest::DirHandle, base: &[u8]) {
        if let Some(p) = &self.ctx.partial {
            let _ = p.remove(dir, base);
            // The partial dir may be gone now.
            self.partial_dir = None;
        }
    }
}

/// Block sums for a request: of the partial file when `--partial-dir` kept a
/// non-empty one (the receiver then reads its matched blocks from there),
/// otherwise of the local file when it is a non-empty regular file.
fn request_sums(
    ctx: &Ctx,
    ndx: i32,
    dir: &dest::DirHandle,
    base: &[u8],
    local: Option<Meta>,
    partial: Option<Found>,
    redo: bool,
) -> std::io::Result<(SumHead, Vec<u8>)> {
    if let Some(found) = partial {
        let usable = found.meta.size > 0;
        ctx.note_partial(ndx, usable);
        if usable {
            return basis_sums(&found.dir, base, found.meta.size, &ctx.sums, ctx.protocol, redo, ctx.opts.block_size);
        }
    }
    match local {
        Some(m) if m.kind == Kind::File && m.size > 0 => {
            basis_sums(dir, base, m.size, &ctx.sums, ctx.protocol, redo, ctx.opts.block_size)
        }
        _ => Ok((SumHead::default(), Vec::new())),
    }
}

/// Do `a` and `b` in `dir` name one entry (same device and inode)?
fn same_entry(dir: &dest::DirHandle, a: &[u8], b: &[u8]) -> bool {
    match (dir.stat(a), dir.stat(b)) {
        (Ok(Some(x)), Ok(Some(y))) => x.dev == y.dev && x.ino == y.ino,
        _ => false,
    }
}

/// Rename `from` to `to`, which a case-insensitive filesystem takes for the
/// same name (a direct rename is then a no-op), through a temp name.
fn recase(dir: &dest::DirHandle, from: &[u8], to: &[u8], unique: u64) -> std::io::Result<()> {
    let tmp = dest::tmp_name(to, unique);
    dir.rename(from, dir, &tmp)?;
    dir.rename(&tmp, dir, to).inspect_err(|_| {
        let _ = dir.rename(&tmp, dir, from);
    })
}

fn same_mtime(_ctx: &Ctx, e: &FileEntry, m: &Meta) -> bool {
    e.mtime == m.mtime
}

fn perms_differ(ctx: &Ctx, e: &FileEntry, m: &Meta) -> bool {
    ctx.opts.perms && (e.mode & 0o7777) != (m.mode & 0o7777)
}

fn item(code: &str, e: &FileEntry) -> Item {
    Item {
        code: code.to_string(),
        name: e.name.to_vec(),
        is_dir: is_dir(e.mode),
        link_target: if is_lnk(e.mode) { e.link_target().map(<[u8]>::to_vec) } else { None },
        hardlink_to: None,
    }
}

/// Attribute part of an itemize code: `c s t p o g u a x` (9 chars).
fn attr_code(size: bool, time: bool, perms: bool, owner: bool, group: bool) -> String {
    let mut s = String::with_capacity(9);
    s.push('.');
    s.push(if size { 's' } else { '.' });
    s.push(if time { 't' } else { '.' });
    s.push(if perms { 'p' } else { '.' });
    s.push(if owner { 'o' } else { '.' });
    s.push(if group { 'g' } else { '.' });
    s.push_str("...");
    s
}

/// Compute the block sums of a basis file for a request.
pub fn basis_sums(
    dir: &dest::DirHandle,
    base: &[u8],
    size: i64,
    sums: &SumParams,
    protocol: i32,
    redo: bool,
    block_size: Option<u32>,
) -> std::io::Result<(SumHead, Vec<u8>)> {
    let digest_len = sums.kind.digest_len();
    let head = checksum::sum_sizes_sqroot(size, protocol, digest_len, redo, block_size);
    if head.count < 0 {
        // Too many blocks to describe: transfer the file whole.
        return Ok((SumHead::default(), Vec::new()));
    }
    let mut f = dir.open_read(base)?;
    let mut out = Vec::with_capacity(head.count as usize * (4 + head.s2length as usize));
    let mut buf = vec![0u8; head.blength.max(1) as usize];
    let mut d = [0u8; 64];
    for i in 0..head.count as u32 {
        let n = head.block_len(i);
        f.read_exact(&mut buf[..n])?;
        let s1 = checksum::checksum1(&buf[..n]);
        out.extend_from_slice(&(s1 as i32).to_le_bytes());
        let dl = checksum::checksum2(sums, &buf[..n], &mut d);
        let take = (head.s2length as usize).min(dl);
        out.extend_from_slice(&d[..take]);
    }
    Ok((head, out))
}

/// Whole-file checksum of a local file as the `-c` list carries it.
fn local_file_checksum(dir: &dest::DirHandle, base: &[u8], kind: CsumType) -> std::io::Result<Vec<u8>> {
    let mut f = dir.open_read(base)?;
    // The implied pre-30 MD4 (the only case that yields Md4Old) sums -c lists unseeded.
    let mut h = FileHasher::new_unseeded(if kind == CsumType::Md4Old { CsumType::Md4 } else { kind });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let mut d = [0u8; 64];
    let n = h.finish(&mut d);
    Ok(d[..n].to_vec())
}

impl Generator {
fn one_entry(&mut self, ndx: i32, e: &FileEntry, rep: &mut GenReport, tx: &mpsc::Sender<GenOut>) -> std::io::Result<()> {
    let ctx_arc = self.ctx.clone();
    let ctx = &*ctx_arc;
    let cache = &mut self.cache;
    let dry = ctx.opts.dry_run;
    if is_lnk(e.mode) && ctx.opts.links && ctx.opts.safe_links {
        let target = e.link_target().unwrap_or_default();
        if crate::proto::symlink::unsafe_symlink(target, &e.name) {
            // As rsync's generator: not created, and whatever DEST has under
            // this name stays (the name is listed, so --delete keeps it too).
            tracing::warn!(
                "ignoring unsafe symlink \"{}\" -> \"{}\"",
                crate::text::escape_name(&e.name),
                crate::text::escape_name(target)
            );
            return Ok(());
        }
    }
    if e.name == b"." {
        // The transfer root: DEST itself.
        let m = ctx.dest.root().stat(b".")?;
        if let Some(m) = m {
            let t = ctx.opts.times && !same_mtime(ctx, e, &m);
            let p = perms_differ(ctx, e, &m);
            if t || p {
                ctx.monitor.item(&item(&format!(".d{}", attr_code(false, t, p, false, false)), e));
            }
        }
        return Ok(());
    }
    let (dir, base) = match cache.parent_of(&e.name) {
        Ok(x) => x,
        Err(err) if dry && err.kind() == std::io::ErrorKind::NotFound => {
            // Parent does not exist yet (dry run): everything below is new.
            let code = if is_dir(e.mode) {
                "cd+++++++++"
            } else if is_lnk(e.mode) {
                "cL+++++++++"
            } else {
                ">f+++++++++"
            };
            ctx.monitor.item(&item(code, e));
            return Ok(());
        }
        Err(err) => return Err(err),
    };
    let local = dir.stat(base)?;
    let mode = e.mode;
    if is_dir(mode) {
        match local {
            Some(m) if m.kind == Kind::Dir => {
                let t = ctx.opts.times && !same_mtime(ctx, e, &m);
                let p = perms_differ(ctx, e, &m);
                if t || p {
                    ctx.monitor.item(&item(&format!(".d{}", attr_code(false, t, p, false, false)), e));
                }
                if !dry && m.mode & 0o700 != 0o700 {
                    // We must be able to create entries inside; final perms come at commit.
                    dir.chmod(base, (m.mode | 0o700) & 0o7777)?;
                }
            }
            other => {
                ctx.monitor.item(&item("cd+++++++++", e));
                if !dry {
                    if other.is_some() {
                        dir.remove_all(base)?;
                        cache.invalidate();
                    }
                    dir.mkdir(base, 0o700)?;
                }
            }
        }
        return Ok(());
    }
    if is_lnk(mode) {
        if !ctx.opts.links {
            return Ok(());
        }
        let target = e.link_target().unwrap_or_default().to_vec();
        if let Some(m) = local {
            if m.kind == Kind::Symlink && dir.readlink(base)? == target {
                let t = ctx.opts.times && !same_mtime(ctx, e, &m);
                if t {
                    ctx.monitor.item(&item(&format!(".L{}", attr_code(false, true, false, false, false)), e));
                    if !dry {
                        dir.set_mtime(base, e.mtime, e.mtime_nsec)?;
                    }
                }
                return Ok(());
            }
        }
        let code = if local.map(|m| m.kind == Kind::Symlink).unwrap_or(false) { "cLc.t......" } else { "cL+++++++++" };
        ctx.monitor.item(&item(code, e));
        if !dry {
            let (tmp, ()) = dest::under_tmp_name(base, || ctx.unique(), |t| dir.symlink(&target, t))?;
            if ctx.opts.times {
                // Best effort: not every filesystem stores symlink times.
                let _ = dir.set_mtime(&tmp, e.mtime, e.mtime_nsec);
            }
            if ctx.opts.am_root && (ctx.opts.owner || ctx.opts.group) {
                let _ = dir.chown(&tmp, ctx.owner_of(e), ctx.group_of(e));
            }
            self.place(ndx, e, &dir, tmp, rep)?;
        }
        return Ok(());
    }
    if !is_reg(mode) {
        // Devices, fifos, sockets.
        let is_dev = matches!(mode & S_IFMT, 0o020000 | 0o060000);
        let wanted = if is_dev { ctx.opts.devices } else { ctx.opts.specials };
        if !wanted || !ctx.opts.am_root {
            return Ok(());
        }
        let rdev = e.rdev().map(|(ma, mi)| libc::makedev(ma, mi) as u64).unwrap_or(0);
        if let Some(m) = local {
            if m.mode & S_IFMT == mode & S_IFMT && (!is_dev || m.rdev == rdev) {
                return Ok(());
            }
        }
        ctx.monitor.item(&item(if is_dev { "cD+++++++++" } else { "cS+++++++++" }, e));
        if !dry {
            let (tmp, ()) = dest::under_tmp_name(base, || ctx.unique(), |t| dir.mknod(t, mode, rdev))?;
            if ctx.opts.times {
                dir.set_mtime(&tmp, e.mtime, e.mtime_nsec)?;
            }
            if ctx.opts.owner || ctx.opts.group {
                dir.chown(&tmp, ctx.owner_of(e), ctx.group_of(e))?;
            }
            self.place(ndx, e, &dir, tmp, rep)?;
        }
        return Ok(());
    }
    // Regular file.
    let leader = match (e.hlink(), ctx.opts.hard_links) {
        (Some(key), true) => match self.leaders.get(&key) {
            Some(l) => Some(l.clone()),
            None => {
                self.leaders.insert(key, e.name.to_vec());
                None
            }
        },
        _ => None,
    };
    if let Some(le) = leader {
        // A hard-link follower: linked to its leader at commit unless already linked.
        let already = match (local, cache.parent_of(&le).ok().and_then(|(d, b)| d.stat(b).ok().flatten())) {
            (Some(a), Some(b)) => a.kind == Kind::File && a.dev == b.dev && a.ino == b.ino,
            _ => false,
        };
        if !already {
            let mut it = item("hf+++++++++", e);
            it.hardlink_to = Some(le.clone());
            ctx.monitor.item(&it);
            rep.links.push(Link { follower: e.name.to_vec(), leader: le });
        }
        return Ok(());
    }
    let mut size_differs = true;
    let mut time_differs = true;
    if let Some(m) = local {
        if m.kind == Kind::File {
            size_differs = m.size != e.size;
            time_differs = !same_mtime(ctx, e, &m);
            let up_to_date = if ctx.opts.checksum {
                !size_differs
                    && match e.checksum() {
                        Some(sum) => local_file_checksum(&dir, base, ctx.sums.kind)? == sum,
                        None => false,
                    }
            } else {
                !size_differs && !time_differs
            };
            if up_to_date {
                if !dry && self.find_partial(&e.name, &dir, base).is_some() {
                    self.drop_partial(&dir, base);
                }
                let t = ctx.opts.times && time_differs;
                let p = perms_differ(ctx, e, &m);
                let o = ctx.owner_of(e).is_some_and(|u| u != m.uid);
                let g = ctx.group_of(e).is_some_and(|x| x != m.gid);
                // With -c, rsync sets the time of a file the checksum found
                // current exactly, sub-second part included, and says nothing
                // when only that part differed (generator.c
                // maybe_ATTRS_ACCURATE_TIME; itemize compares whole seconds).
                let exact_time = ctx.opts.times && ctx.opts.checksum && m.mtime_nsec != e.mtime_nsec;
                if t || p || o || g {
                    ctx.monitor.item(&item(&format!(".f{}", attr_code(false, t, p, o, g)), e));
                }
                if !dry {
                    if p {
                        dir.chmod(base, e.mode)?;
                    }
                    if o || g {
                        dir.chown(base, ctx.owner_of(e).filter(|_| o), ctx.group_of(e).filter(|_| g))?;
                    }
                    if t || exact_time {
                        dir.set_mtime(base, e.mtime, e.mtime_nsec)?;
                    }
                }
                return Ok(());
            }
        }
    }
    let new = !matches!(local, Some(m) if m.kind == Kind::File);
    let code = if new {
        ">f+++++++++".to_string()
    } else {
        let sum_c = if ctx.opts.checksum { 'c' } else { '.' };
        let mut c = format!(">f{}", attr_code(size_differs, time_differs && ctx.opts.times, false, false, false));
        c.replace_range(2..3, &sum_c.to_string());
        c
    };
    ctx.monitor.item(&item(&code, e));
    if dry {
        return Ok(());
    }
    let partial = self.find_partial(&e.name, &dir, base);
    let (head, sums) = request_sums(ctx, ndx, &dir, base, local, partial, false)?;
    let mut iflags = 0u16;
    if new {
        iflags |= ITEM_IS_NEW;
    } else {
        if size_differs {
            iflags |= ITEM_REPORT_SIZE;
        }
        if time_differs {
            iflags |= ITEM_REPORT_TIME;
        }
    }
    rep.requested.push(ndx);
    ctx.progress.wanted(ctx.monitor.as_ref(), e.size);
    if tx.blocking_send(GenOut::Request { ndx, iflags, head, sums }).is_err() {
        return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "transfer ended"));
    }
    Ok(())
}
}

/// Map the server's (id, name) pairs to local ids by name (`uidlist.c`):
/// names unknown here keep their number; id 0 is never remapped.
pub fn map_ids(names: &[(u32, Vec<u8>)], group: bool) -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for (id, name) in names {
        if *id == 0 || name.is_empty() {
            continue;
        }
        let Ok(cname) = std::ffi::CString::new(name.clone()) else { continue };
        let local = if group { lookup_gid(&cname) } else { lookup_uid(&cname) };
        if let Some(l) = local {
            out.insert(*id, l);
        }
    }
    out
}

fn lookup_uid(name: &std::ffi::CStr) -> Option<u32> {
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the result we read.
    let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut res) };
    (rc == 0 && !res.is_null()).then_some(pwd.pw_uid)
}

fn lookup_gid(name: &std::ffi::CStr) -> Option<u32> {
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut res: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the result we read.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut res) };
    (rc == 0 && !res.is_null()).then_some(grp.gr_gid)
}
