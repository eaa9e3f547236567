//! Multiplexed I/O frames (`io.c send_msg` / `read_a_msg`).
//!
//! Header: u32 LE `((MPLEX_BASE + code) << 24) | length`, length ≤ 0xFFFFFF.

use super::wire::{malformed, DResult, DecodeError};

pub const MPLEX_BASE: u32 = 7;

pub const MSG_DATA: u8 = 0;
pub const MSG_ERROR_XFER: u8 = 1;
pub const MSG_INFO: u8 = 2;
pub const MSG_ERROR: u8 = 3;
pub const MSG_WARNING: u8 = 4;
pub const MSG_ERROR_SOCKET: u8 = 5;
pub const MSG_LOG: u8 = 6;
pub const MSG_CLIENT: u8 = 7;
pub const MSG_ERROR_UTF8: u8 = 8;
pub const MSG_REDO: u8 = 9;
pub const MSG_STATS: u8 = 10;
pub const MSG_IO_ERROR: u8 = 22;
pub const MSG_IO_TIMEOUT: u8 = 33;
pub const MSG_NOOP: u8 = 42;
pub const MSG_ERROR_EXIT: u8 = 86;
pub const MSG_SUCCESS: u8 = 100;
pub const MSG_DELETED: u8 = 101;
pub const MSG_NO_SEND: u8 = 102;

/// Largest payload we accept for a non-data message. rsync bounds these to
/// BIGPATHBUFLEN (MAXPATHLEN + 1024) and fails with "multiplexing overflow".
pub const MAX_MSG_PAYLOAD: usize = 4096 + 1024;

/// Largest frame length the 24-bit header can carry.
pub const MAX_FRAME: usize = 0xFF_FFFF;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub code: u8,
    pub len: usize,
}

/// Decode a frame header from the front of `buf`.
pub fn parse_header(buf: &[u8]) -> DResult<FrameHeader> {
    if buf.len() < 4 {
        return Err(DecodeError::Incomplete);
    }
    let v = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let tag = v >> 24;
    let len = (v & 0xFF_FFFF) as usize;
    if tag < MPLEX_BASE {
        return malformed(format!("unexpected tag {} in multiplexed stream (not a message header)", tag));
    }
    let code = tag - MPLEX_BASE;
    if code > 0xFF {
        return malformed(format!("unexpected message tag {code}"));
    }
    Ok(FrameHeader { code: code as u8, len })
}

/// Append one frame.
pub fn put_frame(out: &mut Vec<u8>, code: u8, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_FRAME);
    let v = ((MPLEX_BASE + code as u32) << 24) | payload.len() as u32;
    out.extend_from_slice(&v.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Append data as MSG_DATA frames, splitting at the maximum frame size.
pub fn put_data(out: &mut Vec<u8>, mut data: &[u8]) {
    while !data.is_empty() {
        let n = data.len().min(MAX_FRAME);
        put_frame(out, MSG_DATA, &data[..n]);
        data = &data[n..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn header_roundtrip() {
        let mut o = vec![];
        put_frame(&mut o, MSG_DATA, &[0, 0, 0, 0]);
        assert_eq!(o, [4, 0, 0, 7, 0, 0, 0, 0]);
        let h = parse_header(&o).unwrap();
        assert_eq!(h, FrameHeader { code: 0, len: 4 });
        assert_eq!(parse_header(&o[..3]), Err(DecodeError::Incomplete));
        assert!(matches!(parse_header(&[0, 0, 0, 3]), Err(DecodeError::Malformed(_))));
        let mut o = vec![];
        put_frame(&mut o, MSG_ERROR_EXIT, &[]);
        assert_eq!(parse_header(&o).unwrap().code, MSG_ERROR_EXIT);
    }
}
