//! `evil-rsyncd`: a scripted, possibly hostile rsync daemon on 127.0.0.1, for
//! tests that attack the client (safety-plan §4.1), plus the run/invariant
//! helpers the hostile and fault tests share.
//!
//! A test gives [`EvilServer::start`] a script `Fn(&mut Conn, conn_no)`; the
//! script drives one connection with building blocks that speak the real wire
//! format (protocol-brief §3–§13) for protocols 27–32:
//!
//! ```ignore
//! let files = vec![EFile::dir("."), EFile::file("a", b"hello")];
//! let srv = EvilServer::start(Cfg::new(32), move |c, _| {
//!     c.handshake()?;                 // greeting, module, OK, args, compat/strings/seed, filters
//!     c.send_flist(&files, 0)?;       // entries + end marker (+ id lists, proto < 30 io_error)
//!     c.serve(&files, |_c, _req| Reply::Honest)?; // request loop, stats, goodbye
//!     Ok(())
//! });
//! ```
//!
//! Every step can be replaced by raw bytes: [`Conn::raw`] (socket bytes, no
//! framing), [`Conn::data`] (MSG_DATA payload), [`Conn::msg`] (any MSG_* tag),
//! and every file-list field by [`EFile::over`] (`Field` → raw bytes) or the
//! whole entry by [`EFile::raw_entry`]. Writes can trickle ([`Conn::trickle`]),
//! the script can stall ([`Conn::stall`]), close with FIN ([`Conn::close`]) or
//! RST ([`Conn::reset`]). All reads from the client time out (default 20 s)
//! so a script never hangs the test; script errors are only recorded.
//!
//! The encoder is independent of the rmirror library (only `md-5`, `md4`,
//! `xxhash-rust` and `zstd` are shared dependencies) and is checked against
//! the real client/daemon by `tests/hostile.rs::evil_selftest_*`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Constants (rsync.h)
// ---------------------------------------------------------------------------

pub const XMIT_TOP_DIR: u32 = 1 << 0;
pub const XMIT_SAME_MODE: u32 = 1 << 1;
pub const XMIT_EXTENDED_FLAGS: u32 = 1 << 2;
pub const XMIT_SAME_UID: u32 = 1 << 3;
pub const XMIT_SAME_GID: u32 = 1 << 4;
pub const XMIT_SAME_NAME: u32 = 1 << 5;
pub const XMIT_LONG_NAME: u32 = 1 << 6;
pub const XMIT_SAME_TIME: u32 = 1 << 7;
pub const XMIT_NO_CONTENT_DIR: u32 = 1 << 8;
pub const XMIT_HLINKED: u32 = 1 << 9;
pub const XMIT_SAME_DEV_PRE30: u32 = 1 << 10;
pub const XMIT_USER_NAME_FOLLOWS: u32 = 1 << 10;
pub const XMIT_GROUP_NAME_FOLLOWS: u32 = 1 << 11;
pub const XMIT_HLINK_FIRST: u32 = 1 << 12;
pub const XMIT_IO_ERROR_ENDLIST: u32 = 1 << 12;
pub const XMIT_MOD_NSEC: u32 = 1 << 13;

pub const CF_INC_RECURSE: i32 = 1;
pub const CF_SYMLINK_TIMES: i32 = 2;
pub const CF_SYMLINK_ICONV: i32 = 4;
pub const CF_SAFE_FLIST: i32 = 8;
pub const CF_AVOID_XATTR_OPTIM: i32 = 16;
pub const CF_CHKSUM_SEED_FIX: i32 = 32;
pub const CF_INPLACE_PARTIAL_DIR: i32 = 64;
pub const CF_VARINT_FLIST_FLAGS: i32 = 128;
pub const CF_ID0_NAMES: i32 = 256;

pub const MSG_DATA: u8 = 0;
pub const MSG_ERROR_XFER: u8 = 1;
pub const MSG_INFO: u8 = 2;
pub const MSG_ERROR: u8 = 3;
pub const MSG_WARNING: u8 = 4;
pub const MSG_REDO: u8 = 9;
pub const MSG_IO_ERROR: u8 = 22;
pub const MSG_IO_TIMEOUT: u8 = 33;
pub const MSG_NOOP: u8 = 42;
pub const MSG_ERROR_EXIT: u8 = 86;
pub const MSG_DELETED: u8 = 101;
pub const MSG_NO_SEND: u8 = 102;

pub const NDX_DONE: i32 = -1;
pub const NDX_FLIST_EOF: i32 = -2;
pub const NDX_DEL_STATS: i32 = -3;

pub const ITEM_BASIS_TYPE_FOLLOWS: u16 = 0x0800;
pub const ITEM_XNAME_FOLLOWS: u16 = 0x1000;
pub const ITEM_IS_NEW: u16 = 0x2000;
pub const ITEM_TRANSFER: u16 = 0x8000;

pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFSOCK: u32 = 0o140000;

// ---------------------------------------------------------------------------
// Primitive encoders (io.c write_*), written from the brief, not the library
// ---------------------------------------------------------------------------

pub mod enc {
    pub fn u8(o: &mut Vec<u8>, v: u8) {
        o.push(v);
    }
    pub fn u16(o: &mut Vec<u8>, v: u16) {
        o.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(o: &mut Vec<u8>, v: i32) {
        o.extend_from_slice(&v.to_le_bytes());
    }
    /// `write_longint` (proto < 30).
    pub fn longint(o: &mut Vec<u8>, v: i64) {
        if (0..=0x7FFF_FFFF).contains(&v) {
            i32(o, v as i32);
        } else {
            i32(o, -1);
            o.extend_from_slice(&v.to_le_bytes());
        }
    }
    /// `write_varint`.
    pub fn varint(o: &mut Vec<u8>, x: i32) {
        let mut b = [0u8; 5];
        b[1..5].copy_from_slice(&x.to_le_bytes());
        let mut cnt = 4usize;
        while cnt > 1 && b[cnt] == 0 {
            cnt -= 1;
        }
        let bit: u8 = 1u8 << (7 - cnt + 1);
        if b[cnt] >= bit {
            cnt += 1;
            b[0] = !(bit - 1);
        } else if cnt > 1 {
            b[0] = b[cnt] | !(bit.wrapping_mul(2).wrapping_sub(1));
        } else {
            b[0] = b[cnt];
        }
        o.extend_from_slice(&b[..cnt]);
    }
    /// `write_varlong(x, min_bytes)`.
    pub fn varlong(o: &mut Vec<u8>, x: i64, min_bytes: usize) {
        let mut b = [0u8; 9];
        b[1..9].copy_from_slice(&x.to_le_bytes());
        let mut cnt = 8usize;
        while cnt > min_bytes && b[cnt] == 0 {
            cnt -= 1;
        }
        let bit: u8 = 1u8 << (7 + min_bytes - cnt);
        if b[cnt] >= bit {
            cnt += 1;
            b[0] = !(bit - 1);
        } else if cnt > min_bytes {
            b[0] = b[cnt] | !(bit.wrapping_mul(2).wrapping_sub(1));
        } else {
            b[0] = b[cnt];
        }
        o.extend_from_slice(&b[..cnt]);
    }
    pub fn vstring(o: &mut Vec<u8>, s: &[u8]) {
        let n = s.len();
        if n < 0x80 {
            o.push(n as u8);
        } else {
            o.push(0x80 | (n >> 8) as u8);
            o.push(n as u8);
        }
        o.extend_from_slice(s);
    }
    /// One varint as bytes (for raw overrides).
    pub fn varint_bytes(x: i32) -> Vec<u8> {
        let mut v = vec![];
        varint(&mut v, x);
        v
    }
    pub fn i32_bytes(x: i32) -> Vec<u8> {
        x.to_le_bytes().to_vec()
    }
    pub fn varlong_bytes(x: i64, min: usize) -> Vec<u8> {
        let mut v = vec![];
        varlong(&mut v, x, min);
        v
    }
}

/// One direction of the protocol-30 ndx delta coding (`io.c write_ndx`).
#[derive(Debug, Clone, Copy)]
pub struct NdxOut {
    prev_pos: i32,
    prev_neg: i32,
}

impl Default for NdxOut {
    fn default() -> Self {
        NdxOut { prev_pos: -1, prev_neg: 1 }
    }
}

impl NdxOut {
    pub fn write(&mut self, o: &mut Vec<u8>, ndx: i32, modern: bool) {
        if !modern {
            enc::i32(o, ndx);
            return;
        }
        let (n, diff) = if ndx >= 0 {
            let d = ndx.wrapping_sub(self.prev_pos);
            self.prev_pos = ndx;
            (ndx, d)
        } else if ndx == NDX_DONE {
            o.push(0);
            return;
        } else {
            o.push(0xFF);
            let n = ndx.wrapping_neg();
            let d = n.wrapping_sub(self.prev_neg);
            self.prev_neg = n;
            (n, d)
        };
        if diff > 0 && diff < 0xFE {
            o.push(diff as u8);
        } else if !(0..=0x7FFF).contains(&diff) {
            o.push(0xFE);
            o.push(((n >> 24) as u8) | 0x80);
            o.push(n as u8);
            o.push((n >> 8) as u8);
            o.push((n >> 16) as u8);
        } else {
            o.push(0xFE);
            o.push((diff >> 8) as u8);
            o.push(diff as u8);
        }
    }

    /// Decode (`io.c read_ndx`) from a byte source.
    pub fn read(&mut self, src: &mut dyn FnMut() -> io::Result<u8>, modern: bool) -> io::Result<i32> {
        if !modern {
            let b = [src()?, src()?, src()?, src()?];
            return Ok(i32::from_le_bytes(b));
        }
        let mut b0 = src()?;
        let neg = if b0 == 0xFF {
            b0 = src()?;
            true
        } else if b0 == 0 {
            return Ok(NDX_DONE);
        } else {
            false
        };
        let prev = if neg { self.prev_neg } else { self.prev_pos };
        let num = if b0 == 0xFE {
            let b1 = src()?;
            let b2 = src()?;
            if b1 & 0x80 != 0 {
                let b3 = src()?;
                let b4 = src()?;
                (((b1 & 0x7F) as i32) << 24) | ((b4 as i32) << 16) | ((b3 as i32) << 8) | b2 as i32
            } else {
                prev + (((b1 as i32) << 8) | b2 as i32)
            }
        } else {
            prev + b0 as i32
        };
        if neg {
            self.prev_neg = num;
            Ok(-num)
        } else {
            self.prev_pos = num;
            Ok(num)
        }
    }
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// The transfer checksum the script uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Csum {
    /// Protocol < 30 without negotiation: MD4(seed ‖ file).
    Md4Old,
    Md5,
    Xxh64,
    Xxh3,
    Xxh128,
}

impl Csum {
    pub fn name(self) -> &'static str {
        match self {
            Csum::Md4Old => "md4",
            Csum::Md5 => "md5",
            Csum::Xxh64 => "xxh64",
            Csum::Xxh3 => "xxh3",
            Csum::Xxh128 => "xxh128",
        }
    }
    pub fn len(self) -> usize {
        match self {
            Csum::Xxh64 | Csum::Xxh3 => 8,
            _ => 16,
        }
    }
    /// Whole-file checksum (`sum_init/sum_update/sum_end`).
    pub fn file_sum(self, seed: i32, data: &[u8]) -> Vec<u8> {
        use md4::Digest as _;
        match self {
            Csum::Md4Old => {
                let mut h = md4::Md4::new();
                h.update(seed.to_le_bytes());
                h.update(data);
                h.finalize().to_vec()
            }
            Csum::Md5 => {
                let mut h = md5::Md5::new();
                h.update(data);
                h.finalize().to_vec()
            }
            Csum::Xxh64 => xxhash_rust::xxh64::xxh64(data, 0).to_le_bytes().to_vec(),
            Csum::Xxh3 => xxhash_rust::xxh3::xxh3_64(data).to_le_bytes().to_vec(),
            Csum::Xxh128 => {
                let v = xxhash_rust::xxh3::xxh3_128(data);
                let mut o = (v as u64).to_le_bytes().to_vec();
                o.extend_from_slice(&((v >> 64) as u64).to_le_bytes());
                o
            }
        }
    }
}

// ---------------------------------------------------------------------------
// File-list entries with per-field overrides
// ---------------------------------------------------------------------------

/// A field of one file-list entry (`recv_file_entry` order), for raw overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// xflags (byte / shortint / varint, as negotiated).
    Flags,
    /// Same-name prefix length byte (only written if present in flags or overridden).
    L1,
    /// Suffix length (byte, or varint30 with XMIT_LONG_NAME).
    L2,
    /// Suffix bytes.
    Name,
    /// first_hlink_ndx varint (proto ≥ 30).
    HlinkNdx,
    Size,
    Mtime,
    Nsec,
    Mode,
    Uid,
    Gid,
    /// Symlink target length (varint30).
    LinkLen,
    LinkTarget,
    /// proto < 30 hard-link dev/ino longints.
    DevIno,
    Checksum,
    /// Bytes appended after the whole entry.
    Trailer,
}

#[derive(Debug, Clone)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    /// A special/device with the given full mode (incl. type bits).
    Other(u32),
}

/// One file-list entry as the hostile sender describes it.
#[derive(Debug, Clone)]
pub struct EFile {
    pub name: Vec<u8>,
    pub kind: Kind,
    pub perms: u32,
    pub mtime: i64,
    pub nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// Hard-link group key (files with the same key are one group).
    pub hl: Option<u32>,
    /// Size on the wire if different from the data length.
    pub size: Option<i64>,
    /// Directory: XMIT_NO_CONTENT_DIR (proto ≥ 30).
    pub no_content: bool,
    /// Directory: XMIT_TOP_DIR (default for ".").
    pub top: Option<bool>,
    pub flags_or: u32,
    pub flags_clear: u32,
    pub over: Vec<(Field, Vec<u8>)>,
    pub raw_entry: Option<Vec<u8>>,
    /// What the honest sender transmits for this file (default: the content).
    pub send_data: Option<Vec<u8>>,
}

pub const MTIME: i64 = 1_700_000_000;

impl EFile {
    fn new(name: &[u8], kind: Kind, perms: u32) -> EFile {
        EFile {
            name: name.to_vec(),
            kind,
            perms,
            mtime: MTIME,
            nsec: 0,
            uid: 0,
            gid: 0,
            hl: None,
            size: None,
            no_content: false,
            top: None,
            flags_or: 0,
            flags_clear: 0,
            over: vec![],
            raw_entry: None,
            send_data: None,
        }
    }
    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> EFile {
        EFile::new(name.as_ref(), Kind::File(data.as_ref().to_vec()), 0o644)
    }
    pub fn dir(name: impl AsRef<[u8]>) -> EFile {
        EFile::new(name.as_ref(), Kind::Dir, 0o755)
    }
    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> EFile {
        EFile::new(name.as_ref(), Kind::Symlink(target.as_ref().to_vec()), 0o777)
    }
    pub fn other(name: impl AsRef<[u8]>, mode: u32) -> EFile {
        EFile::new(name.as_ref(), Kind::Other(mode), mode & 0o7777)
    }
    pub fn perms(mut self, p: u32) -> Self {
        self.perms = p;
        self
    }
    pub fn mtime(mut self, t: i64) -> Self {
        self.mtime = t;
        self
    }
    pub fn nsec(mut self, n: u32) -> Self {
        self.nsec = n;
        self
    }
    pub fn hl(mut self, key: u32) -> Self {
        self.hl = Some(key);
        self
    }
    pub fn size(mut self, s: i64) -> Self {
        self.size = Some(s);
        self
    }
    pub fn no_content(mut self) -> Self {
        self.no_content = true;
        self
    }
    pub fn top(mut self, t: bool) -> Self {
        self.top = Some(t);
        self
    }
    pub fn flags_or(mut self, f: u32) -> Self {
        self.flags_or |= f;
        self
    }
    pub fn flags_clear(mut self, f: u32) -> Self {
        self.flags_clear |= f;
        self
    }
    /// Replace one field's bytes on the wire.
    pub fn over(mut self, f: Field, bytes: impl AsRef<[u8]>) -> Self {
        self.over.push((f, bytes.as_ref().to_vec()));
        self
    }
    pub fn raw_entry(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.raw_entry = Some(bytes.as_ref().to_vec());
        self
    }
    pub fn send_data(mut self, d: impl AsRef<[u8]>) -> Self {
        self.send_data = Some(d.as_ref().to_vec());
        self
    }
    pub fn mode(&self) -> u32 {
        match &self.kind {
            Kind::File(_) => S_IFREG | self.perms,
            Kind::Dir => S_IFDIR | self.perms,
            Kind::Symlink(_) => S_IFLNK | self.perms,
            Kind::Other(m) => *m,
        }
    }
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
    pub fn content(&self) -> &[u8] {
        match &self.kind {
            Kind::File(d) => d,
            _ => &[],
        }
    }
    /// The bytes the honest sender transmits.
    pub fn payload(&self) -> &[u8] {
        self.send_data.as_deref().unwrap_or_else(|| self.content())
    }
    fn wire_size(&self) -> i64 {
        self.size.unwrap_or(match &self.kind {
            Kind::File(d) => d.len() as i64,
            Kind::Symlink(t) => t.len() as i64,
            _ => 0,
        })
    }
    fn get_over(&self, f: Field) -> Option<&[u8]> {
        self.over.iter().rev().find(|(k, _)| *k == f).map(|(_, v)| v.as_slice())
    }
}

/// rsync's sort order (`flist.c f_name_cmp`): proto ≥ 29 compares component
/// by component, non-directories before directories at the same level and
/// directory names as if followed by `/`; older protocols compare bytes.
pub fn sort_files(files: &[EFile], protocol: i32) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..files.len()).collect();
    idx.sort_by(|&a, &b| name_cmp(&files[a], &files[b], protocol));
    idx
}

fn name_cmp(a: &EFile, b: &EFile, protocol: i32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if a.name == b"." && b.name == b"." {
        return Ordering::Equal;
    }
    if a.name == b"." {
        return Ordering::Less;
    }
    if b.name == b"." {
        return Ordering::Greater;
    }
    if protocol < 29 {
        return a.name.cmp(&b.name);
    }
    let key = |f: &EFile| -> Vec<(bool, Vec<u8>)> {
        let comps: Vec<&[u8]> = f.name.split(|&c| c == b'/').collect();
        let n = comps.len();
        comps
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let d = i + 1 < n || f.is_dir();
                let mut v = c.to_vec();
                if d {
                    v.push(b'/');
                }
                (d, v)
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Cfg {
    /// Protocol the server greets with (27..=32; anything for abuse).
    pub protocol: i32,
    /// Whole greeting line override (including `\n`).
    pub greeting: Option<Vec<u8>>,
    pub motd: Option<Vec<u8>>,
    /// Compat flags; None = what an honest 3.5 server would answer to the client's `-e.` letters.
    pub compat: Option<i32>,
    /// Checksum the server picks when names are negotiated.
    pub csum: Csum,
    /// Checksum vstring override (raw, sent as a vstring).
    pub csum_list: Option<Vec<u8>>,
    pub seed: i32,
    /// Largest MSG_DATA frame the server writes (small values split items).
    pub frame_max: usize,
    /// Literal run size for plain tokens.
    pub chunk: usize,
    /// Read timeout for everything the server reads from the client.
    pub read_timeout: Duration,
    /// MSG_IO_TIMEOUT value sent right after the seed (proto ≥ 31).
    pub io_timeout_msg: Option<i32>,
}

impl Cfg {
    pub fn new(protocol: i32) -> Cfg {
        Cfg {
            protocol,
            greeting: None,
            motd: None,
            compat: None,
            csum: Csum::Md5,
            csum_list: None,
            seed: 0x1234_5678,
            frame_max: 32 * 1024,
            chunk: 32 * 1024,
            read_timeout: Duration::from_secs(20),
            io_timeout_msg: None,
        }
    }
    pub fn frame_max(mut self, n: usize) -> Self {
        self.frame_max = n.max(1);
        self
    }
    pub fn chunk(mut self, n: usize) -> Self {
        self.chunk = n.max(1);
        self
    }
    pub fn compat(mut self, c: i32) -> Self {
        self.compat = Some(c);
        self
    }
    pub fn csum(mut self, c: Csum) -> Self {
        self.csum = c;
        self
    }
    pub fn greeting(mut self, g: impl AsRef<[u8]>) -> Self {
        self.greeting = Some(g.as_ref().to_vec());
        self
    }
    pub fn motd(mut self, m: impl AsRef<[u8]>) -> Self {
        self.motd = Some(m.as_ref().to_vec());
        self
    }
    pub fn seed(mut self, s: i32) -> Self {
        self.seed = s;
        self
    }
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = d;
        self
    }
}

/// What the client asked for (parsed from its argv).
#[derive(Debug, Clone, Default)]
pub struct ClientOpts {
    pub args: Vec<Vec<u8>>,
    pub links: bool,
    pub hard_links: bool,
    pub owner: bool,
    pub group: bool,
    pub devices: bool,
    pub specials: bool,
    pub checksum: bool,
    pub compress_negotiate: bool,
    pub compress_choice: Option<String>,
    pub checksum_choice: Option<String>,
    pub numeric_ids: bool,
    pub files_from: bool,
    pub caps: String,
    pub paths: Vec<Vec<u8>>,
}

impl ClientOpts {
    fn parse(args: Vec<Vec<u8>>) -> ClientOpts {
        let mut o = ClientOpts { args: args.clone(), ..Default::default() };
        let mut after_dot = false;
        for a in &args {
            let s = String::from_utf8_lossy(a).into_owned();
            if after_dot {
                o.paths.push(a.clone());
                continue;
            }
            if s == "." {
                after_dot = true;
            } else if let Some(v) = s.strip_prefix("--compress-choice=") {
                o.compress_choice = Some(v.to_string());
            } else if s == "--new-compress" {
                o.compress_choice = Some("zlibx".into());
            } else if s == "--old-compress" {
                o.compress_choice = Some("zlib".into());
            } else if let Some(v) = s.strip_prefix("--checksum-choice=") {
                o.checksum_choice = Some(v.to_string());
            } else if s == "--numeric-ids" {
                o.numeric_ids = true;
            } else if s.starts_with("--files-from") {
                o.files_from = true;
            } else if s == "--specials" {
                o.specials = true;
            } else if s.starts_with('-') && !s.starts_with("--") {
                let (cluster, caps) = match s.find('e') {
                    Some(i) => (&s[1..i], &s[i + 1..]),
                    None => (&s[1..], ""),
                };
                o.caps = caps.trim_start_matches('.').to_string();
                for ch in cluster.chars() {
                    match ch {
                        'l' => o.links = true,
                        'H' => o.hard_links = true,
                        'o' => o.owner = true,
                        'g' => o.group = true,
                        'D' => {
                            o.devices = true;
                            o.specials = true;
                        }
                        'c' => o.checksum = true,
                        'z' => o.compress_negotiate = true,
                        _ => {}
                    }
                }
            }
        }
        if args.iter().any(|a| a == b"--no-specials") {
            o.specials = false;
        }
        if o.compress_choice.is_some() {
            o.compress_negotiate = false;
        }
        o
    }

    /// Compat flags a 3.5 server answers for these capability letters. The
    /// scripted server sends one complete file list, so it never grants
    /// incremental recursion (`i`), as a daemon with it disabled would not.
    pub fn honest_compat(&self) -> i32 {
        let mut f = CF_SYMLINK_TIMES;
        for (ch, bit) in [
            ('f', CF_SAFE_FLIST),
            ('x', CF_AVOID_XATTR_OPTIM),
            ('C', CF_CHKSUM_SEED_FIX),
            ('I', CF_INPLACE_PARTIAL_DIR),
            ('v', CF_VARINT_FLIST_FLAGS),
            ('u', CF_ID0_NAMES),
        ] {
            if self.caps.contains(ch) {
                f |= bit;
            }
        }
        f
    }
}

/// A file request from the client's generator.
#[derive(Debug, Clone)]
pub struct Req {
    pub ndx: i32,
    pub iflags: u16,
    /// count, blength, s2length, remainder
    pub head: [i32; 4],
    pub sums: Vec<u8>,
    /// 0 = normal pass, 1 = redo pass.
    pub phase: u32,
}

/// What the request hook wants done.
pub enum Reply {
    /// Answer honestly (echo, literal tokens, correct checksum).
    Honest,
    /// The hook wrote its own reply (or nothing) — just continue.
    Handled,
    /// Stop serving (return from `serve` with Ok).
    Stop,
}

/// A log of what happened on the server side (for assertions).
#[derive(Debug, Default, Clone)]
pub struct ServerLog {
    pub connections: usize,
    pub args: Vec<Vec<Vec<u8>>>,
    pub errors: Vec<String>,
    pub requests: Vec<(usize, i32, u16, [i32; 4])>,
    pub client_msgs: Vec<(u8, Vec<u8>)>,
    pub files_from: Vec<Vec<u8>>,
    pub filters: Vec<Vec<u8>>,
    pub done: usize,
}

// ---------------------------------------------------------------------------
// The connection
// ---------------------------------------------------------------------------

pub struct Conn {
    pub cfg: Cfg,
    pub sock: TcpStream,
    pub conn_no: usize,
    pub protocol: i32,
    pub compat: i32,
    pub opts: ClientOpts,
    pub csum: Csum,
    pub zstd: bool,
    /// zlib or zlibx tokens (raw deflate, a fresh stream per file).
    pub zlib: bool,
    mux_out: bool,
    mux_in: bool,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    in_pos: usize,
    /// Demuxed client data.
    cdata: Vec<u8>,
    cdata_pos: usize,
    ndx_out: NdxOut,
    ndx_in: NdxOut,
    fl: FlistState,
    /// Sorted file order of the list sent (index → position in the sent slice).
    pub order: Vec<usize>,
    trickle: Option<Duration>,
    zenc: Option<zstd::stream::raw::Encoder<'static>>,
    log: Arc<Mutex<ServerLog>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct FlistState {
    mode: u32,
    mtime: i64,
    uid: u32,
    gid: u32,
    dev: i64,
    lastname: Vec<u8>,
    hl_first: BTreeMap<u32, i32>,
    count: i32,
}

impl Conn {
    fn new(sock: TcpStream, cfg: Cfg, conn_no: usize, log: Arc<Mutex<ServerLog>>, stop: Arc<AtomicBool>) -> Conn {
        let _ = sock.set_read_timeout(Some(cfg.read_timeout));
        let _ = sock.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = sock.set_nodelay(true);
        let protocol = cfg.protocol;
        Conn {
            csum: if protocol >= 30 { Csum::Md5 } else { Csum::Md4Old },
            cfg,
            sock,
            conn_no,
            protocol,
            compat: 0,
            opts: ClientOpts::default(),
            zstd: false,
            zlib: false,
            mux_out: false,
            mux_in: false,
            out: vec![],
            inbuf: vec![],
            in_pos: 0,
            cdata: vec![],
            cdata_pos: 0,
            ndx_out: NdxOut::default(),
            ndx_in: NdxOut::default(),
            fl: FlistState::default(),
            order: vec![],
            trickle: None,
            zenc: None,
            log,
            stop,
        }
    }

    pub fn modern(&self) -> bool {
        self.protocol >= 30
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, ServerLog> {
        self.log.lock().unwrap()
    }

    // ----- writing -------------------------------------------------------

    fn write_sock(&mut self, b: &[u8]) -> io::Result<()> {
        match self.trickle {
            None => self.sock.write_all(b),
            Some(d) => {
                for x in b {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(io::Error::other("server stopped"));
                    }
                    self.sock.write_all(&[*x])?;
                    std::thread::sleep(d);
                }
                Ok(())
            }
        }
    }

    /// Write one byte per `interval` from now on (None: normal).
    pub fn trickle(&mut self, interval: Option<Duration>) {
        self.trickle = interval;
    }

    /// Raw bytes on the socket (flushes pending data first, no framing).
    pub fn raw(&mut self, b: impl AsRef<[u8]>) -> io::Result<()> {
        self.flush()?;
        self.write_sock(b.as_ref())
    }

    /// Append to the data stream (MSG_DATA once multiplexing started).
    pub fn data(&mut self, b: impl AsRef<[u8]>) {
        self.out.extend_from_slice(b.as_ref());
    }

    /// Send pending data, cut into frames of at most `cfg.frame_max`.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        if !self.mux_out {
            return self.write_sock(&out);
        }
        let mut buf = Vec::with_capacity(out.len() + out.len() / 1024 * 4 + 8);
        for chunk in out.chunks(self.cfg.frame_max.min(0xFF_FFFF)) {
            frame(&mut buf, MSG_DATA, chunk);
        }
        self.write_sock(&buf)
    }

    /// A multiplexed message with any tag (flushes data first).
    pub fn msg(&mut self, code: u8, payload: impl AsRef<[u8]>) -> io::Result<()> {
        self.flush()?;
        let mut b = vec![];
        frame(&mut b, code, payload.as_ref());
        self.write_sock(&b)
    }

    /// A frame header claiming `len` bytes with any tag, without payload.
    pub fn frame_header(&mut self, code: u8, len: u32) -> io::Result<()> {
        self.flush()?;
        let v = ((7 + code as u32) << 24) | (len & 0xFF_FFFF);
        self.write_sock(&v.to_le_bytes())
    }

    pub fn ndx(&mut self, ndx: i32) {
        let m = self.modern();
        let mut o = vec![];
        self.ndx_out.write(&mut o, ndx, m);
        self.data(o);
    }

    pub fn int(&mut self, v: i32) {
        self.data(v.to_le_bytes());
    }

    /// Sleep up to `d` (returns early if the server is being dropped).
    pub fn stall(&mut self, d: Duration) -> io::Result<()> {
        self.flush()?;
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// FIN (after flushing).
    pub fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)?;
        // Drain whatever the client still sends, briefly.
        let _ = self.sock.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            match self.sock.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// RST: SO_LINGER 0 then close.
    pub fn reset(&mut self) -> io::Result<()> {
        self.flush()?;
        set_linger0(&self.sock);
        self.sock.shutdown(Shutdown::Both)
    }

    // ----- reading -------------------------------------------------------

    fn fill(&mut self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("server stopped"));
        }
        let mut b = [0u8; 65536];
        let n = self.sock.read(&mut b)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "client closed"));
        }
        if self.in_pos > 0 && self.in_pos == self.inbuf.len() {
            self.inbuf.clear();
            self.in_pos = 0;
        }
        self.inbuf.extend_from_slice(&b[..n]);
        Ok(())
    }

    fn raw_byte(&mut self) -> io::Result<u8> {
        while self.in_pos >= self.inbuf.len() {
            self.fill()?;
        }
        let b = self.inbuf[self.in_pos];
        self.in_pos += 1;
        Ok(b)
    }

    fn raw_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.raw_byte()?);
        }
        Ok(v)
    }

    /// A text line from the client (without `\n`).
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut l = vec![];
        loop {
            let b = self.raw_byte()?;
            if b == b'\n' {
                l.retain(|&c| c != b'\r');
                return Ok(l);
            }
            l.push(b);
            if l.len() > 65536 {
                return Err(io::Error::other("client line too long"));
            }
        }
    }

    /// One byte of the client's data stream (demultiplexed at proto ≥ 30).
    pub fn byte(&mut self) -> io::Result<u8> {
        if !self.mux_in {
            return self.raw_byte();
        }
        while self.cdata_pos >= self.cdata.len() {
            self.cdata.clear();
            self.cdata_pos = 0;
            let h = u32::from_le_bytes([self.raw_byte()?, self.raw_byte()?, self.raw_byte()?, self.raw_byte()?]);
            let tag = (h >> 24) as u8;
            let len = (h & 0xFF_FFFF) as usize;
            let payload = self.raw_bytes(len)?;
            if tag == 7 {
                self.cdata = payload;
            } else {
                let code = tag.wrapping_sub(7);
                self.log().client_msgs.push((code, payload.clone()));
                if code == MSG_ERROR_EXIT {
                    return Err(io::Error::other(format!("client sent MSG_ERROR_EXIT {:?}", payload)));
                }
            }
        }
        let b = self.cdata[self.cdata_pos];
        self.cdata_pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n.min(1 << 20));
        for _ in 0..n {
            v.push(self.byte()?);
        }
        Ok(v)
    }

    pub fn read_i32(&mut self) -> io::Result<i32> {
        let b = self.bytes(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn read_u16(&mut self) -> io::Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn read_varint(&mut self) -> io::Result<i32> {
        let lead = self.byte()?;
        let extra = match lead {
            0x00..=0x7F => 0,
            0x80..=0xBF => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return Err(io::Error::other("bad varint from client")),
        };
        let mut b = [0u8; 5];
        for i in 0..extra {
            b[i] = self.byte()?;
        }
        let mask = if extra == 0 { 0xFF } else { (1u8 << (8 - extra)) - 1 };
        b[extra] = lead & mask;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn read_vstring(&mut self) -> io::Result<Vec<u8>> {
        let mut n = self.byte()? as usize;
        if n & 0x80 != 0 {
            n = ((n & 0x7F) << 8) | self.byte()? as usize;
        }
        self.bytes(n)
    }

    pub fn read_ndx(&mut self) -> io::Result<i32> {
        let m = self.modern();
        let mut st = self.ndx_in;
        let r = {
            let mut src = || self.byte();
            st.read(&mut src, m)
        };
        self.ndx_in = st;
        r
    }

    // ----- handshake -----------------------------------------------------

    /// Greeting + read the client's greeting and module line.
    pub fn greet(&mut self) -> io::Result<Vec<u8>> {
        let g = self.cfg.greeting.clone().unwrap_or_else(|| {
            if self.protocol >= 30 {
                format!("@RSYNCD: {}.0 md5 md4\n", self.protocol).into_bytes()
            } else {
                format!("@RSYNCD: {}\n", self.protocol).into_bytes()
            }
        });
        self.raw(g)?;
        let client = self.read_line()?;
        let cp = String::from_utf8_lossy(&client)
            .strip_prefix("@RSYNCD: ")
            .and_then(|s| s.split(['.', ' ']).next().and_then(|v| v.parse::<i32>().ok()))
            .unwrap_or(self.protocol);
        self.protocol = self.protocol.min(cp);
        self.csum = if self.protocol >= 30 { Csum::Md5 } else { Csum::Md4Old };
        self.read_line()
    }

    /// MOTD (if any), `@RSYNCD: OK`, then read the client's argv.
    pub fn ok_and_args(&mut self) -> io::Result<()> {
        if let Some(m) = self.cfg.motd.clone() {
            self.raw(m)?;
        }
        self.raw(b"@RSYNCD: OK\n")?;
        let mut args = vec![];
        loop {
            let mut a = vec![];
            loop {
                let b = self.raw_byte()?;
                if (self.protocol >= 30 && b == 0) || (self.protocol < 30 && b == b'\n') {
                    break;
                }
                a.push(b);
                if a.len() > 65536 {
                    return Err(io::Error::other("client arg too long"));
                }
            }
            if a.is_empty() {
                break;
            }
            args.push(a);
            if args.len() > 1000 {
                return Err(io::Error::other("too many client args"));
            }
        }
        self.log().args.push(args.clone());
        self.opts = ClientOpts::parse(args);
        Ok(())
    }

    /// Compat flags, negotiation strings and seed; starts multiplexing.
    pub fn setup(&mut self) -> io::Result<()> {
        if self.protocol >= 30 {
            let compat = self.cfg.compat.unwrap_or_else(|| self.opts.honest_compat());
            self.compat = compat;
            let mut b = vec![];
            enc::varint(&mut b, compat);
            self.raw(b)?;
            if compat & CF_VARINT_FLIST_FLAGS != 0 {
                let send_csum = self.opts.checksum_choice.is_none();
                let send_comp = self.opts.compress_negotiate;
                let mut b = vec![];
                if send_csum {
                    let l = self.cfg.csum_list.clone().unwrap_or_else(|| self.cfg.csum.name().as_bytes().to_vec());
                    enc::vstring(&mut b, &l);
                }
                if send_comp {
                    enc::vstring(&mut b, b"zstd");
                }
                self.raw(b)?;
                if send_csum {
                    let _theirs = self.read_vstring_raw()?;
                    self.csum = self.cfg.csum;
                }
                if send_comp {
                    let _theirs = self.read_vstring_raw()?;
                    self.zstd = true;
                }
            }
            if let Some(c) = &self.opts.checksum_choice {
                self.csum = match c.as_str() {
                    "xxh128" => Csum::Xxh128,
                    "xxh3" => Csum::Xxh3,
                    "xxh64" | "xxhash" => Csum::Xxh64,
                    _ => Csum::Md5,
                };
            }
            if self.opts.compress_choice.as_deref() == Some("zstd") {
                self.zstd = true;
            }
        }
        // An explicit zlib/zlibx choice, or -z where nothing is negotiated (< 30).
        if matches!(self.opts.compress_choice.as_deref(), Some("zlib" | "zlibx"))
            || (self.opts.compress_negotiate && !self.zstd && self.protocol < 30)
        {
            self.zlib = true;
        }
        let seed = self.cfg.seed;
        self.raw(seed.to_le_bytes())?;
        self.mux_out = true;
        self.mux_in = self.protocol >= 30;
        if let (Some(t), true) = (self.cfg.io_timeout_msg, self.protocol >= 31) {
            self.msg(MSG_IO_TIMEOUT, t.to_le_bytes())?;
        }
        if self.zstd {
            self.zenc = Some(zstd::stream::raw::Encoder::new(3)?);
        }
        Ok(())
    }

    fn read_vstring_raw(&mut self) -> io::Result<Vec<u8>> {
        let mut n = self.raw_byte()? as usize;
        if n & 0x80 != 0 {
            n = ((n & 0x7F) << 8) | self.raw_byte()? as usize;
        }
        self.raw_bytes(n)
    }

    /// The client's filter list (and its files-from names, if any).
    pub fn read_filters(&mut self) -> io::Result<()> {
        loop {
            let n = self.read_i32()?;
            if n == 0 {
                break;
            }
            if !(0..=65536).contains(&n) {
                return Err(io::Error::other(format!("bad filter length {n}")));
            }
            let r = self.bytes(n as usize)?;
            self.log().filters.push(r);
        }
        if self.opts.files_from {
            let mut names = vec![];
            let mut cur = vec![];
            loop {
                let b = if self.protocol == 30 { self.raw_byte()? } else { self.byte()? };
                if b == 0 {
                    if cur.is_empty() {
                        break;
                    }
                    names.push(std::mem::take(&mut cur));
                } else {
                    cur.push(b);
                }
            }
            self.log().files_from = names;
        }
        Ok(())
    }

    /// Everything up to the file list.
    pub fn handshake(&mut self) -> io::Result<()> {
        self.greet()?;
        self.ok_and_args()?;
        self.setup()?;
        self.read_filters()
    }

    // ----- file list -----------------------------------------------------

    /// Encode one entry (`flist.c send_file_entry`) into the data stream.
    pub fn entry(&mut self, f: &EFile) {
        let mut out = vec![];
        self.encode_entry(&mut out, f);
        self.data(out);
    }

    fn encode_entry(&mut self, out: &mut Vec<u8>, f: &EFile) {
        let ndx = self.fl.count;
        self.fl.count += 1;
        if let Some(r) = &f.raw_entry {
            out.extend_from_slice(r);
            self.fl.lastname = f.name.clone();
            return;
        }
        let p = self.protocol;
        let o = self.opts.clone();
        let varint = self.compat & CF_VARINT_FLIST_FLAGS != 0 && p >= 30;
        let mode = f.mode();
        let is_dir = f.is_dir();
        let is_reg = matches!(f.kind, Kind::File(_));
        let is_lnk = matches!(f.kind, Kind::Symlink(_));
        let top = f.top.unwrap_or(f.name == b".");
        let mut x: u32 = 0;
        if is_dir {
            if p >= 30 && f.no_content {
                x |= XMIT_NO_CONTENT_DIR;
            }
            if top {
                x |= XMIT_TOP_DIR;
            }
        }
        if mode == self.fl.mode {
            x |= XMIT_SAME_MODE;
        } else {
            self.fl.mode = mode;
        }
        let first = self.fl.lastname.is_empty() && ndx == 0;
        if !o.owner || (f.uid == self.fl.uid && !first) {
            x |= XMIT_SAME_UID;
        } else {
            self.fl.uid = f.uid;
        }
        if !o.group || (f.gid == self.fl.gid && !first) {
            x |= XMIT_SAME_GID;
        } else {
            self.fl.gid = f.gid;
        }
        if f.mtime == self.fl.mtime {
            x |= XMIT_SAME_TIME;
        } else {
            self.fl.mtime = f.mtime;
        }
        if f.nsec != 0 && p >= 31 {
            x |= XMIT_MOD_NSEC;
        }
        // Hard links.
        let mut first_hlink: Option<i32> = None;
        let mut devino: Option<(i64, i64)> = None;
        if o.hard_links && !is_dir {
            if let Some(key) = f.hl {
                if p >= 30 {
                    match self.fl.hl_first.get(&key) {
                        Some(&n) => first_hlink = Some(n),
                        None => {
                            self.fl.hl_first.insert(key, ndx);
                            x |= XMIT_HLINK_FIRST;
                        }
                    }
                    x |= XMIT_HLINKED;
                } else {
                    devino = Some((1, 1_000_000 + key as i64));
                    if p >= 28 {
                        x |= XMIT_HLINKED;
                    }
                }
            } else if p < 28 && is_reg {
                devino = Some((1, 2_000_000 + ndx as i64));
            }
            if let Some((dev, _)) = devino {
                if dev == self.fl.dev && p >= 28 {
                    x |= XMIT_SAME_DEV_PRE30;
                } else {
                    self.fl.dev = dev;
                }
            }
        }
        // Name compression.
        let mut l1 = 0usize;
        while l1 < self.fl.lastname.len() && l1 < f.name.len() && f.name[l1] == self.fl.lastname[l1] && l1 < 255 {
            l1 += 1;
        }
        let l2 = f.name.len() - l1;
        if l1 > 0 {
            x |= XMIT_SAME_NAME;
        }
        if l2 > 255 {
            x |= XMIT_LONG_NAME;
        }
        x |= f.flags_or;
        x &= !f.flags_clear;
        // Flags.
        let mut fb = vec![];
        if varint {
            enc::varint(&mut fb, if x != 0 { x as i32 } else { XMIT_EXTENDED_FLAGS as i32 });
        } else if p >= 28 {
            if x == 0 && !is_dir {
                x |= XMIT_TOP_DIR;
            }
            if x & 0xff00 != 0 || x == 0 {
                x |= XMIT_EXTENDED_FLAGS;
                enc::u16(&mut fb, x as u16);
            } else {
                enc::u8(&mut fb, x as u8);
            }
        } else {
            if x & 0xff == 0 {
                x |= if is_dir { XMIT_LONG_NAME } else { XMIT_TOP_DIR };
            }
            enc::u8(&mut fb, x as u8);
        }
        let put = |out: &mut Vec<u8>, fld: Field, dflt: Vec<u8>| match f.get_over(fld) {
            Some(b) => out.extend_from_slice(b),
            None => out.extend_from_slice(&dflt),
        };
        let v30 = |v: i32| -> Vec<u8> {
            if p >= 30 {
                enc::varint_bytes(v)
            } else {
                enc::i32_bytes(v)
            }
        };
        put(out, Field::Flags, fb);
        if x & XMIT_SAME_NAME != 0 {
            put(out, Field::L1, vec![l1 as u8]);
        } else if let Some(b) = f.get_over(Field::L1) {
            out.extend_from_slice(b);
        }
        if x & XMIT_LONG_NAME != 0 {
            put(out, Field::L2, v30(l2 as i32));
        } else {
            put(out, Field::L2, vec![l2 as u8]);
        }
        put(out, Field::Name, f.name[l1..].to_vec());
        self.fl.lastname = f.name.clone();
        if let Some(n) = first_hlink {
            put(out, Field::HlinkNdx, enc::varint_bytes(n));
            // The leader is in this (single) list: the entry ends here.
            if let Some(t) = f.get_over(Field::Trailer) {
                out.extend_from_slice(t);
            }
            return;
        } else if let Some(b) = f.get_over(Field::HlinkNdx) {
            out.extend_from_slice(b);
        }
        let size = f.wire_size();
        put(out, Field::Size, if p >= 30 { enc::varlong_bytes(size, 3) } else {
            let mut v = vec![];
            enc::longint(&mut v, size);
            v
        });
        if x & XMIT_SAME_TIME == 0 {
            put(out, Field::Mtime, if p >= 30 { enc::varlong_bytes(f.mtime, 4) } else { enc::i32_bytes(f.mtime as i32) });
        }
        if x & XMIT_MOD_NSEC != 0 {
            put(out, Field::Nsec, enc::varint_bytes(f.nsec as i32));
        }
        if x & XMIT_SAME_MODE == 0 {
            put(out, Field::Mode, enc::i32_bytes(mode as i32));
        }
        if o.owner && x & XMIT_SAME_UID == 0 {
            put(out, Field::Uid, v30(f.uid as i32));
        }
        if o.group && x & XMIT_SAME_GID == 0 {
            put(out, Field::Gid, v30(f.gid as i32));
        }
        if o.links && is_lnk {
            let Kind::Symlink(t) = &f.kind else { unreachable!() };
            put(out, Field::LinkLen, v30(t.len() as i32));
            put(out, Field::LinkTarget, t.clone());
        }
        if let Some((dev, ino)) = devino {
            let mut v = vec![];
            if x & XMIT_SAME_DEV_PRE30 == 0 || p < 28 {
                enc::longint(&mut v, dev + 1);
            }
            enc::longint(&mut v, ino);
            put(out, Field::DevIno, v);
        }
        if o.checksum && (is_reg || p < 28) {
            let sum = if is_reg { self.csum.file_sum(0, f.content()) } else { vec![0; self.csum.len()] };
            put(out, Field::Checksum, sum);
        }
        if let Some(t) = f.get_over(Field::Trailer) {
            out.extend_from_slice(t);
        }
    }

    /// End-of-list marker with io_error (`write_end_of_flist`).
    pub fn end_flist(&mut self, io_error: i32) {
        let p = self.protocol;
        let mut out = vec![];
        let safe = p >= 31 || (p >= 30 && self.compat & CF_SAFE_FLIST != 0);
        if self.compat & CF_VARINT_FLIST_FLAGS != 0 && p >= 30 {
            enc::varint(&mut out, 0);
            enc::varint(&mut out, io_error);
        } else if io_error != 0 && safe {
            enc::u16(&mut out, (XMIT_EXTENDED_FLAGS | XMIT_IO_ERROR_ENDLIST) as u16);
            enc::varint(&mut out, io_error);
        } else {
            out.push(0);
        }
        // uid/gid lists (empty) when asked for and not inc-recursive.
        if !self.opts.numeric_ids {
            let id0 = p >= 30 && self.compat & CF_ID0_NAMES != 0;
            for want in [self.opts.owner, self.opts.group] {
                if want {
                    if p >= 30 {
                        enc::varint(&mut out, 0);
                    } else {
                        enc::i32(&mut out, 0);
                    }
                    if id0 {
                        out.push(0);
                    }
                }
            }
        }
        if p < 30 {
            enc::i32(&mut out, io_error);
        } else if p == 30 && io_error != 0 && !safe {
            self.data(out);
            let _ = self.msg(MSG_IO_ERROR, io_error.to_le_bytes());
            return;
        }
        self.data(out);
    }

    /// Entries + end marker; remembers the sorted order for `serve`.
    pub fn send_flist(&mut self, files: &[EFile], io_error: i32) -> io::Result<()> {
        for f in files {
            self.entry(f);
        }
        self.end_flist(io_error);
        self.order = sort_files(files, self.protocol);
        self.flush()
    }

    // ----- transfer ------------------------------------------------------

    /// Read the next request (None = NDX_DONE).
    pub fn read_req(&mut self, phase: u32) -> io::Result<Option<Req>> {
        let ndx = self.read_ndx()?;
        if ndx == NDX_DONE {
            return Ok(None);
        }
        if ndx < 0 {
            return Err(io::Error::other(format!("client sent negative ndx {ndx}")));
        }
        let iflags = if self.protocol >= 29 { self.read_u16()? } else { ITEM_TRANSFER };
        if iflags & ITEM_BASIS_TYPE_FOLLOWS != 0 {
            self.byte()?;
        }
        if iflags & ITEM_XNAME_FOLLOWS != 0 {
            self.read_vstring()?;
        }
        if iflags & ITEM_TRANSFER == 0 {
            // Non-transfer record: the sender echoes it (write_ndx_and_attrs).
            return Ok(Some(Req { ndx, iflags, head: [0; 4], sums: vec![], phase }));
        }
        let head = [self.read_i32()?, self.read_i32()?, self.read_i32()?, self.read_i32()?];
        if head[0] < 0 || head[0] > 10_000_000 || head[2] < 0 || head[2] > 64 {
            return Err(io::Error::other(format!("bad sum head from client {head:?}")));
        }
        let sums = self.bytes(head[0] as usize * (4 + head[2] as usize))?;
        self.log().requests.push((self.conn_no, ndx, iflags, head));
        Ok(Some(Req { ndx, iflags, head, sums, phase }))
    }

    /// Echo ndx + iflags + sum head of a request (`write_ndx_and_attrs`, `write_sum_head`).
    pub fn echo(&mut self, ndx: i32, iflags: u16, head: [i32; 4]) {
        self.ndx(ndx);
        if self.protocol >= 29 {
            self.data(iflags.to_le_bytes());
        }
        for v in head {
            self.int(v);
        }
    }

    /// Plain literal tokens for `data` (runs of `cfg.chunk`), then the end token.
    pub fn literal_tokens(&mut self, data: &[u8]) {
        if self.zstd {
            self.zstd_tokens(data);
            return;
        }
        if self.zlib {
            self.zlib_tokens(data);
            return;
        }
        for c in data.chunks(self.cfg.chunk) {
            self.int(c.len() as i32);
            self.data(c);
        }
        self.int(0);
    }

    /// zstd token stream for `data` (one session-long stream, flushed per file).
    pub fn zstd_tokens(&mut self, data: &[u8]) {
        let comp = self.zstd_compress(data);
        for c in comp.chunks(16383) {
            self.data([0x40 | (c.len() >> 8) as u8, c.len() as u8]);
            self.data(c);
        }
        self.data([0u8]);
    }

    /// zlib/zlibx token stream for `data`: literals only (no block matches,
    /// so zlib's window insertion never comes into play), one raw deflate
    /// stream per file, sync-flushed with its `00 00 ff ff` tail left off.
    pub fn zlib_tokens(&mut self, data: &[u8]) {
        let comp = zlib_deflate(data);
        for c in comp.chunks(16383) {
            self.data([0x40 | (c.len() >> 8) as u8, c.len() as u8]);
            self.data(c);
        }
        self.data([0u8]);
    }

    /// Compress with the session encoder and flush (no frame end).
    pub fn zstd_compress(&mut self, data: &[u8]) -> Vec<u8> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        let enc = self.zenc.get_or_insert_with(|| zstd::stream::raw::Encoder::new(3).expect("zstd"));
        let mut out = vec![];
        let mut buf = vec![0u8; 1 << 16];
        let mut inp = InBuffer::around(data);
        while inp.pos < data.len() {
            let mut ob = OutBuffer::around(&mut buf[..]);
            enc.run(&mut inp, &mut ob).expect("zstd run");
            let n = ob.pos();
            out.extend_from_slice(&buf[..n]);
        }
        loop {
            let mut ob = OutBuffer::around(&mut buf[..]);
            let left = enc.flush(&mut ob).expect("zstd flush");
            let n = ob.pos();
            out.extend_from_slice(&buf[..n]);
            if left == 0 {
                break;
            }
        }
        out
    }

    pub fn file_sum(&mut self, data: &[u8]) {
        let s = self.csum.file_sum(self.cfg.seed, data);
        self.data(s);
    }

    /// The file for a request index (via the sorted order of the sent list).
    pub fn file_for<'a>(&self, files: &'a [EFile], ndx: i32) -> Option<&'a EFile> {
        let pos = *self.order.get(usize::try_from(ndx).ok()?)?;
        files.get(pos)
    }

    /// Honest reply: echo, literal tokens of the payload, whole-file checksum.
    pub fn reply_honest(&mut self, files: &[EFile], req: &Req) -> io::Result<()> {
        if req.iflags & ITEM_TRANSFER == 0 {
            self.ndx(req.ndx);
            if self.protocol >= 29 {
                self.data(req.iflags.to_le_bytes());
            }
            return Ok(());
        }
        let data = self
            .file_for(files, req.ndx)
            .map(|f| f.payload().to_vec())
            .ok_or_else(|| io::Error::other(format!("request for unknown ndx {}", req.ndx)))?;
        self.echo(req.ndx, req.iflags, req.head);
        self.literal_tokens(&data);
        self.file_sum(&data);
        self.flush()
    }

    /// The sender's request loop, stats and goodbye (`send_files`,
    /// `handle_stats`, `read_final_goodbye`), with a hook per request.
    pub fn serve<F>(&mut self, files: &[EFile], mut hook: F) -> io::Result<()>
    where
        F: FnMut(&mut Conn, &Req) -> Reply,
    {
        if files.is_empty() {
            return self.close();
        }
        let max_phase = if self.protocol >= 29 { 2 } else { 1 };
        let mut phase = 0u32;
        loop {
            match self.read_req(phase)? {
                None => {
                    phase += 1;
                    if phase > max_phase {
                        break;
                    }
                    self.ndx(NDX_DONE);
                    self.flush()?;
                }
                Some(req) => match hook(self, &req) {
                    Reply::Honest => self.reply_honest(files, &req)?,
                    Reply::Handled => self.flush()?,
                    Reply::Stop => return Ok(()),
                },
            }
        }
        self.ndx(NDX_DONE);
        self.finish_stats([1000, 2000, 3000, 1, 1])?;
        self.goodbye()
    }

    /// Stats (3 or 5 values).
    pub fn finish_stats(&mut self, v: [i64; 5]) -> io::Result<()> {
        let n = if self.protocol >= 29 { 5 } else { 3 };
        for x in &v[..n] {
            if self.protocol >= 30 {
                let b = enc::varlong_bytes(*x, 3);
                self.data(b);
            } else {
                let mut b = vec![];
                enc::longint(&mut b, *x);
                self.data(b);
            }
        }
        self.flush()
    }

    /// `read_final_goodbye`, then close.
    pub fn goodbye(&mut self) -> io::Result<()> {
        let n = self.read_ndx()?;
        if n != NDX_DONE {
            return Err(io::Error::other(format!("goodbye: client sent {n}")));
        }
        if self.protocol >= 31 {
            self.ndx(NDX_DONE);
            self.flush()?;
            let n = self.read_ndx()?;
            if n != NDX_DONE {
                return Err(io::Error::other(format!("goodbye 2: client sent {n}")));
            }
        }
        self.log().done += 1;
        self.close()
    }

    /// Handshake, list, honest serving: the whole honest session.
    pub fn honest_session(&mut self, files: &[EFile]) -> io::Result<()> {
        self.handshake()?;
        self.send_flist(files, 0)?;
        self.serve(files, |_, _| Reply::Honest)
    }
}

/// Append one multiplexed frame.
pub fn frame(out: &mut Vec<u8>, code: u8, payload: &[u8]) {
    let v = ((7 + code as u32) << 24) | payload.len() as u32;
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(payload);
}

pub fn set_linger0(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

type Script = dyn Fn(&mut Conn, usize) -> io::Result<()> + Send + Sync;

/// A scripted daemon on 127.0.0.1:PORT. Stops accepting on drop.
pub struct EvilServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    pub log: Arc<Mutex<ServerLog>>,
}

impl EvilServer {
    /// Serve every connection with `script(conn, connection_number)`.
    pub fn start<F>(cfg: Cfg, script: F) -> EvilServer
    where
        F: Fn(&mut Conn, usize) -> io::Result<()> + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::new(Mutex::new(vec![]));
        let script: Arc<Script> = Arc::new(script);
        let (s2, l2, c2) = (stop.clone(), log.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            let mut n = 0usize;
            // Bounded: at most 10 minutes of accepting.
            let end = Instant::now() + Duration::from_secs(600);
            while !s2.load(Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok((sock, _)) => {
                        let _ = sock.set_nonblocking(false);
                        let (cfg, log, stop, script) = (cfg.clone(), l2.clone(), s2.clone(), script.clone());
                        let no = n;
                        n += 1;
                        l2.lock().unwrap().connections += 1;
                        let h = std::thread::spawn(move || {
                            let mut c = Conn::new(sock, cfg, no, log.clone(), stop);
                            if let Err(e) = script(&mut c, no) {
                                log.lock().unwrap().errors.push(format!("conn {no}: {e}"));
                            }
                        });
                        c2.lock().unwrap().push(h);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EvilServer { port, stop, accept: Some(accept), conns, log }
    }

    /// A server that plays an honest session serving `files` on every connection.
    pub fn honest(cfg: Cfg, files: Vec<EFile>) -> EvilServer {
        EvilServer::start(cfg, move |c, _| c.honest_session(&files))
    }

    pub fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{}/", self.port, module)
    }

    pub fn log(&self) -> ServerLog {
        self.log.lock().unwrap().clone()
    }

    /// Wait (≤ `max`) until every accepted connection's script returned.
    pub fn wait_idle(&self, max: Duration) {
        let end = Instant::now() + max;
        loop {
            let all = self.conns.lock().unwrap().iter().all(|h| h.is_finished());
            if all || Instant::now() > end {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EvilServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Write the regular files/dirs/symlinks of `files` under `root` (for the
/// real daemon to serve the same tree).
pub fn write_tree(files: &[EFile], root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![];
    for f in files {
        let p = root.join(std::ffi::OsStr::from_bytes(&f.name));
        match &f.kind {
            Kind::Dir => {
                std::fs::create_dir_all(&p).unwrap();
                dirs.push((p, f.perms, f.mtime, f.nsec));
            }
            Kind::File(d) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                std::fs::write(&p, d).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.perms)).unwrap();
                set_mtime(&p, f.mtime, f.nsec);
            }
            Kind::Symlink(t) => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).unwrap();
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &p).unwrap();
                set_mtime(&p, f.mtime, f.nsec);
            }
            Kind::Other(_) => {}
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0.as_os_str().len()));
    for (p, perms, mt, ns) in dirs {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(perms)).unwrap();
        set_mtime(&p, mt, ns);
    }
}

pub fn set_mtime(p: &Path, secs: i64, nsec: u32) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ },
        libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ },
    ];
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW);
    }
}

// ---------------------------------------------------------------------------
// Running rmirror and checking the invariants
// ---------------------------------------------------------------------------

/// One finished (or killed) rmirror run.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
    /// Peak resident set of the child, KiB: its VmHWM sampled every 10 ms
    /// while it runs (wait4 rusage only if it ended before the first sample).
    pub maxrss_kb: i64,
    pub cmd: String,
}

impl Run {
    pub fn show(&self) -> String {
        format!(
            "`{}` -> exit {:?} signal {:?}{} after {:?}, maxrss {} KiB\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.code,
            self.signal,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            self.maxrss_kb,
            truncate(&self.stdout, 4000),
            truncate(&self.stderr, 4000)
        )
    }
    /// I3: no panic, no abort, not hung.
    #[track_caller]
    pub fn assert_sane(&self) {
        assert!(!self.timed_out, "rmirror hung:\n{}", self.show());
        assert!(self.signal.is_none(), "rmirror died by a signal:\n{}", self.show());
        assert!(!self.stderr.contains("panicked"), "rmirror panicked:\n{}", self.show());
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "rmirror panicked:\n{}", self.show());
    }
    #[track_caller]
    pub fn assert_code(&self, want: &[i32]) {
        self.assert_sane();
        assert!(
            self.code.map(|c| want.contains(&c)).unwrap_or(false),
            "exit code {:?}, wanted one of {want:?}:\n{}",
            self.code,
            self.show()
        );
    }
    #[track_caller]
    pub fn assert_rss_below_mb(&self, mb: i64) {
        assert!(self.maxrss_kb < mb * 1024, "peak RSS {} KiB exceeds {mb} MiB:\n{}", self.maxrss_kb, self.show());
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        let mut i = n;
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        format!("{}… ({} bytes)", &s[..i], s.len())
    }
}

/// A spawned rmirror that can be signalled, then waited for.
pub struct Child {
    pub pid: i32,
    child: std::process::Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    start: Instant,
    cmd: String,
}

pub fn rmirror_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rmirror")
}

/// Spawn `rmirror ARGS` (stdin closed, sanitised env, stdout/stderr captured).
pub fn spawn_rmirror<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Child {
    spawn_rmirror_with(args, |_| {})
}

pub fn spawn_rmirror_with<S: AsRef<std::ffi::OsStr>>(args: &[S], tweak: impl FnOnce(&mut std::process::Command)) -> Child {
    use std::process::{Command, Stdio};
    let mut c = Command::new(rmirror_bin());
    c.args(args)
        .env("LC_ALL", "C")
        .env_remove("RSYNC_PASSWORD")
        .env_remove("RSYNC_PROXY")
        .env_remove("RSYNC_CONNECT_PROG")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tweak(&mut c);
    let cmd = format!(
        "rmirror {}",
        args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let mut child = c.spawn().expect("spawn rmirror");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = so.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = se.read_to_end(&mut v);
        v
    });
    Child { pid: child.id() as i32, child, out: Some(out), err: Some(err), start: Instant::now(), cmd }
}

impl Child {
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid, sig);
        }
    }
    /// Reaped already?
    pub fn try_done(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
    /// Wait (killing with SIGKILL after `timeout`), collecting rusage via wait4.
    pub fn wait(mut self, timeout: Duration) -> Run {
        let mut status: libc::c_int = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let mut timed_out = false;
        // The child's own peak, sampled while it runs. ru_maxrss is not
        // enough: std starts children with posix_spawn (CLONE_VM|CLONE_VFORK),
        // and execve records the high-water mark of the mm it replaces, which
        // is this test process's, so a big test binary makes every child look
        // as big as itself (seen: 257 MiB for a 10 MiB rmirror).
        let mut hwm_kb: Option<i64> = None;
        loop {
            if let Some(kb) = vm_hwm_kb(self.pid) {
                hwm_kb = Some(hwm_kb.map_or(kb, |h| h.max(kb)));
            }
            let r = unsafe { libc::wait4(self.pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == self.pid {
                break;
            }
            if r < 0 {
                break;
            }
            if self.start.elapsed() > timeout && !timed_out {
                timed_out = true;
                self.signal(libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = self.start.elapsed();
        let stdout = String::from_utf8_lossy(&self.out.take().unwrap().join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&self.err.take().unwrap().join().unwrap_or_default()).into_owned();
        let (code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            (None, None)
        };
        // std's Child must not wait again; forget it.
        std::mem::forget(self.child);
        let maxrss_kb = hwm_kb.unwrap_or(ru.ru_maxrss);
        Run { code, signal, stdout, stderr, elapsed, timed_out, maxrss_kb, cmd: self.cmd }
    }
}

/// `VmHWM` of a live process in KiB (None once it is a zombie or gone).
fn vm_hwm_kb(pid: i32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Run `rmirror ARGS` to completion (killed after `timeout`).
pub fn run_rmirror<S: AsRef<std::ffi::OsStr>>(args: &[S], timeout: Duration) -> Run {
    spawn_rmirror(args).wait(timeout)
}

/// `rmirror sync [extra] URL DEST` with a 60 s guard.
pub fn sync(url: &str, dest: &Path, extra: &[&str]) -> Run {
    let mut a: Vec<std::ffi::OsString> = vec!["sync".into()];
    a.extend(extra.iter().map(|s| std::ffi::OsString::from(s)));
    a.push(url.into());
    a.push(dest.as_os_str().to_owned());
    run_rmirror(&a, Duration::from_secs(60))
}

// ----- snapshots ------------------------------------------------------------

/// One node of a snapshot: type + content hash/target + mode + mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub data: Vec<u8>,
    pub mode: u32,
    pub mtime: (i64, i64),
}

/// Snapshot of everything under `root` (not following symlinks), skipping `skip`.
pub fn snapshot(root: &Path, skip: Option<&Path>) -> BTreeMap<PathBuf, Node> {
    let mut m = BTreeMap::new();
    snap_rec(root, root, skip, &mut m);
    m
}

fn snap_rec(root: &Path, p: &Path, skip: Option<&Path>, m: &mut BTreeMap<PathBuf, Node>) {
    if Some(p) == skip {
        return;
    }
    let Ok(md) = std::fs::symlink_metadata(p) else { return };
    let ft = md.file_type();
    let (kind, data) = if ft.is_dir() {
        ('d', vec![])
    } else if ft.is_symlink() {
        ('l', std::fs::read_link(p).map(|t| t.as_os_str().as_bytes().to_vec()).unwrap_or_default())
    } else if ft.is_file() {
        ('f', std::fs::read(p).unwrap_or_default())
    } else if ft.is_fifo() {
        ('p', vec![])
    } else {
        ('o', vec![])
    };
    let rel = p.strip_prefix(root).unwrap().to_path_buf();
    m.insert(rel, Node { kind, data, mode: md.mode(), mtime: (md.mtime(), md.mtime_nsec()) });
    if ft.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                snap_rec(root, &e.path(), skip, m);
            }
        }
    }
}

/// A sandbox: `root/dest` (DEST), `root/outside/` (victims), `root/canary`.
/// I1 compares a snapshot of everything but DEST before and after.
pub struct Sandbox {
    pub dir: super::TestDir,
    pub dest: PathBuf,
    pub outside: PathBuf,
    before: BTreeMap<PathBuf, Node>,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = super::TestDir::new("hostile");
        let dest = dir.join("dest");
        let outside = dir.join("outside");
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(outside.join("sub")).unwrap();
        std::fs::write(outside.join("victim"), b"victim: must never change\n").unwrap();
        std::fs::write(outside.join("sub/x"), b"x\n").unwrap();
        std::fs::write(dir.join("canary"), b"canary\n").unwrap();
        let fifo = std::ffi::CString::new(outside.join("fifo").as_os_str().as_bytes()).unwrap();
        unsafe {
            libc::mkfifo(fifo.as_ptr(), 0o644);
        }
        let mut s = Sandbox { dir, dest, outside, before: BTreeMap::new() };
        s.rebase();
        s
    }
    /// Take the "before" snapshot again (after seeding DEST or outside).
    pub fn rebase(&mut self) {
        self.before = snapshot(self.dir.path(), Some(&self.dest));
    }
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    /// I1: nothing outside DEST changed.
    #[track_caller]
    pub fn assert_outside_unchanged(&self) {
        let now = snapshot(self.dir.path(), Some(&self.dest));
        if now != self.before {
            let mut diff = vec![];
            for (k, v) in &now {
                match self.before.get(k) {
                    None => diff.push(format!("new: {}", k.display())),
                    Some(b) if b != v => diff.push(format!("changed: {}", k.display())),
                    _ => {}
                }
            }
            for k in self.before.keys() {
                if !now.contains_key(k) {
                    diff.push(format!("removed: {}", k.display()));
                }
            }
            panic!("I1 violated: outside DEST changed:\n{}", diff.join("\n"));
        }
    }
    pub fn dest_snapshot(&self) -> BTreeMap<PathBuf, Node> {
        snapshot(&self.dest, None)
    }
}

/// Temp files (`.~rmirror.*`) left anywhere under `root`.
pub fn temps_under(root: &Path) -> Vec<PathBuf> {
    snapshot(root, None)
        .into_keys()
        .filter(|p| p.file_name().map(|n| n.as_bytes().starts_with(b".~rmirror.")).unwrap_or(false))
        .collect()
}

#[track_caller]
pub fn assert_no_temps(root: &Path) {
    let t = temps_under(root);
    assert!(t.is_empty(), "temp files left behind: {t:?}");
}

/// I2 at the end: every regular file under DEST has one of the allowed
/// contents for its name (old or new), or is absent when allowed.
#[track_caller]
pub fn assert_old_or_new(dest: &Path, allowed: &BTreeMap<PathBuf, Vec<Vec<u8>>>) {
    for (p, n) in snapshot(dest, None) {
        if n.kind != 'f' {
            continue;
        }
        if let Some(ok) = allowed.get(&p) {
            assert!(
                ok.iter().any(|c| *c == n.data),
                "I2 violated: {} has content of {} bytes that is neither old nor new",
                p.display(),
                n.data.len()
            );
        }
    }
}

/// Raw deflate of `data`, sync-flushed, without the trailing empty stored
/// block (`00 00 ff ff`) that rsync's sender leaves off the wire.
pub fn zlib_deflate(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut pos = 0;
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let before = c.total_in();
        c.compress_vec(&data[pos..], &mut out, FlushCompress::Sync).expect("deflate");
        pos += (c.total_in() - before) as usize;
        if pos == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}
