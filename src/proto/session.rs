//! The client session: one rsync daemon connection, pulling, as a state machine
//! over bytes.
//!
//! The driver feeds received bytes with [`ClientSession::handle_input`] (and
//! [`ClientSession::handle_eof`]), sends whatever [`ClientSession::take_output`]
//! returns, and drains [`ClientSession::poll_event`]. The engine answers events
//! with commands: [`ClientSession::request_file`] and [`ClientSession::end_phase`].
//! No I/O and no clock live here, so fuzzers and fixture replays drive exactly
//! this code.
//!
//! Wire order (protocol-brief §3–§13): greeting, module line, text lines (MOTD,
//! `AUTHREQD`, `OK`/`EXIT`/`@ERROR`), server argv, compat flags and name
//! negotiation (≥ 30), checksum seed, then multiplexed: our filter list, the
//! server's file list, then replies to our requests interleaved with NDX_DONE
//! echoes, stats and the goodbye handshake.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use crate::checksum::{CsumType, SumHead, SumParams};
use crate::exit::{ExitCode, IOERR_GENERAL, IOERR_VALID_MASK};
use crate::proto::flist::{FileList, FlistDecoder, FlistOptions, FlistProgress};
use crate::proto::handshake::{self, DaemonLine};
use crate::proto::mux::{self, FrameHeader};
use crate::proto::options::{self, CompressRequest, TransferOpts};
use crate::proto::token::{Compression, TokenFramer, WireToken};
use crate::proto::wire::{put, DecodeError, NdxState, Reader, NDX_DEL_STATS, NDX_DONE, NDX_FLIST_EOF, NDX_FLIST_OFFSET};

/// ITEM_* bits (`rsync.h`).
pub const ITEM_REPORT_CHANGE: u16 = 0x0002;
pub const ITEM_REPORT_SIZE: u16 = 0x0004;
pub const ITEM_REPORT_TIME: u16 = 0x0008;
pub const ITEM_REPORT_PERMS: u16 = 0x0010;
pub const ITEM_BASIS_TYPE_FOLLOWS: u16 = 0x0800;
pub const ITEM_XNAME_FOLLOWS: u16 = 0x1000;
pub const ITEM_IS_NEW: u16 = 0x2000;
pub const ITEM_LOCAL_CHANGE: u16 = 0x4000;
pub const ITEM_TRANSFER: u16 = 0x8000;

/// Most directories one session may announce (each may get a sub-list).
const MAX_DIRS: usize = 1 << 24;

/// The transport reads into [`ClientSession::input_buffer`] when it has at
/// least this much room; otherwise the buffer is renewed at [`READ_BUFFER`].
pub const MIN_READ_SPACE: usize = 32 * 1024;
/// Size of a fresh input buffer. Literal tokens are views into it, so a
/// buffer lives until the receiver wrote its last token: smaller buffers
/// keep less memory alive (256 KiB cost ~1.5 MiB of peak RSS in a 2,000-file
/// pull; 64 KiB instead of 128 took bench (a)'s peak from 8.11 to 7.87 MiB,
/// below rsync's 8.02, at the same wall and CPU time).
pub const READ_BUFFER: usize = 64 * 1024;
/// How much of a new MSG_DATA payload is joined at first to an item that
/// straddles the frame boundary (see `ClientSession::feed_data`).
const JOIN_STEP: usize = 1024;

/// How long a raw text line may grow while we wait for its newline.
const MAX_PENDING_LINE: usize = handshake::MAX_LINE;

/// How the session reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// An rsync daemon (`rsync://`, `host::`): text greeting, module, auth.
    #[default]
    Daemon,
    /// A server started over a remote shell (`ssh host rsync --server …`): the
    /// argv went on the command line, and versions are exchanged as 4-byte
    /// ints (`compat.c setup_protocol`).
    RemoteShell,
}

/// What the session was asked to do.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub mode: Mode,
    /// Highest protocol to offer (27..=32).
    pub max_protocol: i32,
    /// Module to open; `None` asks for the module listing.
    pub module: Option<String>,
    /// Remote path arguments, each starting with the module name.
    pub remote_paths: Vec<Vec<u8>>,
    pub user: String,
    pub password: Option<Vec<u8>>,
    pub opts: TransferOpts,
}

/// The kind of a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MsgKind {
    Info,
    Warning,
    Error,
    ErrorXfer,
}

/// Transfer statistics as the server reports them (`main.c handle_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServerStats {
    /// Bytes the server read (from us).
    pub server_read: i64,
    /// Bytes the server wrote (to us).
    pub server_written: i64,
    pub total_size: i64,
    pub flist_buildtime_ms: i64,
    pub flist_xfertime_ms: i64,
}

/// What was agreed with the server.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub protocol: i32,
    pub compat: i32,
    pub sums: SumParams,
    pub compression: Compression,
}

/// A token with owned data, as handed to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Literal bytes (plain) or one compressed payload (compressed streams):
    /// a view of the bytes as they were read from the connection, not a copy.
    Data(Bytes),
    /// `count` consecutive basis blocks starting at `first`.
    Blocks { first: u32, count: u32 },
}

/// Something the engine or the user must hear about.
#[derive(Debug)]
pub enum Event {
    /// A text line before `@RSYNCD: OK`/`EXIT`: MOTD or a module-listing line (raw bytes).
    Text(Vec<u8>),
    /// `@RSYNCD: EXIT`: the module listing is complete.
    ListingDone,
    Negotiated(Negotiated),
    Message { kind: MsgKind, text: Vec<u8> },
    /// The daemon asked us to time out sooner (MSG_IO_TIMEOUT), in seconds.
    IoTimeout(u32),
    /// A complete (sorted) file list: the only one, or with incremental
    /// recursion the first list or a directory's sub-list. An empty first list
    /// (non-incremental) means the server will exit.
    FileList(FileList),
    /// Incremental recursion: the sub-list of directory `parent` (its complete
    /// contents, when the directory is a content directory).
    SubList { parent: Vec<u8>, list: FileList },
    /// Incremental recursion: no more sub-lists will come.
    FlistEof,
    /// Incremental recursion: the sender echoed our NDX_DONE for the oldest
    /// list (which it has now freed); carries that list's `ndx_start`.
    ListDone(i32),
    /// The sender starts the reply for a requested file.
    FileStart { ndx: i32, head: SumHead },
    Token { ndx: i32, token: Token },
    FileEnd { ndx: i32, checksum: Vec<u8> },
    /// The sender could not send this requested file.
    NoSend(i32),
    /// The sender echoed the end of our phase `n` (0: normal pass done, 1: redo pass done).
    PhaseEnded(u32),
    Stats(ServerStats),
    /// The server closed the connection after a complete goodbye.
    Finished,
}

/// Why a session failed, and whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bytes that can never decode (rsync: "error in rsync protocol data stream").
    #[error("malformed data from server: {0}")]
    Malformed(String),
    /// The server sent something valid on its own but not allowed here.
    #[error("server broke the protocol: {0}")]
    Violation(String),
    /// The two sides cannot agree (versions, names).
    #[error("protocol incompatibility: {0}")]
    Incompatible(String),
    /// The daemon refused us with `@ERROR`.
    #[error("daemon refused: {0}")]
    Daemon(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Unsupported(String),
    /// A name that would escape the destination (rsync: "unsafe pathname", exit 4).
    #[error("{0}")]
    UnsafeName(String),
    /// A length beyond what rsync itself accepts (rsync's overflow exits, exit 2).
    #[error("server sent oversized data: {0}")]
    Overflow(String),
    /// The server ended the session with an exit code (MSG_ERROR_EXIT).
    #[error("server exited with code {0}")]
    PeerExit(i32),
    #[error("connection closed by server {0}")]
    UnexpectedEof(String),
    /// The engine misused the session (a bug on our side).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SessionError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            SessionError::Malformed(_) | SessionError::Violation(_) | SessionError::UnexpectedEof(_) => {
                ExitCode::StreamIo
            }
            SessionError::Incompatible(_) => ExitCode::Protocol,
            SessionError::Daemon(_) | SessionError::Auth(_) => ExitCode::StartClient,
            SessionError::Unsupported(_) | SessionError::UnsafeName(_) => ExitCode::Unsupported,
            SessionError::Overflow(_) => ExitCode::Protocol,
            SessionError::PeerExit(c) => ExitCode::from_peer(*c),
            SessionError::Internal(_) => ExitCode::Protocol,
        }
    }
}

impl From<DecodeError> for SessionError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Incomplete => SessionError::Internal("incomplete input treated as an error".into()),
            // rsync's exit codes for these: flist.c "unsafe pathname" aborts
            // with RERR_UNSUPPORTED; over-long names and link targets with 2.
            DecodeError::Malformed(m) if m.contains("unsafe pathname") => SessionError::UnsafeName(m),
            DecodeError::Malformed(m)
                if m.starts_with("file list: name too long") || m.starts_with("file list: symlink target length") =>
            {
                SessionError::Overflow(m)
            }
            DecodeError::Malformed(m) => SessionError::Malformed(m),
        }
    }
}

pub type SResult<T> = Result<T, SessionError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Remote-shell mode: waiting for the server's 4-byte protocol version.
    ShellVersion,
    /// Waiting for the server's greeting line.
    Greeting,
    /// Text lines until OK / EXIT / @ERROR.
    Lines,
    /// Compat flags (≥ 30).
    Compat,
    /// Negotiation strings (≥ 30 with varint flags).
    Strings,
    /// The checksum seed.
    Seed,
    /// Multiplexed phase.
    Running,
    /// Module listing finished; waiting for EOF.
    ListingEnd,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    Flist,
    Items,
    Tokens { ndx: i32, count: i32 },
    FileSum { ndx: i32 },
    Stats,
    FinalEcho,
    AwaitEof,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    ndx: i32,
    head: SumHead,
}

/// The client side of one daemon session.
pub struct ClientSession {
    cfg: SessionConfig,
    stage: Stage,
    rx: Rx,
    protocol: i32,
    compat: i32,
    server_digests: Vec<String>,
    sums: SumParams,
    compression: Compression,
    /// Raw bytes from the server not yet consumed (consuming advances its
    /// front). The transport reads straight into it ([`Self::input_buffer`]).
    inbuf: BytesMut,
    /// Demultiplexed MSG_DATA stream not yet consumed: a frame's payload split
    /// off `inbuf` (no copy), or an owned buffer when an item straddles frames.
    data: BytesMut,
    /// The rest of the last MSG_DATA payload, not yet on `data` (see `feed_data`).
    data_more: BytesMut,
    /// Bytes ready to send.
    out: Vec<u8>,
    /// Data written since the last frame was cut (multiplexed on the way out).
    pending: Vec<u8>,
    mux_in: bool,
    mux_out: bool,
    events: VecDeque<Event>,
    ndx_in: NdxState,
    ndx_out: NdxState,
    flist: Option<FlistDecoder>,
    framer: Option<TokenFramer>,
    outstanding: VecDeque<Outstanding>,
    echoes: u32,
    phases_sent: u32,
    io_error: i32,
    got_xfer_error: bool,
    text_lines: usize,
    list_received: bool,
    auth_sent: bool,
    /// Incremental recursion negotiated.
    inc: bool,
    /// rsync's `dir_flist`: every directory received, in arrival order with
    /// each list's directories sorted; `None` for a tombstoned slot.
    dirs: Vec<Option<Vec<u8>>>,
    /// Directories whose sub-list already came.
    dir_listed: Vec<bool>,
    /// `ndx_start` of the next list, and of every list still alive (oldest first).
    next_ndx_start: i32,
    alive: VecDeque<i32>,
    flist_eof: bool,
    /// Per-list NDX_DONEs we sent (incremental recursion).
    list_dones_sent: u32,
    /// The directory whose sub-list is being decoded.
    sublist_parent: Option<Vec<u8>>,
}

impl ClientSession {
    /// Start a session; the greeting is queued for sending at once.
    pub fn new(cfg: SessionConfig) -> SResult<Self> {
        if !(handshake::MIN_PROTOCOL..=handshake::MAX_PROTOCOL).contains(&cfg.max_protocol) {
            return Err(SessionError::Unsupported(format!(
                "protocol {} is not supported (rmirror speaks {}..{})",
                cfg.max_protocol,
                handshake::MIN_PROTOCOL,
                handshake::MAX_PROTOCOL
            )));
        }
        let mut s = ClientSession {
            protocol: cfg.max_protocol,
            cfg,
            stage: Stage::Greeting,
            rx: Rx::Flist,
            compat: 0,
            server_digests: vec![],
            sums: SumParams { kind: CsumType::Md5, seed: 0, proper_seed_order: false },
            compression: Compression::None,
            inbuf: BytesMut::new(),
            data: BytesMut::new(),
            data_more: BytesMut::new(),
            out: Vec::new(),
            pending: Vec::new(),
            mux_in: false,
            mux_out: false,
            events: VecDeque::new(),
            ndx_in: NdxState::default(),
            ndx_out: NdxState::default(),
            flist: None,
            framer: None,
            outstanding: VecDeque::new(),
            echoes: 0,
            phases_sent: 0,
            io_error: 0,
            got_xfer_error: false,
            text_lines: 0,
            list_received: false,
            auth_sent: false,
            inc: false,
            dirs: Vec::new(),
            dir_listed: Vec::new(),
            next_ndx_start: 0,
            alive: VecDeque::new(),
            flist_eof: false,
            list_dones_sent: 0,
            sublist_parent: None,
        };
        match s.cfg.mode {
            Mode::Daemon => {
                let g = handshake::greeting(s.cfg.max_protocol);
                s.out.extend_from_slice(&g);
                // The module line does not depend on the server's greeting,
                // and the daemon reads its client's greeting line by line
                // (clientserver.c), so it goes out with ours: one round
                // trip less than waiting for the server's greeting first.
                let modline = match &s.cfg.module {
                    Some(m) => format!("{m}\n"),
                    None => "\n".to_string(),
                };
                s.out.extend_from_slice(modline.as_bytes());
            }
            Mode::RemoteShell => {
                s.stage = Stage::ShellVersion;
                put::i32(&mut s.out, s.cfg.max_protocol);
            }
        }
        Ok(s)
    }

    pub fn protocol(&self) -> i32 {
        self.protocol
    }

    /// io_error bits reported by the server so far (file list end, MSG_IO_ERROR).
    pub fn io_error(&self) -> i32 {
        self.io_error
    }

    /// True once the server reported a per-file transfer error (MSG_ERROR_XFER).
    pub fn got_xfer_error(&self) -> bool {
        self.got_xfer_error
    }

    /// True while the session still expects input from the server.
    pub fn wants_input(&self) -> bool {
        self.stage != Stage::Closed
    }

    /// True when the file list is in and requests may be sent.
    pub fn accepts_requests(&self) -> bool {
        self.stage == Stage::Running && self.list_received && !matches!(self.rx, Rx::AwaitEof) && self.phases_sent < 2
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to send now (empty when there is nothing).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.cut_pending();
        std::mem::take(&mut self.out)
    }

    /// Number of outstanding file requests.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    fn cut_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.mux_out {
            mux::put_data(&mut self.out, &self.pending);
        } else {
            self.out.extend_from_slice(&self.pending);
        }
        self.pending.clear();
    }

    /// Queue a keep-alive (an empty MSG_DATA frame) when multiplexing out.
    pub fn keepalive(&mut self) {
        if self.mux_out {
            self.cut_pending();
            mux::put_frame(&mut self.out, mux::MSG_DATA, &[]);
        }
    }

    /// Feed bytes received from the server.
    pub fn handle_input(&mut self, bytes: &[u8]) -> SResult<()> {
        self.inbuf.extend_from_slice(bytes);
        self.process_input()
    }

    /// The input buffer, for the transport to append received bytes to
    /// directly (e.g. tokio's `read_buf`), with at least
    /// [`MIN_READ_SPACE`] bytes of spare capacity. What it holds are bytes
    /// received and not yet consumed; after appending, call
    /// [`Self::process_input`]. [`Self::handle_input`] is the same thing for
    /// a slice (fixtures, fuzzers).
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        if self.inbuf.capacity() - self.inbuf.len() < MIN_READ_SPACE {
            // Reuses the buffer when no token still points into it; otherwise
            // a fresh one (tokens keep the old one alive until written).
            self.inbuf.reserve(READ_BUFFER);
        }
        &mut self.inbuf
    }

    /// Decode whatever is in the input buffer (after the transport appended
    /// to [`Self::input_buffer`]).
    pub fn process_input(&mut self) -> SResult<()> {
        if self.stage == Stage::Closed {
            if self.inbuf.is_empty() {
                return Ok(());
            }
            return Err(SessionError::Violation("data after the end of the session".into()));
        }
        self.advance()
    }

    /// The server closed its side.
    pub fn handle_eof(&mut self) -> SResult<()> {
        match (self.stage, self.rx) {
            (Stage::ListingEnd, _) | (Stage::Running, Rx::AwaitEof) => {
                if self.raw_pending() > 0 || !self.data.is_empty() || !self.data_more.is_empty() {
                    return Err(SessionError::Malformed("connection ended inside a message".into()));
                }
                self.stage = Stage::Closed;
                self.events.push_back(Event::Finished);
                Ok(())
            }
            (Stage::Closed, _) => Ok(()),
            (stage, rx) => Err(SessionError::UnexpectedEof(describe_state(stage, rx))),
        }
    }

    fn raw_pending(&self) -> usize {
        self.inbuf.len()
    }

    fn advance(&mut self) -> SResult<()> {
        loop {
            let progressed = match self.stage {
                Stage::ShellVersion => self.step_shell_version()?,
                Stage::Greeting => self.step_greeting()?,
                Stage::Lines => self.step_line()?,
                Stage::Compat => self.step_compat()?,
                Stage::Strings => self.step_strings()?,
                Stage::Seed => self.step_seed()?,
                Stage::Running => self.step_running()?,
                Stage::ListingEnd => {
                    if self.raw_pending() > 0 {
                        return Err(SessionError::Violation("data after @RSYNCD: EXIT".into()));
                    }
                    false
                }
                Stage::Closed => false,
            };
            if !progressed {
                return Ok(());
            }
        }
    }

    /// Take one `\n`-terminated line from the raw buffer (`\r` dropped).
    fn take_line(&mut self) -> SResult<Option<Vec<u8>>> {
        let avail = &self.inbuf[..];
        match avail.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if i > MAX_PENDING_LINE {
                    return Err(SessionError::Malformed(format!("text line longer than {MAX_PENDING_LINE} bytes")));
                }
                let mut line: Vec<u8> = avail[..i].to_vec();
                line.retain(|&b| b != b'\r');
                self.inbuf.advance(i + 1);
                Ok(Some(line))
            }
            None if avail.len() > MAX_PENDING_LINE => {
                Err(SessionError::Malformed(format!("text line longer than {MAX_PENDING_LINE} bytes")))
            }
            None => Ok(None),
        }
    }

    /// Take one raw little-endian int from the input, once all 4 bytes are in.
    fn take_raw_i32(&mut self) -> SResult<Option<i32>> {
        let mut r = Reader::new(&self.inbuf[..]);
        let v = match r.i32() {
            Ok(v) => v,
            Err(DecodeError::Incomplete) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.inbuf.advance(r.consumed());
        Ok(Some(v))
    }

    fn step_shell_version(&mut self) -> SResult<bool> {
        let Some(v) = self.take_raw_i32()? else { return Ok(false) };
        if !(20..=40).contains(&v) {
            return Err(SessionError::Incompatible(format!(
                "remote rsync answered with protocol {v}: is the remote shell printing text (e.g. from a login script)?"
            )));
        }
        let p = self.cfg.max_protocol.min(v);
        if p < handshake::MIN_PROTOCOL {
            return Err(SessionError::Incompatible(format!(
                "remote rsync speaks protocol {v}; rmirror needs {} or newer",
                handshake::MIN_PROTOCOL
            )));
        }
        self.protocol = p;
        self.stage = if p >= 30 { Stage::Compat } else { Stage::Seed };
        Ok(true)
    }

    fn step_greeting(&mut self) -> SResult<bool> {
        let Some(line) = self.take_line()? else { return Ok(false) };
        let g = handshake::parse_greeting(&line).map_err(SessionError::Incompatible)?;
        self.protocol = handshake::negotiate_protocol(self.cfg.max_protocol, &g).map_err(SessionError::Incompatible)?;
        self.server_digests = g.digests;
        // The module line went out with our greeting.
        self.stage = Stage::Lines;
        Ok(true)
    }

    fn step_line(&mut self) -> SResult<bool> {
        let Some(line) = self.take_line()? else { return Ok(false) };
        match handshake::classify_line(&line) {
            DaemonLine::Text(t) => {
                self.text_lines += 1;
                if self.text_lines > handshake::MAX_TEXT_LINES {
                    return Err(SessionError::Violation("server sent too many text lines before OK".into()));
                }
                self.events.push_back(Event::Text(t));
            }
            DaemonLine::Error(msg) => {
                let text = crate::text::escape_bytes(&msg, false);
                if text.contains("auth failed") {
                    return Err(SessionError::Auth(text));
                }
                return Err(SessionError::Daemon(text));
            }
            DaemonLine::Exit => {
                if self.cfg.module.is_some() {
                    return Err(SessionError::Violation("server ended the session (EXIT) before OK".into()));
                }
                self.events.push_back(Event::ListingDone);
                self.stage = Stage::ListingEnd;
            }
            DaemonLine::AuthReqd(challenge) => {
                if self.auth_sent {
                    return Err(SessionError::Violation("server asked for authentication twice".into()));
                }
                if challenge.is_empty() || challenge.len() > 256 {
                    return Err(SessionError::Malformed("bad authentication challenge".into()));
                }
                let Some(pw) = self.cfg.password.clone() else {
                    return Err(SessionError::Auth(
                        "the module requires a password: set RSYNC_PASSWORD or use --password-file".into(),
                    ));
                };
                let digest = handshake::choose_auth_digest(&self.server_digests, self.protocol)
                    .map_err(SessionError::Auth)?;
                let resp = handshake::auth_response(&self.cfg.user, &pw, &challenge, digest);
                self.out.extend_from_slice(&resp);
                self.auth_sent = true;
            }
            DaemonLine::Ok => {
                if self.cfg.module.is_none() {
                    return Err(SessionError::Violation("server sent OK to a module listing".into()));
                }
                let args = options::server_args(&self.cfg.opts, self.protocol, &self.cfg.remote_paths);
                let enc = options::encode_args(&args, self.protocol);
                self.out.extend_from_slice(&enc);
                self.stage = if self.protocol >= 30 { Stage::Compat } else { Stage::Seed };
            }
        }
        Ok(true)
    }

    fn step_compat(&mut self) -> SResult<bool> {
        let mut r = Reader::new(&self.inbuf[..]);
        let flags = match r.varint() {
            Ok(v) => v,
            Err(DecodeError::Incomplete) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.inbuf.advance(r.consumed());
        let mut accepted = options::CF_ACCEPTED;
        if self.cfg.opts.offers_inc_recurse() {
            accepted |= options::CF_INC_RECURSE;
        }
        let unexpected = flags & !accepted;
        if unexpected & options::CF_INC_RECURSE != 0 {
            return Err(SessionError::Violation(
                "server turned on incremental recursion, which rmirror did not offer".into(),
            ));
        }
        if unexpected != 0 {
            return Err(SessionError::Violation(format!(
                "server set compat flags 0x{unexpected:x} that rmirror did not offer"
            )));
        }
        self.compat = flags;
        self.inc = flags & options::CF_INC_RECURSE != 0;
        let varint_flags = flags & options::CF_VARINT_FLIST_FLAGS != 0;
        let send_csum = varint_flags && self.cfg.opts.checksum_choice.is_none();
        let send_comp = varint_flags && self.cfg.opts.compress == CompressRequest::Negotiate;
        if send_csum {
            put::vstring(&mut self.out, options::CHECKSUM_OFFER.as_bytes());
        }
        if send_comp {
            put::vstring(&mut self.out, options::COMPRESS_OFFER.as_bytes());
        }
        self.stage = if send_csum || send_comp { Stage::Strings } else { Stage::Seed };
        if self.stage == Stage::Seed {
            self.settle_choices(None, None)?;
        }
        self.send_filters()?;
        Ok(true)
    }

    fn step_strings(&mut self) -> SResult<bool> {
        let varint_flags = self.compat & options::CF_VARINT_FLIST_FLAGS != 0;
        let want_csum = varint_flags && self.cfg.opts.checksum_choice.is_none();
        let want_comp = varint_flags && self.cfg.opts.compress == CompressRequest::Negotiate;
        let mut r = Reader::new(&self.inbuf[..]);
        let read_list = |r: &mut Reader<'_>| -> Result<Vec<u8>, DecodeError> {
            let s = r.vstring()?;
            if s.len() > 255 {
                return Err(DecodeError::Malformed("negotiation string longer than 255 bytes".into()));
            }
            Ok(s.to_vec())
        };
        let csum = if want_csum {
            match read_list(&mut r) {
                Ok(v) => Some(v),
                Err(DecodeError::Incomplete) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        let comp = if want_comp {
            match read_list(&mut r) {
                Ok(v) => Some(v),
                Err(DecodeError::Incomplete) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        self.inbuf.advance(r.consumed());
        self.settle_choices(csum, comp)?;
        self.stage = Stage::Seed;
        Ok(true)
    }

    /// Fix the checksum and compression choices from the server's lists (or the fallbacks).
    fn settle_choices(&mut self, csum: Option<Vec<u8>>, comp: Option<Vec<u8>>) -> SResult<()> {
        let kind = if let Some(c) = self.cfg.opts.checksum_choice {
            c
        } else if let Some(list) = csum {
            let names = String::from_utf8_lossy(&list).into_owned();
            pick(&names, options::CHECKSUM_OFFER).and_then(CsumType::from_name).ok_or_else(|| {
                SessionError::Unsupported(format!(
                    "Failed to negotiate a checksum choice: server offers \"{}\", rmirror offers \"{}\"",
                    crate::text::escape_bytes(names.as_bytes(), false),
                    options::CHECKSUM_OFFER
                ))
            })?
        } else if self.protocol >= 30 {
            CsumType::Md5
        } else {
            CsumType::Md4Old
        };
        self.compression = match self.cfg.opts.compress {
            CompressRequest::Off => Compression::None,
            CompressRequest::Explicit(c) => c,
            CompressRequest::Negotiate => match comp {
                Some(list) => {
                    let names = String::from_utf8_lossy(&list).into_owned();
                    pick(&names, options::COMPRESS_OFFER).and_then(options::compression_from_name).ok_or_else(
                        || {
                            SessionError::Unsupported(format!(
                                "Failed to negotiate a compression choice: server offers \"{}\", rmirror offers \"{}\"",
                                crate::text::escape_bytes(names.as_bytes(), false),
                                options::COMPRESS_OFFER
                            ))
                        },
                    )?
                }
                None => Compression::Zlib,
            },
        };
        self.sums.kind = kind;
        self.sums.proper_seed_order = self.compat & options::CF_CHKSUM_SEED_FIX != 0;
        Ok(())
    }

    /// The filter list (exclude.c send_filter_list: int length + rule, then
    /// int 0) and the `--files-from` names. From protocol 30 they leave
    /// right after our negotiation strings instead of after the server's
    /// checksum seed: they do not depend on it, and the server reads them in
    /// order after sending it, so this saves a round trip.
    fn send_filters(&mut self) -> SResult<()> {
        self.mux_out = self.protocol >= 30;
        // Filter list (exclude.c send_filter_list): int length + rule, then int 0.
        let rules = if self.protocol >= 29 {
            self.cfg.opts.filter_rules.clone()
        } else {
            self.cfg.opts.filter_rules_old.clone().map_err(SessionError::Unsupported)?
        };
        for rule in &rules {
            put::i32(&mut self.pending, rule.len() as i32);
            self.pending.extend_from_slice(rule);
        }
        put::i32(&mut self.pending, 0);
        self.cut_pending();
        if let Some(names) = &self.cfg.opts.files_from {
            // io.c forward_filesfrom_data: names NUL-terminated, then an empty
            // name. Protocol 30 sends them outside the multiplexing
            // (`start_filesfrom_forwarding`); 31+ inside MSG_DATA.
            let mut raw = Vec::new();
            for n in names {
                raw.extend_from_slice(n);
                raw.push(0);
            }
            raw.push(0);
            if self.protocol == 30 {
                self.out.extend_from_slice(&raw);
            } else {
                self.pending.extend_from_slice(&raw);
                self.cut_pending();
            }
        }
        Ok(())
    }

    fn step_seed(&mut self) -> SResult<bool> {
        let Some(seed) = self.take_raw_i32()? else { return Ok(false) };
        if self.protocol < 30 {
            self.settle_choices(None, None)?;
        }
        self.sums.seed = seed;
        self.mux_in = true;
        self.events.push_back(Event::Negotiated(Negotiated {
            protocol: self.protocol,
            compat: self.compat,
            sums: self.sums,
            compression: self.compression,
        }));
        if self.protocol < 30 {
            // From protocol 30 they left with our offers (step_compat).
            self.send_filters()?;
        }
        let o = &self.cfg.opts;
        let csum_len = self.sums.kind.digest_len();
        self.flist = Some(FlistDecoder::new(FlistOptions {
            protocol: self.protocol,
            varint_flags: self.compat & options::CF_VARINT_FLIST_FLAGS != 0,
            safe_flist: self.protocol >= 31 || self.compat & options::CF_SAFE_FLIST != 0,
            inc_recurse: self.inc,
            recurse: o.recursive,
            id0_names: self.compat & options::CF_ID0_NAMES != 0,
            preserve_links: o.links,
            preserve_uid: o.owner,
            preserve_gid: o.group,
            preserve_devices: o.devices,
            preserve_specials: o.specials,
            preserve_hard_links: o.hard_links,
            always_checksum: o.checksum,
            checksum_len: csum_len,
            numeric_ids: o.numeric_ids,
        }));
        self.next_ndx_start = if self.inc { 1 } else { 0 };
        if let Some(f) = self.flist.as_mut() {
            f.begin_list(self.next_ndx_start, None);
        }
        self.framer = Some(TokenFramer::new(self.compression));
        self.stage = Stage::Running;
        self.rx = Rx::Flist;
        Ok(true)
    }

    /// Demultiplex one frame from the raw buffer. Returns false when no whole frame is there.
    fn pump_frame(&mut self) -> SResult<bool> {
        let avail = &self.inbuf[..];
        let h: FrameHeader = match mux::parse_header(avail) {
            Ok(h) => h,
            Err(DecodeError::Incomplete) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if h.code != mux::MSG_DATA && h.len > mux::MAX_MSG_PAYLOAD {
            return Err(SessionError::Malformed(format!(
                "multiplexing overflow: message {} of {} bytes",
                h.code, h.len
            )));
        }
        if avail.len() < 4 + h.len {
            return Ok(false);
        }
        self.inbuf.advance(4);
        // A view of the payload, not a copy (the rest of `inbuf` stays ours).
        let payload = self.inbuf.split_to(h.len);
        if h.code == mux::MSG_DATA {
            // Frames are only pumped once the previous payload is used up.
            if !self.data_more.is_empty() {
                return Err(SessionError::Internal("frame pumped before the previous one was used".into()));
            }
            self.data_more = payload;
            self.feed_data();
            return Ok(true);
        }
        self.handle_message(h.code, &payload)?;
        Ok(true)
    }

    /// Move MSG_DATA bytes from `data_more` onto the data stream. When
    /// everything before was consumed (the usual case: items rarely straddle
    /// frames) the whole payload becomes the stream, so literal data reaches
    /// the engine without being copied. Otherwise an item straddles the frame
    /// boundary: the unconsumed rest is joined in an owned buffer with only
    /// the next [`JOIN_STEP`] bytes (doubling while the item stays
    /// incomplete), not the whole payload; the file list, which straddles at
    /// every boundary and is not forwarded, takes the whole payload at once.
    fn feed_data(&mut self) {
        if self.data.is_empty() {
            self.data = std::mem::take(&mut self.data_more);
            return;
        }
        if self.data_more.is_empty() {
            return;
        }
        let step = if matches!(self.rx, Rx::Flist) {
            self.data_more.len()
        } else {
            (2 * self.data.len()).max(JOIN_STEP).min(self.data_more.len())
        };
        let part = self.data_more.split_to(step);
        // try_reclaim succeeds only on a buffer nothing else points into.
        if !self.data.try_reclaim(part.len()) {
            let need = self.data.len() + part.len();
            let mut joined = BytesMut::with_capacity(need.max(2 * self.data.len()));
            joined.extend_from_slice(&self.data);
            self.data = joined;
        }
        self.data.extend_from_slice(&part);
    }

    fn handle_message(&mut self, code: u8, payload: &[u8]) -> SResult<()> {
        let int_payload = |p: &[u8]| -> SResult<i32> {
            if p.len() != 4 {
                return Err(SessionError::Malformed(format!("message {code} should carry 4 bytes, not {}", p.len())));
            }
            Ok(i32::from_le_bytes([p[0], p[1], p[2], p[3]]))
        };
        match code {
            mux::MSG_INFO => self.events.push_back(Event::Message { kind: MsgKind::Info, text: payload.to_vec() }),
            mux::MSG_WARNING => {
                self.events.push_back(Event::Message { kind: MsgKind::Warning, text: payload.to_vec() })
            }
            mux::MSG_ERROR => self.events.push_back(Event::Message { kind: MsgKind::Error, text: payload.to_vec() }),
            mux::MSG_ERROR_XFER => {
                self.got_xfer_error = true;
                self.events.push_back(Event::Message { kind: MsgKind::ErrorXfer, text: payload.to_vec() })
            }
            mux::MSG_IO_ERROR => {
                let v = int_payload(payload)?;
                self.io_error |= v & IOERR_VALID_MASK;
            }
            mux::MSG_IO_TIMEOUT => {
                let v = int_payload(payload)?;
                if v > 0 && v <= 86_400 {
                    self.events.push_back(Event::IoTimeout(v as u32));
                }
            }
            mux::MSG_NOOP => {}
            mux::MSG_DELETED | mux::MSG_SUCCESS => {}
            mux::MSG_NO_SEND => {
                let ndx = int_payload(payload)?;
                match self.outstanding.front() {
                    Some(o) if o.ndx == ndx => {
                        self.outstanding.pop_front();
                        self.events.push_back(Event::NoSend(ndx));
                    }
                    _ => {
                        return Err(SessionError::Violation(format!(
                            "server declined file {ndx}, which is not the next one requested"
                        )))
                    }
                }
            }
            mux::MSG_ERROR_EXIT => {
                let code = if payload.is_empty() { 0 } else { int_payload(payload)? };
                if self.mux_out && self.protocol >= 31 {
                    self.cut_pending();
                    mux::put_frame(&mut self.out, mux::MSG_ERROR_EXIT, &code.to_le_bytes());
                }
                return Err(SessionError::PeerExit(if code == 0 { ExitCode::Partial.code() } else { code }));
            }
            other => {
                return Err(SessionError::Violation(format!("unexpected message tag {other} from server")));
            }
        }
        Ok(())
    }

    /// Try to decode one item from the data stream; pump frames on demand.
    fn step_running(&mut self) -> SResult<bool> {
        loop {
            match self.decode_item() {
                Ok(progress) => return Ok(progress),
                Err(DecodeError::Incomplete) => {
                    if !self.data_more.is_empty() {
                        self.feed_data();
                        continue;
                    }
                    if !self.pump_frame()? {
                        return Ok(false);
                    }
                    // A message frame may have produced an event; keep going.
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Queue a token event. A matched-block token that continues the run of
    /// the event just queued (same file, next block) extends that event: an
    /// uncompressed sender writes one token per block, and a 500 MB delta
    /// update would otherwise hand ~22,000 single-block events (each a
    /// wake-up of the receiver thread) down the line instead of a few dozen.
    /// The blocks and their order are unchanged, so the receiver's output is
    /// too.
    fn push_token(&mut self, ndx: i32, token: Token) {
        if let Token::Blocks { first, count } = token {
            if let Some(Event::Token { ndx: last_ndx, token: Token::Blocks { first: f0, count: c0 } }) =
                self.events.back_mut()
            {
                if *last_ndx == ndx && u64::from(*f0) + u64::from(*c0) == u64::from(first) {
                    if let Some(c) = c0.checked_add(count) {
                        *c0 = c;
                        return;
                    }
                }
            }
        }
        self.events.push_back(Event::Token { ndx, token });
    }

    fn decode_item(&mut self) -> Result<bool, DecodeError> {
        let buf = &self.data[..];
        match self.rx {
            Rx::Flist => {
                let dec = self.flist.as_mut().ok_or_else(|| DecodeError::Malformed("no file-list decoder".into()))?;
                let (prog, used) = dec.step(buf)?;
                self.data.advance(used);
                if let FlistProgress::Done(list) = prog {
                    self.io_error |= list.io_error & IOERR_VALID_MASK;
                    let first = !self.list_received;
                    self.list_received = true;
                    if self.inc {
                        for &slot in &list.dir_slots {
                            let name = list.entries.get(slot).and_then(|e| e.as_ref()).map(|e| e.name.to_vec());
                            self.dirs.push(name);
                            self.dir_listed.push(false);
                        }
                        if self.dirs.len() > MAX_DIRS {
                            return Err(DecodeError::Malformed(format!("more than {MAX_DIRS} directories")));
                        }
                        self.alive.push_back(list.ndx_start);
                        let next = list.ndx_start as i64 + list.entries.len() as i64 + 1;
                        if next > i32::MAX as i64 / 2 {
                            return Err(DecodeError::Malformed("file index space exhausted".into()));
                        }
                        self.next_ndx_start = next as i32;
                    }
                    let empty = list.entries.iter().all(|e| e.is_none());
                    if first && empty && !self.inc {
                        self.rx = Rx::AwaitEof;
                    } else {
                        self.rx = Rx::Items;
                    }
                    match self.sublist_parent.take() {
                        Some(parent) => self.events.push_back(Event::SubList { parent, list }),
                        None => self.events.push_back(Event::FileList(list)),
                    }
                }
                Ok(true)
            }
            Rx::Items => self.decode_ndx_item(),
            Rx::Tokens { ndx, count } => {
                let framer = self.framer.as_mut().ok_or_else(|| DecodeError::Malformed("no token framer".into()))?;
                let (tok, used) = framer.step(buf)?;
                /// What the framer read, with a literal located in `buf` (by
                /// offset and length) so that it can be split off `data`.
                enum Got {
                    Literal { off: usize, len: usize },
                    Blocks(Token),
                    End,
                }
                let got = match tok {
                    WireToken::Data(d) => {
                        let off = (d.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
                        if off.checked_add(d.len()).is_none_or(|e| e > used) {
                            return Err(DecodeError::Malformed("token framer returned data outside its input".into()));
                        }
                        Got::Literal { off, len: d.len() }
                    }
                    WireToken::Blocks { first, count: n } => {
                        let end = first as i64 + n as i64;
                        if n == 0 || end > count as i64 {
                            return Err(DecodeError::Malformed(format!(
                                "Invalid block index {} (count {}) for file {ndx}",
                                end - 1,
                                count
                            )));
                        }
                        Got::Blocks(Token::Blocks { first, count: n })
                    }
                    WireToken::End => Got::End,
                };
                let token = match got {
                    Got::Literal { off, len } => {
                        self.data.advance(off);
                        let d: Bytes = self.data.split_to(len).freeze();
                        self.data.advance(used - off - len);
                        Some(Token::Data(d))
                    }
                    Got::Blocks(blocks) => {
                        self.data.advance(used);
                        Some(blocks)
                    }
                    Got::End => {
                        self.data.advance(used);
                        None
                    }
                };
                match token {
                    Some(token) => self.push_token(ndx, token),
                    None => self.rx = Rx::FileSum { ndx },
                }
                Ok(true)
            }
            Rx::FileSum { ndx } => {
                let len = self.sums.kind.digest_len();
                let mut r = Reader::new(buf);
                let sum = r.bytes(len)?.to_vec();
                self.data.advance(r.consumed());
                self.events.push_back(Event::FileEnd { ndx, checksum: sum });
                self.rx = Rx::Items;
                Ok(true)
            }
            Rx::Stats => {
                let mut r = Reader::new(buf);
                let modern = self.protocol >= 30;
                let rd = |r: &mut Reader<'_>| -> Result<i64, DecodeError> {
                    let v = if modern { r.varlong(3)? } else { r.longint()? };
                    if v < 0 {
                        return Err(DecodeError::Malformed("negative transfer statistic".into()));
                    }
                    Ok(v)
                };
                let mut st = ServerStats {
                    server_read: rd(&mut r)?,
                    server_written: rd(&mut r)?,
                    total_size: rd(&mut r)?,
                    ..Default::default()
                };
                if self.protocol >= 29 {
                    st.flist_buildtime_ms = rd(&mut r)?;
                    st.flist_xfertime_ms = rd(&mut r)?;
                }
                self.data.advance(r.consumed());
                self.events.push_back(Event::Stats(st));
                // Our goodbye (main.c client_run) is already out: it left
                // with the last phase end (end_phase), and the server only
                // echoes phases we ended (on_echo).
                if self.protocol >= 31 {
                    self.rx = Rx::FinalEcho;
                } else {
                    self.transfer_over()?;
                }
                Ok(true)
            }
            Rx::FinalEcho => {
                let mut st = self.ndx_in;
                let mut r = Reader::new(buf);
                let ndx = st.read(&mut r, true)?;
                if ndx != NDX_DONE {
                    return Err(DecodeError::Malformed(format!("expected the final NDX_DONE, got ndx {ndx}")));
                }
                self.ndx_in = st;
                self.data.advance(r.consumed());
                // main.c read_final_goodbye: the receiver's answer to the echo.
                self.write_ndx(NDX_DONE);
                self.transfer_over()?;
                Ok(true)
            }
            Rx::AwaitEof => {
                if buf.is_empty() {
                    Err(DecodeError::Incomplete)
                } else {
                    Err(DecodeError::Malformed("data after the end of the transfer".into()))
                }
            }
        }
    }

    fn decode_ndx_item(&mut self) -> Result<bool, DecodeError> {
        let buf = &self.data[..];
        let modern = self.protocol >= 30;
        let mut st = self.ndx_in;
        let mut r = Reader::new(buf);
        let ndx = st.read(&mut r, modern)?;
        if ndx == NDX_DONE {
            self.ndx_in = st;
            self.data.advance(r.consumed());
            return self.on_echo().map(|_| true);
        }
        if self.inc && ndx == NDX_FLIST_EOF {
            if self.flist_eof {
                return Err(DecodeError::Malformed("server ended the file lists twice".into()));
            }
            self.ndx_in = st;
            self.data.advance(r.consumed());
            self.flist_eof = true;
            self.events.push_back(Event::FlistEof);
            return Ok(true);
        }
        if self.inc && ndx <= NDX_FLIST_OFFSET {
            if self.flist_eof {
                return Err(DecodeError::Malformed("sub-list after the end of the file lists".into()));
            }
            // rsync.c read_ndx_and_attrs + 3.5.0 recv_file_list checks.
            let dir_ndx = (NDX_FLIST_OFFSET as i64 - ndx as i64) as usize;
            let name = match self.dirs.get(dir_ndx) {
                None => return Err(DecodeError::Malformed(format!("Invalid dir index: {dir_ndx}"))),
                Some(None) => {
                    return Err(DecodeError::Malformed(format!("sub-list for cleared directory index {dir_ndx}")))
                }
                Some(Some(n)) => n.clone(),
            };
            if self.dir_listed[dir_ndx] {
                return Err(DecodeError::Malformed(format!(
                    "second file list for directory {}",
                    crate::text::escape_name(&name)
                )));
            }
            self.dir_listed[dir_ndx] = true;
            self.ndx_in = st;
            self.data.advance(r.consumed());
            let start = self.next_ndx_start;
            if let Some(f) = self.flist.as_mut() {
                f.begin_list(start, Some(&name));
            }
            self.sublist_parent = Some(name);
            self.rx = Rx::Flist;
            return Ok(true);
        }
        if ndx < 0 {
            return Err(DecodeError::Malformed(match ndx {
                NDX_FLIST_EOF => "server sent an incremental file-list marker, which rmirror did not ask for".into(),
                NDX_DEL_STATS => "server sent deletion statistics rmirror did not send".into(),
                n => format!("server sent a sub-list or negative index {n} rmirror did not ask for"),
            }));
        }
        let iflags = if self.protocol >= 29 { r.u16()? } else { ITEM_TRANSFER };
        if iflags & (ITEM_BASIS_TYPE_FOLLOWS | ITEM_XNAME_FOLLOWS) != 0 {
            return Err(DecodeError::Malformed(format!(
                "server chose a basis file for index {ndx} (iflags 0x{iflags:04x}); rmirror never asks for one"
            )));
        }
        if iflags & ITEM_TRANSFER == 0 {
            return Err(DecodeError::Malformed(format!(
                "server echoed a non-transfer record for index {ndx} that rmirror did not send"
            )));
        }
        let head = SumHead { count: r.i32()?, blength: r.i32()?, s2length: r.i32()?, remainder: r.i32()? };
        head.validate(self.protocol, self.sums.kind.digest_len())
            .map_err(|e| DecodeError::Malformed(format!("bad checksum header for index {ndx}: {e}")))?;
        // Match against our outstanding requests.
        loop {
            match self.outstanding.front().copied() {
                Some(o) if o.ndx == ndx => {
                    if o.head != head {
                        return Err(DecodeError::Malformed(format!(
                            "server echoed a different checksum header for index {ndx}"
                        )));
                    }
                    self.outstanding.pop_front();
                    break;
                }
                Some(o) if self.protocol < 30 => {
                    // Before protocol 30 a file the sender could not open is just skipped.
                    self.outstanding.pop_front();
                    self.events.push_back(Event::NoSend(o.ndx));
                }
                _ => {
                    return Err(DecodeError::Malformed(format!("server sent index {ndx}, which rmirror did not request")))
                }
            }
        }
        self.ndx_in = st;
        self.data.advance(r.consumed());
        if let Some(f) = self.framer.as_mut() {
            // The framer refuses block indices beyond the echoed head.
            f.start_file_with_blocks(head.count.max(0) as u32);
        }
        self.events.push_back(Event::FileStart { ndx, head });
        self.rx = Rx::Tokens { ndx, count: head.count };
        Ok(true)
    }

    fn on_echo(&mut self) -> Result<(), DecodeError> {
        if self.inc && self.phases_sent == 0 || (self.inc && self.echoes == 0 && !self.alive.is_empty()) {
            // rsync.c recv_files: an echo frees the oldest list; only when none
            // is left does it end a phase.
            let Some(start) = self.alive.pop_front() else {
                return Err(DecodeError::Malformed("server ended a list rmirror had not finished".into()));
            };
            self.events.push_back(Event::ListDone(start));
            if !self.alive.is_empty() {
                if self.list_dones_sent == 0 {
                    return Err(DecodeError::Malformed("server ended a list rmirror had not finished".into()));
                }
                self.list_dones_sent -= 1;
                return Ok(());
            }
        }
        self.echoes += 1;
        if self.echoes > self.phases_sent {
            return Err(DecodeError::Malformed("server ended a phase rmirror had not ended".into()));
        }
        // Everything requested in the phase that just ended must be answered.
        while let Some(o) = self.outstanding.pop_front() {
            if self.protocol >= 30 {
                return Err(DecodeError::Malformed(format!(
                    "server ended a phase without answering the request for index {}",
                    o.ndx
                )));
            }
            self.events.push_back(Event::NoSend(o.ndx));
        }
        let max_phase = self.max_phase();
        if self.echoes <= 2 {
            self.events.push_back(Event::PhaseEnded(self.echoes - 1));
        }
        if self.echoes == max_phase + 1 {
            self.rx = Rx::Stats;
        }
        Ok(())
    }

    fn write_ndx(&mut self, ndx: i32) {
        let modern = self.protocol >= 30;
        let mut st = self.ndx_out;
        st.write(&mut self.pending, ndx, modern);
        self.ndx_out = st;
    }

    /// Ask the sender for file `ndx` against a basis described by `head` and its
    /// block sums (`count` × (int sum1, `s2length` bytes of sum2), already encoded).
    pub fn request_file(&mut self, ndx: i32, iflags: u16, head: SumHead, sums: &[u8]) -> SResult<()> {
        if !self.accepts_requests() {
            return Err(SessionError::Internal("file request outside the transfer phases".into()));
        }
        self.write_ndx(ndx);
        if self.protocol >= 29 {
            put::u16(&mut self.pending, iflags | ITEM_TRANSFER);
        }
        put::i32(&mut self.pending, head.count);
        put::i32(&mut self.pending, head.blength);
        put::i32(&mut self.pending, head.s2length);
        put::i32(&mut self.pending, head.remainder);
        self.pending.extend_from_slice(sums);
        self.outstanding.push_back(Outstanding { ndx, head });
        if self.pending.len() >= 64 * 1024 {
            self.cut_pending();
        }
        Ok(())
    }

    /// Incremental recursion: all files of the oldest list (not the last one)
    /// are done; tell the sender it may free it.
    pub fn end_list(&mut self) -> SResult<()> {
        if !self.inc || self.phases_sent > 0 || !self.accepts_requests() {
            return Err(SessionError::Internal("list end outside incremental phase 0".into()));
        }
        self.write_ndx(NDX_DONE);
        self.list_dones_sent += 1;
        Ok(())
    }

    /// Whether incremental recursion was negotiated.
    pub fn inc_recurse(&self) -> bool {
        self.inc
    }

    /// End the current generator phase (0: normal pass, 1: redo pass). Ending the
    /// redo pass also ends the delay-updates phase (protocol ≥ 29).
    pub fn end_phase(&mut self) -> SResult<()> {
        if !self.accepts_requests() {
            return Err(SessionError::Internal("phase end outside the transfer phases".into()));
        }
        self.write_ndx(NDX_DONE);
        self.phases_sent += 1;
        if self.phases_sent == 2 && self.protocol >= 29 {
            self.write_ndx(NDX_DONE);
            self.phases_sent += 1;
        }
        self.cut_pending();
        if self.phases_sent == self.max_phase() + 1 {
            // The goodbye (main.c client_run: our final NDX_DONE) follows
            // the last phase end at once, as rsync's generator sends it, in
            // a frame of its own, instead of a round trip later after the
            // server's statistics.
            self.write_ndx(NDX_DONE);
            self.cut_pending();
        }
        Ok(())
    }

    /// The last transfer phase: 2 (normal, redo, delay-updates) from
    /// protocol 29, else 1.
    fn max_phase(&self) -> u32 {
        if self.protocol >= 29 {
            2
        } else {
            1
        }
    }

    /// The transfer is over once our last word is written: like rsync's
    /// client, do not wait a round trip for the server to close (its echo of
    /// the goodbye, protocol ≥ 31, is already in). Bytes already here after
    /// the end are still an error.
    fn transfer_over(&mut self) -> Result<(), DecodeError> {
        if !self.data.is_empty() {
            return Err(DecodeError::Malformed("data after the end of the transfer".into()));
        }
        self.stage = Stage::Closed;
        self.events.push_back(Event::Finished);
        Ok(())
    }

    /// The negotiated parameters, valid once [`Event::Negotiated`] was emitted.
    pub fn negotiated(&self) -> Negotiated {
        Negotiated { protocol: self.protocol, compat: self.compat, sums: self.sums, compression: self.compression }
    }

    /// Tell the server we are giving up with `code` (protocol ≥ 31), as rsync's
    /// `_exit_cleanup` does before draining.
    pub fn abort(&mut self, code: ExitCode) {
        if self.mux_out && self.protocol >= 31 && self.stage == Stage::Running {
            self.cut_pending();
            mux::put_frame(&mut self.out, mux::MSG_ERROR_EXIT, &code.code().to_le_bytes());
        }
    }

    /// Whether the server's reported I/O errors forbid deletions.
    pub fn deletions_unsafe(&self) -> bool {
        self.io_error & IOERR_GENERAL != 0
    }
}

/// Pick from the peer's space-separated list the name ranking best in ours.
fn pick<'a>(peer: &str, ours: &'a str) -> Option<&'a str> {
    let peer: Vec<String> = peer.split_ascii_whitespace().map(|s| s.to_ascii_lowercase()).collect();
    ours.split(' ').find(|o| peer.iter().any(|p| p == o))
}

fn describe_state(stage: Stage, rx: Rx) -> String {
    match stage {
        Stage::Greeting | Stage::ShellVersion => "before its greeting".into(),
        Stage::Lines => "during the daemon handshake".into(),
        Stage::Compat | Stage::Strings | Stage::Seed => "during protocol setup".into(),
        Stage::Running => match rx {
            Rx::Flist => "while sending the file list".into(),
            Rx::Items | Rx::Tokens { .. } | Rx::FileSum { .. } => "in the middle of the transfer".into(),
            Rx::Stats | Rx::FinalEcho => "before the end of the transfer".into(),
            Rx::AwaitEof => "after the transfer".into(),
        },
        Stage::ListingEnd | Stage::Closed => "after the session".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_prefers_our_order() {
        assert_eq!(pick("md5 xxh128 none", options::CHECKSUM_OFFER), Some("xxh128"));
        assert_eq!(pick("md4 sha1", options::CHECKSUM_OFFER), None);
        assert_eq!(pick("zlib zstd", options::COMPRESS_OFFER), Some("zstd"));
    }

    fn cfg() -> SessionConfig {
        SessionConfig {
            mode: Mode::Daemon,
            max_protocol: 32,
            module: Some("m".into()),
            remote_paths: vec![b"m/".to_vec()],
            user: "u".into(),
            password: None,
            opts: TransferOpts::default(),
        }
    }

    #[test]
    fn handshake_up_to_args() {
        let mut s = ClientSession::new(cfg()).unwrap();
        // The module line leaves with the greeting, not a round trip later.
        let hello = s.take_output();
        assert!(hello.starts_with(b"@RSYNCD: 32.0 "));
        assert!(hello.ends_with(b"\nm\n"), "{:?}", String::from_utf8_lossy(&hello));
        s.handle_input(b"@RSYNCD: 31.0\n").unwrap();
        assert_eq!(s.take_output(), b"");
        s.handle_input(b"hello motd\n\n@RSYNCD: OK\n").unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Text(t)) if t == b"hello motd"));
        let args = s.take_output();
        assert!(args.starts_with(b"--server\0--sender\0"));
        assert_eq!(s.protocol(), 31);
    }

    /// From protocol 30 the filter list leaves with our negotiation
    /// strings, before the server's checksum seed, which it does not need
    /// (a round trip less); the seed then asks nothing more of us.
    #[test]
    fn filter_list_does_not_wait_for_the_seed() {
        let mut s = ClientSession::new(cfg()).unwrap();
        s.take_output();
        s.handle_input(b"@RSYNCD: 32.0 md5\n@RSYNCD: OK\n").unwrap();
        assert!(s.take_output().starts_with(b"--server\0--sender\0"));
        let mut compat = Vec::new();
        put::varint(&mut compat, options::CF_VARINT_FLIST_FLAGS | options::CF_SAFE_FLIST | options::CF_CHKSUM_SEED_FIX);
        s.handle_input(&compat).unwrap();
        let mut want = Vec::new();
        put::vstring(&mut want, options::CHECKSUM_OFFER.as_bytes());
        if s.cfg.opts.compress == CompressRequest::Negotiate {
            put::vstring(&mut want, options::COMPRESS_OFFER.as_bytes());
        }
        // MSG_DATA frame of 4 bytes: the empty filter list (int 0).
        want.extend_from_slice(&[4, 0, 0, 7, 0, 0, 0, 0]);
        assert_eq!(s.take_output(), want);
        let mut lists = Vec::new();
        put::vstring(&mut lists, b"xxh128 md5");
        if s.cfg.opts.compress == CompressRequest::Negotiate {
            put::vstring(&mut lists, b"zstd zlib none");
        }
        s.handle_input(&lists).unwrap();
        assert_eq!(s.take_output(), b"");
        s.handle_input(&7i32.to_le_bytes()).unwrap();
        assert!(matches!(s.poll_event(), Some(Event::Negotiated(n)) if n.sums.seed == 7));
        assert_eq!(s.take_output(), b"", "nothing more to say after the seed");
    }

    #[test]
    fn daemon_error_and_auth_errors() {
        let mut s = ClientSession::new(cfg()).unwrap();
        s.handle_input(b"@RSYNCD: 32.0 md5\n").unwrap();
        let e = s.handle_input(b"@ERROR: Unknown module 'm'\n").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::StartClient);
        let mut s = ClientSession::new(cfg()).unwrap();
        s.handle_input(b"@RSYNCD: 32.0 md5\n").unwrap();
        let e = s.handle_input(b"@RSYNCD: AUTHREQD abcdef\n").unwrap_err();
        assert!(e.to_string().contains("password"));
    }

    #[test]
    fn remote_shell_exchanges_versions_as_ints() {
        let mut c = cfg();
        c.mode = Mode::RemoteShell;
        let mut s = ClientSession::new(c).unwrap();
        assert_eq!(s.take_output(), 32i32.to_le_bytes());
        s.handle_input(&31i32.to_le_bytes()).unwrap();
        assert_eq!(s.protocol(), 31);
        let mut c = cfg();
        c.mode = Mode::RemoteShell;
        let mut s = ClientSession::new(c).unwrap();
        let e = s.handle_input(b"Welcome to host\n").unwrap_err();
        assert!(e.to_string().contains("remote shell"), "{e}");
    }

    #[test]
    fn consecutive_block_tokens_become_one_event() {
        let mut s = ClientSession::new(cfg()).unwrap();
        let blocks = |first, count| Token::Blocks { first, count };
        s.push_token(3, blocks(0, 1));
        s.push_token(3, blocks(1, 1));
        s.push_token(3, blocks(2, 5)); // a run token continues it too
        s.push_token(3, blocks(9, 1)); // a gap starts a new event
        s.push_token(3, Token::Data(Bytes::from_static(b"x")));
        s.push_token(3, blocks(10, 1)); // literal data in between: not merged
        s.push_token(4, blocks(11, 1)); // another file: not merged
        s.push_token(4, blocks(u32::MAX - 1, 1));
        s.push_token(4, blocks(u32::MAX, 1)); // continues, but no overflow
        let got: Vec<String> = std::iter::from_fn(|| s.poll_event())
            .map(|e| match e {
                Event::Token { ndx, token: Token::Blocks { first, count } } => format!("{ndx}:{first}+{count}"),
                Event::Token { ndx, token: Token::Data(d) } => format!("{ndx}:data{}", d.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["3:0+7", "3:9+1", "3:data1", "3:10+1", "4:11+1", "4:4294967294+2"]);
    }

    /// Once the session is over, any byte more is the server's error; no
    /// bytes at all are not.
    #[test]
    fn input_after_the_end_is_a_violation() {
        let mut c = cfg();
        c.module = None;
        let mut s = ClientSession::new(c).unwrap();
        s.handle_input(b"@RSYNCD: 32.0 md5\nm\tmirror\n@RSYNCD: EXIT\n").unwrap();
        s.handle_eof().unwrap();
        assert!(!s.wants_input());
        s.handle_input(b"").unwrap();
        s.process_input().unwrap();
        let e = s.handle_input(b"x").unwrap_err();
        assert!(matches!(&e, SessionError::Violation(m) if m.contains("after the end")), "{e}");
    }

    #[test]
    fn eof_mid_handshake_is_an_error() {
        let mut s = ClientSession::new(cfg()).unwrap();
        s.handle_input(b"@RSYNCD: 32.0 md5\n").unwrap();
        assert!(s.handle_eof().is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x1234_5678;
        for _ in 0..2000 {
            let mut s = ClientSession::new(cfg()).unwrap();
            let _ = s.handle_input(b"@RSYNCD: 32.0 md5\n@RSYNCD: OK\n");
            let mut junk = vec![];
            for _ in 0..(x % 200) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                junk.push(x as u8);
            }
            let _ = s.handle_input(&junk);
            let _ = s.handle_eof();
        }
    }
}
