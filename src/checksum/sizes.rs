//! Block-sum geometry: `generator.c sum_sizes_sqroot` and the
//! `io.c read_sum_head` bounds (rsync 3.5.0), brief §9.2.

/// Default block length for files up to `BLOCK_SIZE²` bytes (`rsync.h BLOCK_SIZE`).
pub const BLOCK_SIZE: i32 = 700;
/// Largest block length at protocol ≥ 30 (`rsync.h MAX_BLOCK_SIZE`).
pub const MAX_BLOCK_SIZE: i32 = 1 << 17;
/// Largest block length below protocol 30 (`rsync.h OLD_MAX_BLOCK_SIZE`).
pub const OLD_MAX_BLOCK_SIZE: i32 = 1 << 29;
/// Full strong-sum length (`rsync.h SUM_LENGTH`), used in the redo pass.
pub const SUM_LENGTH: i32 = 16;
/// Minimum strong-sum length of a normal pass (`rsync.h SHORT_SUM_LENGTH`).
pub const SHORT_SUM_LENGTH: i32 = 2;
/// `generator.c BLOCKSUM_BIAS`.
const BLOCKSUM_BIAS: i32 = 10;

/// The four (three below protocol 27) ints that head a block-sum list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SumHead {
    pub count: i32,
    pub blength: i32,
    pub s2length: i32,
    pub remainder: i32,
}

fn max_blength(protocol: i32) -> i32 {
    if protocol < 30 {
        OLD_MAX_BLOCK_SIZE
    } else {
        MAX_BLOCK_SIZE
    }
}

/// Choose block length, strong-sum length and block count for a basis of
/// `len` bytes, as the C generator does.
///
/// * `digest_len` — the negotiated transfer checksum's digest length; the
///   strong sum is never longer (`MIN(SUM_LENGTH, xfer_sum_len)`).
/// * `redo` — the redo pass sends full-length sums (`csum_length == SUM_LENGTH`).
/// * `block_size` — `-B`; `None` or `Some(0)` means automatic. A value above
///   the protocol's maximum is clamped to it (the peer would reject it).
///
/// Below protocol 27 the strong-sum length is the fixed `csum_length`
/// (2, or 16 when `redo`) and is not clamped, as in C.
/// A negative `len`, or a block count that does not fit an `i32`, yields
/// `count == -1` (the C code's overflow marker; the caller must not send it).
pub fn sum_sizes_sqroot(len: i64, protocol: i32, digest_len: usize, redo: bool, block_size: Option<u32>) -> SumHead {
    if len < 0 {
        return SumHead { count: -1, ..SumHead::default() };
    }
    let max_b = max_blength(protocol);
    let max_s2 = SUM_LENGTH.min(digest_len.min(i32::MAX as usize) as i32);
    let csum_length = if redo { SUM_LENGTH } else { SHORT_SUM_LENGTH };

    let blength: i32 = match block_size {
        Some(b) if b > 0 => b.min(max_b as u32) as i32,
        _ if len <= (BLOCK_SIZE as i64) * (BLOCK_SIZE as i64) => BLOCK_SIZE,
        _ => {
            // c = 2^floor(log4(len)): the top bit of floor(sqrt(len)).
            let mut c: i64 = 1;
            let mut l = len >> 2;
            while l != 0 {
                c <<= 1;
                l >>= 2;
            }
            if c >= max_b as i64 {
                max_b
            } else {
                // Build floor(sqrt(len)) bit by bit down to bit 3, i.e.
                // rounded down to a multiple of 8.
                let mut b: i64 = 0;
                while c >= 8 {
                    b |= c;
                    if len < b * b {
                        b &= !c;
                    }
                    c >>= 1;
                }
                (b as i32).max(BLOCK_SIZE)
            }
        }
    };

    let s2length = if protocol < 27 {
        csum_length
    } else if redo {
        max_s2
    } else {
        let mut b = BLOCKSUM_BIAS;
        let mut l = len >> 1;
        while l != 0 {
            b += 2;
            l >>= 1;
        }
        let mut c = blength >> 1;
        while c != 0 && b != 0 {
            b -= 1;
            c >>= 1;
        }
        // "add a bit, subtract rollsum, round up" — C integer division truncates toward zero,
        // as Rust's does.
        let s2 = (b + 1 - 32 + 7) / 8;
        s2.max(csum_length).min(max_s2)
    };

    let remainder = (len % blength as i64) as i32;
    let count = len / blength as i64 + i64::from(remainder != 0);
    let count = if count > i32::MAX as i64 { -1 } else { count as i32 };
    SumHead { count, blength, s2length, remainder }
}

impl SumHead {
    /// The checks `io.c read_sum_head` (3.5.0) applies to a head read from the
    /// wire: count ≥ 0; 0 ≤ blength ≤ max for the protocol; blength > 0 when
    /// count > 0; 0 ≤ s2length ≤ digest length; 0 ≤ remainder ≤ blength.
    pub fn validate(&self, protocol: i32, digest_len: usize) -> Result<(), String> {
        if self.count < 0 {
            return Err(format!("invalid checksum count {}", self.count));
        }
        let max_b = max_blength(protocol);
        if self.blength < 0 || self.blength > max_b {
            return Err(format!("invalid block length {} (max {max_b})", self.blength));
        }
        if self.count > 0 && self.blength == 0 {
            return Err("invalid zero block length".into());
        }
        if self.s2length < 0 || self.s2length as usize > digest_len {
            return Err(format!("invalid checksum length {} (digest is {digest_len})", self.s2length));
        }
        if self.remainder < 0 || self.remainder > self.blength {
            return Err(format!("invalid remainder length {} (block length {})", self.remainder, self.blength));
        }
        Ok(())
    }

    /// Length of block `i`: `remainder` for the last block when non-zero,
    /// otherwise `blength`. 0 for `i >= count` (and for an unvalidated head
    /// with negative fields).
    pub fn block_len(&self, i: u32) -> usize {
        let count = self.count.max(0) as u32;
        if i >= count {
            return 0;
        }
        if i + 1 == count && self.remainder != 0 {
            self.remainder.max(0) as usize
        } else {
            self.blength.max(0) as usize
        }
    }

    /// Byte offset of block `i` in the basis file (`i · blength`).
    pub fn block_offset(&self, i: u32) -> u64 {
        i as u64 * self.blength.max(0) as u64
    }

    /// Total bytes the blocks cover (the basis length the head describes).
    pub fn covered_len(&self) -> u64 {
        if self.count <= 0 {
            return 0;
        }
        (self.count as u64 - 1) * self.blength.max(0) as u64 + self.block_len(self.count as u32 - 1) as u64
    }
}
