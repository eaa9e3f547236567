//! Primitive wire encodings (`io.c` read_*/write_*): fixed-width little-endian
//! integers, varint/varlong, vstring, and the protocol-30 delta-coded ndx.
//!
//! Decoding is done with [`Reader`], a cursor over a borrowed byte slice that
//! never owns a stream: every read either succeeds, reports
//! [`DecodeError::Incomplete`] (the caller retries once more bytes arrived,
//! from the start of the item), or reports malformed input.

use std::fmt;

/// Why a decoder could not produce a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed; nothing is wrong yet.
    Incomplete,
    /// The bytes can never decode to a valid item.
    Malformed(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Incomplete => f.write_str("incomplete input"),
            DecodeError::Malformed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for DecodeError {}

pub type DResult<T> = Result<T, DecodeError>;

/// Shorthand for a malformed-input error.
pub fn malformed<T>(msg: impl Into<String>) -> DResult<T> {
    Err(DecodeError::Malformed(msg.into()))
}

/// Extra-byte count for a varint/varlong lead byte, `io.c int_byte_extra[lead/4]`.
fn int_byte_extra(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 0,
        0x80..=0xBF => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        0xF8..=0xFB => 5,
        0xFC..=0xFF => 6,
    }
}

/// The bits of a lead byte that belong to the value, given its extra-byte count.
fn lead_mask(extra: usize) -> u8 {
    if extra == 0 {
        0xFF
    } else {
        (1u8 << (8 - extra)) - 1
    }
}

/// A cursor over bytes already received.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> DResult<&'a [u8]> {
        if self.remaining() < n {
            return Err(DecodeError::Incomplete);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self) -> DResult<u8> {
        Ok(self.bytes(1)?[0])
    }

    /// `read_shortint`: u16 LE.
    pub fn u16(&mut self) -> DResult<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// `read_int`: i32 LE.
    pub fn i32(&mut self) -> DResult<i32> {
        let b = self.bytes(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `read_uint`: u32 LE.
    pub fn u32(&mut self) -> DResult<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i64(&mut self) -> DResult<i64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    /// `read_longint` (protocol < 30): an int, or `-1` followed by an i64.
    pub fn longint(&mut self) -> DResult<i64> {
        let v = self.i32()?;
        if v != -1 {
            return Ok(v as i64);
        }
        self.i64()
    }

    /// `read_varint`.
    pub fn varint(&mut self) -> DResult<i32> {
        let lead = self.u8()?;
        let extra = int_byte_extra(lead);
        if extra > 4 {
            return malformed("overflow in varint");
        }
        let mut b = [0u8; 5];
        b[..extra].copy_from_slice(self.bytes(extra)?);
        // With 4 extra bytes the lead's low bits land beyond the i32 and are
        // ignored, exactly as io.c does.
        b[extra] = lead & lead_mask(extra);
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `read_varlong(min_bytes)`.
    pub fn varlong(&mut self, min_bytes: usize) -> DResult<i64> {
        debug_assert!((1..=8).contains(&min_bytes));
        let head = self.bytes(min_bytes)?;
        let lead = head[0];
        let mut b = [0u8; 9];
        b[..min_bytes - 1].copy_from_slice(&head[1..]);
        let extra = int_byte_extra(lead);
        let total = min_bytes - 1 + extra;
        if total > 8 {
            return malformed("overflow in varlong");
        }
        b[min_bytes - 1..total].copy_from_slice(self.bytes(extra)?);
        b[total] = lead & lead_mask(extra);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        Ok(i64::from_le_bytes(a))
    }

    /// `read_vstring`: 1- or 2-byte length then bytes.
    pub fn vstring(&mut self) -> DResult<&'a [u8]> {
        let mut len = self.u8()? as usize;
        if len & 0x80 != 0 {
            len = ((len & 0x7F) << 8) | self.u8()? as usize;
        }
        self.bytes(len)
    }
}

/// State for one direction of the protocol-30 ndx delta coding (`io.c read_ndx`).
#[derive(Debug, Clone, Copy)]
pub struct NdxState {
    prev_positive: i32,
    prev_negative: i32,
}

impl Default for NdxState {
    fn default() -> Self {
        NdxState { prev_positive: -1, prev_negative: 1 }
    }
}

pub const NDX_DONE: i32 = -1;
pub const NDX_FLIST_EOF: i32 = -2;
pub const NDX_DEL_STATS: i32 = -3;
pub const NDX_FLIST_OFFSET: i32 = -101;

impl NdxState {
    /// Decode an ndx. `modern` = protocol ≥ 30. State changes only on success.
    pub fn read(&mut self, r: &mut Reader<'_>, modern: bool) -> DResult<i32> {
        if !modern {
            return r.i32();
        }
        let mut b0 = r.u8()?;
        let negative = if b0 == 0xFF {
            b0 = r.u8()?;
            true
        } else if b0 == 0 {
            return Ok(NDX_DONE);
        } else {
            false
        };
        let prev = if negative { self.prev_negative } else { self.prev_positive };
        let num: i64 = if b0 == 0xFE {
            let b1 = r.u8()?;
            let b2 = r.u8()?;
            if b1 & 0x80 != 0 {
                let b3 = r.u8()?;
                let b4 = r.u8()?;
                let v = ((b1 as u32 & 0x7F) << 24) | ((b4 as u32) << 16) | ((b3 as u32) << 8) | b2 as u32;
                v as i64
            } else {
                prev as i64 + (((b1 as i64) << 8) | b2 as i64)
            }
        } else {
            prev as i64 + b0 as i64
        };
        if num > i32::MAX as i64 || num < 0 {
            return malformed(format!("ndx value {num} out of range"));
        }
        let num = num as i32;
        if negative {
            self.prev_negative = num;
            Ok(-num)
        } else {
            self.prev_positive = num;
            Ok(num)
        }
    }

    /// Encode an ndx (`io.c write_ndx`).
    pub fn write(&mut self, out: &mut Vec<u8>, ndx: i32, modern: bool) {
        if !modern {
            out.extend_from_slice(&ndx.to_le_bytes());
            return;
        }
        if ndx == NDX_DONE {
            out.push(0);
            return;
        }
        let (num, prev) = if ndx >= 0 {
            let p = self.prev_positive;
            self.prev_positive = ndx;
            (ndx, p)
        } else {
            out.push(0xFF);
            let n = -ndx;
            let p = self.prev_negative;
            self.prev_negative = n;
            (n, p)
        };
        let diff = num as i64 - prev as i64;
        if (1..0xFE).contains(&diff) {
            out.push(diff as u8);
        } else if !(0..=0x7FFF).contains(&diff) {
            out.push(0xFE);
            out.push(((num >> 24) as u8) | 0x80);
            out.push(num as u8);
            out.push((num >> 8) as u8);
            out.push((num >> 16) as u8);
        } else {
            out.push(0xFE);
            out.push((diff >> 8) as u8);
            out.push(diff as u8);
        }
    }
}

/// Encoders (`io.c write_*`), appending to a Vec.
pub mod put {
    pub fn u8(out: &mut Vec<u8>, v: u8) {
        out.push(v);
    }
    pub fn u16(out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(out: &mut Vec<u8>, v: i32) {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn longint(out: &mut Vec<u8>, v: i64) {
        if (0..=0x7FFF_FFFF).contains(&v) {
            i32(out, v as i32);
        } else {
            i32(out, -1);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    pub fn varint(out: &mut Vec<u8>, v: i32) {
        varlong_impl(out, v as u32 as u64, 4, 1);
    }
    pub fn varlong(out: &mut Vec<u8>, v: i64, min_bytes: usize) {
        varlong_impl(out, v as u64, 8, min_bytes);
    }
    fn varlong_impl(out: &mut Vec<u8>, v: u64, width: usize, min_bytes: usize) {
        let b = v.to_le_bytes();
        let mut cnt = width;
        while cnt > min_bytes && b[cnt - 1] == 0 {
            cnt -= 1;
        }
        let bit = 1u16 << (7 + min_bytes - cnt);
        if b[cnt - 1] as u16 >= bit {
            cnt += 1;
            out.push(!((bit - 1) as u8));
        } else if cnt > min_bytes {
            out.push(b[cnt - 1] | !((bit * 2 - 1) as u8));
        } else {
            out.push(b[cnt - 1]);
        }
        out.extend_from_slice(&b[..cnt - 1]);
    }
    pub fn vstring(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() <= 0x7FFF, "vstring too long");
        if s.len() > 0x7F {
            out.push(0x80 | (s.len() >> 8) as u8);
        }
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc_varint(v: i32) -> Vec<u8> {
        let mut o = vec![];
        put::varint(&mut o, v);
        o
    }
    fn enc_varlong(v: i64, m: usize) -> Vec<u8> {
        let mut o = vec![];
        put::varlong(&mut o, v, m);
        o
    }

    #[test]
    fn varint_vectors() {
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x80, 0x80]),
            (0x3FFF, &[0xBF, 0xFF]),
            (0x4000, &[0xC0, 0x00, 0x40]),
            (0x200000, &[0xE0, 0x00, 0x00, 0x20]),
            (0x10000000, &[0xF0, 0x00, 0x00, 0x00, 0x10]),
            (-1, &[0xF0, 0xFF, 0xFF, 0xFF, 0xFF]),
        ];
        for (v, bytes) in cases {
            assert_eq!(enc_varint(*v), *bytes, "encode {v}");
            let mut r = Reader::new(bytes);
            assert_eq!(r.varint().unwrap(), *v, "decode {v}");
            assert_eq!(r.consumed(), bytes.len());
        }
    }

    #[test]
    fn varlong_vectors() {
        let cases: &[(i64, usize, &[u8])] = &[
            (0, 3, &[0, 0, 0]),
            (1, 3, &[0, 1, 0]),
            (0, 4, &[0, 0, 0, 0]),
            (1, 4, &[0, 1, 0, 0]),
            (1_000_000, 3, &[0x0F, 0x40, 0x42]),
            (1_000_000, 4, &[0x00, 0x40, 0x42, 0x0F]),
            (0x800000, 3, &[0x80, 0x00, 0x00, 0x80]),
            (0x800000, 4, &[0x00, 0x00, 0x00, 0x80]),
            (1_700_000_000, 3, &[0xC0, 0x00, 0xF1, 0x53, 0x65]),
            (1_700_000_000, 4, &[0x65, 0x00, 0xF1, 0x53]),
            (1 << 32, 3, &[0xC1, 0, 0, 0, 0]),
            (1 << 32, 4, &[0x81, 0, 0, 0, 0]),
        ];
        for (v, m, bytes) in cases {
            assert_eq!(enc_varlong(*v, *m), *bytes, "encode {v} min {m}");
            let mut r = Reader::new(bytes);
            assert_eq!(r.varlong(*m).unwrap(), *v, "decode {v} min {m}");
            assert_eq!(r.remaining(), 0);
        }
        for v in [-1i64, i64::MIN, i64::MAX, -62_135_596_800, 4_102_444_800, 255, 256, 65535, 1 << 40] {
            for m in [3, 4] {
                let e = enc_varlong(v, m);
                let mut r = Reader::new(&e);
                assert_eq!(r.varlong(m).unwrap(), v, "roundtrip {v} min {m}");
            }
        }
    }

    #[test]
    fn ndx_vector_from_brief() {
        let seq = [0, 1, 2, 5, 300, 70000, 3, -1, -2, -104];
        let expect = [
            0x01, 0x01, 0x01, 0x03, 0xFE, 0x01, 0x27, 0xFE, 0x80, 0x70, 0x11, 0x01, 0xFE, 0x80, 0x03, 0x00, 0x00,
            0x00, 0xFF, 0x01, 0xFF, 0x66,
        ];
        let mut st = NdxState::default();
        let mut out = vec![];
        for n in seq {
            st.write(&mut out, n, true);
        }
        assert_eq!(out, expect);
        let mut st = NdxState::default();
        let mut r = Reader::new(&out);
        for n in seq {
            assert_eq!(st.read(&mut r, true).unwrap(), n);
        }
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn incomplete_is_not_malformed() {
        let mut r = Reader::new(&[0xC0, 0x00]);
        assert_eq!(r.varint(), Err(DecodeError::Incomplete));
        let mut r = Reader::new(&[0xFC]);
        assert!(matches!(r.varint(), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn longint_and_vstring() {
        for v in [0i64, 5, 0x7FFF_FFFF, 0x8000_0000, -5, 1 << 40] {
            let mut o = vec![];
            put::longint(&mut o, v);
            assert_eq!(Reader::new(&o).longint().unwrap(), v);
        }
        let long = vec![b'a'; 300];
        let mut o = vec![];
        put::vstring(&mut o, &long);
        assert_eq!(o[0], 0x81);
        assert_eq!(Reader::new(&o).vstring().unwrap(), &long[..]);
    }
}
