//! Checksums used on the rsync data path (brief §9.2–§9.4).
//!
//! * [`checksum1`] — the rolling "weak" block sum (`checksum.c get_checksum1`).
//! * [`checksum2`] — the per-block strong sum sent after each sum1, seeded as
//!   the negotiated algorithm requires (`get_checksum2`).
//! * [`FileHasher`] — the whole-file digest the sender appends after the
//!   token stream (`sum_init`/`sum_update`/`sum_end`), and, through
//!   [`FileHasher::new_unseeded`] / [`file_checksum`], the `-c` file-list
//!   checksum (`file_checksum`, never seeded).
//! * [`sum_sizes_sqroot`] / [`SumHead`] — block length, strong-sum length and
//!   the `read_sum_head` bounds (`generator.c`, `io.c`).
//!
//! Everything here is pure computation over byte slices.

mod sizes;
mod sum1;

pub use sizes::{
    sum_sizes_sqroot, SumHead, BLOCK_SIZE, MAX_BLOCK_SIZE, OLD_MAX_BLOCK_SIZE, SHORT_SUM_LENGTH, SUM_LENGTH,
};

use md4::Md4;
use md5::Md5;
use sha1::Digest as _;
use sha1::Sha1;
use xxhash_rust::xxh3::Xxh3;
use xxhash_rust::xxh64::Xxh64;

#[cfg(test)]
mod tests;

/// Largest digest any [`CsumType`] produces (rsync's `MAX_DIGEST_LEN` is 64;
/// the output arrays are sized to it so callers can share one buffer type).
pub const MAX_DIGEST_LEN: usize = 64;

/// The transfer / file checksum algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsumType {
    /// MD4 implied by protocol 27–29 (`CSUM_MD4_OLD`): block sums are
    /// `MD4(block ‖ seed)` (seed omitted when 0), the whole-file sum is
    /// `MD4(seed ‖ file)` with the 4 seed bytes always present.
    Md4Old,
    /// MD4 negotiated by name (`CSUM_MD4`). Implemented as rsync's built-in
    /// code does it: `MD4(block ‖ seed)`. **An OpenSSL build of rsync hashes
    /// the seed first instead** (its EVP branch of `get_checksum2`), so the
    /// two builds disagree; a client should never offer `md4` by name.
    /// (The built-in order was checked against rsync 3.5.0 linked with an
    /// OpenSSL 3 that lacks legacy MD4, so it falls back to the built-in code.)
    Md4,
    /// MD5 (implied for protocol ≥ 30, or negotiated). Block-sum seed order is
    /// chosen by [`SumParams::proper_seed_order`].
    Md5,
    Xxh64,
    /// XXH3, 64-bit.
    Xxh3,
    /// XXH3, 128-bit (rsync name `xxh128`).
    Xxh128,
    /// SHA-1 (OpenSSL builds only on the rsync side): `SHA1(seed ‖ block)`.
    Sha1,
    /// `none`: forces whole-file transfers; the file checksum is 1 zero byte.
    None,
}

impl CsumType {
    /// Digest length in bytes (`checksum.c csum_len_for_type`, non-flist).
    pub fn digest_len(self) -> usize {
        match self {
            CsumType::Md4Old | CsumType::Md4 | CsumType::Md5 | CsumType::Xxh128 => 16,
            CsumType::Xxh64 | CsumType::Xxh3 => 8,
            CsumType::Sha1 => 20,
            CsumType::None => 1,
        }
    }

    /// The negotiation name. `Md4Old` is never negotiated by name; it reports "md4".
    pub fn name(self) -> &'static str {
        match self {
            CsumType::Md4Old | CsumType::Md4 => "md4",
            CsumType::Md5 => "md5",
            CsumType::Xxh64 => "xxh64",
            CsumType::Xxh3 => "xxh3",
            CsumType::Xxh128 => "xxh128",
            CsumType::Sha1 => "sha1",
            CsumType::None => "none",
        }
    }

    /// Parse a negotiation name, case-insensitively. `xxhash` is an alias of
    /// `xxh64`; `md4` yields [`CsumType::Md4`] (the by-name variant).
    pub fn from_name(s: &str) -> Option<Self> {
        const NAMES: &[(&str, CsumType)] = &[
            ("xxh128", CsumType::Xxh128),
            ("xxh3", CsumType::Xxh3),
            ("xxh64", CsumType::Xxh64),
            ("xxhash", CsumType::Xxh64),
            ("md5", CsumType::Md5),
            ("md4", CsumType::Md4),
            ("sha1", CsumType::Sha1),
            ("none", CsumType::None),
        ];
        NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|&(_, k)| k)
    }
}

/// What a block strong sum / transfer file sum depends on.
#[derive(Clone, Copy, Debug)]
pub struct SumParams {
    pub kind: CsumType,
    /// The checksum seed the server sent during setup (brief §4 step 3).
    pub seed: i32,
    /// `CF_CHKSUM_SEED_FIX` was granted: MD5 block sums hash the seed first.
    /// (Only MD5 looks at this; rsync's OpenSSL MD5 path is seed-first
    /// regardless, which agrees with `true` — so a client should always ask
    /// for the fix with `C` in its `-e` string.)
    pub proper_seed_order: bool,
}

/// Rolling checksum of one block (`get_checksum1`): Adler-like sums over the
/// bytes read as **signed** chars, `CHAR_OFFSET` 0.
/// Result = `(s1 & 0xFFFF) | (s2 << 16)`, all arithmetic modulo 2^32.
/// (Vectorised where the CPU allows: `sum1.rs`.)
pub fn checksum1(block: &[u8]) -> u32 {
    sum1::checksum1(block)
}

/// Seed as rsync's `SIVAL` writes it: 4 bytes little-endian.
fn seed_bytes(seed: i32) -> [u8; 4] {
    seed.to_le_bytes()
}

/// xxhash seeds: the C `int` is converted to the 64-bit seed, i.e. sign-extended.
fn xxh_seed(seed: i32) -> u64 {
    seed as i64 as u64
}

/// Per-block strong checksum (`get_checksum2`), written to the front of `out`.
/// Returns the full digest length (the caller truncates to `s2length`).
///
/// Seed rules (brief §9.4): a seed of 0 adds no bytes. MD4 (both variants):
/// `block ‖ seed`. MD5: `seed ‖ block` if `proper_seed_order`, else
/// `block ‖ seed`. SHA-1: `seed ‖ block`. xxh64/xxh3/xxh128: the seed is the
/// hash seed, sign-extended to 64 bits, and digests are stored little-endian
/// (xxh128: low 64 bits first). `None` yields one zero byte (rsync never asks
/// for block sums with `none`; it forces whole-file mode).
pub fn checksum2(p: &SumParams, block: &[u8], out: &mut [u8; MAX_DIGEST_LEN]) -> usize {
    let seed = (p.seed != 0).then(|| seed_bytes(p.seed));
    match p.kind {
        CsumType::Md4Old | CsumType::Md4 => {
            let mut h = Md4::new();
            h.update(block);
            if let Some(s) = seed {
                h.update(s);
            }
            out[..16].copy_from_slice(&h.finalize());
            16
        }
        CsumType::Md5 => {
            let mut h = Md5::new();
            match seed {
                Some(s) if p.proper_seed_order => {
                    h.update(s);
                    h.update(block);
                }
                Some(s) => {
                    h.update(block);
                    h.update(s);
                }
                None => h.update(block),
            }
            out[..16].copy_from_slice(&h.finalize());
            16
        }
        CsumType::Sha1 => {
            let mut h = Sha1::new();
            if let Some(s) = seed {
                h.update(s);
            }
            h.update(block);
            out[..20].copy_from_slice(&h.finalize());
            20
        }
        CsumType::Xxh64 => {
            let v = xxhash_rust::xxh64::xxh64(block, xxh_seed(p.seed));
            out[..8].copy_from_slice(&v.to_le_bytes());
            8
        }
        CsumType::Xxh3 => {
            let v = xxhash_rust::xxh3::xxh3_64_with_seed(block, xxh_seed(p.seed));
            out[..8].copy_from_slice(&v.to_le_bytes());
            8
        }
        CsumType::Xxh128 => {
            let v = xxhash_rust::xxh3::xxh3_128_with_seed(block, xxh_seed(p.seed));
            out[..16].copy_from_slice(&v.to_le_bytes());
            16
        }
        CsumType::None => {
            out[0] = 0;
            1
        }
    }
}

enum HashState {
    Md4(Md4),
    Md5(Md5),
    Sha1(Sha1),
    Xxh64(Xxh64),
    // Xxh3 carries a 256-byte buffer plus secret; keep the enum small.
    Xxh3(Box<Xxh3>),
    Xxh128(Box<Xxh3>),
    None,
}

/// Incremental whole-file digest.
///
/// [`FileHasher::new`] reproduces the checksum the sender appends after a
/// file's tokens (`sum_init(xfer_sum, checksum_seed)`): for [`CsumType::Md4Old`]
/// the 4 seed bytes are hashed **first, even when the seed is 0**; every other
/// type is unseeded. [`FileHasher::new_unseeded`] is the `-c` file-list
/// checksum (`file_checksum`), which is never seeded.
pub struct FileHasher {
    kind: CsumType,
    state: HashState,
}

impl FileHasher {
    /// Transfer (post-token) whole-file checksum.
    pub fn new(p: &SumParams) -> Self {
        let mut h = Self::new_unseeded(p.kind);
        if p.kind == CsumType::Md4Old {
            h.update(&seed_bytes(p.seed));
        }
        h
    }

    /// The `-c` / `--checksum` file-list checksum: the plain digest of the data.
    pub fn new_unseeded(kind: CsumType) -> Self {
        let state = match kind {
            CsumType::Md4Old | CsumType::Md4 => HashState::Md4(Md4::new()),
            CsumType::Md5 => HashState::Md5(Md5::new()),
            CsumType::Sha1 => HashState::Sha1(Sha1::new()),
            CsumType::Xxh64 => HashState::Xxh64(Xxh64::new(0)),
            CsumType::Xxh3 => HashState::Xxh3(Box::new(Xxh3::new())),
            CsumType::Xxh128 => HashState::Xxh128(Box::new(Xxh3::new())),
            CsumType::None => HashState::None,
        };
        FileHasher { kind, state }
    }

    pub fn kind(&self) -> CsumType {
        self.kind
    }

    pub fn update(&mut self, d: &[u8]) {
        match &mut self.state {
            HashState::Md4(h) => h.update(d),
            HashState::Md5(h) => h.update(d),
            HashState::Sha1(h) => h.update(d),
            HashState::Xxh64(h) => h.update(d),
            HashState::Xxh3(h) | HashState::Xxh128(h) => h.update(d),
            HashState::None => {}
        }
    }

    /// Write the digest to the front of `out`; returns its length
    /// (= `kind.digest_len()`).
    pub fn finish(self, out: &mut [u8; MAX_DIGEST_LEN]) -> usize {
        match self.state {
            HashState::Md4(h) => {
                out[..16].copy_from_slice(&h.finalize());
                16
            }
            HashState::Md5(h) => {
                out[..16].copy_from_slice(&h.finalize());
                16
            }
            HashState::Sha1(h) => {
                out[..20].copy_from_slice(&h.finalize());
                20
            }
            HashState::Xxh64(h) => {
                out[..8].copy_from_slice(&h.digest().to_le_bytes());
                8
            }
            HashState::Xxh3(h) => {
                out[..8].copy_from_slice(&h.digest().to_le_bytes());
                8
            }
            HashState::Xxh128(h) => {
                out[..16].copy_from_slice(&h.digest128().to_le_bytes());
                16
            }
            HashState::None => {
                out[0] = 0;
                1
            }
        }
    }
}

/// One-shot `-c` file-list checksum of data supplied as chunks (never seeded).
pub fn file_checksum<'a, I>(kind: CsumType, chunks: I, out: &mut [u8; MAX_DIGEST_LEN]) -> usize
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut h = FileHasher::new_unseeded(kind);
    for c in chunks {
        h.update(c);
    }
    h.finish(out)
}
