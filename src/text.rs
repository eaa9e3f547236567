//! Escaping of peer-chosen text before it reaches a terminal or a log.
//!
//! rsync escapes non-printables as `\#ooo` (`log.c filtered_fwrite`); since 3.5.0
//! C1 controls (0x80–0x9f) too. We do the same for every byte that is a control
//! character, a C1 control, or not part of valid UTF-8, and keep tabs and newlines
//! only where the caller says so.

/// Escape raw bytes for display. `keep_newline` keeps `\n` (for multi-line MOTD text).
pub fn escape_bytes(b: &[u8], keep_newline: bool) -> String {
    let mut out = String::with_capacity(b.len());
    let mut rest = b;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_str(&mut out, s, keep_newline);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                // SAFETY-free: from_utf8 already validated this prefix.
                push_str(&mut out, std::str::from_utf8(&rest[..good]).unwrap_or(""), keep_newline);
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for &byte in &rest[good..good + bad] {
                    out.push_str(&format!("\\#{:03o}", byte));
                }
                rest = &rest[good + bad..];
            }
        }
    }
    out
}

fn push_str(out: &mut String, s: &str, keep_newline: bool) {
    for c in s.chars() {
        let cp = c as u32;
        let control = cp < 0x20 || cp == 0x7f || (0x80..=0x9f).contains(&cp);
        if control && !(keep_newline && c == '\n') && c != '\t' {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\#{:03o}", byte));
            }
        } else {
            out.push(c);
        }
    }
}

/// Escape a file name for itemized output: like rsync, tabs and newlines in names
/// are escaped too so one path stays one line.
pub fn escape_name(b: &[u8]) -> String {
    let s = escape_bytes(b, false);
    s.replace('\t', "\\#011")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn escapes_controls_and_bad_utf8() {
        assert_eq!(escape_bytes(b"ok", false), "ok");
        assert_eq!(escape_bytes(b"a\x1b[31mb", false), "a\\#033[31mb");
        assert_eq!(escape_bytes(b"x\xffy", false), "x\\#377y");
        assert_eq!(escape_bytes("é".as_bytes(), false), "é");
        assert_eq!(escape_bytes("\u{85}".as_bytes(), false), "\\#302\\#205");
        assert_eq!(escape_bytes(b"l1\nl2", true), "l1\nl2");
        assert_eq!(escape_name(b"a\tb\nc"), "a\\#011b\\#012c");
    }
}
