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

/// Escape text for HTML element content and quoted attribute values;
/// control characters other than newline and tab become U+FFFD.
pub fn escape_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => o.push('\u{fffd}'),
            c => o.push(c),
        }
    }
    o
}

/// A number with `,` between groups of three digits, as rsync prints sizes
/// and counts (`1,234,567`).
pub fn group_digits(n: impl std::fmt::Display) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count in binary units with one decimal (`12.3 MiB`), or `N B`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// An epoch second broken down in UTC (no time-zone database needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// Days since the epoch, for the weekday (1970-01-01 was a Thursday).
    pub days: i64,
}

impl Utc {
    pub fn at(t: i64) -> Utc {
        let days = t.div_euclid(86_400);
        let s = t.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Utc { year, month, day, hour: s / 3600, minute: s % 3600 / 60, second: s % 60, days }
    }

    /// `YYYY-MM-DDTHH:MM:SS` (no zone suffix).
    pub fn iso(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// 0 = Sunday … 6 = Saturday.
    pub fn weekday(&self) -> usize {
        (self.days + 4).rem_euclid(7) as usize
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil_from_days), without a time-zone database.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) in the proleptic Gregorian calendar → days since
/// 1970-01-01 (Howard Hinnant's days_from_civil); the inverse of [`civil_from_days`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_breakdown() {
        let u = super::Utc::at(1_456_652_429); // Sun Feb 28 09:40:29 UTC 2016
        assert_eq!((u.year, u.month, u.day, u.hour, u.minute, u.second), (2016, 2, 28, 9, 40, 29));
        assert_eq!(u.weekday(), 0);
        assert_eq!(u.iso(), "2016-02-28T09:40:29");
        assert_eq!(super::Utc::at(-1).iso(), "1969-12-31T23:59:59");
        assert_eq!(super::Utc::at(0).weekday(), 4);
    }

    #[test]
    fn number_formats() {
        use super::{group_digits, human_bytes};
        assert_eq!(group_digits(0u64), "0");
        assert_eq!(group_digits(999u64), "999");
        assert_eq!(group_digits(1_234_567u64), "1,234,567");
        assert_eq!(group_digits(1_000i64), "1,000");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
    }

    #[test]
    fn civil_dates() {
        use super::civil_from_days;
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(24_855), (2038, 1, 19));
        assert_eq!(civil_from_days(-25_567), (1900, 1, 1));
    }

    #[test]
    fn html() {
        assert_eq!(super::escape_html("<a href='x'>&\u{1b}</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;\u{fffd}&lt;/a&gt;");
    }

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
