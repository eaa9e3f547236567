//! Entry points for the fuzz targets in `fuzz/fuzz_targets/` and for the
//! corpus regression test (`tests/fuzz_corpus.rs`), plus the "empty DEST"
//! engine emulation that `tests/replay.rs` and the `session` target share.
//!
//! Hidden from the docs and not part of the API. Every `pub fn <target>(&[u8])`
//! listed in [`TARGETS`] must return normally on *any* input: a panic is a
//! bug (either in the decoder, or an invariant checked here with `assert!`).
//! Resource use is bounded here too (output caps), so a slow or huge run is
//! a finding as well.

use crate::checksum::{FileHasher, SumHead, SumParams, MAX_DIGEST_LEN};
use crate::proto::flist::{self, FileList, FlistDecoder, FlistOptions, FlistProgress};
use crate::proto::handshake;
use crate::proto::mux;
use crate::proto::options::{CompressRequest, TransferOpts};
use crate::proto::session::{
    ClientSession, Event, MsgKind, Negotiated, ServerStats, SessionConfig, SessionError, Token,
    ITEM_IS_NEW,
};
use crate::proto::token::{Compression, TokenFramer, TokenInflater, WireToken};
use crate::proto::wire::{put, DecodeError, NdxState, Reader};

pub type Target = fn(&[u8]);

/// Every fuzz target: its name (= `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/`) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("greeting", greeting),
    ("auth", auth),
    ("mux", mux_frames),
    ("varint", varint),
    ("flist", flist),
    ("sum_head", sum_head),
    ("token_plain", token_plain),
    ("token_zlib", token_zlib),
    ("token_zstd", token_zstd),
    ("session", session),
    ("recent", recent),
    ("iim_config", iim_config),
    ("filter_rules", filter_rules),
    ("toml_config", toml_config),
    ("mirror_signal", mirror_signal),
];

/// Look a target up by name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// The greeting the fixtures' rsync 3.5.0 daemon sends; the `session` and
/// `auth` targets put it in front of the fuzzed bytes.
pub const SERVER_GREETING: &[u8] = b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\n";

// ---------------------------------------------------------------------------
// The empty-DEST engine emulation.
// ---------------------------------------------------------------------------

/// Most reassembled file bytes the driver keeps before it stops (a
/// decompression bomb is a finding, not an out-of-memory).
pub const MAX_REASSEMBLED: usize = 64 << 20;

/// One file the sender delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFile {
    pub ndx: i32,
    pub head: SumHead,
    /// Literal data after decompression.
    pub data: Vec<u8>,
    /// The whole-file checksum the sender sent after the tokens.
    pub sender_sum: Vec<u8>,
    /// The same checksum computed over `data` with the negotiated parameters.
    pub computed_sum: Vec<u8>,
}

/// Why the driven session stopped early.
#[derive(Debug)]
pub enum Failure {
    /// The session rejected the input (from `handle_input`, `handle_eof`, or
    /// a command the engine gave it).
    Session(SessionError),
    /// Something the empty-DEST engine cannot accept (it would abort too).
    Engine(String),
}

/// Everything observable from one driven session.
#[derive(Debug, Default)]
pub struct Transcript {
    /// All bytes the session asked to send, in order.
    pub output: Vec<u8>,
    pub texts: Vec<Vec<u8>>,
    pub negotiated: Option<Negotiated>,
    pub list: Option<FileList>,
    /// Indices requested, in order.
    pub requested: Vec<i32>,
    pub files: Vec<ReceivedFile>,
    pub no_send: Vec<i32>,
    pub messages: Vec<(MsgKind, Vec<u8>)>,
    pub phases_ended: Vec<u32>,
    pub stats: Option<ServerStats>,
    /// How much of `output` had been taken when the statistics arrived (the
    /// output of earlier chunks only).
    pub output_at_stats: Option<usize>,
    pub finished: bool,
    /// Server input bytes fed before the driver stopped.
    pub fed: usize,
    pub failure: Option<Failure>,
}

struct Current {
    ndx: i32,
    head: SumHead,
    data: Vec<u8>,
}

/// An engine for a DEST that starts empty, as `engine::generator` behaves
/// there: on the file list, request every regular file that is not a
/// hard-link follower, in index order, with an all-zero [`SumHead`] and
/// `ITEM_IS_NEW`, taking the output after each request (the live engine sends
/// each request as its own write); then end phase 0; end phase 1 when the
/// sender echoes phase 0. Reassembles each file (inflating compressed
/// tokens) and computes its whole-file checksum.
pub struct EmptyDestDriver {
    pub session: ClientSession,
    pub t: Transcript,
    inflater: Option<TokenInflater>,
    cur: Option<Current>,
    total: usize,
    /// Whether requests are taken as separate writes (the live engine) or
    /// batched (false: one `take_output` after the batch).
    pub output_per_request: bool,
    /// Chunks fed so far: every second one goes in the way the live engine
    /// feeds the session (appended to `input_buffer`, then `process_input`),
    /// the others through `handle_input`, so both entry points are driven.
    chunks_fed: usize,
}

impl EmptyDestDriver {
    pub fn new(cfg: SessionConfig) -> Result<Self, SessionError> {
        let mut session = ClientSession::new(cfg)?;
        let output = session.take_output();
        Ok(EmptyDestDriver {
            session,
            t: Transcript {
                output,
                ..Transcript::default()
            },
            inflater: None,
            cur: None,
            total: 0,
            output_per_request: true,
            chunks_fed: 0,
        })
    }

    pub fn failed(&self) -> bool {
        self.t.failure.is_some()
    }

    fn fail(&mut self, f: Failure) {
        if self.t.failure.is_none() {
            self.t.failure = Some(f);
        }
    }

    fn take_output(&mut self) {
        let o = self.session.take_output();
        self.t.output.extend_from_slice(&o);
    }

    /// Feed one chunk of server bytes, then answer every event.
    pub fn input(&mut self, chunk: &[u8]) {
        if self.failed() {
            return;
        }
        self.chunks_fed += 1;
        let r = if self.chunks_fed % 2 == 0 {
            self.session.input_buffer().extend_from_slice(chunk);
            self.session.process_input()
        } else {
            self.session.handle_input(chunk)
        };
        self.t.fed += chunk.len();
        self.after(r);
    }

    /// The server closed the connection.
    pub fn eof(&mut self) {
        if self.failed() {
            return;
        }
        let r = self.session.handle_eof();
        self.after(r);
    }

    fn after(&mut self, r: Result<(), SessionError>) {
        // Events queued before an error are still delivered (the live engine
        // drains them only on success, but they cannot change the outcome).
        self.events();
        if let Err(e) = r {
            self.fail(Failure::Session(e));
        }
        self.take_output();
    }

    fn events(&mut self) {
        while let Some(ev) = self.session.poll_event() {
            if self.failed() {
                continue;
            }
            if let Err(f) = self.event(ev) {
                self.fail(f);
            }
        }
    }

    fn event(&mut self, ev: Event) -> Result<(), Failure> {
        match ev {
            Event::Text(t) => self.t.texts.push(t),
            Event::ListingDone | Event::FlistEof | Event::ListDone(_) | Event::SubList { .. } => {}
            Event::Negotiated(n) => {
                if n.compression != Compression::None {
                    self.inflater = Some(
                        TokenInflater::new(n.compression, n.protocol).map_err(Failure::Engine)?,
                    );
                }
                self.t.negotiated = Some(n);
            }
            Event::Message { kind, text } => self.t.messages.push((kind, text)),
            Event::IoTimeout(_) => {}
            Event::FileList(list) => {
                let leaders = crate::engine::generator::hard_link_leaders(&list);
                if self.session.accepts_requests() {
                    for (i, e) in list.entries.iter().enumerate() {
                        let Some(e) = e else { continue };
                        if !e.is_reg() || leaders.contains_key(&i) {
                            continue;
                        }
                        let ndx = list.ndx_start as i64 + i as i64;
                        let ndx = i32::try_from(ndx)
                            .map_err(|_| Failure::Engine("file index overflows".into()))?;
                        self.session
                            .request_file(ndx, ITEM_IS_NEW, SumHead::default(), &[])
                            .map_err(Failure::Session)?;
                        self.t.requested.push(ndx);
                        if self.output_per_request {
                            self.take_output();
                        }
                    }
                    self.session.end_phase().map_err(Failure::Session)?;
                }
                self.t.list = Some(list);
            }
            Event::FileStart { ndx, head } => {
                if self.cur.is_some() {
                    return Err(Failure::Engine(format!(
                        "file {ndx} started inside another file"
                    )));
                }
                if head != SumHead::default() {
                    return Err(Failure::Engine(format!(
                        "file {ndx} echoed a non-empty sum head {head:?}"
                    )));
                }
                if let Some(inf) = self.inflater.as_mut() {
                    inf.start_file();
                }
                self.cur = Some(Current {
                    ndx,
                    head,
                    data: Vec::new(),
                });
            }
            Event::Token { ndx, token } => {
                let cur = self
                    .cur
                    .as_mut()
                    .ok_or_else(|| Failure::Engine(format!("token for {ndx} outside a file")))?;
                if cur.ndx != ndx {
                    return Err(Failure::Engine(format!(
                        "token for {ndx} inside file {}",
                        cur.ndx
                    )));
                }
                match token {
                    Token::Data(d) => match self.inflater.as_mut() {
                        None => cur.data.extend_from_slice(&d),
                        Some(inf) => {
                            let before = cur.data.len();
                            let mut more = inf.data(&d, &mut cur.data).map_err(Failure::Engine)?;
                            while more {
                                if self.total + cur.data.len() - before > MAX_REASSEMBLED {
                                    return Err(Failure::Engine(
                                        "reassembled data over the driver's cap".into(),
                                    ));
                                }
                                more = inf.drain(&mut cur.data).map_err(Failure::Engine)?;
                            }
                        }
                    },
                    Token::Blocks { first, count } => {
                        return Err(Failure::Engine(format!(
                            "file {ndx}: sender matched blocks {first}+{count} of a basis we never sent"
                        )));
                    }
                }
                if self.total + cur.data.len() > MAX_REASSEMBLED {
                    return Err(Failure::Engine(
                        "reassembled data over the driver's cap".into(),
                    ));
                }
            }
            Event::FileEnd { ndx, checksum } => {
                let cur = self
                    .cur
                    .take()
                    .ok_or_else(|| Failure::Engine(format!("end of {ndx} outside a file")))?;
                if cur.ndx != ndx {
                    return Err(Failure::Engine(format!(
                        "end of {ndx} inside file {}",
                        cur.ndx
                    )));
                }
                if let Some(inf) = self.inflater.as_mut() {
                    inf.end_file().map_err(Failure::Engine)?;
                }
                let sums: SumParams = match self.t.negotiated {
                    Some(n) => n.sums,
                    None => return Err(Failure::Engine("file data before negotiation".into())),
                };
                let mut h = FileHasher::new(&sums);
                h.update(&cur.data);
                let mut d = [0u8; MAX_DIGEST_LEN];
                let n = h.finish(&mut d);
                self.total += cur.data.len();
                self.t.files.push(ReceivedFile {
                    ndx,
                    head: cur.head,
                    data: cur.data,
                    sender_sum: checksum,
                    computed_sum: d[..n].to_vec(),
                });
            }
            Event::NoSend(ndx) => self.t.no_send.push(ndx),
            Event::PhaseEnded(p) => {
                self.t.phases_ended.push(p);
                if p == 0 {
                    self.session.end_phase().map_err(Failure::Session)?;
                }
            }
            Event::Stats(s) => {
                self.t.stats = Some(s);
                self.t.output_at_stats = Some(self.t.output.len());
            }
            Event::Finished => self.t.finished = true,
        }
        Ok(())
    }
}

/// Drive a whole session over `input`, cut into chunks whose sizes cycle
/// through `chunks` (0 or an empty slice = everything at once), never letting
/// one chunk cross an offset in `barriers` (sorted), then EOF when `eof`.
///
/// Barriers matter because a live server cannot send what it has not decided
/// yet: the items after the file list exist only once our requests went out,
/// the phase-1 echo only after our second NDX_DONE. Fed in one piece, such
/// bytes would reach the session *before* the engine's answer, and the
/// session rightly rejects them ("server sent index 1, which rmirror did not
/// request"). [`causal_barriers`] finds those points in a recording.
pub fn drive_empty_dest(
    cfg: SessionConfig,
    input: &[u8],
    chunks: &[usize],
    barriers: &[usize],
    eof: bool,
) -> Transcript {
    let mut d = match EmptyDestDriver::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            return Transcript {
                failure: Some(Failure::Session(e)),
                ..Transcript::default()
            }
        }
    };
    let mut pos = 0;
    let mut k = 0;
    let mut b = 0;
    while pos < input.len() && !d.failed() {
        let c = chunks.get(k % chunks.len().max(1)).copied().unwrap_or(0);
        k += 1;
        let mut n = if c == 0 {
            input.len() - pos
        } else {
            c.min(input.len() - pos)
        };
        while b < barriers.len() && barriers[b] <= pos {
            b += 1;
        }
        if b < barriers.len() {
            n = n.min(barriers[b] - pos);
        }
        d.input(&input[pos..pos + n]);
        pos += n;
    }
    if eof {
        d.eof();
    }
    d.t
}

/// Feed `input` one byte at a time and note every offset after which the
/// session had something to send (an answer the server may have waited for).
/// Returns that byte-at-a-time transcript and the offsets.
pub fn causal_barriers(cfg: SessionConfig, input: &[u8], eof: bool) -> (Transcript, Vec<usize>) {
    let mut barriers = Vec::new();
    let mut d = match EmptyDestDriver::new(cfg) {
        Ok(d) => d,
        Err(e) => {
            return (
                Transcript {
                    failure: Some(Failure::Session(e)),
                    ..Transcript::default()
                },
                barriers,
            )
        }
    };
    for (i, byte) in input.iter().enumerate() {
        if d.failed() {
            break;
        }
        let before = d.t.output.len();
        d.input(std::slice::from_ref(byte));
        if d.t.output.len() != before {
            barriers.push(i + 1);
        }
    }
    if eof {
        d.eof();
    }
    (d.t, barriers)
}

/// The session configuration `rmirror sync [--protocol N] [-z] rsync://h/<module>/ DEST`
/// builds (no filters, no auth unless `password`).
pub fn sync_config(
    protocol: i32,
    compress: bool,
    module: &str,
    user: &str,
    password: Option<&[u8]>,
) -> SessionConfig {
    let opts = TransferOpts {
        compress: if compress {
            CompressRequest::Negotiate
        } else {
            CompressRequest::Off
        },
        ..TransferOpts::default()
    };
    SessionConfig {
        mode: Default::default(),
        max_protocol: protocol,
        module: Some(module.to_string()),
        remote_paths: vec![format!("{module}/").into_bytes()],
        user: user.to_string(),
        password: password.map(|p| p.to_vec()),
        opts,
    }
}

// ---------------------------------------------------------------------------
// Targets.
// ---------------------------------------------------------------------------

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == b'\n')
}

/// `handshake::parse_greeting` / `negotiate_protocol` / `classify_line` on
/// each line, and a module-listing session over the whole input.
pub fn greeting(data: &[u8]) {
    for line in lines(data).take(64) {
        if let Ok(g) = handshake::parse_greeting(line) {
            for p in handshake::MIN_PROTOCOL..=handshake::MAX_PROTOCOL {
                if let Ok(n) = handshake::negotiate_protocol(p, &g) {
                    assert!(
                        (handshake::MIN_PROTOCOL..=p).contains(&n),
                        "negotiated {n} outside 27..={p}"
                    );
                }
            }
        }
        let _ = handshake::classify_line(line);
    }
    let cfg = SessionConfig {
        module: None,
        ..sync_config(32, false, "m", "u", None)
    };
    let t = drive_empty_dest(cfg, data, &[0], &[], true);
    assert!(t.list.is_none(), "a module listing produced a file list");
}

/// Challenge/response: the first line is the server's digest list, the rest
/// the text after its greeting (AUTHREQD, OK, @ERROR, MOTD ...), with a
/// password configured; also `choose_auth_digest`/`auth_response` directly.
pub fn auth(data: &[u8]) {
    let (digests, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let digest_list: Vec<String> = String::from_utf8_lossy(digests)
        .split_ascii_whitespace()
        .take(32)
        .map(|s| s.to_ascii_lowercase())
        .collect();
    for p in [29, 30] {
        if let Ok(d) = handshake::choose_auth_digest(&digest_list, p) {
            let challenge = String::from_utf8_lossy(&rest[..rest.len().min(300)]);
            let r = handshake::auth_response("user", b"secret", &challenge, d);
            assert_eq!(r.last(), Some(&b'\n'));
        }
    }
    let mut input = Vec::with_capacity(64 + data.len());
    input.extend_from_slice(b"@RSYNCD: 31.0 ");
    input.extend_from_slice(&digests[..digests.len().min(200)]);
    input.push(b'\n');
    input.extend_from_slice(rest);
    let cfg = sync_config(32, false, "m", "user", Some(b"secret"));
    let _ = drive_empty_dest(cfg, &input, &[0], &[], true);
}

/// Multiplexed frame headers: walk frames, re-encode each and parse it back.
pub fn mux_frames(data: &[u8]) {
    let mut buf = data;
    while let Ok(h) = mux::parse_header(buf) {
        if buf.len() < 4 + h.len {
            break;
        }
        let payload = &buf[4..4 + h.len];
        let mut enc = Vec::new();
        mux::put_frame(&mut enc, h.code, payload);
        assert_eq!(
            mux::parse_header(&enc).ok(),
            Some(h),
            "frame header does not round-trip"
        );
        assert_eq!(&enc[4..], payload);
        buf = &buf[4 + h.len..];
    }
    let mut enc = Vec::new();
    mux::put_data(&mut enc, data);
    let h = mux::parse_header(&enc);
    if !data.is_empty() {
        assert_eq!(
            h.ok(),
            Some(mux::FrameHeader {
                code: mux::MSG_DATA,
                len: data.len()
            })
        );
    }
}

/// Varints, varlongs (min_bytes 3 or 4, by bit 3 of the op), longints,
/// vstrings and ndx deltas, driven by an op byte each; every value decoded is re-encoded and must decode the same.
pub fn varint(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut ndx_modern = NdxState::default();
    let mut ndx_old = NdxState::default();
    let (mut w_modern, mut rt_modern) = (NdxState::default(), NdxState::default());
    while let Ok(op) = r.u8() {
        let res: Result<(), DecodeError> = (|| {
            match op % 7 {
                0 => {
                    let v = r.varint()?;
                    let mut e = Vec::new();
                    put::varint(&mut e, v);
                    assert_eq!(
                        Reader::new(&e).varint(),
                        Ok(v),
                        "varint {v} does not round-trip"
                    );
                }
                1 => {
                    // rsync only uses min_bytes 3 (sizes, stats) and 4 (mtimes);
                    // smaller ones cannot carry a full i64 (write_varlong would
                    // emit 9 bytes that read_varlong refuses).
                    let min = 3 + (op as usize >> 3 & 1);
                    let v = r.varlong(min)?;
                    let mut e = Vec::new();
                    put::varlong(&mut e, v, min);
                    let mut rr = Reader::new(&e);
                    assert_eq!(
                        rr.varlong(min),
                        Ok(v),
                        "varlong({min}) {v} does not round-trip"
                    );
                    assert_eq!(rr.remaining(), 0);
                }
                2 => {
                    let v = r.longint()?;
                    let mut e = Vec::new();
                    put::longint(&mut e, v);
                    assert_eq!(
                        Reader::new(&e).longint(),
                        Ok(v),
                        "longint {v} does not round-trip"
                    );
                }
                3 => {
                    let s = r.vstring()?;
                    if s.len() <= 0x7FFF {
                        let mut e = Vec::new();
                        put::vstring(&mut e, s);
                        assert_eq!(
                            Reader::new(&e).vstring(),
                            Ok(s),
                            "vstring does not round-trip"
                        );
                    }
                }
                4 | 5 => {
                    let modern = op % 7 == 4;
                    let st = if modern {
                        &mut ndx_modern
                    } else {
                        &mut ndx_old
                    };
                    let v = st.read(&mut r, modern)?;
                    if modern {
                        let mut e = Vec::new();
                        w_modern.write(&mut e, v, true);
                        let mut rr = Reader::new(&e);
                        assert_eq!(
                            rt_modern.read(&mut rr, true),
                            Ok(v),
                            "ndx {v} does not round-trip"
                        );
                        assert_eq!(rr.remaining(), 0);
                    }
                }
                _ => {
                    let _ = r.u16()?;
                    let _ = r.i32()?;
                    let _ = r.i64()?;
                }
            }
            Ok(())
        })();
        if res.is_err() {
            break;
        }
    }
}

/// Decoder options from two selector bytes.
pub fn flist_options(a: u8, b: u8) -> FlistOptions {
    let mut o = FlistOptions::new(27 + ((a & 7) % 6) as i32);
    o.varint_flags = a & 0x08 != 0;
    o.safe_flist = a & 0x10 != 0;
    o.preserve_links = a & 0x20 != 0;
    o.preserve_hard_links = a & 0x40 != 0;
    o.always_checksum = a & 0x80 != 0;
    o.preserve_uid = b & 0x01 != 0;
    o.preserve_gid = b & 0x02 != 0;
    o.preserve_devices = b & 0x04 != 0;
    o.preserve_specials = b & 0x08 != 0;
    o.numeric_ids = b & 0x10 != 0;
    o.id0_names = b & 0x20 != 0;
    o.inc_recurse = b & 0x40 != 0;
    o.recurse = b & 0x80 == 0;
    o.checksum_len = [16, 8, 20, 1][((a >> 3) as usize + b as usize) % 4];
    o
}

/// Selector bytes for `flist_options` that give the options a pull with
/// rmirror's defaults uses (`-lHtpr`, negotiated as the session does).
pub fn flist_selector(
    protocol: i32,
    varint_flags: bool,
    safe_flist: bool,
    id0_names: bool,
) -> [u8; 2] {
    let mut a = (protocol - 27) as u8;
    a |= 0x20 | 0x40;
    if varint_flags {
        a |= 0x08;
    }
    if safe_flist {
        a |= 0x10;
    }
    let mut b = 0u8;
    if id0_names {
        b |= 0x20;
    }
    [a, b]
}

/// File-list entries: two option bytes, then the list bytes. Every name the
/// decoder accepts must be safe.
pub fn flist(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let o = flist_options(data[0], data[1]);
    let inc = o.inc_recurse && o.protocol >= 30;
    let mut dec = FlistDecoder::new(o.clone());
    let mut buf = &data[2..];
    let mut start = if inc { 1 } else { 0 };
    dec.begin_list(start, None);
    let mut lists = 0;
    while let Ok((p, used)) = dec.step(buf) {
        assert!(used <= buf.len(), "decoder consumed more than it was given");
        buf = &buf[used..];
        if let FlistProgress::Done(list) = p {
            for e in list.entries.iter().flatten() {
                assert!(
                    flist::check_name_safe(&e.name).is_ok(),
                    "unsafe name accepted: {:?}",
                    e.name
                );
            }
            lists += 1;
            if !inc || lists > 8 {
                break;
            }
            let parent = list
                .dir_slots
                .first()
                .and_then(|&i| list.entries.get(i))
                .and_then(|e| e.as_ref());
            let parent = parent.map(|e| e.name.clone());
            start = start
                .saturating_add(list.entries.len() as i32)
                .saturating_add(1);
            dec.begin_list(start, parent.as_deref());
        } else if used == 0 {
            panic!("file-list decoder made no progress without saying Incomplete");
        }
    }
}

/// Sum heads: `validate` and the geometry helpers; every head that
/// `sum_sizes_sqroot` computes must validate and cover the length.
pub fn sum_head(data: &[u8]) {
    let mut r = Reader::new(data);
    let Ok(sel) = r.u8() else { return };
    let protocol = 27 + ((sel & 7) % 6) as i32;
    let digest_len = [16usize, 8, 20, 1][(sel as usize >> 3) % 4];
    if let (Ok(count), Ok(blength), Ok(s2length), Ok(remainder)) =
        (r.i32(), r.i32(), r.i32(), r.i32())
    {
        let h = SumHead {
            count,
            blength,
            s2length,
            remainder,
        };
        if h.validate(protocol, digest_len).is_ok() && h.count > 0 {
            let n = (h.count as u32).min(1 << 16);
            let mut total = 0u64;
            for i in 0..n {
                assert_eq!(h.block_offset(i), total);
                total += h.block_len(i) as u64;
            }
            if n == h.count as u32 {
                assert_eq!(
                    total,
                    h.covered_len(),
                    "block lengths do not add up to covered_len for {h:?}"
                );
            }
        }
    }
    if let Ok(len) = r.i64() {
        let bs = r.u32().ok();
        let redo = sel & 0x80 != 0;
        let h = crate::checksum::sum_sizes_sqroot(len, protocol, digest_len, redo, bs);
        if h.count >= 0 {
            assert!(
                h.validate(protocol, digest_len).is_ok(),
                "sum_sizes_sqroot({len}) gave an invalid head {h:?}"
            );
            assert_eq!(
                h.covered_len(),
                len as u64,
                "sum_sizes_sqroot({len}) does not cover the file: {h:?}"
            );
        }
    }
}

/// Token framing and inflation for one codec. Selector byte: bits 0..2
/// protocol, bit 3 bound block indices by a head count, bit 4 zlibx (zlib
/// target only); then the token stream (several files, each ended by END).
fn tokens(comp: Compression, data: &[u8]) {
    let Some((&sel, mut buf)) = data.split_first() else {
        return;
    };
    let protocol = 27 + ((sel & 7) % 6) as i32;
    let comp = if comp == Compression::Zlib && sel & 0x10 != 0 {
        Compression::Zlibx
    } else {
        comp
    };
    let limit = (sel & 0x08 != 0).then_some(1000u32);
    let mut framer = TokenFramer::new(comp);
    let mut inflater = match comp {
        Compression::None => None,
        c => match TokenInflater::new(c, protocol) {
            Ok(i) => Some(i),
            Err(_) => return,
        },
    };
    let start = |framer: &mut TokenFramer, inflater: &mut Option<TokenInflater>| {
        match limit {
            Some(l) => framer.start_file_with_blocks(l),
            None => framer.start_file(),
        }
        if let Some(i) = inflater.as_mut() {
            i.start_file();
        }
    };
    start(&mut framer, &mut inflater);
    let block: Vec<u8> = (0..700u32).map(|i| (i * 7) as u8).collect();
    let mut out = Vec::new();
    let mut produced = 0usize;
    let mut steps = 0usize;
    loop {
        steps += 1;
        if steps > 1 << 20 {
            break;
        }
        let (tok, used) = match framer.step(buf) {
            Ok(x) => x,
            Err(_) => break,
        };
        assert!(
            used > 0 && used <= buf.len(),
            "token step consumed {used} of {}",
            buf.len()
        );
        let ok = match tok {
            WireToken::Data(p) => match inflater.as_mut() {
                None => true,
                Some(inf) => {
                    let mut r = inf.data(p, &mut out);
                    let mut rounds = 0;
                    while let Ok(true) = r {
                        produced += out.len();
                        out.clear();
                        rounds += 1;
                        if produced > MAX_REASSEMBLED || rounds > 4096 {
                            return;
                        }
                        r = inf.drain(&mut out);
                    }
                    produced += out.len();
                    out.clear();
                    if produced > MAX_REASSEMBLED {
                        return;
                    }
                    r.is_ok()
                }
            },
            WireToken::Blocks { first, count } => {
                if let Some(l) = limit {
                    assert!(
                        first as u64 + count as u64 <= l as u64,
                        "block {first}+{count} beyond the limit {l}"
                    );
                }
                match inflater.as_mut() {
                    None => true,
                    Some(inf) => (0..count.min(64)).all(|_| inf.block_seen(&block).is_ok()),
                }
            }
            WireToken::End => {
                let ok = inflater
                    .as_mut()
                    .map(|i| i.end_file().is_ok())
                    .unwrap_or(true);
                start(&mut framer, &mut inflater);
                ok
            }
        };
        buf = &buf[used..];
        if !ok {
            break;
        }
    }
}

pub fn token_plain(data: &[u8]) {
    tokens(Compression::None, data)
}

pub fn token_zlib(data: &[u8]) {
    tokens(Compression::Zlib, data)
}

pub fn token_zstd(data: &[u8]) {
    tokens(Compression::Zstd, data)
}

/// Inputs longer than this get one (byte-at-a-time) run in [`session`]
/// instead of three compared runs, to keep whole recorded sessions cheap.
pub const SESSION_COMPARE_MAX: usize = 16 * 1024;

/// Selector byte for [`session`]: protocol, compression, chunking, password.
pub fn session_selector(protocol: i32, compress: bool) -> u8 {
    (protocol - 27) as u8 | if compress { 0x08 } else { 0 }
}

/// The whole client session from arbitrary server bytes after a valid
/// greeting ([`SERVER_GREETING`]). Selector byte: bits 0..2 protocol we
/// offer (27 + n % 6), bit 3 `-z`, bit 4 a password is configured. The
/// outcome must not depend on how the input is chunked.
pub fn session(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let protocol = 27 + ((sel & 7) % 6) as i32;
    let cfg = sync_config(
        protocol,
        sel & 0x08 != 0,
        "m",
        "user",
        (sel & 0x10 != 0).then_some(&b"secret"[..]),
    );
    let mut input = Vec::with_capacity(SERVER_GREETING.len() + rest.len());
    input.extend_from_slice(SERVER_GREETING);
    input.extend_from_slice(rest);
    let (bytewise, barriers) = causal_barriers(cfg.clone(), &input, true);
    if input.len() > SESSION_COMPARE_MAX {
        return; // big inputs (whole recorded sessions): one byte-at-a-time run only
    }
    for chunks in [&[0usize][..], &[7, 4096, 3, 64][..]] {
        let t = drive_empty_dest(cfg.clone(), &input, chunks, &barriers, true);
        assert_eq!(
            t.finished, bytewise.finished,
            "finished depends on chunking {chunks:?}"
        );
        assert_eq!(
            t.failure.is_some(),
            bytewise.failure.is_some(),
            "failure depends on chunking {chunks:?}: {:?} vs {:?}",
            t.failure,
            bytewise.failure
        );
        assert_eq!(
            t.requested, bytewise.requested,
            "requests depend on chunking {chunks:?}"
        );
        assert_eq!(
            t.files, bytewise.files,
            "received files depend on chunking {chunks:?}"
        );
        assert_eq!(
            t.list, bytewise.list,
            "file list depends on chunking {chunks:?}"
        );
        if t.failure.is_none() {
            assert_eq!(
                t.output, bytewise.output,
                "output depends on chunking {chunks:?}"
            );
        }
    }
}

/// RECENT files, JSON and YAML: first byte picks the file name (and so the
/// serializer; `RECENT.recent` and `x` make the reader sniff the content),
/// the rest is the content.  What is accepted must keep the reader's
/// promises: safe paths, strictly decreasing epochs, plain chain names.
pub fn recent(data: &[u8]) {
    const NAMES: &[&str] = &[
        "RECENT-1h.json",
        "RECENT-6h.json",
        "RECENT-1d.json",
        "RECENT-Z.json",
        "RECENT.recent",
        "RECENT-1W.yaml",
        "x",
        "RECENT-1h.yaml",
        "RECENT-Z.yml",
    ];
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[sel as usize % NAMES.len()];
    if let Ok(f) = crate::recent::parse_recent(rest, name) {
        let _ = (
            f.max_epoch(),
            f.min_epoch(),
            f.merged_epoch(),
            f.rfilename(),
        );
        for w in f.events.windows(2) {
            assert!(w[0].epoch > w[1].epoch, "accepted disorder in {name}");
        }
        for e in &f.events {
            assert!(crate::recent::check_path(&e.path).is_ok(), "accepted unsafe path {:?}", e.path);
        }
        let _ = crate::recent::interval_chain(&f);
        for n in crate::recent::chain_file_names(&f) {
            assert!(!n.contains('/') && !n.contains('\0'), "chain name {n:?} is not a plain name");
        }
    }
}

/// iim configuration text; `include` directives resolve to the same text
/// (so include loops must be caught).
pub fn iim_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut resolver =
        |_name: &str, _from: &str| -> Result<String, String> { Ok(text.to_string()) };
    let _ = crate::iim::parse_config(&text, "fuzz.conf", &[], &mut resolver);
    let _ = crate::iim::parse_config(&text, "fuzz.conf", &[], &mut crate::iim::NoIncludes);
}

/// Filter rules, one per line; then the wire forms and a few matches.
pub fn filter_rules(data: &[u8]) {
    let mut fl = crate::filter::FilterList::new();
    let mut pats: Vec<&[u8]> = Vec::new();
    for line in lines(data).take(256) {
        let _ = fl.add_rule_bytes(line);
        if pats.len() < 4 {
            pats.push(line);
        }
    }
    let _ = fl.wire_rules(32, false);
    let _ = fl.wire_rules(28, true);
    for (path, dir) in [
        (&b"a"[..], false),
        (b"a/b/c.txt", false),
        (b"dir", true),
        (b".hidden/x", false),
    ] {
        let _ = fl.excludes_from_transfer(path, dir);
        let _ = fl.protects(path, dir);
        let _ = fl.rejects_flist_name(path, dir);
    }
    for p in &pats {
        for t in &pats {
            let _ = crate::filter::wildmatch(p, t);
        }
    }
}

/// The jobs runner's TOML configuration (`run -c mirrors.toml`). Relative
/// paths resolve against a directory that does not exist, so nothing on the
/// disk is read.
pub fn toml_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = std::path::Path::new("/nonexistent-rmirror-fuzz/mirrors.toml");
    let _ = crate::daemon::config::parse(text, path);
}

/// Upstream freshness signals: `mirror.yml`, `mirror.json`, RECENT, Debian
/// trace files and plain markers. The first byte picks the kind and whether
/// an mtime is known.
pub fn mirror_signal(data: &[u8]) {
    use crate::daemon::probe::{parse_signal, SignalKind};
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (kind, name) = match sel % 5 {
        0 => (SignalKind::MirrorYaml, "mirror.yml"),
        1 => (SignalKind::MirrorJson, "mirror.json"),
        2 => (SignalKind::Recent, "RECENT-1h.json"),
        3 => (SignalKind::Trace, "project/trace/master"),
        _ => (SignalKind::Marker, "CURRENT"),
    };
    let mtime = (sel & 0x80 != 0).then_some(1_700_000_000);
    let _ = parse_signal(kind, name, rest, mtime);
}
