//! Delta token stream, receiver side (brief §9.6, §10; `token.c`).
//!
//! Split in two so the session can parse framing without the basis file:
//!
//! * [`TokenFramer`] turns wire bytes into [`WireToken`]s (plain ints, or the
//!   flag-byte framing of the compressed codecs). It never allocates and
//!   never waits for a whole literal run.
//! * [`TokenInflater`] (engine side) decompresses `DEFLATED_DATA` payloads and,
//!   for `zlib`, mirrors matched basis blocks into the inflate window.
//!
//! Engine contract, per file:
//! 1. `framer.start_file()` / `inflater.start_file()`.
//! 2. For each token: `Data(p)` → plain: `p` is literal data; compressed:
//!    `inflater.data(p, &mut out)` then `inflater.drain(&mut out)` while it
//!    returns `true`. `Blocks { first, count }` → for each block (in order)
//!    copy it from the basis **and call `inflater.block_seen(block)`** — in
//!    every compressed mode (for zlibx it only re-synchronises the inflater;
//!    for zstd it is a no-op). `End` → `inflater.end_file()`, then read the
//!    whole-file checksum (not compressed) that follows.

use crate::proto::wire::{DecodeError, Reader};
use flate2::{Decompress, FlushDecompress, Status};
use zstd::stream::raw::{Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

/// Largest `DEFLATED_DATA` payload (14-bit count, `token.c MAX_DATA_COUNT`).
pub const MAX_DATA_COUNT: usize = 16383;
/// Largest block index a compressed stream may name (`token.c MAX_TOKEN_INDEX`).
pub const MAX_TOKEN_INDEX: u32 = 0x7FFF_FFFE;
/// Largest plain literal-run header (any positive `int`; the run is streamed,
/// never buffered, so the full `i32` range is safe).
pub const MAX_PLAIN_RUN: u32 = i32::MAX as u32;
/// Most decompressed bytes one `data`/`drain` call appends to `out`.
pub const MAX_INFLATE_OUT: usize = 256 * 1024;
/// Largest matched block `block_seen` accepts (`OLD_MAX_BLOCK_SIZE`, the
/// protocol < 30 block-length cap; ≥ 30 caps at 128 KiB).
pub const MAX_SEEN_BLOCK: usize = 1 << 29;
/// zstd window limit for the session decoder (zstd's default, 128 MiB; the C
/// receiver uses the library default too).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

const END_FLAG: u8 = 0x00;
const TOKEN_LONG: u8 = 0x20;
const TOKENRUN_LONG: u8 = 0x21;
const DEFLATED_DATA: u8 = 0x40;
const TOKEN_REL: u8 = 0x80;
const TOKENRUN_REL: u8 = 0xC0;

/// Token codec negotiated for the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Zlibx,
    Zstd,
}

/// One parsed token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireToken<'a> {
    /// Plain: literal bytes (possibly one piece of a longer run).
    /// Compressed: one complete `DEFLATED_DATA` payload.
    Data(&'a [u8]),
    /// `count` (≥ 1) consecutive basis blocks starting at `first`.
    Blocks { first: u32, count: u32 },
    /// End of this file's data; the whole-file checksum follows.
    End,
}

/// Per-connection token framing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFramer {
    comp: Compression,
    /// Plain mode: bytes of the current literal run not yet yielded.
    literal_left: u32,
    /// Compressed mode: last block index of the previous run (`rx_token`).
    last_index: u32,
    /// Optional exclusive bound on block indices (the echoed sum head's count).
    block_limit: Option<u32>,
}

impl TokenFramer {
    pub fn new(c: Compression) -> Self {
        TokenFramer { comp: c, literal_left: 0, last_index: 0, block_limit: None }
    }

    /// Reset per-file state (relative index base, pending literal run).
    /// Block indices are only bounded by [`MAX_TOKEN_INDEX`]; see
    /// [`TokenFramer::start_file_with_blocks`].
    pub fn start_file(&mut self) {
        self.literal_left = 0;
        self.last_index = 0;
        self.block_limit = None;
    }

    /// Like [`start_file`](Self::start_file), and reject any block index
    /// `>= block_count` (pass the echoed sum head's `count`) as malformed
    /// ("Invalid block index").
    pub fn start_file_with_blocks(&mut self, block_count: u32) {
        self.start_file();
        self.block_limit = Some(block_count);
    }

    /// True while a plain literal run is only partly yielded.
    pub fn in_literal(&self) -> bool {
        self.literal_left != 0
    }

    /// Parse one token from the front of `buf`, returning it and the bytes consumed.
    /// `Err(Incomplete)` consumes nothing and leaves the state unchanged; so
    /// does `Err(Malformed)` (the connection is dead anyway).
    pub fn step<'a>(&mut self, buf: &'a [u8]) -> Result<(WireToken<'a>, usize), DecodeError> {
        match self.comp {
            Compression::None => self.step_plain(buf),
            _ => self.step_compressed(buf),
        }
    }

    fn check_blocks(&self, first: u32, count: u32) -> Result<(), DecodeError> {
        if let Some(limit) = self.block_limit {
            if first as u64 + count as u64 > limit as u64 {
                return Err(DecodeError::Malformed(format!(
                    "invalid block index {} (file has {limit} blocks)",
                    first as u64 + count as u64 - 1
                )));
            }
        }
        Ok(())
    }

    fn step_plain<'a>(&mut self, buf: &'a [u8]) -> Result<(WireToken<'a>, usize), DecodeError> {
        if self.literal_left > 0 {
            if buf.is_empty() {
                return Err(DecodeError::Incomplete);
            }
            let n = buf.len().min(self.literal_left as usize);
            self.literal_left -= n as u32;
            return Ok((WireToken::Data(&buf[..n]), n));
        }
        let mut r = Reader::new(buf);
        let t = r.i32()?;
        if t == 0 {
            self.start_file_keep_limit();
            return Ok((WireToken::End, 4));
        }
        if t < 0 {
            // -(t+1), computed without overflow for t == i32::MIN.
            let idx = (-(t as i64) - 1) as u32;
            self.check_blocks(idx, 1)?;
            return Ok((WireToken::Blocks { first: idx, count: 1 }, 4));
        }
        let run = t as u32;
        if run > MAX_PLAIN_RUN {
            return Err(DecodeError::Malformed(format!("literal run {run} too long")));
        }
        let avail = r.remaining();
        if avail == 0 {
            // Yield only once at least one byte of the run is here, so that
            // Incomplete never consumes the header.
            return Err(DecodeError::Incomplete);
        }
        let n = avail.min(run as usize);
        self.literal_left = run - n as u32;
        Ok((WireToken::Data(&buf[4..4 + n]), 4 + n))
    }

    /// End of file: the relative base restarts; keep any block limit until
    /// the next `start_file*` (harmless, the next file resets it).
    fn start_file_keep_limit(&mut self) {
        self.literal_left = 0;
        self.last_index = 0;
    }

    fn step_compressed<'a>(&mut self, buf: &'a [u8]) -> Result<(WireToken<'a>, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let flag = r.u8()?;
        if flag & 0xC0 == DEFLATED_DATA {
            let len = (((flag & 0x3F) as usize) << 8) | r.u8()? as usize;
            if len > MAX_DATA_COUNT {
                return Err(DecodeError::Malformed(format!("compressed payload of {len} bytes")));
            }
            let payload = r.bytes(len)?;
            return Ok((WireToken::Data(payload), r.consumed()));
        }
        if flag == END_FLAG {
            self.start_file_keep_limit();
            return Ok((WireToken::End, 1));
        }
        let (first, is_run) = if flag & TOKEN_REL != 0 {
            let incr = (flag & 0x3F) as u32;
            if self.last_index > MAX_TOKEN_INDEX - incr {
                return Err(DecodeError::Malformed("invalid token number in compressed stream".into()));
            }
            (self.last_index + incr, flag & 0xC0 == TOKENRUN_REL)
        } else if flag == TOKEN_LONG || flag == TOKENRUN_LONG {
            let v = r.i32()?;
            if v < 0 || v as u32 > MAX_TOKEN_INDEX {
                return Err(DecodeError::Malformed(format!("invalid token number {v} in compressed stream")));
            }
            (v as u32, flag == TOKENRUN_LONG)
        } else {
            return Err(DecodeError::Malformed(format!("unknown compressed token flag 0x{flag:02x}")));
        };
        let extra = if is_run {
            let n = r.u16()? as u32;
            if n == 0 || first > MAX_TOKEN_INDEX - n {
                return Err(DecodeError::Malformed("invalid token run in compressed stream".into()));
            }
            n
        } else {
            0
        };
        self.check_blocks(first, extra + 1)?;
        self.last_index = first + extra;
        Ok((WireToken::Blocks { first, count: extra + 1 }, r.consumed()))
    }
}

enum Codec {
    /// zlib / zlibx: raw inflate, reset per file. `inject` = zlib (window insertion).
    Deflate { z: Box<Decompress>, inject: bool },
    /// One decoder for the whole session.
    Zstd(Box<ZstdDecoder<'static>>),
}

/// Per-connection decompressor for the literal payloads of one compressed
/// token stream.
pub struct TokenInflater {
    codec: Codec,
    protocol: i32,
    /// The current payload (≤ MAX_DATA_COUNT bytes) and how much of it was consumed.
    input: Vec<u8>,
    input_pos: usize,
    /// The last call stopped at MAX_INFLATE_OUT with output possibly pending.
    more: bool,
    /// zlib/zlibx: data was inflated since the last non-data token; the
    /// stripped `00 00 FF FF` sync trailer must be fed before anything else.
    need_sync_tail: bool,
    scratch: Vec<u8>,
}

/// Output scratch size: a fake stored block (≤ 0xFFFF) fits in one call.
const SCRATCH: usize = 64 * 1024;

impl TokenInflater {
    pub fn new(c: Compression, protocol: i32) -> Result<Self, String> {
        let codec = match c {
            Compression::None => return Err("no inflater for uncompressed tokens".into()),
            Compression::Zlib | Compression::Zlibx => {
                Codec::Deflate { z: Box::new(Decompress::new(false)), inject: c == Compression::Zlib }
            }
            Compression::Zstd => {
                let mut d = ZstdDecoder::new().map_err(|e| format!("zstd decoder init failed: {e}"))?;
                d.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX))
                    .map_err(|e| format!("zstd decoder init failed: {e}"))?;
                Codec::Zstd(Box::new(d))
            }
        };
        Ok(TokenInflater {
            codec,
            protocol,
            input: Vec::with_capacity(MAX_DATA_COUNT),
            input_pos: 0,
            more: false,
            need_sync_tail: false,
            scratch: vec![0; SCRATCH],
        })
    }

    /// Per-file reset: zlib/zlibx restart the inflate stream; zstd keeps its
    /// session-long context (only the local bookkeeping is cleared).
    pub fn start_file(&mut self) {
        self.input.clear();
        self.input_pos = 0;
        self.more = false;
        self.need_sync_tail = false;
        if let Codec::Deflate { z, .. } = &mut self.codec {
            z.reset(false);
        }
    }

    /// True while the current payload still has input or output pending;
    /// call [`drain`](Self::drain) until it is false.
    pub fn pending(&self) -> bool {
        self.more || self.input_pos < self.input.len()
    }

    fn not_pending(&self, what: &str) -> Result<(), String> {
        if self.pending() {
            return Err(format!("{what} while compressed data is still pending (call drain first)"));
        }
        Ok(())
    }

    /// Decompress one `DEFLATED_DATA` payload, appending at most
    /// [`MAX_INFLATE_OUT`] bytes to `out`. Returns `Ok(true)` if more output
    /// is pending: call [`drain`](Self::drain) until it returns `Ok(false)`.
    pub fn data(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        self.not_pending("new payload")?;
        if payload.len() > MAX_DATA_COUNT {
            return Err(format!("compressed payload of {} bytes exceeds {MAX_DATA_COUNT}", payload.len()));
        }
        if payload.is_empty() && matches!(self.codec, Codec::Deflate { .. }) {
            // C's inflate gets no input and fails with Z_BUF_ERROR.
            return Err("empty deflated-data payload".into());
        }
        self.input.clear();
        self.input.extend_from_slice(payload);
        self.input_pos = 0;
        self.more = true;
        self.drain(out)
    }

    /// Continue decompressing the current payload; same contract as `data`.
    pub fn drain(&mut self, out: &mut Vec<u8>) -> Result<bool, String> {
        if !self.pending() {
            return Ok(false);
        }
        let mut produced = 0usize;
        loop {
            let space = self.scratch.len().min(MAX_INFLATE_OUT - produced);
            let inp = &self.input[self.input_pos..];
            let (read, wrote) = match &mut self.codec {
                Codec::Deflate { z, .. } => {
                    let (i0, o0) = (z.total_in(), z.total_out());
                    let st = z
                        .decompress(inp, &mut self.scratch[..space], FlushDecompress::None)
                        .map_err(|e| format!("inflate failed: {e}"))?;
                    if st == Status::StreamEnd {
                        return Err("inflate: unexpected end of deflate stream".into());
                    }
                    ((z.total_in() - i0) as usize, (z.total_out() - o0) as usize)
                }
                Codec::Zstd(d) => {
                    let mut ib = InBuffer::around(inp);
                    let mut ob = OutBuffer::around(&mut self.scratch[..space]);
                    d.run(&mut ib, &mut ob).map_err(|e| format!("zstd decompression failed: {e}"))?;
                    (ib.pos(), ob.pos())
                }
            };
            self.input_pos += read;
            out.extend_from_slice(&self.scratch[..wrote]);
            produced += wrote;
            if self.input_pos == self.input.len() && wrote < space {
                // All input consumed and the decoder had no more to give.
                self.more = false;
                self.input.clear();
                self.input_pos = 0;
                if matches!(self.codec, Codec::Deflate { .. }) {
                    self.need_sync_tail = true;
                }
                return Ok(false);
            }
            if produced >= MAX_INFLATE_OUT {
                return Ok(true);
            }
            if read == 0 && wrote == 0 {
                return Err("decompressor made no progress".into());
            }
        }
    }

    /// Feed `bytes` to the inflater, discarding output; all must be consumed.
    fn feed_discard(&mut self, bytes: &[u8]) -> Result<usize, String> {
        let Codec::Deflate { z, .. } = &mut self.codec else { return Ok(0) };
        let mut pos = 0;
        let mut total_out = 0;
        loop {
            let (i0, o0) = (z.total_in(), z.total_out());
            let st = z
                .decompress(&bytes[pos..], &mut self.scratch, FlushDecompress::Sync)
                .map_err(|e| format!("inflate (token) failed: {e}"))?;
            if st == Status::StreamEnd {
                return Err("inflate (token): unexpected end of deflate stream".into());
            }
            let (read, wrote) = ((z.total_in() - i0) as usize, (z.total_out() - o0) as usize);
            pos += read;
            total_out += wrote;
            if pos == bytes.len() && wrote < self.scratch.len() {
                return Ok(total_out);
            }
            if read == 0 && wrote == 0 {
                return Err("inflate (token) made no progress".into());
            }
        }
    }

    /// Re-insert the `00 00 FF FF` the sender stripped from its sync flush.
    fn sync_tail(&mut self) -> Result<(), String> {
        if !self.need_sync_tail {
            return Ok(());
        }
        self.need_sync_tail = false;
        let n = self.feed_discard(&[0, 0, 0xFF, 0xFF])?;
        if n != 0 {
            // An empty stored block yields nothing; anything else means the
            // inflater was not at the sync point the sender flushed to.
            return Err("decompressor lost sync".into());
        }
        Ok(())
    }

    /// Call once for every matched basis block, in stream order, in every
    /// compressed mode. zlib: push the block into the inflate window as
    /// fake stored blocks of ≤ 0xFFFF bytes (`see_deflate_token`); below
    /// protocol 31 every piece of a block > 0xFFFF re-feeds the block's
    /// *first* bytes, as the C code does. zlibx: only completes the pending
    /// sync flush. zstd: no-op.
    pub fn block_seen(&mut self, block: &[u8]) -> Result<(), String> {
        self.not_pending("matched block")?;
        let inject = match &self.codec {
            Codec::Zstd(_) => return Ok(()),
            Codec::Deflate { inject, .. } => *inject,
        };
        self.sync_tail()?;
        if !inject || block.is_empty() {
            return Ok(());
        }
        if block.len() > MAX_SEEN_BLOCK {
            return Err(format!("matched block of {} bytes exceeds {MAX_SEEN_BLOCK}", block.len()));
        }
        let mut left = block.len();
        let mut off = 0usize;
        while left > 0 {
            let n = left.min(0xFFFF);
            let (lo, hi) = (n as u8, (n >> 8) as u8);
            // BFINAL=0, BTYPE=00 (stored), then LEN, NLEN.
            let hdr = [0u8, lo, hi, !lo, !hi];
            self.feed_discard(&hdr)?;
            let got = self.feed_discard(&block[off..off + n])?;
            if got != n {
                return Err("inflate (token): stored block not reproduced".into());
            }
            if self.protocol >= 31 {
                off += n;
            }
            left -= n;
        }
        Ok(())
    }

    /// End of a file's tokens (`END_FLAG`): completes a pending zlib sync flush.
    pub fn end_file(&mut self) -> Result<(), String> {
        self.not_pending("end of file")?;
        if matches!(self.codec, Codec::Deflate { .. }) {
            self.sync_tail()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, FlushCompress};
    use zstd::stream::raw::Encoder as ZstdEncoder;

    /// Deterministic pseudo-random bytes.
    fn prng(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    /// Compressible pseudo-text.
    fn texty(seed: u64, n: usize) -> Vec<u8> {
        let words: [&[u8]; 8] =
            [b"rsync ", b"block ", b"mirror ", b"\x80\xff ", b"delta ", b"token\n", b"zlib ", b"zstd "];
        let r = prng(seed, n);
        let mut v = Vec::with_capacity(n + 8);
        let mut i = 0;
        while v.len() < n {
            v.extend_from_slice(words[(r[i % r.len()] & 7) as usize]);
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// A delta: literal runs and matched basis blocks, in file order.
    #[derive(Clone, Debug)]
    enum Op {
        Lit(Vec<u8>),
        Block(u32),
    }

    struct Basis<'a> {
        data: &'a [u8],
        blength: usize,
    }
    impl Basis<'_> {
        fn count(&self) -> u32 {
            self.data.len().div_ceil(self.blength) as u32
        }
        fn block(&self, i: u32) -> &[u8] {
            let s = i as usize * self.blength;
            &self.data[s..(s + self.blength).min(self.data.len())]
        }
    }

    fn apply(ops: &[Op], basis: &Basis) -> Vec<u8> {
        let mut v = vec![];
        for op in ops {
            match op {
                Op::Lit(d) => v.extend_from_slice(d),
                Op::Block(i) => v.extend_from_slice(basis.block(*i)),
            }
        }
        v
    }

    /// Test-only sender, shaped like token.c's send_*_token: runs of
    /// consecutive blocks are coalesced, literal data is compressed and
    /// flushed before each token, zlib pushes matched blocks into the
    /// compressor window (with a discarded sync flush, as rsync does against
    /// a system zlib lacking Z_INSERT_ONLY), zstd uses one session context.
    struct Sender {
        comp: Compression,
        proto: i32,
        deflate: Compress,
        zstd: ZstdEncoder<'static>,
        out: Vec<u8>,
    }

    impl Sender {
        fn new(comp: Compression, proto: i32) -> Self {
            Sender {
                comp,
                proto,
                deflate: Compress::new(flate2::Compression::new(6), false),
                zstd: ZstdEncoder::new(3).unwrap(),
                out: vec![],
            }
        }

        fn payloads(&mut self, bytes: &[u8]) {
            for c in bytes.chunks(MAX_DATA_COUNT) {
                self.out.push(DEFLATED_DATA | (c.len() >> 8) as u8);
                self.out.push(c.len() as u8);
                self.out.extend_from_slice(c);
            }
        }

        fn deflate_all(&mut self, input: &[u8], flush: FlushCompress) -> Vec<u8> {
            let mut res = vec![];
            let mut buf = vec![0u8; 8192];
            let mut pos = 0;
            loop {
                let (i0, o0) = (self.deflate.total_in(), self.deflate.total_out());
                self.deflate.compress(&input[pos..], &mut buf, flush).unwrap();
                pos += (self.deflate.total_in() - i0) as usize;
                let w = (self.deflate.total_out() - o0) as usize;
                res.extend_from_slice(&buf[..w]);
                if pos == input.len() && w < buf.len() {
                    return res;
                }
            }
        }

        fn literal(&mut self, lit: &[u8]) {
            match self.comp {
                Compression::None => {
                    for c in lit.chunks(32 * 1024) {
                        self.out.extend_from_slice(&(c.len() as i32).to_le_bytes());
                        self.out.extend_from_slice(c);
                    }
                }
                Compression::Zlib | Compression::Zlibx => {
                    let mut z = vec![];
                    for c in lit.chunks(32 * 1024) {
                        z.extend(self.deflate_all(c, FlushCompress::None));
                    }
                    z.extend(self.deflate_all(&[], FlushCompress::Sync));
                    assert_eq!(&z[z.len() - 4..], &[0, 0, 0xFF, 0xFF]);
                    z.truncate(z.len() - 4);
                    self.payloads(&z);
                }
                Compression::Zstd => {
                    let mut z = vec![];
                    let mut buf = vec![0u8; MAX_DATA_COUNT];
                    let mut inb = InBuffer::around(lit);
                    while inb.pos() < lit.len() {
                        let mut ob = OutBuffer::around(&mut buf[..]);
                        self.zstd.run(&mut inb, &mut ob).unwrap();
                        let n = ob.pos();
                        z.extend_from_slice(&buf[..n]);
                    }
                    loop {
                        let mut ob = OutBuffer::around(&mut buf[..]);
                        let left = self.zstd.flush(&mut ob).unwrap();
                        let n = ob.pos();
                        z.extend_from_slice(&buf[..n]);
                        if left == 0 {
                            break;
                        }
                    }
                    self.payloads(&z);
                }
            }
        }

        fn see_block(&mut self, block: &[u8]) {
            if self.comp != Compression::Zlib {
                return;
            }
            let mut left = block.len();
            let mut off = 0;
            while left > 0 {
                let n = left.min(0xFFFF);
                let _discarded = self.deflate_all(&block[off..off + n], FlushCompress::Sync);
                if self.proto >= 31 {
                    off += n;
                }
                left -= n;
            }
        }

        fn run(&mut self, first: u32, count: u32, last_run_end: &mut u32) {
            if self.comp == Compression::None {
                for i in first..first + count {
                    self.out.extend_from_slice(&(-(i as i32) - 1).to_le_bytes());
                }
                return;
            }
            let r = first as i64 - *last_run_end as i64;
            let n = count - 1;
            if (0..=63).contains(&r) {
                self.out.push(if n == 0 { TOKEN_REL } else { TOKENRUN_REL } + r as u8);
            } else {
                self.out.push(if n == 0 { TOKEN_LONG } else { TOKENRUN_LONG });
                self.out.extend_from_slice(&(first as i32).to_le_bytes());
            }
            if n != 0 {
                self.out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            *last_run_end = first + n;
        }

        /// Encode one file.
        fn file(&mut self, ops: &[Op], basis: &Basis) {
            if matches!(self.comp, Compression::Zlib | Compression::Zlibx) {
                self.deflate.reset();
            }
            let mut last_run_end = 0u32;
            let mut i = 0;
            while i < ops.len() {
                match &ops[i] {
                    Op::Lit(d) => {
                        // Merge adjacent literals, as match.c would.
                        let mut lit = d.clone();
                        while let Some(Op::Lit(d2)) = ops.get(i + 1) {
                            lit.extend_from_slice(d2);
                            i += 1;
                        }
                        if !lit.is_empty() {
                            self.literal(&lit);
                        }
                        i += 1;
                    }
                    Op::Block(b) => {
                        let first = *b;
                        let mut count = 1;
                        while let Some(Op::Block(nb)) = ops.get(i + count as usize) {
                            if *nb != first + count || count >= 65536 {
                                break;
                            }
                            count += 1;
                        }
                        self.run(first, count, &mut last_run_end);
                        for k in first..first + count {
                            let blk = basis.block(k).to_vec();
                            self.see_block(&blk);
                        }
                        i += count as usize;
                    }
                }
            }
            match self.comp {
                Compression::None => self.out.extend_from_slice(&0i32.to_le_bytes()),
                _ => self.out.push(END_FLAG),
            }
        }
    }

    /// Receiver: framer + inflater + basis, fed `chunk` bytes at a time.
    /// Checks that Incomplete never changes framer state.
    fn receive(
        framer: &mut TokenFramer,
        infl: &mut Option<TokenInflater>,
        stream: &[u8],
        basis: &Basis,
        chunk: usize,
    ) -> Result<(Vec<u8>, usize), String> {
        framer.start_file_with_blocks(basis.count());
        if let Some(i) = infl.as_mut() {
            i.start_file();
        }
        let mut out = vec![];
        let mut avail = 0usize; // bytes "arrived"
        let mut pos = 0usize;
        loop {
            let buf = &stream[pos..avail];
            let before = framer.clone();
            match framer.step(buf) {
                Err(DecodeError::Incomplete) => {
                    assert_eq!(*framer, before, "Incomplete changed state");
                    if avail == stream.len() {
                        return Err("stream truncated".into());
                    }
                    avail = (avail + chunk).min(stream.len());
                }
                Err(DecodeError::Malformed(m)) => return Err(m),
                Ok((tok, used)) => {
                    assert!(used > 0 && used <= buf.len());
                    pos += used;
                    match tok {
                        WireToken::Data(d) => match infl.as_mut() {
                            None => out.extend_from_slice(d),
                            Some(i) => {
                                let mut more = i.data(d, &mut out)?;
                                while more {
                                    more = i.drain(&mut out)?;
                                }
                            }
                        },
                        WireToken::Blocks { first, count } => {
                            for b in first..first + count {
                                let blk = basis.block(b);
                                out.extend_from_slice(blk);
                                if let Some(i) = infl.as_mut() {
                                    i.block_seen(blk)?;
                                }
                            }
                        }
                        WireToken::End => {
                            if let Some(i) = infl.as_mut() {
                                i.end_file()?;
                            }
                            return Ok((out, pos));
                        }
                    }
                }
            }
        }
    }

    fn shapes(blength: usize) -> (Vec<u8>, Vec<(&'static str, Vec<Op>)>) {
        let basis = texty(1, blength * 200 + blength / 3);
        let nb = basis.len().div_ceil(blength) as u32;
        let mut v: Vec<(&'static str, Vec<Op>)> = vec![
            ("empty", vec![]),
            ("literal only", vec![Op::Lit(texty(2, 100_000))]),
            ("random literal", vec![Op::Lit(prng(3, 70_000))]),
            ("all blocks", (0..nb).map(Op::Block).collect()),
            ("reversed blocks", (0..nb).rev().map(Op::Block).collect()),
            ("last block only", vec![Op::Block(nb - 1)]),
        ];
        let mut mixed = vec![];
        for k in 0..40u32 {
            mixed.push(Op::Lit(texty(10 + k as u64, (k as usize * 37) % 900)));
            let start = (k * 13) % nb;
            for b in start..(start + k % 5).min(nb) {
                mixed.push(Op::Block(b));
            }
            if k % 7 == 0 {
                mixed.push(Op::Block((k * 97) % nb)); // far jump -> TOKEN_LONG sometimes
            }
        }
        v.push(("mixed", mixed));
        // Repeats of the same block with literal in between (zlib window refs).
        let mut rep = vec![];
        for k in 0..30 {
            rep.push(Op::Block(5));
            rep.push(Op::Lit(basis[5 * blength..6 * blength].to_vec()));
            rep.push(Op::Lit(vec![k as u8; 3]));
        }
        v.push(("repeats", rep));
        (basis, v)
    }

    fn roundtrip_all(comp: Compression, proto: i32, blength: usize) {
        let (basis_data, cases) = shapes(blength);
        let basis = Basis { data: &basis_data, blength };
        // One sender / one receiver for the whole session, several files.
        let mut snd = Sender::new(comp, proto);
        for (_, ops) in &cases {
            snd.file(ops, &basis);
        }
        let stream = snd.out.clone();
        for chunk in [usize::MAX / 2, 1, 7, 1000] {
            let mut framer = TokenFramer::new(comp);
            let mut infl = (comp != Compression::None).then(|| TokenInflater::new(comp, proto).unwrap());
            let mut pos = 0;
            for (name, ops) in &cases {
                let want = apply(ops, &basis);
                let (got, used) = receive(&mut framer, &mut infl, &stream[pos..], &basis, chunk.min(stream.len()))
                    .unwrap_or_else(|e| panic!("{comp:?} p{proto} {name} chunk {chunk}: {e}"));
                assert!(got == want, "{comp:?} p{proto} {name} chunk {chunk}: data differs");
                pos += used;
            }
            assert_eq!(pos, stream.len());
            if chunk == 1 && stream.len() > 2_000_000 {
                break;
            }
        }
    }

    #[test]
    fn roundtrip_plain() {
        roundtrip_all(Compression::None, 31, 700);
        roundtrip_all(Compression::None, 27, 1024);
    }

    #[test]
    fn roundtrip_zlibx() {
        roundtrip_all(Compression::Zlibx, 31, 700);
    }

    #[test]
    fn roundtrip_zlib() {
        roundtrip_all(Compression::Zlib, 31, 700);
        roundtrip_all(Compression::Zlib, 30, 1000);
    }

    #[test]
    fn roundtrip_zstd() {
        roundtrip_all(Compression::Zstd, 31, 700);
    }

    #[test]
    fn zlib_big_blocks_proto_quirk() {
        // Blocks > 0xFFFF: proto 30 re-feeds the block start for every piece;
        // proto 31 advances. Both must round-trip when both sides agree ...
        let blength = 100_000;
        let basis_data = texty(5, blength * 4 + 123);
        let basis = Basis { data: &basis_data, blength };
        let mut ops = vec![];
        for k in 0..4 {
            ops.push(Op::Block(k));
            // Literal that back-references the block end (only correct when the
            // window holds exactly what the sender's window holds).
            ops.push(Op::Lit(basis_data[k as usize * blength + 90_000..k as usize * blength + 99_000].to_vec()));
        }
        ops.push(Op::Block(4));
        for proto in [30, 31] {
            let mut snd = Sender::new(Compression::Zlib, proto);
            snd.file(&ops, &basis);
            let mut framer = TokenFramer::new(Compression::Zlib);
            let mut infl = Some(TokenInflater::new(Compression::Zlib, proto).unwrap());
            let (got, _) = receive(&mut framer, &mut infl, &snd.out, &basis, usize::MAX / 2).unwrap();
            assert!(got == apply(&ops, &basis), "proto {proto}");
            // ... and a receiver with the other protocol's window handling must not
            // silently reproduce the data.
            let other = if proto == 30 { 31 } else { 30 };
            let mut framer = TokenFramer::new(Compression::Zlib);
            let mut infl = Some(TokenInflater::new(Compression::Zlib, other).unwrap());
            if let Ok((got, _)) = receive(&mut framer, &mut infl, &snd.out, &basis, usize::MAX / 2) {
                assert!(got != apply(&ops, &basis), "window handling made no difference");
            }
        }
    }

    #[test]
    fn zlib_needs_window_injection() {
        // A zlib stream decoded as zlibx (no injection) must go wrong when
        // literals reference matched blocks.
        let blength = 700;
        let basis_data = texty(9, blength * 10);
        let basis = Basis { data: &basis_data, blength };
        let ops = vec![Op::Block(3), Op::Lit(basis_data[3 * 700..4 * 700].to_vec())];
        let mut snd = Sender::new(Compression::Zlib, 31);
        snd.file(&ops, &basis);
        let mut framer = TokenFramer::new(Compression::Zlibx);
        let mut infl = Some(TokenInflater::new(Compression::Zlibx, 31).unwrap());
        if let Ok((got, _)) = receive(&mut framer, &mut infl, &snd.out, &basis, usize::MAX / 2) {
            assert!(got != apply(&ops, &basis));
        }
    }

    #[test]
    fn plain_streams_literal_pieces() {
        let mut f = TokenFramer::new(Compression::None);
        f.start_file();
        let mut s = 100_000i32.to_le_bytes().to_vec();
        // Header alone: Incomplete, nothing consumed.
        assert_eq!(f.step(&s), Err(DecodeError::Incomplete));
        assert!(!f.in_literal());
        s.extend_from_slice(b"abc");
        let (t, n) = f.step(&s).unwrap();
        assert_eq!((t, n), (WireToken::Data(b"abc"), 7));
        assert!(f.in_literal());
        assert_eq!(f.step(&[]), Err(DecodeError::Incomplete));
        let rest = vec![1u8; 99_997];
        let mut more = rest.clone();
        more.extend_from_slice(&(-1i32).to_le_bytes()); // block 0
        more.extend_from_slice(&i32::MIN.to_le_bytes()); // block 2^31-1
        more.extend_from_slice(&0i32.to_le_bytes());
        let (t, n) = f.step(&more).unwrap();
        assert_eq!((t, n), (WireToken::Data(&rest[..]), 99_997));
        let (t, n) = f.step(&more[n..]).unwrap();
        assert_eq!((t, n), (WireToken::Blocks { first: 0, count: 1 }, 4));
        let (t, _) = f.step(&more[99_997 + 4..]).unwrap();
        assert_eq!(t, WireToken::Blocks { first: 0x7FFF_FFFF, count: 1 });
        let (t, _) = f.step(&more[99_997 + 8..]).unwrap();
        assert_eq!(t, WireToken::End);
        // With a block limit, out-of-range indices are malformed and change nothing.
        f.start_file_with_blocks(3);
        let before = f.clone();
        assert!(matches!(f.step(&(-4i32).to_le_bytes()), Err(DecodeError::Malformed(_))));
        assert_eq!(f, before);
        assert!(f.step(&(-3i32).to_le_bytes()).is_ok());
    }

    #[test]
    fn compressed_framing_vectors() {
        let mut f = TokenFramer::new(Compression::Zstd);
        f.start_file();
        // TOKEN_REL +5 -> block 5; TOKENRUN_REL +2, n=3 -> blocks 7..=10;
        // TOKEN_LONG 1000; TOKENRUN_LONG 2, n=1 -> 2,3; TOKEN_REL +0 -> 3; data; END.
        let mut s = vec![0x85, 0xC2, 3, 0, 0x20];
        s.extend_from_slice(&1000i32.to_le_bytes());
        s.push(0x21);
        s.extend_from_slice(&2i32.to_le_bytes());
        s.extend_from_slice(&[1, 0, 0x80, 0x40, 3, 9, 9, 9, 0x7F, 0xFF]);
        let mut pos = 0;
        let mut toks = vec![];
        loop {
            match f.step(&s[pos..]) {
                Ok((t, n)) => {
                    toks.push(format!("{t:?}"));
                    pos += n;
                }
                Err(DecodeError::Incomplete) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            toks,
            [
                "Blocks { first: 5, count: 1 }",
                "Blocks { first: 7, count: 4 }",
                "Blocks { first: 1000, count: 1 }",
                "Blocks { first: 2, count: 2 }",
                "Blocks { first: 3, count: 1 }",
                "Data([9, 9, 9])",
            ]
        );
        // 0x7F 0xFF announces 16383 bytes: incomplete until all are there.
        assert_eq!(pos, s.len() - 2);
        let mut big = vec![0x7F, 0xFF];
        big.extend(vec![0u8; 16383]);
        let (t, n) = f.step(&big).unwrap();
        assert_eq!((n, matches!(t, WireToken::Data(d) if d.len() == 16383)), (16385, true));
        assert_eq!(f.step(&[0]).unwrap(), (WireToken::End, 1));
        // Base restarts after End: REL +1 is block 1.
        assert_eq!(f.step(&[0x81]).unwrap(), (WireToken::Blocks { first: 1, count: 1 }, 1));
        f.start_file();
        assert_eq!(f.step(&[0x80]).unwrap(), (WireToken::Blocks { first: 0, count: 1 }, 1));

        let bad: &[&[u8]] = &[
            &[0x01],                               // unknown flag
            &[0x3F],                               // unknown flag
            &[0x20, 0xFF, 0xFF, 0xFF, 0xFF],       // negative index
            &[0x20, 0xFF, 0xFF, 0xFF, 0x7F],       // > MAX_TOKEN_INDEX
            &[0x21, 1, 0, 0, 0, 0, 0],             // run of 0
            &[0x21, 0xFE, 0xFF, 0xFF, 0x7F, 1, 0], // run past MAX_TOKEN_INDEX
            &[0xC0, 0, 0],                         // relative run of 0
        ];
        for b in bad {
            let mut f = TokenFramer::new(Compression::Zlib);
            f.start_file();
            let before = f.clone();
            assert!(matches!(f.step(b), Err(DecodeError::Malformed(_))), "{b:02x?}");
            assert_eq!(f, before);
        }
        // Relative overflow near MAX_TOKEN_INDEX.
        let mut f = TokenFramer::new(Compression::Zlib);
        f.start_file();
        let mut s = vec![0x20];
        s.extend_from_slice(&(MAX_TOKEN_INDEX as i32).to_le_bytes());
        f.step(&s).unwrap();
        assert!(f.step(&[0x80]).is_ok());
        assert!(matches!(f.step(&[0x81]), Err(DecodeError::Malformed(_))));
        // Block limit applies to whole runs.
        let mut f = TokenFramer::new(Compression::Zlib);
        f.start_file_with_blocks(10);
        assert!(matches!(f.step(&[0xC5, 5, 0]), Err(DecodeError::Malformed(_))));
        assert_eq!(f.step(&[0xC5, 4, 0]).unwrap().0, WireToken::Blocks { first: 5, count: 5 });
    }

    #[test]
    fn truncation_at_every_offset() {
        for comp in [Compression::None, Compression::Zlib, Compression::Zstd] {
            let basis_data = texty(4, 700 * 20);
            let basis = Basis { data: &basis_data, blength: 700 };
            let ops = vec![Op::Lit(texty(8, 3000)), Op::Block(2), Op::Block(3), Op::Block(19), Op::Lit(prng(2, 500))];
            let mut snd = Sender::new(comp, 31);
            snd.file(&ops, &basis);
            let stream = snd.out;
            // Parse the full stream once to know token boundaries.
            for cut in 0..stream.len() {
                let mut f = TokenFramer::new(comp);
                f.start_file();
                let mut pos = 0;
                loop {
                    let before = f.clone();
                    match f.step(&stream[pos..cut]) {
                        Ok((_, n)) => pos += n,
                        Err(DecodeError::Incomplete) => {
                            assert_eq!(f, before);
                            break;
                        }
                        Err(e) => panic!("{comp:?} cut {cut}: {e}"),
                    }
                }
                assert!(pos <= cut);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in 0..300u64 {
            let junk = prng(seed, 1 + (seed as usize * 131) % 5000);
            for comp in [Compression::None, Compression::Zlib, Compression::Zlibx, Compression::Zstd] {
                let mut f = TokenFramer::new(comp);
                f.start_file_with_blocks((seed % 50) as u32);
                let mut infl =
                    (comp != Compression::None).then(|| TokenInflater::new(comp, 30 + (seed % 2) as i32).unwrap());
                let mut pos = 0;
                let mut out = vec![];
                while let Ok((t, n)) = f.step(&junk[pos..]) {
                    pos += n;
                    if let Some(i) = infl.as_mut() {
                        let r = match t {
                            WireToken::Data(d) => i.data(d, &mut out).and_then(|mut m| {
                                while m {
                                    m = i.drain(&mut out)?;
                                }
                                Ok(())
                            }),
                            WireToken::Blocks { .. } => i.block_seen(&junk[..junk.len().min(300)]),
                            WireToken::End => i.end_file(),
                        };
                        if r.is_err() {
                            break;
                        }
                    }
                    assert!(out.len() < 64 << 20);
                }
            }
            // Raw garbage straight into the inflaters.
            for comp in [Compression::Zlib, Compression::Zstd] {
                let mut i = TokenInflater::new(comp, 31).unwrap();
                let mut out = vec![];
                let _ = i.data(&junk[..junk.len().min(MAX_DATA_COUNT)], &mut out);
                let _ = i.drain(&mut out);
                let _ = i.end_file();
            }
        }
    }

    #[test]
    fn inflater_output_is_bounded_per_call() {
        // 20 MB of zeros compresses into a few payloads with huge ratios.
        let zeros = vec![0u8; 20 << 20];
        for comp in [Compression::Zlib, Compression::Zstd] {
            let basis = Basis { data: &[0u8; 700], blength: 700 };
            let mut snd = Sender::new(comp, 31);
            snd.file(&[Op::Lit(zeros.clone())], &basis);
            let mut f = TokenFramer::new(comp);
            f.start_file();
            let mut i = TokenInflater::new(comp, 31).unwrap();
            i.start_file();
            let mut pos = 0;
            let mut total = 0usize;
            loop {
                let (t, n) = f.step(&snd.out[pos..]).unwrap();
                pos += n;
                match t {
                    WireToken::Data(d) => {
                        let mut out = vec![];
                        let mut more = i.data(d, &mut out).unwrap();
                        assert!(out.len() <= MAX_INFLATE_OUT);
                        total += out.len();
                        // Misuse is refused rather than silently dropping output.
                        if more {
                            assert!(i.data(d, &mut vec![]).is_err());
                            assert!(i.end_file().is_err());
                        }
                        while more {
                            out.clear();
                            more = i.drain(&mut out).unwrap();
                            assert!(out.len() <= MAX_INFLATE_OUT);
                            assert!(out.iter().all(|&b| b == 0));
                            total += out.len();
                        }
                    }
                    WireToken::End => {
                        i.end_file().unwrap();
                        break;
                    }
                    WireToken::Blocks { .. } => unreachable!(),
                }
            }
            assert_eq!(total, zeros.len(), "{comp:?}");
        }
    }

    #[test]
    fn inflater_rejects_bad_input() {
        assert!(TokenInflater::new(Compression::None, 31).is_err());
        let mut i = TokenInflater::new(Compression::Zlib, 31).unwrap();
        assert!(i.data(&[], &mut vec![]).is_err());
        assert!(i.data(&vec![0u8; MAX_DATA_COUNT + 1], &mut vec![]).is_err());
        // A final deflate block (sender never ends the stream) is an error.
        let mut c = Compress::new(flate2::Compression::new(6), false);
        let mut buf = vec![0u8; 100];
        c.compress(b"hello", &mut buf, FlushCompress::Finish).unwrap();
        let n = c.total_out() as usize;
        let mut i = TokenInflater::new(Compression::Zlib, 31).unwrap();
        assert!(i.data(&buf[..n], &mut vec![]).is_err());
    }

    // Token streams captured from a real rsync 3.5.0 daemon (server→client,
    // demultiplexed; from just after the echoed sum head through END and the
    // 16-byte MD5 file checksum). Basis and target files were generated with
    // the `prng` above:
    //   P30/P31: -B 100000, zlib, basis = prng(1, 200000) =: B, target =
    //     B[..100000] ‖ B[10000..30000] (P30) or B[75000..95000] (P31) ‖ B[100000..]
    //   Z1/Z2: one zstd session, two files, basis C = prng(2, 7000), blength 700:
    //     Z1 = C[..2100] ‖ "hello zstd "×50 ‖ C[2100..]
    //     Z2 = "hello zstd "×60 ‖ C[700..1400] ‖ "hello zstd "×3
    const RSYNC_P30: &str = "8040a3ecdcb100000000c0207feb69ec289084fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc82fe417f20bf985fc427e21bf905fc8ff08f90381006c5a557b30dca02c5054248dc33d89d8";
    const RSYNC_P31: &str = "8040a3ecddb100000000c0207feb69ec28913c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3e069f034781a3c0d9e064f83a7c1d3f0781a0281003a6779117e4c966a80b5b822d8b75a62";
    const RSYNC_Z1: &str =
        "c00200401b28b52ffd00589400005868656c6c6f207a737464200100185c152fc1060000bd13b5ca74e71527c62216518c90cdb2";
    const RSYNC_Z2: &str = "400b44000008680100902a200481400a3c00000868010038100200a6fe71397d2f944000d6163b1072b50e";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Decode one captured file; returns the output if it matches the
    /// trailing MD5, else an error.
    fn decode_capture(
        framer: &mut TokenFramer,
        infl: &mut Option<TokenInflater>,
        stream: &[u8],
        basis: &Basis,
    ) -> Result<Vec<u8>, String> {
        let (out, used) = receive(framer, infl, stream, basis, usize::MAX / 2)?;
        use md5::Digest;
        let sum = md5::Md5::digest(&out);
        if stream[used..] != sum[..] {
            return Err("file checksum mismatch".into());
        }
        Ok(out)
    }

    #[test]
    fn real_rsync_zlib_big_block_window_quirk() {
        let b = prng(1, 200_000);
        let basis = Basis { data: &b, blength: 100_000 };
        for (hexs, proto, mid) in [(RSYNC_P30, 30, 10_000..30_000), (RSYNC_P31, 31, 75_000..95_000)] {
            let stream = unhex(hexs);
            let mut want = b[..100_000].to_vec();
            want.extend_from_slice(&b[mid]);
            want.extend_from_slice(&b[100_000..]);
            let mut f = TokenFramer::new(Compression::Zlib);
            let mut i = Some(TokenInflater::new(Compression::Zlib, proto).unwrap());
            let got = decode_capture(&mut f, &mut i, &stream, &basis).unwrap();
            assert!(got == want, "proto {proto}");
            // The other protocol's window handling, or no injection, must fail.
            for (c, p) in [(Compression::Zlib, 61 - proto), (Compression::Zlibx, proto)] {
                let mut f = TokenFramer::new(c);
                let mut i = Some(TokenInflater::new(c, p).unwrap());
                assert!(
                    decode_capture(&mut f, &mut i, &stream, &basis).is_err(),
                    "{c:?} p{p} on proto {proto} capture"
                );
            }
        }
    }

    #[test]
    fn real_rsync_zstd_session_context() {
        let c = prng(2, 7000);
        let basis = Basis { data: &c, blength: 700 };
        let hz = b"hello zstd ";
        let mut w1 = c[..2100].to_vec();
        (0..50).for_each(|_| w1.extend_from_slice(hz));
        w1.extend_from_slice(&c[2100..]);
        let mut w2 = vec![];
        (0..60).for_each(|_| w2.extend_from_slice(hz));
        w2.extend_from_slice(&c[700..1400]);
        (0..3).for_each(|_| w2.extend_from_slice(hz));
        let (s1, s2) = (unhex(RSYNC_Z1), unhex(RSYNC_Z2));
        let mut f = TokenFramer::new(Compression::Zstd);
        let mut i = Some(TokenInflater::new(Compression::Zstd, 32).unwrap());
        assert!(decode_capture(&mut f, &mut i, &s1, &basis).unwrap() == w1);
        assert!(decode_capture(&mut f, &mut i, &s2, &basis).unwrap() == w2);
        // File 2 on a fresh context fails: the stream is session-long.
        let mut f = TokenFramer::new(Compression::Zstd);
        let mut i = Some(TokenInflater::new(Compression::Zstd, 32).unwrap());
        assert!(decode_capture(&mut f, &mut i, &s2, &basis).is_err());
    }
}
