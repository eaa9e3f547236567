//! The receiver: turns the sender's token stream for each requested file into a
//! temp file next to its final name (unnamed, `O_TMPFILE`, when the file is
//! published at once and the filesystem allows; else hidden and named),
//! copying matched blocks from the basis, hashing everything written, and
//! verifying the whole-file checksum (`receiver.c receive_data`). A verified
//! file is linked or renamed into place at once
//! (or, with `--delay-updates` and for late paths, staged for the commit step);
//! a mismatch in the first pass asks for a redo, a second one is an error.
//!
//! Runs on a blocking thread, fed through a bounded channel in wire order (in
//! batches: one hand-over per read from the socket, not one per token).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::checksum::{FileHasher, SumHead};
use crate::engine::dest::{self, DirCache, DirHandle};
use crate::engine::generator::{Ctx, Staged};
use crate::proto::flist::FileEntry;
use crate::proto::session::Token;
use crate::proto::token::{Compression, TokenInflater};

/// Input to the receiver, in wire order.
#[derive(Debug)]
pub enum RecvIn {
    Start { ndx: i32, head: SumHead },
    Token(Token),
    End { checksum: Vec<u8> },
    NoSend(i32),
    /// Reply with the files that failed since the last barrier.
    Barrier(oneshot::Sender<Vec<i32>>),
}

/// What became of one requested file (for per-list completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified, and published or staged for the end of the run.
    Done,
    /// Verification failed once: it will be requested again.
    Redo,
    /// Failed for good, or not sent by the server.
    Failed,
}

/// A per-file result, sent as each file ends.
#[derive(Debug, Clone, Copy)]
pub struct FileResult {
    pub ndx: i32,
    pub outcome: Outcome,
}

/// What the receiver leaves for the commit step.
#[derive(Debug, Default)]
pub struct RecvReport {
    /// Verified files waiting for the end of the run (`--delay-updates`, late paths).
    pub staged: Vec<Staged>,
    /// Verified files already renamed into place.
    pub published: u64,
    /// Files that failed verification twice, or could not be written.
    pub failed: Vec<i32>,
    /// Files the sender could not send.
    pub not_sent: Vec<i32>,
    pub bytes_written: u64,
    pub literal_bytes: u64,
    pub matched_bytes: u64,
    pub files: u64,
    /// Why the receiver stopped early (bad data it could not apply).
    pub fatal: Option<String>,
    /// Interrupted files kept in the partial dir (`--partial-dir`).
    pub kept_partial: u64,
}

struct Current {
    ndx: i32,
    entry: FileEntry,
    head: SumHead,
    dir: DirHandle,
    tmp: Vec<u8>,
    out: Option<OutFile>,
    basis: Option<File>,
    hasher: FileHasher,
    /// Something went wrong locally; keep consuming tokens, then fail the file.
    broken: Option<String>,
    written: u64,
    /// Literal data arrived for this file (only then is an interrupted temp
    /// worth keeping as a partial file: rsync's `cleanup_got_literal`).
    got_literal: bool,
    /// The temp is unnamed (`O_TMPFILE`; `tmp` is empty): it vanishes when
    /// closed unless [`commit::place_anon`] links it.
    anon: bool,
}

impl Current {
    /// Remove the temp of a file that will not be published.
    fn discard(&self) {
        if !self.anon {
            let _ = self.dir.unlink(&self.tmp);
        }
    }
}

pub struct Receiver {
    ctx: Arc<Ctx>,
    cache: DirCache,
    inflater: Option<TokenInflater>,
    cur: Option<Current>,
    /// Files that failed verification once (pending redo).
    pending_redo: Vec<i32>,
    /// Files already retried once.
    retried: std::collections::HashSet<i32>,
    /// Where per-file results go, one message per batch of input (a
    /// message per file would wake the session's task once per file).
    results: mpsc::UnboundedSender<Vec<FileResult>>,
    /// Results of the current input batch, not sent yet.
    done: Vec<FileResult>,
    rep: RecvReport,
    scratch: Vec<u8>,
    /// Unnamed temps work here: probed at the first file that would use one
    /// ([`anon_temps_work`]), cleared at the first directory that refuses
    /// `O_TMPFILE` (a filesystem without it).
    anon_ok: Option<bool>,
}

impl Receiver {
    pub fn new(
        ctx: Arc<Ctx>,
        compression: Compression,
        results: mpsc::UnboundedSender<Vec<FileResult>>,
    ) -> Result<Self, String> {
        let inflater = match compression {
            Compression::None => None,
            c => Some(TokenInflater::new(c, ctx.protocol)?),
        };
        let cache = DirCache::new(ctx.dest.clone());
        Ok(Receiver {
            ctx,
            cache,
            inflater,
            cur: None,
            pending_redo: vec![],
            retried: Default::default(),
            results,
            done: Vec::new(),
            rep: RecvReport::default(),
            scratch: Vec::new(),
            anon_ok: None,
        })
    }

    /// Consume messages until the channel closes or the data cannot be applied.
    /// The file in progress (if any) never stays behind as a temp.
    pub fn run(mut self, mut rx: mpsc::Receiver<Vec<RecvIn>>) -> RecvReport {
        'batches: while let Some(batch) = rx.blocking_recv() {
            for m in batch {
                if let Err(e) = self.handle(m) {
                    self.rep.fatal = Some(e);
                    break 'batches;
                }
            }
            self.send_results();
        }
        self.send_results();
        if let Some(c) = self.cur.take() {
            // The stream ended inside a file: keep what arrived in the partial
            // dir (`--partial-dir`), or drop the temp.
            self.interrupted(c);
        }
        // Files still awaiting a redo that never came count as failed.
        self.rep.failed.append(&mut self.pending_redo);
        self.rep
    }

    /// Report the files finished since the last report.
    fn send_results(&mut self) {
        if !self.done.is_empty() {
            let _ = self.results.send(std::mem::take(&mut self.done));
        }
    }

    fn handle(&mut self, m: RecvIn) -> Result<(), String> {
        match m {
            RecvIn::Start { ndx, head } => self.start(ndx, head),
            RecvIn::Token(t) => self.token(t),
            RecvIn::End { checksum } => self.end(&checksum),
            RecvIn::NoSend(ndx) => {
                let size = self.ctx.entry_at(ndx).map(|e| e.size).unwrap_or(0);
                self.ctx.progress.ended(self.ctx.monitor.as_ref(), 0, size, true);
                self.rep.not_sent.push(ndx);
                self.pending_redo.retain(|&n| n != ndx);
                self.done.push(FileResult { ndx, outcome: Outcome::Failed });
                Ok(())
            }
            RecvIn::Barrier(reply) => {
                let _ = reply.send(std::mem::take(&mut self.pending_redo));
                Ok(())
            }
        }
    }

    fn start(&mut self, ndx: i32, head: SumHead) -> Result<(), String> {
        if self.cur.is_some() {
            return Err("file started before the previous one ended".into());
        }
        let e = self.ctx.entry_at(ndx).ok_or_else(|| format!("server sent data for unknown index {ndx}"))?;
        // A redo of a file that failed once is under way.
        self.pending_redo.retain(|&n| n != ndx);
        if let Some(inf) = self.inflater.as_mut() {
            inf.start_file();
        }
        let hasher = FileHasher::new(&self.ctx.sums);
        let mut broken = None;
        let mut anon = false;
        let (dir, tmp, out, basis) = match self.cache.parent_of(&e.name) {
            Ok((dir, base)) => {
                let base = base.to_vec();
                let basis = if head.count > 0 {
                    // The generator's sums came from the partial file when it chose it.
                    let from_partial = match &self.ctx.partial {
                        Some(p) if self.ctx.partial_is_basis(ndx) => match p.find(&dir, &base) {
                            Ok(Some(found)) => Some(found.dir.open_read(&base)),
                            Ok(None) => Some(Err(std::io::Error::from(std::io::ErrorKind::NotFound))),
                            Err(e) => Some(Err(e)),
                        },
                        _ => None,
                    };
                    match from_partial.unwrap_or_else(|| dir.open_read(&base)) {
                        Ok(f) => Some(f),
                        Err(err) => {
                            broken = Some(format!("cannot open basis file: {err}"));
                            None
                        }
                    }
                } else {
                    None
                };
                let mut out = None;
                let mut tmp = Vec::new();
                // Matched blocks are read straight into the write buffer, so
                // it holds at least one whole block.
                let cap = write_buffer_len(e.size).max(if basis.is_some() { head.blength.max(0) as usize } else { 0 });
                // A file published at once gets an unnamed temp: no temp name
                // to create and rename away, and nothing left if we are killed.
                let ctx = &self.ctx;
                if ctx.partial.is_none()
                    && ctx.publishes_at_once(&e.name)
                    && *self.anon_ok.get_or_insert_with(|| anon_temps_work(&dir, ctx))
                {
                    match dir.create_anon() {
                        Some(f) => {
                            out = Some(OutFile::new(f, cap));
                            anon = true;
                        }
                        None => self.anon_ok = Some(false),
                    }
                }
                if !anon {
                    match dest::under_tmp_name(&base, || self.ctx.unique(), |t| dir.create_excl(t)) {
                        Ok((t, f)) => {
                            tmp = t;
                            out = Some(OutFile::new(f, cap));
                        }
                        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                            broken = Some("cannot find a free temp name".into())
                        }
                        Err(err) => broken = Some(format!("cannot create temp file: {err}")),
                    }
                }
                (dir, tmp, out, basis)
            }
            Err(err) => {
                broken = Some(err.to_string());
                (self.ctx.dest.root().clone(), Vec::new(), None, None)
            }
        };
        self.cur = Some(Current { ndx, entry: e, head, dir, tmp, out, basis, hasher, broken, written: 0, got_literal: false, anon });
        Ok(())
    }

    fn token(&mut self, t: Token) -> Result<(), String> {
        let Some(cur) = self.cur.as_mut() else { return Err("data outside a file".into()) };
        match t {
            Token::Data(d) => match self.inflater.as_mut() {
                Some(inf) => {
                    // Output per call is bounded; drain a large expansion piecewise.
                    self.scratch.clear();
                    let mut more = inf.data(&d, &mut self.scratch)?;
                    loop {
                        self.rep.literal_bytes += self.scratch.len() as u64;
                        cur.got_literal |= !self.scratch.is_empty();
                        write_out(cur, &self.scratch);
                        if !more {
                            break;
                        }
                        self.scratch.clear();
                        more = inf.drain(&mut self.scratch)?;
                    }
                }
                None => {
                    self.rep.literal_bytes += d.len() as u64;
                    cur.got_literal |= !d.is_empty();
                    write_out(cur, &d);
                }
            },
            Token::Blocks { first, count } => {
                let end = first.saturating_add(count);
                let nblocks = cur.head.count.max(0) as u32;
                let mut i = first;
                while i < end {
                    if i >= nblocks {
                        return Err(format!("Invalid block index {i}"));
                    }
                    // As many consecutive blocks as fit in the write buffer's
                    // free space (after a flush, at least one: see `start`),
                    // read from the basis with one pread, straight into place.
                    let j = copy_blocks(cur, &mut self.scratch, i, end.min(nblocks));
                    for k in i..j {
                        self.rep.matched_bytes += cur.head.block_len(k) as u64;
                    }
                    if let Some(inf) = self.inflater.as_mut() {
                        let staged = match cur.out.as_ref() {
                            Some(o) => o.staged(),
                            None => &self.scratch[..],
                        };
                        let mut at = 0usize;
                        for k in i..j {
                            let n = cur.head.block_len(k);
                            inf.block_seen(staged.get(at..at + n).unwrap_or(&[]))?;
                            at += n;
                        }
                    }
                    cur.commit_staged();
                    i = j;
                }
            }
        }
        self.ctx.progress.receiving(self.ctx.monitor.as_ref(), cur.written, cur.entry.size);
        Ok(())
    }

    fn end(&mut self, checksum: &[u8]) -> Result<(), String> {
        let Some(mut cur) = self.cur.take() else { return Err("file end outside a file".into()) };
        if let Some(inf) = self.inflater.as_mut() {
            inf.end_file()?;
        }
        let mut d = [0u8; 64];
        let hasher = std::mem::replace(&mut cur.hasher, FileHasher::new(&self.ctx.sums));
        let n = hasher.finish(&mut d);
        let ok_sum = &d[..n] == checksum;
        let ndx = cur.ndx;
        let flushed = match cur.out.take() {
            Some(w) => match w.into_inner() {
                Ok(f) => Some(f),
                Err(err) => {
                    cur.broken.get_or_insert(format!("write failed: {err}"));
                    None
                }
            },
            None => None,
        };
        let (written, size) = (cur.written, cur.entry.size);
        let outcome = self.conclude(cur, ok_sum, flushed);
        self.ctx.progress.ended(self.ctx.monitor.as_ref(), written, size, outcome != Outcome::Redo);
        self.done.push(FileResult { ndx, outcome });
        Ok(())
    }

    /// Decide the fate of a finished file: published (or staged), redo, or failed.
    fn conclude(&mut self, mut cur: Current, ok_sum: bool, flushed: Option<std::fs::File>) -> Outcome {
        let e = cur.entry.clone();
        let name = crate::text::escape_name(&e.name);
        if let Some(why) = cur.broken.take() {
            cur.discard();
            self.ctx.monitor.local_error(&format!("{name}: {why}"));
            if !ok_sum && self.retried.insert(cur.ndx) {
                self.pending_redo.push(cur.ndx);
                return Outcome::Redo;
            }
            self.rep.failed.push(cur.ndx);
            return Outcome::Failed;
        }
        if !ok_sum {
            cur.discard();
            if self.retried.insert(cur.ndx) {
                self.pending_redo.push(cur.ndx);
                return Outcome::Redo;
            }
            self.ctx.monitor.local_error(&format!("{name}: failed verification -- update discarded"));
            self.rep.failed.push(cur.ndx);
            return Outcome::Failed;
        }
        let Some(f) = flushed else {
            self.rep.failed.push(cur.ndx);
            return Outcome::Failed;
        };
        let mode = if self.ctx.opts.perms { Some(e.mode & 0o7777) } else { Some(0o644) };
        let mtime = if self.ctx.opts.times { Some((e.mtime, e.mtime_nsec)) } else { None };
        let mut attr_ok = crate::engine::dest::set_file_attrs(&f, mode, mtime);
        if attr_ok.is_ok() && self.ctx.opts.am_root && (self.ctx.opts.owner || self.ctx.opts.group) {
            let uid = self.ctx.owner_of(&e);
            let gid = self.ctx.group_of(&e);
            attr_ok = rustix::fs::fchown(&f, uid.map(rustix::fs::Uid::from_raw), gid.map(rustix::fs::Gid::from_raw))
                .map_err(std::io::Error::from);
        }
        if let Err(err) = attr_ok {
            cur.discard();
            self.ctx.monitor.local_error(&format!("{name}: {err}"));
            self.rep.failed.push(cur.ndx);
            return Outcome::Failed;
        }
        // rsync's default publishes the verified file now, so nothing about
        // it stays in memory until the end of the run.
        let placed = if cur.anon {
            crate::engine::commit::place_anon(&self.ctx, &cur.dir, &e.name, &f, cur.ndx).map(|()| None)
        } else {
            drop(f);
            crate::engine::commit::place(&self.ctx, &cur.dir, &e.name, cur.tmp, cur.ndx)
        };
        match placed {
            Ok(Some(staged)) => self.rep.staged.push(staged),
            Ok(None) => self.rep.published += 1,
            Err(err) => {
                self.ctx.monitor.local_error(&format!("{name}: {err}"));
                self.rep.failed.push(cur.ndx);
                return Outcome::Failed;
            }
        }
        self.rep.files += 1;
        self.rep.bytes_written += cur.written;
        self.ctx.monitor.file_done(&e.name, cur.written);
        Outcome::Done
    }
}

impl Receiver {
    /// The stream ended inside `c` (connection cut, server error, stop
    /// signal). With `--partial-dir`, what arrived is kept there as the basis
    /// of the next attempt — unless nothing literal arrived (the temp then
    /// holds only blocks of the basis, and an existing partial stays as it
    /// is) or something already went wrong writing it. Otherwise the temp goes.
    fn interrupted(&mut self, c: Current) {
        let Current { entry, dir, tmp, out, broken, got_literal, .. } = c;
        if tmp.is_empty() {
            return; // no named temp: none was made, or an unnamed one, gone when closed
        }
        let keep = match (&self.ctx.partial, out) {
            (Some(p), Some(w)) if got_literal && broken.is_none() && !self.ctx.opts.dry_run => match w.into_inner() {
                Ok(_f) => Some(p),
                Err(err) => {
                    self.ctx.monitor.local_error(&format!(
                        "{}: write failed: {} -- partial file discarded",
                        crate::text::escape_name(&entry.name),
                        err
                    ));
                    None
                }
            },
            _ => None,
        };
        let Some(p) = keep else {
            let _ = dir.unlink(&tmp);
            return;
        };
        let base = dest::split_parent(&entry.name).1;
        if let Err(err) = p.keep(&dir, &tmp, base) {
            let _ = dir.unlink(&tmp);
            self.ctx.monitor.local_error(&format!(
                "{}: cannot keep the partial file: {err} -- discarded",
                crate::text::escape_name(&entry.name)
            ));
        } else {
            self.rep.kept_partial += 1;
        }
    }
}

/// Whether unnamed temps can be made in `dir` and then named: `O_TMPFILE`,
/// and a link by descriptor or through `/proc/self/fd` (before Linux 6.10,
/// linking by descriptor needs CAP_DAC_READ_SEARCH, and a chroot may have
/// no `/proc`). Checked once with a throwaway file, so that a file is never
/// written to a temp that cannot be given its name.
fn anon_temps_work(dir: &DirHandle, ctx: &Ctx) -> bool {
    let Some(f) = dir.create_anon() else { return false };
    match dest::under_tmp_name(b"probe", || ctx.unique(), |t| dir.link_anon(&f, t)) {
        Ok((probe, ())) => {
            let _ = dir.unlink(&probe);
            true
        }
        Err(_) => false,
    }
}

/// Write buffer for a file of `size` bytes (the sender's length; the real
/// one may differ): the whole file when it is small, so a typical archive
/// file is one `write(2)`, and at most 256 KiB for large ones — big enough
/// for long sequential writes, small enough that a fresh buffer per file
/// costs little memory and no page faults beyond what the file needs.
fn write_buffer_len(size: i64) -> usize {
    const MIN: u64 = 4 << 10;
    const MAX: u64 = 256 << 10;
    (size.max(0) as u64).clamp(MIN, MAX) as usize
}

fn write_out(cur: &mut Current, data: &[u8]) {
    cur.hasher.update(data);
    cur.written += data.len() as u64;
    if cur.broken.is_some() {
        return;
    }
    if let Some(w) = cur.out.as_mut() {
        if let Err(err) = w.write_all(data) {
            cur.broken = Some(format!("write failed: {err}"));
        }
    }
}

/// Read blocks `first..` (up to `end`, all valid indices) of the basis into
/// the free end of the write buffer, as many whole blocks as fit, and hash
/// them; returns the index after the last one read. The bytes stay *staged*
/// (not yet part of the buffer) so the caller can show them to the
/// decompressor; [`Current::commit_staged`] then keeps them for writing.
/// Without a basis the file is already broken and the blocks hash as zeros,
/// as before; without a temp file one block at a time goes to `spare`.
fn copy_blocks(cur: &mut Current, spare: &mut Vec<u8>, first: u32, end: u32) -> u32 {
    let head = cur.head;
    let want = head.block_len(first);
    let (dst, j) = match cur.out.as_mut() {
        Some(out) => {
            if out.free() < want {
                if let Err(err) = out.flush_buf() {
                    cur.broken.get_or_insert(format!("write failed: {err}"));
                }
            }
            let room = out.free();
            let mut j = first;
            let mut n = 0usize;
            while j < end && n + head.block_len(j) <= room {
                n += head.block_len(j);
                j += 1;
            }
            if j == first {
                // Cannot happen (the buffer holds a whole block); read it anyway
                // through a grown buffer rather than misbehave.
                out.reserve_free(want);
                n = want;
                j = first + 1;
            }
            (out.stage(n), j)
        }
        None => {
            // No temp file (the file is already broken): the block is still
            // read and hashed, so the verdict (failed, or a redo when the
            // checksum also fails) stays what it always was.
            cur.broken.get_or_insert("cannot create temp file".into());
            spare.clear();
            spare.resize(want, 0);
            (&mut spare[..], first + 1)
        }
    };
    let off = first as u64 * head.blength.max(0) as u64;
    match cur.basis.as_ref() {
        Some(b) => {
            if let Err(err) = b.read_exact_at(dst, off) {
                // The basis changed under us; the checksum will catch it.
                cur.broken.get_or_insert(format!("basis file shrank: {err}"));
                dst.fill(0);
            }
        }
        None => {
            cur.broken.get_or_insert("block reference without a basis file".into());
            dst.fill(0);
        }
    }
    cur.hasher.update(dst);
    cur.written += dst.len() as u64;
    j
}

impl Current {
    /// Keep the bytes [`copy_blocks`] staged as written data (dropped instead
    /// when the file is already broken: nothing more is written to it).
    fn commit_staged(&mut self) {
        let broken = self.broken.is_some();
        if let Some(o) = self.out.as_mut() {
            o.commit(!broken);
        }
    }
}

/// The temp file and its write buffer: `BufWriter`'s job, plus a way to fill
/// the buffer's free space directly (matched blocks are read from the basis
/// into it, instead of into a block buffer and then copied, which was 15 % of
/// the instructions of a 500 MB delta update).
struct OutFile {
    f: File,
    /// Capacity `cap`, allocated once and never zero-filled up front (a fresh
    /// pull never reads blocks into it). `buf[..used]` is data to write;
    /// `buf.len()` is how far it has ever been initialised.
    buf: Vec<u8>,
    cap: usize,
    used: usize,
    /// Bytes after `used` filled by [`OutFile::stage`], not yet committed.
    staged: usize,
}

impl OutFile {
    fn new(f: File, cap: usize) -> Self {
        let cap = cap.max(1);
        OutFile { f, buf: Vec::with_capacity(cap), cap, used: 0, staged: 0 }
    }

    fn free(&self) -> usize {
        self.cap - self.used
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        let r = self.f.write_all(&self.buf[..self.used]);
        self.used = 0;
        r
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.len() > self.free() {
            self.flush_buf()?;
        }
        if data.len() >= self.cap {
            return self.f.write_all(data);
        }
        // Append after the data (what lies beyond it was already written).
        self.buf.truncate(self.used);
        self.buf.extend_from_slice(data);
        self.used += data.len();
        Ok(())
    }

    /// Make room for `n` more bytes, growing the buffer if it is smaller.
    fn reserve_free(&mut self, n: usize) {
        if self.free() < n {
            self.cap = self.used + n;
            self.buf.reserve_exact(self.cap - self.buf.len());
        }
    }

    /// The next `n` free bytes (`n <= free()`), to be filled and then
    /// committed or dropped. Only bytes never initialised before are zeroed.
    fn stage(&mut self, n: usize) -> &mut [u8] {
        let end = self.used + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.staged = n;
        &mut self.buf[self.used..end]
    }

    fn staged(&self) -> &[u8] {
        &self.buf[self.used..self.used + self.staged]
    }

    fn commit(&mut self, keep: bool) {
        if keep {
            self.used += self.staged;
        }
        self.staged = 0;
    }

    /// Write what is buffered and hand back the file.
    fn into_inner(mut self) -> std::io::Result<File> {
        self.flush_buf()?;
        Ok(self.f)
    }
}

#[cfg(test)]
mod tests {
    use super::OutFile;
    use std::io::{Read, Seek};

    /// Literal writes, staged blocks (kept or dropped), writes larger than
    /// the buffer and flushes all land in the file in order.
    #[test]
    fn out_file_keeps_order_and_drops_uncommitted_blocks() {
        let f = tempfile::tempfile().unwrap();
        let mut o = OutFile::new(f.try_clone().unwrap(), 8);
        let mut want = Vec::new();
        o.write_all(b"abc").unwrap();
        want.extend_from_slice(b"abc");
        o.stage(4).copy_from_slice(b"DEFG");
        assert_eq!(o.staged(), b"DEFG");
        o.commit(true);
        want.extend_from_slice(b"DEFG");
        o.flush_buf().unwrap(); // the buffer is now initialised up to 7
        o.stage(5).copy_from_slice(b"xxxxx");
        o.commit(false); // a broken file's block: dropped
        assert_eq!(o.free(), 8);
        o.write_all(b"hi").unwrap();
        want.extend_from_slice(b"hi");
        o.stage(6).copy_from_slice(b"JKLMNO");
        o.commit(true);
        want.extend_from_slice(b"JKLMNO");
        o.write_all(b"a longer run than the buffer").unwrap();
        want.extend_from_slice(b"a longer run than the buffer");
        o.reserve_free(20);
        o.stage(20).copy_from_slice(b"twenty bytes exactly");
        o.commit(true);
        want.extend_from_slice(b"twenty bytes exactly");
        let mut f = o.into_inner().unwrap();
        let mut got = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
    }
}
