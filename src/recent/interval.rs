//! RECENT interval specs (`1h`, `6h`, `1d`, `1W`, `1M`, `1Q`, `1Y`, `Z`, ...).
//!
//! As defined by File::Rsync::Mirror::Recentfile (`interval_secs`, POD
//! section "INTERVAL SPEC"): one or more decimal digits followed by exactly
//! one unit letter, or the lone letter `Z`.  Case matters (`m` is minutes,
//! `M` is 30 days).  The digits are mandatory (`h` alone is rejected by the
//! reference too).  Unit seconds:
//! `s`=1, `m`=60, `h`=3600, `d`=86400, `W`=7d, `M`=30d, `Q`=90d,
//! `Y`=365.25d (=31_557_600, an integer), `Z`=MAX_INT (`~0>>1`, i.e.
//! `i64::MAX` on 64-bit Perl).
//!
//! Deviation: a count of 0 is rejected (the reference would accept `0h` and
//! compute 0 seconds, which no sane chain uses).

use std::fmt;

/// Longest accepted count (digits).
pub const MAX_INTERVAL_DIGITS: usize = 9;

/// Seconds of `Z` (Perl `~0>>1` on a 64-bit perl).
pub const Z_SECS: u64 = i64::MAX as u64;

/// Unit letters of a finite interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl IntervalUnit {
    pub fn from_letter(c: char) -> Option<IntervalUnit> {
        Some(match c {
            's' => IntervalUnit::Second,
            'm' => IntervalUnit::Minute,
            'h' => IntervalUnit::Hour,
            'd' => IntervalUnit::Day,
            'W' => IntervalUnit::Week,
            'M' => IntervalUnit::Month,
            'Q' => IntervalUnit::Quarter,
            'Y' => IntervalUnit::Year,
            _ => return None,
        })
    }
    pub fn letter(self) -> char {
        match self {
            IntervalUnit::Second => 's',
            IntervalUnit::Minute => 'm',
            IntervalUnit::Hour => 'h',
            IntervalUnit::Day => 'd',
            IntervalUnit::Week => 'W',
            IntervalUnit::Month => 'M',
            IntervalUnit::Quarter => 'Q',
            IntervalUnit::Year => 'Y',
        }
    }
    pub fn secs(self) -> u64 {
        const D: u64 = 86_400;
        match self {
            IntervalUnit::Second => 1,
            IntervalUnit::Minute => 60,
            IntervalUnit::Hour => 3_600,
            IntervalUnit::Day => D,
            IntervalUnit::Week => 7 * D,
            IntervalUnit::Month => 30 * D,
            IntervalUnit::Quarter => 90 * D,
            IntervalUnit::Year => 31_557_600, // 365.25 days
        }
    }
}

/// A RECENT file's interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    Finite {
        count: u32,
        unit: IntervalUnit,
    },
    /// The unbounded archive file.
    Z,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RECENT interval {spec:?}: {why} (expected e.g. 1h, 6h, 1d, 1W, 1M, 1Q, 1Y or Z)")]
pub struct IntervalError {
    pub spec: String,
    pub why: &'static str,
}

impl Interval {
    pub fn parse(s: &str) -> Result<Interval, IntervalError> {
        let err = |why| IntervalError {
            spec: s.chars().take(40).collect(),
            why,
        };
        if s == "Z" {
            return Ok(Interval::Z);
        }
        let mut chars = s.chars();
        let last = chars.next_back().ok_or_else(|| err("empty"))?;
        let digits = chars.as_str();
        let unit =
            IntervalUnit::from_letter(last).ok_or_else(|| err("unknown or missing unit letter"))?;
        if digits.is_empty() {
            return Err(err("missing count before the unit"));
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("count must be decimal digits"));
        }
        if digits.len() > MAX_INTERVAL_DIGITS {
            return Err(err("count too large"));
        }
        let count: u32 = digits.parse().map_err(|_| err("count too large"))?;
        if count == 0 {
            return Err(err("count must be positive"));
        }
        Ok(Interval::Finite { count, unit })
    }

    /// Seconds covered; `Z` gives [`Z_SECS`].
    pub fn secs(&self) -> u64 {
        match *self {
            Interval::Z => Z_SECS,
            // count <= 999_999_999 and unit <= 31_557_600: fits in u64.
            Interval::Finite { count, unit } => u64::from(count).saturating_mul(unit.secs()),
        }
    }

    pub fn is_z(&self) -> bool {
        matches!(self, Interval::Z)
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interval::Z => f.write_str("Z"),
            Interval::Finite { count, unit } => write!(f, "{count}{}", unit.letter()),
        }
    }
}

impl std::str::FromStr for Interval {
    type Err = IntervalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Interval::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_chain() {
        let want = [
            ("1h", 3_600u64),
            ("6h", 21_600),
            ("1d", 86_400),
            ("1W", 604_800),
            ("1M", 2_592_000),
            ("1Q", 7_776_000),
            ("1Y", 31_557_600),
            ("Z", i64::MAX as u64),
            ("3s", 3),
            ("8s", 8),
            ("21s", 21),
            ("55s", 55),
            ("30m", 1_800),
        ];
        for (s, secs) in want {
            let i = Interval::parse(s).unwrap();
            assert_eq!(i.secs(), secs, "{s}");
            assert_eq!(i.to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "h",
            "Zh",
            "2Z",
            "1w",
            "1D",
            "1y",
            "1H",
            "0h",
            "-1h",
            "1.5h",
            "1 h",
            "10000000000h",
            "1hh",
            "1é",
        ] {
            assert!(Interval::parse(bad).is_err(), "{bad}");
        }
    }
}
