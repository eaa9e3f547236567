//! One transfer, end to end: drives a [`ClientSession`] over a [`Connection`],
//! runs the generator and receiver on blocking threads so hashing and disk I/O
//! stay off the reactor, and publishes the result.
//!
//! Requests flow while earlier files are still arriving (the generator runs
//! ahead through a bounded queue, as rsync's separate generator process does);
//! the receiver is fed through a bounded queue too, so a slow disk slows the
//! socket instead of growing memory.

pub mod commit;
pub mod deadline;
pub mod dest;
pub mod generator;
pub mod monitor;
pub mod partial;
pub mod pull;
pub mod receiver;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::exit::{ExitCode, IOERR_GENERAL, IOERR_VANISHED};
use crate::filter::FilterList;
use crate::proto::flist::FileList;
use crate::proto::session::{ClientSession, Event, Negotiated, ServerStats, SessionConfig, SessionError};
use crate::transport::{Connection, TransportError};

use self::commit::{CommitReport, DeleteOpts};
use self::generator::{Ctx, GenCmd, GenOut, GenReport, LocalOpts};
use self::monitor::Monitor;
use self::receiver::{FileResult, Outcome, Receiver, RecvIn, RecvReport};

/// Literal bytes after which a batch for the receiver is sent even before
/// the read that produced it is fully decoded. Kept at the input buffer's
/// size ([`crate::proto::session::READ_BUFFER`]): tokens pin their buffer.
const RECV_BATCH_BYTES: usize = 64 * 1024;
/// Generator messages handled in one turn of the session loop at most (the
/// rest wait for the next turn, so input is never starved).
const GEN_DRAIN: usize = 256;
/// Batches the receiver's queue holds (see where it is created).
const RECV_QUEUE_BATCHES: usize = 2;

static SHUTDOWN: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();

fn shutdown_sender() -> &'static tokio::sync::watch::Sender<bool> {
    SHUTDOWN.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// Ask every running transfer to stop: each aborts its session, removes its
/// temp files and publishes nothing (a signal handler calls this).
pub fn request_shutdown() {
    shutdown_sender().send_replace(true);
}

/// Whether a shutdown was requested.
pub fn shutdown_requested() -> bool {
    *shutdown_sender().borrow()
}

/// What to do with the file list once it arrives.
#[derive(Clone)]
pub struct SyncJob {
    pub dest: PathBuf,
    pub local: LocalOpts,
    pub delete: DeleteOpts,
    pub filters: Arc<FilterList>,
    /// Only receive the file list (for `ls`); no transfer, no local effects.
    pub list_only: bool,
    /// What was asked for: the names the server may list, and the directories
    /// whose contents it may describe (and so where --delete may act).
    pub scope: Scope,
    /// `--numeric-ids`: keep the server's ids instead of mapping names.
    pub numeric_ids: bool,
    /// Paths renamed into place only after everything else (markers, indexes).
    pub late_publish: commit::LatePublish,
    /// `--delay-updates`: stage every file and rename them all into place
    /// together at the end; otherwise each file takes its final name as soon
    /// as it is verified (rsync's default), and only the late paths wait.
    pub delay_updates: bool,
    /// `--partial-dir`: keep interrupted transfers there and resume from them.
    pub partial_dir: Option<partial::PartialDir>,
    /// Glob patterns of top-level names that say the upstream is itself being
    /// updated (ftpsync's `Archive-Update-in-Progress-*`): when the list has
    /// one, the late phase (the `late_publish` paths) and deletions are held
    /// back, so the mirror never publishes index files for a half-updated tree.
    pub update_markers: Vec<Vec<u8>>,
    /// A cap on the size of each listed regular file: a list with a larger
    /// one fails the transfer (exit 2) before anything is requested. For
    /// pulls of metadata the planners parse with their own size limit (the
    /// RECENT files): a hostile server must not make them fetch 1 GiB first.
    pub max_file_size: Option<u64>,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub exit: Option<ExitCode>,
    pub protocol: i32,
    pub server_stats: Option<ServerStats>,
    pub list: Option<Arc<FileList>>,
    pub files_in_list: u64,
    pub total_size: i64,
    pub files_transferred: u64,
    pub literal_bytes: u64,
    pub matched_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub published: u64,
    pub deleted: u64,
    pub local_errors: u64,
    pub io_error: i32,
    pub delete_skipped_io: bool,
    /// The upstream's top level had this update-in-progress marker
    /// ([`SyncJob::update_markers`]): late paths and deletions were held back.
    pub upstream_updating: Option<Vec<u8>>,
    /// Late paths not published because of `upstream_updating`.
    pub late_held: u64,
}

impl SyncReport {
    pub fn exit_code(&self) -> ExitCode {
        self.exit.unwrap_or(ExitCode::Ok)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Session(#[from] SessionError),
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("{msg}")]
    Local { msg: String, code: ExitCode },
}

impl SyncError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SyncError::Session(e) => e.exit_code(),
            SyncError::Transport(e) => e.exit_code(),
            SyncError::Local { code, .. } => *code,
        }
    }

    fn local(msg: impl Into<String>, code: ExitCode) -> Self {
        SyncError::Local { msg: msg.into(), code }
    }
}

/// One list the generator and receiver are still working on (incremental recursion).
#[derive(Debug)]
struct Track {
    start: i32,
    len: i32,
    generated: bool,
    outstanding: usize,
}

/// Threads and queues of a running transfer.
struct Running {
    ctx: Arc<Ctx>,
    gen_cmd: mpsc::UnboundedSender<GenCmd>,
    recv_tx: Option<mpsc::Sender<Vec<RecvIn>>>,
    /// Messages for the receiver not sent yet: everything one read produced
    /// goes as one batch (one hand-over to the receiver thread, not one per
    /// token), or earlier when the batch's data reaches [`RECV_BATCH_BYTES`].
    recv_batch: Vec<RecvIn>,
    recv_batch_bytes: usize,
    recv_join: Option<tokio::task::JoinHandle<RecvReport>>,
    /// The receiver's report, when it stopped early and was already joined.
    recv_report: Option<RecvReport>,
    /// Every generator pass so far, merged as each ends (one report per
    /// inc-recursion list would cost ~200 bytes per directory even when empty).
    gen_report: GenReport,
    /// Lists not yet finished, oldest first (incremental recursion).
    tracks: VecDeque<Track>,
    /// Files whose redo request is on its way (not yet counted again).
    redo_pending: HashSet<i32>,
    flist_eof: bool,
    phase0_ended: bool,
    /// A temp DEST used for a dry run against a missing destination.
    scratch_dest: Option<PathBuf>,
}

impl Running {
    /// Incremental recursion: with the last list walked, the progress totals are final.
    fn note_totals_final(&self) {
        if self.ctx.inc && self.flist_eof && self.tracks.iter().all(|t| t.generated) {
            self.ctx.progress.totals_final(self.ctx.monitor.as_ref());
        }
    }
}

/// Run one session to completion: module listing (module `None`), file
/// listing (`job.list_only`), or a sync into `job.dest`.
pub async fn run(
    mut conn: Connection,
    cfg: SessionConfig,
    job: Option<SyncJob>,
    mon: Arc<dyn Monitor>,
) -> Result<SyncReport, SyncError> {
    let mut session = ClientSession::new(cfg)?;
    conn.send(session.take_output());
    let (gen_tx, mut gen_rx) = mpsc::channel::<GenOut>(1024);
    let (res_tx, mut res_rx) = mpsc::unbounded_channel::<Vec<FileResult>>();
    let mut state = Loop {
        job,
        mon: mon.clone(),
        running: None,
        negotiated: None,
        report: SyncReport::default(),
        gen_tx,
        res_tx,
    };
    let mut shutdown = shutdown_sender().subscribe();
    let deadline = deadline::current();
    let mut handshake_done = false;
    let mut keepalive = tokio::time::interval(Duration::from_secs(3600));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    let result: Result<(), SyncError> = async {
        loop {
            if !session.wants_input() {
                break;
            }
            if *shutdown.borrow() {
                return Err(SyncError::local("stopped by a signal", ExitCode::Signal));
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    return Err(SyncError::local("stopped by a signal", ExitCode::Signal));
                }
                // An overall deadline (`--stop-after`, `wall_timeout`): stop like
                // a failed run (verified files published, nothing deleted).
                _ = deadline::reached(deadline.as_ref()) => {
                    let msg = deadline.as_ref().map(|d| d.message()).unwrap_or_default();
                    return Err(SyncError::local(msg, ExitCode::Timeout));
                }
                Some(g) = gen_rx.recv() => {
                    state.on_gen(g, &mut session)?;
                    // Take whatever else the generator has queued, so its
                    // requests leave in one write, not one per file.
                    for _ in 0..GEN_DRAIN {
                        let Ok(g) = gen_rx.try_recv() else { break };
                        state.on_gen(g, &mut session)?;
                    }
                }
                Some(rs) = res_rx.recv() => {
                    for r in rs {
                        state.on_result(r, &mut session)?;
                    }
                }
                // Straight into the session's input buffer: literal data is
                // not copied again on its way to the receiver.
                r = conn.read_buf(session.input_buffer()) => {
                    let n = r?;
                    if n == 0 { session.handle_eof()?; } else { session.process_input()?; }
                }
                _ = keepalive.tick() => session.keepalive(),
            }
            while let Some(ev) = session.poll_event() {
                if !handshake_done && matches!(ev, Event::Negotiated(_) | Event::Text(_) | Event::ListingDone) {
                    // The daemon answered: from now on only --timeout applies.
                    handshake_done = true;
                    conn.handshake_done();
                }
                if let Some(t) = state.handle(ev, &mut session).await? {
                    // The daemon's own timeout: keep the link alive well inside it.
                    let secs = (t / 2).max(1) as u64;
                    keepalive = tokio::time::interval(Duration::from_secs(secs));
                    keepalive.tick().await;
                }
            }
            state.flush_receiver().await?;
            conn.send(session.take_output());
        }
        Ok(())
    }
    .await;
    state.report.bytes_read = conn.bytes_read;
    let written = conn.bytes_written.clone();
    if let Err(e) = &result {
        session.abort(e.exit_code());
        conn.send(session.take_output());
    }
    let _ = conn.finish().await;
    state.report.bytes_written = written.load(std::sync::atomic::Ordering::Relaxed);
    state.report.io_error = session.io_error();
    // Wind down the receiver and publish what is complete — unless we were told
    // to stop, in which case nothing is published and every temp is removed.
    let cancelled = matches!(&result, Err(SyncError::Local { code: ExitCode::Signal, .. }));
    let finish = state.finish(result.is_ok(), cancelled, &session).await;
    result?;
    finish?;
    Ok(state.report)
}

struct Loop {
    job: Option<SyncJob>,
    mon: Arc<dyn Monitor>,
    running: Option<Running>,
    negotiated: Option<Negotiated>,
    report: SyncReport,
    gen_tx: mpsc::Sender<GenOut>,
    res_tx: mpsc::UnboundedSender<Vec<FileResult>>,
}

impl Loop {
    /// Handle one event; returns a new idle timeout in seconds when the daemon set one.
    async fn handle(&mut self, ev: Event, session: &mut ClientSession) -> Result<Option<u32>, SyncError> {
        match ev {
            Event::Text(t) => self.mon.text(&t),
            Event::ListingDone | Event::Finished => tracing::debug!("session finished"),
            Event::Negotiated(n) => {
                self.report.protocol = n.protocol;
                self.negotiated = Some(n);
            }
            Event::Message { kind, text } => self.mon.message(kind, &text),
            Event::IoTimeout(t) => return Ok(Some(t)),
            Event::FileList(list) => self.on_list(list, None, session)?,
            Event::SubList { parent, list } => self.on_list(list, Some(parent), session)?,
            Event::FlistEof => {
                if let Some(run) = self.running.as_mut() {
                    run.flist_eof = true;
                    run.note_totals_final();
                }
                self.check_lists(session)?;
            }
            Event::ListDone(start) => tracing::trace!(start, "sender freed a list"),
            Event::FileStart { ndx, head } => self.to_receiver(RecvIn::Start { ndx, head }).await?,
            Event::Token { token, .. } => self.to_receiver(RecvIn::Token(token)).await?,
            Event::FileEnd { checksum, .. } => self.to_receiver(RecvIn::End { checksum }).await?,
            Event::NoSend(ndx) => self.to_receiver(RecvIn::NoSend(ndx)).await?,
            Event::PhaseEnded(0) => {
                tracing::debug!("phase 0 ended");
                let Some(run) = self.running.as_ref() else {
                    // Listing only, or nothing to transfer: end the redo phase at once.
                    session.end_phase()?;
                    return Ok(None);
                };
                if run.ctx.inc {
                    // With incremental recursion redo happened list by list in phase 0.
                    session.end_phase()?;
                    return Ok(None);
                }
                let (tx, rx) = oneshot::channel();
                self.to_receiver(RecvIn::Barrier(tx)).await?;
                self.flush_receiver().await?;
                let redo = match rx.await {
                    Ok(r) => r,
                    Err(_) => return Err(self.receiver_failed().await),
                };
                if redo.is_empty() {
                    session.end_phase()?;
                } else if let Some(run) = self.running.as_ref() {
                    let _ = run.gen_cmd.send(GenCmd::Redo(redo));
                }
            }
            Event::PhaseEnded(p) => tracing::debug!(phase = p, "phase ended"),
            Event::Stats(s) => {
                tracing::debug!(?s, "server stats");
                self.report.server_stats = Some(s)
            }
        }
        Ok(None)
    }

    /// A message from the generator.
    fn on_gen(&mut self, g: GenOut, session: &mut ClientSession) -> Result<(), SyncError> {
        let Some(run) = self.running.as_mut() else { return Ok(()) };
        match g {
            GenOut::Request { ndx, iflags, head, sums } => {
                session.request_file(ndx, iflags, head, &sums)?;
                if run.ctx.inc && !run.redo_pending.remove(&ndx) {
                    if let Some(t) = run.tracks.iter_mut().find(|t| ndx >= t.start && ndx < t.start + t.len) {
                        t.outstanding += 1;
                    }
                }
            }
            GenOut::ListDone { ndx_start, report } => {
                tracing::debug!(ndx_start, requested = report.requested.len(), errors = report.errors, "list generated");
                run.gen_report.absorb(report);
                if run.ctx.inc {
                    if let Some(t) = run.tracks.iter_mut().find(|t| t.start == ndx_start) {
                        t.generated = true;
                    }
                    run.note_totals_final();
                    self.check_lists(session)?;
                } else {
                    run.ctx.progress.totals_final(run.ctx.monitor.as_ref());
                    session.end_phase()?;
                }
            }
            GenOut::RedoDone(report) => {
                let inc = run.ctx.inc;
                run.gen_report.absorb(report);
                if !inc {
                    session.end_phase()?;
                }
            }
        }
        Ok(())
    }

    /// A per-file result from the receiver (used for list completion).
    fn on_result(&mut self, r: FileResult, session: &mut ClientSession) -> Result<(), SyncError> {
        let Some(run) = self.running.as_mut() else { return Ok(()) };
        if !run.ctx.inc {
            return Ok(());
        }
        if r.outcome == Outcome::Redo {
            // Re-requested at once; the list stays open until the retry ends.
            run.redo_pending.insert(r.ndx);
            let _ = run.gen_cmd.send(GenCmd::Redo(vec![r.ndx]));
            return Ok(());
        }
        if let Some(t) = run.tracks.iter_mut().find(|t| r.ndx >= t.start && r.ndx < t.start + t.len) {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        self.check_lists(session)
    }

    /// Incremental recursion: tell the sender about finished lists, oldest
    /// first (generator.c check_for_finished_files); the last one ends phase 0.
    fn check_lists(&mut self, session: &mut ClientSession) -> Result<(), SyncError> {
        let Some(run) = self.running.as_mut() else { return Ok(()) };
        if !run.ctx.inc {
            return Ok(());
        }
        while let Some(front) = run.tracks.front() {
            if !front.generated || front.outstanding > 0 || run.phase0_ended {
                break;
            }
            if run.tracks.len() == 1 {
                if !run.flist_eof {
                    break;
                }
                session.end_phase()?;
                run.phase0_ended = true;
            } else {
                session.end_list()?;
            }
            run.ctx.remove_list(front.start);
            run.tracks.pop_front();
        }
        Ok(())
    }

    /// Queue a message for the receiver; it goes with the current batch
    /// ([`Loop::flush_receiver`]).
    async fn to_receiver(&mut self, m: RecvIn) -> Result<(), SyncError> {
        let Some(run) = self.running.as_mut() else {
            return Err(SyncError::Session(SessionError::Violation("file data without a transfer".into())));
        };
        if run.recv_tx.is_none() {
            return Ok(());
        }
        if let RecvIn::Token(crate::proto::session::Token::Data(d)) = &m {
            run.recv_batch_bytes += d.len();
        }
        run.recv_batch.push(m);
        if run.recv_batch_bytes >= RECV_BATCH_BYTES {
            self.flush_receiver().await?;
        }
        Ok(())
    }

    /// Hand the queued messages to the receiver thread (waiting while its
    /// bounded queue is full: a slow disk slows the socket, memory stays flat).
    async fn flush_receiver(&mut self) -> Result<(), SyncError> {
        let Some(run) = self.running.as_mut() else { return Ok(()) };
        if run.recv_batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut run.recv_batch);
        run.recv_batch_bytes = 0;
        let Some(tx) = run.recv_tx.as_ref() else { return Ok(()) };
        if tx.send(batch).await.is_err() {
            return Err(self.receiver_failed().await);
        }
        Ok(())
    }

    /// The receiver stopped on data it could not apply: keep its report (staged
    /// files) and surface its reason as the stream error it is.
    async fn receiver_failed(&mut self) -> SyncError {
        let Some(run) = self.running.as_mut() else {
            return SyncError::Session(SessionError::Malformed("receiver stopped".into()));
        };
        let msg = match run.recv_join.take() {
            Some(j) => match j.await {
                Ok(rep) => {
                    let m = rep.fatal.clone().unwrap_or_else(|| "receiver stopped early".into());
                    run.recv_report = Some(rep);
                    m
                }
                Err(e) => format!("receiver crashed: {e}"),
            },
            None => run
                .recv_report
                .as_ref()
                .and_then(|r| r.fatal.clone())
                .unwrap_or_else(|| "receiver stopped".into()),
        };
        SyncError::Session(SessionError::Malformed(msg))
    }

    fn on_list(
        &mut self,
        list: FileList,
        parent: Option<Vec<u8>>,
        session: &mut ClientSession,
    ) -> Result<(), SyncError> {
        tracing::debug!(entries = list.entries.len(), ndx_start = list.ndx_start, "file list received");
        let list = Arc::new(list);
        self.report.files_in_list += list.entries.iter().flatten().count() as u64;
        if self.report.list.is_none() {
            self.report.list = Some(list.clone());
        }
        let Some(job) = self.job.clone() else {
            return Err(SyncError::Session(SessionError::Violation("file list in a module listing".into())));
        };
        check_names(&list, &job)?;
        if parent.is_none() && self.report.upstream_updating.is_none() {
            self.report.upstream_updating = update_marker(&list, &job.update_markers);
            if let Some(m) = &self.report.upstream_updating {
                tracing::debug!(marker = %crate::text::escape_name(m), "upstream update in progress");
            }
        }
        if !session.accepts_requests() {
            return Ok(()); // empty list: the server is about to exit
        }
        if job.list_only {
            if !session.inc_recurse() {
                session.end_phase()?;
            }
            return Ok(());
        }
        if self.running.is_none() {
            self.start_transfer(&job, session.inc_recurse())?;
        }
        let Some(run) = self.running.as_mut() else { return Ok(()) };
        run.ctx.add_list(list.clone());
        run.tracks.push_back(Track {
            start: list.ndx_start,
            len: list.entries.len() as i32,
            generated: false,
            outstanding: 0,
        });
        let _ = run.gen_cmd.send(GenCmd::List { list, parent });
        Ok(())
    }

    /// Open DEST and start the generator and receiver threads.
    fn start_transfer(&mut self, job: &SyncJob, inc: bool) -> Result<(), SyncError> {
        let n = self.negotiated.ok_or_else(|| SyncError::local("file list before negotiation", ExitCode::Protocol))?;
        let mut scratch_dest = None;
        let dest = if job.local.dry_run && !job.dest.exists() {
            let p = std::env::temp_dir().join(format!(".rmirror-dry-{}-{}", std::process::id(), unique_nanos()));
            scratch_dest = Some(p.clone());
            dest::Dest::open(&p, true)
        } else {
            dest::Dest::open(&job.dest, !job.local.dry_run)
        }
        .map_err(|e| SyncError::local(format!("cannot open destination {}: {e}", job.dest.display()), ExitCode::FileIo))?;
        let ctx = Arc::new(Ctx::new(
            dest,
            job.local.clone(),
            n.protocol,
            n.sums,
            self.mon.clone(),
            inc,
            job.scope.clone(),
            job.numeric_ids,
            unique_nanos() & 0xFFFF,
        )
        .with_partial(job.partial_dir.clone())
        .with_publishing(job.delay_updates, job.late_publish.clone()));
        // Bounded in batches; a batch carries the messages of one read (one
        // wake-up of the receiver thread instead of one per token), its
        // literal data at most one read or [`RECV_BATCH_BYTES`], so this caps
        // data in flight at RECV_QUEUE_BATCHES + 2 batches (queued, being
        // decoded, being written). Tokens keep their read buffer alive until
        // written, so depth costs peak RSS; too shallow a queue costs time
        // instead: with one batch the session task and the receiver took
        // turns, each waking the other for every 64 KiB (scenario (a) on
        // tmpfs: 1 batch 1.11 s, 2 batches 0.98 s, 4 batches 0.94 s, 8
        // batches 0.92 s). On ext4, where the receiver is the slow side and
        // the queue stays full, 4 batches put (a)'s peak RSS above rsync's
        // (8.6 against 8.2 MiB); 2 keep it below.
        let (recv_tx, recv_rx) = mpsc::channel::<Vec<RecvIn>>(RECV_QUEUE_BATCHES);
        let receiver = Receiver::new(ctx.clone(), n.compression, self.res_tx.clone())
            .map_err(|e| SyncError::local(format!("cannot start decompression: {e}"), ExitCode::Unsupported))?;
        let recv_join = tokio::task::spawn_blocking(move || receiver.run(recv_rx));
        let (gen_cmd, gen_cmd_rx) = mpsc::unbounded_channel::<GenCmd>();
        let c2 = ctx.clone();
        let tx = self.gen_tx.clone();
        tokio::task::spawn_blocking(move || generator::run_generator(c2, gen_cmd_rx, tx));
        self.running = Some(Running {
            ctx,
            gen_cmd,
            recv_tx: Some(recv_tx),
            recv_batch: Vec::new(),
            recv_batch_bytes: 0,
            recv_join: Some(recv_join),
            recv_report: None,
            gen_report: GenReport::default(),
            tracks: VecDeque::new(),
            redo_pending: HashSet::new(),
            flist_eof: false,
            phase0_ended: false,
            scratch_dest,
        });
        Ok(())
    }

    /// Stop the receiver and publish. `ok` = the session completed.
    async fn finish(&mut self, ok: bool, cancelled: bool, session: &ClientSession) -> Result<(), SyncError> {
        let Some(mut run) = self.running.take() else {
            self.report.exit = Some(self.exit_code(session, 0, false));
            return Ok(());
        };
        if !cancelled {
            // What arrived before a failure still reaches the receiver (an
            // interrupted file keeps it with --partial-dir).
            if let Some(tx) = run.recv_tx.as_ref() {
                let batch = std::mem::take(&mut run.recv_batch);
                if !batch.is_empty() {
                    let _ = tx.send(batch).await;
                }
            }
        }
        drop(run.recv_tx.take());
        let recv = match run.recv_join.take() {
            Some(j) => match j.await {
                Ok(r) => r,
                Err(e) => {
                    self.mon.local_error(&format!("receiver crashed: {e}"));
                    RecvReport::default()
                }
            },
            None => run.recv_report.take().unwrap_or_default(),
        };
        if let Some(f) = &recv.fatal {
            self.mon.local_error(f);
        }
        let job = self.job.clone().expect("a transfer has a job");
        let ctx = run.ctx.clone();
        let g = std::mem::take(&mut run.gen_report);
        let io_error = session.io_error();
        let deletions_unsafe = io_error & IOERR_GENERAL != 0;
        let dry = job.local.dry_run;
        let hold_late = self.report.upstream_updating.clone();
        let (commit, gen_errors, total, recv) = tokio::task::spawn_blocking(move || {
            let mut rep = CommitReport { published: recv.published + g.published, ..Default::default() };
            let mut recv = recv;
            let mut staged = g.staged;
            staged.append(&mut recv.staged);
            let links = g.links;
            let mut extraneous = g.extraneous;
            let mut dirs = g.dirs;
            let gen_errors = g.errors;
            let total = g.total_size;
            if cancelled {
                let kept = commit::discard(&ctx, &staged);
                if kept > 0 {
                    tracing::debug!(kept, "stopped: verified files moved to the partial dir");
                }
                return (rep, gen_errors + recv.failed.len() as u64, total, recv);
            }
            if !dry {
                commit::publish_filtered(&ctx, &mut staged, &mut rep, &job.late_publish, false);
                commit::link_followers(&ctx, &links, &mut rep);
                match &hold_late {
                    None => commit::publish_filtered(&ctx, &mut staged, &mut rep, &job.late_publish, true),
                    Some(marker) => {
                        // ftpsync's stage 2 waits for the upstream: keep the old
                        // indices (and everything they name) until it is done.
                        let late: Vec<_> = staged
                            .iter()
                            .filter(|s| !job.late_publish.is_empty() && job.late_publish.matches(&s.name))
                            .cloned()
                            .collect();
                        commit::discard(&ctx, &late);
                        rep.late_held = late.len() as u64;
                        ctx.monitor.local_error(&format!(
                            "upstream update in progress ({}): {} late path(s) and any deletions held back",
                            crate::text::escape_name(marker),
                            late.len()
                        ));
                    }
                }
            }
            if ok && hold_late.is_none() {
                // Files that could not be written (disk full, permissions) mean
                // this run did not reproduce the tree: delete nothing (plan M3).
                let local_failures = gen_errors + recv.failed.len() as u64 + rep.errors;
                let d = DeleteOpts {
                    io_error: deletions_unsafe,
                    local_failures,
                    dry_run: dry,
                    ..job.delete.clone()
                };
                commit::delete_extraneous(&ctx, &job.filters, &mut extraneous, &d, &mut rep);
            }
            if ok && !dry {
                commit::finish_dirs(&ctx, &mut dirs, &mut rep);
            }
            (rep, gen_errors + recv.failed.len() as u64, total, recv)
        })
        .await
        .map_err(|e| SyncError::local(format!("commit crashed: {e}"), ExitCode::FileIo))?;
        tracing::debug!(published = commit.published, deleted = commit.deleted, "commit done");
        if let Some(p) = run.scratch_dest.take() {
            let _ = std::fs::remove_dir_all(p);
        }
        self.report.total_size = total;
        self.report.files_transferred = recv.files;
        self.report.literal_bytes = recv.literal_bytes;
        self.report.matched_bytes = recv.matched_bytes;
        self.report.published = commit.published;
        self.report.deleted = commit.deleted;
        self.report.delete_skipped_io = commit.delete_skipped_io;
        self.report.late_held = commit.late_held;
        self.report.local_errors = gen_errors + commit.errors;
        let local = self.report.local_errors > 0;
        let mut code = self.exit_code(session, io_error, local);
        if code == ExitCode::Ok && commit.delete_limited {
            code = ExitCode::DelLimit;
        }
        self.report.exit = Some(code);
        Ok(())
    }

    fn exit_code(&self, session: &ClientSession, io_error: i32, local_errors: bool) -> ExitCode {
        if session.got_xfer_error() || local_errors || io_error & IOERR_GENERAL != 0 {
            ExitCode::Partial
        } else if io_error & IOERR_VANISHED != 0 {
            ExitCode::Vanished
        } else {
            ExitCode::Ok
        }
    }
}

/// The first top-level name of `list` that matches one of `patterns`.
fn update_marker(list: &FileList, patterns: &[Vec<u8>]) -> Option<Vec<u8>> {
    if patterns.is_empty() {
        return None;
    }
    list.entries
        .iter()
        .flatten()
        .filter(|e| e.name != b"." && !e.name.contains(&b'/'))
        .find(|e| patterns.iter().any(|p| crate::filter::wildmatch(p, &e.name)))
        .map(|e| e.name.to_vec())
}

/// Refuse names the server should never have sent: ones our own filter rules
/// exclude, and ones outside what we asked for — rsync 3.5.0's "rejecting
/// excluded/unrequested file-list name" (exit 4), before any filesystem effect.
fn check_names(list: &FileList, job: &SyncJob) -> Result<(), SyncError> {
    for e in list.entries.iter().flatten() {
        let is_dir = generator::is_dir(e.mode);
        if e.name != b"." && job.filters.rejects_flist_name(&e.name, is_dir) {
            return Err(SyncError::local(
                format!("ERROR: rejecting excluded file-list name: {}", crate::text::escape_name(&e.name)),
                ExitCode::Unsupported,
            ));
        }
        if let Some(cap) = job.max_file_size {
            if generator::is_reg(e.mode) && u64::try_from(e.size).map_or(true, |s| s > cap) {
                return Err(SyncError::local(
                    format!(
                        "ERROR: {} is listed with {} bytes, more than the limit of {cap} bytes for this transfer; nothing fetched",
                        crate::text::escape_name(&e.name),
                        e.size
                    ),
                    ExitCode::Protocol,
                ));
            }
        }
        if !job.scope.allows_name(&e.name, is_dir) {
            return Err(SyncError::local(
                format!("ERROR: rejecting unrequested file-list name: {}", crate::text::escape_name(&e.name)),
                ExitCode::Unsupported,
            ));
        }
    }
    Ok(())
}

/// What a pull asked for, relative to the transfer root.
///
/// A source ending in `/` (or a module root) asks for a whole tree: any name,
/// and every directory is complete. `rsync://h/m/dir/file` asks for `file`
/// only; `--files-from` for its names and their implied parent directories.
/// Only requested directories (and, when recursive, those below them) may be
/// treated as complete for `--delete` — so a hostile server cannot widen
/// deletions by marking an implied parent, or `.`, as a content directory.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Requested names without trailing `/`; empty means the whole tree.
    roots: Vec<Vec<u8>>,
    recursive: bool,
    /// A `--files-from` name was written `./name`: rsync (-R) then also sends
    /// the transfer root `.` (as the client asked), whose attributes apply to
    /// DEST itself. It never becomes a content directory.
    root_entry: bool,
}

impl Scope {
    /// Everything below the transfer root.
    pub fn whole_tree() -> Self {
        Scope { roots: vec![Vec::new()], recursive: true, root_entry: false }
    }

    /// The scope of a pull of remote path `path` (below the module).
    pub fn for_path(path: &[u8], recursive: bool) -> Self {
        if path.is_empty() || path.ends_with(b"/") || path == b"." || path.ends_with(b"/.") {
            return Scope::whole_tree();
        }
        let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        Scope { roots: vec![base.to_vec()], recursive, root_entry: false }
    }

    /// The scope of a `--files-from` pull.
    pub fn for_names(names: &[Vec<u8>], recursive: bool) -> Self {
        let root_entry = names.iter().any(|n| n.starts_with(b"./"));
        let roots = names
            .iter()
            .map(|n| {
                let n: &[u8] = n.strip_suffix(b"/").unwrap_or(n);
                let mut n = n;
                while let Some(r) = n.strip_prefix(b"./") {
                    n = r;
                }
                let n = n.strip_prefix(b"/").unwrap_or(n);
                if n == b"." {
                    Vec::new()
                } else {
                    n.to_vec()
                }
            })
            .collect();
        Scope { roots, recursive, root_entry }
    }

    fn root_matches(root: &[u8], name: &[u8]) -> bool {
        if root.iter().any(|b| b"*?[".contains(b)) {
            // The daemon glob-expands the path; accept what the pattern matches.
            crate::filter::wildmatch(root, name)
        } else {
            root == name
        }
    }

    fn under(name: &[u8], root: &[u8]) -> bool {
        if root.iter().any(|b| b"*?[".contains(b)) {
            let first = name.split(|&b| b == b'/').next().unwrap_or(name);
            return first.len() < name.len() && crate::filter::wildmatch(root, first);
        }
        name.len() > root.len() && name.starts_with(root) && name[root.len()] == b'/'
    }

    pub fn allows_name(&self, name: &[u8], is_dir: bool) -> bool {
        if name == b"." && is_dir && self.root_entry {
            return true;
        }
        self.roots.iter().any(|r| {
            if r.is_empty() {
                return true;
            }
            if name == b"." {
                return false;
            }
            if Self::root_matches(r, name) {
                return true;
            }
            // An implied parent directory of a requested name.
            if is_dir && r.len() > name.len() && r.starts_with(name) && r[name.len()] == b'/' {
                return true;
            }
            self.recursive && Self::under(name, r)
        })
    }

    /// Whether the server may describe `dir`'s complete contents (so that
    /// --delete may remove what the list lacks there).
    pub fn allows_content_dir(&self, dir: &[u8]) -> bool {
        self.roots.iter().any(|r| {
            if r.is_empty() {
                return true;
            }
            dir != b"." && self.recursive && (Self::root_matches(r, dir) || Self::under(dir, r))
        })
    }
}

fn unique_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::Scope;

    #[test]
    fn files_from_scope() {
        let req = vec![b"a/b/c.txt".to_vec(), b"d/".to_vec()];
        let s = Scope::for_names(&req, false);
        assert!(s.allows_name(b"a/b/c.txt", false));
        assert!(s.allows_name(b"a", true));
        assert!(s.allows_name(b"a/b", true));
        assert!(!s.allows_name(b"a/b", false));
        assert!(!s.allows_name(b"a/x", false));
        assert!(s.allows_name(b"d", true));
        assert!(!s.allows_name(b"d/e", false));
        assert!(!s.allows_name(b".", true));
        assert!(!s.allows_content_dir(b"a"));
        assert!(!s.allows_content_dir(b"."));
        let r = Scope::for_names(&req, true);
        assert!(r.allows_name(b"d/e", false));
        assert!(!r.allows_name(b"dd/e", false));
        assert!(r.allows_content_dir(b"d"));
        assert!(r.allows_content_dir(b"d/x"));
        assert!(!r.allows_content_dir(b"a"), "an implied parent is never complete");
        // `./name` asks for the root entry too (rsync -R sends it)
        let dot = Scope::for_names(&[b"./a/b".to_vec()], false);
        assert!(dot.allows_name(b".", true) && dot.allows_name(b"a/b", false));
        assert!(!dot.allows_name(b".", false));
        assert!(!dot.allows_content_dir(b"."));
    }

    #[test]
    fn path_scope() {
        let whole = Scope::for_path(b"pub/", true);
        assert!(whole.allows_name(b".", true) && whole.allows_name(b"x/y", false));
        assert!(whole.allows_content_dir(b"."));
        let file = Scope::for_path(b"pub/a.iso", true);
        assert!(file.allows_name(b"a.iso", false));
        assert!(!file.allows_name(b".", true));
        assert!(!file.allows_name(b".ssh", true));
        assert!(!file.allows_name(b".ssh/authorized_keys", false));
        assert!(!file.allows_content_dir(b"."));
        let dir = Scope::for_path(b"pub/dir", true);
        assert!(dir.allows_name(b"dir/x", false));
        assert!(dir.allows_content_dir(b"dir"));
        assert!(!dir.allows_content_dir(b"."));
        let glob = Scope::for_path(b"pub/*.iso", false);
        assert!(glob.allows_name(b"a.iso", false));
        assert!(!glob.allows_name(b"a.txt", false));
    }
}
