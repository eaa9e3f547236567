//! iim's interval specs (`22`, `22s`, `dw`, `7d+24h`, `w-0.5h`, `hm6`) and
//! the `-e` epoch argument.
//!
//! Source: the iim manual lists those six examples and says the units are
//! `s m h d w`, combinable in any order with `+`/`-` between terms (see
//! recent-format.md §A.9).  The manual's full grammar text was not
//! retrievable, so the grammar below is derived from the examples:
//!
//! ```text
//! spec  := term ( [op] term )*        op := '+' | '-'   (no op = '+')
//! term  := number unit? | unit        unit := s | m | h | d | w
//! number:= DIGITS [ '.' DIGITS* ] | '.' DIGITS
//! ```
//!
//! * a term without a unit counts seconds (`22` = 22 s, `hm6` ends in `6` s);
//! * a unit without a number counts once (`dw` = 1 d + 1 w);
//! * juxtaposed terms are added (`dw` = 8 d, like `7d+24h`);
//!   `hm6` = 1 h + 1 m + 6 s = 3666 s; `w-0.5h` = 604800 - 1800 s.
//! * s=1, m=60, h=3600, d=86400, w=604800 (lower case only);
//! * whitespace is not allowed inside a spec (surrounding blanks are trimmed);
//! * the total must not be negative.
//!
//! Values are exact: [`Span`] counts milliseconds, so at most 3 fraction
//! digits of a second survive; more digits are rejected as unrepresentable
//! only if they would not be exact after scaling by the unit
//! (`0.0001h` = 360 ms is fine, `0.0001s` is not).

use crate::recent::Epoch;
use std::fmt;

/// Longest accepted spec text.
pub const MAX_SPEC_LEN: usize = 64;
/// Most terms in one spec.
pub const MAX_SPEC_TERMS: usize = 16;
/// Most digits in one number (both sides of the dot together).
pub const MAX_NUMBER_DIGITS: usize = 15;
/// Largest absolute value of a spec: 100 years.
pub const MAX_SPAN_SECS: i64 = 100 * 366 * 86_400;

/// A signed duration in milliseconds (exact for decimal specs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    millis: i64,
}

impl Span {
    pub const ZERO: Span = Span { millis: 0 };

    pub const fn from_secs(secs: i64) -> Span {
        Span {
            millis: secs.saturating_mul(1000),
        }
    }
    pub fn from_millis(millis: i64) -> Span {
        Span { millis }
    }
    pub fn millis(&self) -> i64 {
        self.millis
    }
    /// Whole seconds, rounded towards zero.
    pub fn whole_secs(&self) -> i64 {
        self.millis / 1000
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.millis as f64 / 1000.0
    }
    /// `None` for negative spans.
    pub fn to_duration(&self) -> Option<std::time::Duration> {
        u64::try_from(self.millis)
            .ok()
            .map(std::time::Duration::from_millis)
    }
}

impl fmt::Display for Span {
    /// Seconds, with a fraction only when needed: `3666`, `0.5`, `-1.25`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.millis < 0 { "-" } else { "" };
        let a = self.millis.unsigned_abs();
        let (s, ms) = (a / 1000, a % 1000);
        if ms == 0 {
            write!(f, "{sign}{s}")
        } else {
            let frac = format!("{ms:03}");
            write!(f, "{sign}{s}.{}", frac.trim_end_matches('0'))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad interval {spec:?}: {why} (examples: 22, 22s, dw, 7d+24h, w-0.5h, hm6; units s m h d w)"
)]
pub struct SpecError {
    pub spec: String,
    pub why: String,
}

fn unit_millis(c: u8) -> Option<i64> {
    Some(match c {
        b's' => 1_000,
        b'm' => 60_000,
        b'h' => 3_600_000,
        b'd' => 86_400_000,
        b'w' => 604_800_000,
        _ => return None,
    })
}

/// Parse an iim interval spec into a non-negative [`Span`].
pub fn parse_interval(spec: &str) -> Result<Span, SpecError> {
    let span = parse_signed(spec)?;
    if span.millis < 0 {
        return Err(SpecError {
            spec: clip(spec),
            why: "the total is negative".into(),
        });
    }
    Ok(span)
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_SPEC_LEN + 8).collect()
}

/// Like [`parse_interval`] but allows a negative total and a leading sign
/// (`-5m` is -300 s).
pub fn parse_signed(spec: &str) -> Result<Span, SpecError> {
    let err = |why: &str| SpecError {
        spec: clip(spec),
        why: why.to_string(),
    };
    let s = spec.trim_matches(|c| c == ' ' || c == '\t');
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.len() > MAX_SPEC_LEN {
        return Err(err("too long"));
    }
    let b = s.as_bytes();
    let mut i = 0usize;
    let mut total: i64 = 0;
    let mut terms = 0usize;
    let mut sign: i64 = 1;
    let mut pending_op = false;
    // a leading sign is allowed ("-30m" style values are handled by callers,
    // but "+5m" / "-5m" parse here as signed spans)
    if let Some(&c) = b.first() {
        if c == b'+' || c == b'-' {
            sign = if c == b'-' { -1 } else { 1 };
            pending_op = true;
            i = 1;
        }
    }
    while i < b.len() {
        // number
        let num_start = i;
        let mut int_digits = 0usize;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            int_digits += 1;
        }
        let mut frac = &s[i..i];
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let fs = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            frac = &s[fs..i];
            if int_digits == 0 && frac.is_empty() {
                return Err(err("a '.' without digits"));
            }
        }
        let has_number = i > num_start;
        if int_digits + frac.len() > MAX_NUMBER_DIGITS {
            return Err(err("number has too many digits"));
        }
        // unit
        let unit = match b.get(i) {
            Some(&c) if c.is_ascii_alphabetic() => match unit_millis(c) {
                Some(u) => {
                    i += 1;
                    Some(u)
                }
                None => return Err(err(&format!("unknown unit '{}'", c as char))),
            },
            _ => None,
        };
        if !has_number && unit.is_none() {
            let what = match b.get(i) {
                Some(&c) if c == b'+' || c == b'-' => {
                    "two operators in a row or an operator at the start of a term".to_string()
                }
                Some(&c) => format!("unexpected character '{}'", c.escape_ascii()),
                None => "missing term after an operator".to_string(),
            };
            return Err(err(&what));
        }
        if unit.is_none() && b.get(i).is_some_and(|&c| c != b'+' && c != b'-') {
            return Err(err(
                "a number without a unit must end the spec or be followed by '+' or '-'",
            ));
        }
        let per_unit = unit.unwrap_or(1_000);
        let int_part: i64 = if int_digits == 0 {
            if has_number {
                0
            } else {
                1
            }
        } else {
            s[num_start..num_start + int_digits]
                .parse()
                .map_err(|_| err("number too large"))?
        };
        // value = (int + frac) * per_unit, exact in millis or rejected
        let mut value = int_part
            .checked_mul(per_unit)
            .ok_or_else(|| err("too large"))?;
        if !frac.is_empty() {
            let digits: i64 = frac.parse().map_err(|_| err("number too large"))?;
            let scale = 10i64
                .checked_pow(frac.len() as u32)
                .ok_or_else(|| err("number has too many digits"))?;
            let num = digits
                .checked_mul(per_unit)
                .ok_or_else(|| err("too large"))?;
            if num % scale != 0 {
                return Err(err("fraction is finer than a millisecond"));
            }
            value = value
                .checked_add(num / scale)
                .ok_or_else(|| err("too large"))?;
        }
        total = total
            .checked_add(sign * value)
            .ok_or_else(|| err("too large"))?;
        if total.abs() > MAX_SPAN_SECS * 1000 {
            return Err(err("longer than 100 years"));
        }
        terms += 1;
        if terms > MAX_SPEC_TERMS {
            return Err(err("too many terms"));
        }
        pending_op = false;
        sign = 1;
        if let Some(&c) = b.get(i) {
            if c == b'+' || c == b'-' {
                sign = if c == b'-' { -1 } else { 1 };
                pending_op = true;
                i += 1;
            }
        }
    }
    if pending_op {
        return Err(err("missing term after an operator"));
    }
    Ok(Span { millis: total })
}

/// The `-e` argument: where to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpochSpec {
    /// `-e -30m`: that long before now.
    Ago(Span),
    /// `-e 1325093856.49` (an absolute Unix epoch).
    Absolute(Epoch),
}

impl EpochSpec {
    /// Resolve against `now` (seconds since the epoch, exact); `None` if the
    /// result would precede 1970.
    pub fn resolve(&self, now: &Epoch) -> Option<Epoch> {
        match self {
            EpochSpec::Absolute(e) => Some(e.clone()),
            EpochSpec::Ago(span) => {
                // millis >= 0 by construction
                let ms = u64::try_from(span.millis()).ok()?;
                let (whole, rest) = (ms / 1000, ms % 1000);
                if rest == 0 {
                    return now.checked_sub_secs(whole);
                }
                // subtract whole+1 seconds, then add back (1000-rest) ms exactly
                let base = now.checked_sub_secs(whole + 1)?;
                add_millis(&base, 1000 - rest)
            }
        }
    }
}

fn add_millis(e: &Epoch, ms: u64) -> Option<Epoch> {
    // exact decimal addition of ms/1000 to e's fraction
    let frac = e.frac_digits();
    let width = frac.len().max(3);
    let mut digits: Vec<u8> = frac.bytes().map(|b| b - b'0').collect();
    digits.resize(width, 0);
    let mut carry = ms; // add ms at positions 0..3
    for pos in (0..3).rev() {
        let d = u64::from(digits[pos]) + carry % 10;
        carry /= 10;
        digits[pos] = (d % 10) as u8;
        carry += d / 10;
    }
    let secs = e.secs().checked_add(carry)?;
    let s: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
    Epoch::parse(&format!("{secs}.{s}")).ok()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochSpecError {
    #[error("-e {0:?}: {1}")]
    Relative(String, SpecError),
    #[error("-e {0:?}: not an epoch (use an absolute Unix time like 1325093856 or a relative time like -30m, -2h): {1}")]
    Absolute(String, crate::recent::EpochError),
}

/// Parse `-e`'s value: a leading `-` means "this long ago" (the rest is an
/// interval spec: `-30m`, `-2h`, `-1d+6h`); otherwise an absolute epoch.
pub fn parse_epoch_spec(s: &str) -> Result<EpochSpec, EpochSpecError> {
    let t = s.trim_matches(|c| c == ' ' || c == '\t');
    if let Some(rest) = t.strip_prefix('-') {
        return parse_interval(rest)
            .map(EpochSpec::Ago)
            .map_err(|e| EpochSpecError::Relative(s.to_string(), e));
    }
    Epoch::parse(t)
        .map(EpochSpec::Absolute)
        .map_err(|e| EpochSpecError::Absolute(s.to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> String {
        parse_interval(s).unwrap().to_string()
    }

    #[test]
    fn manual_examples() {
        assert_eq!(secs("22"), "22");
        assert_eq!(secs("22s"), "22");
        assert_eq!(secs("dw"), "691200"); // 1d + 1w
        assert_eq!(secs("7d+24h"), "691200"); // same as dw
        assert_eq!(secs("w-0.5h"), "603000");
        assert_eq!(secs("hm6"), "3666"); // 1h + 1m + 6s
    }

    #[test]
    fn more_forms() {
        assert_eq!(secs("m"), "60");
        assert_eq!(secs("1.5m"), "90");
        assert_eq!(secs(".5s"), "0.5");
        assert_eq!(secs("2."), "2");
        assert_eq!(secs("0.0001h"), "0.36");
        assert_eq!(secs("1h30m"), "5400");
        assert_eq!(secs("30m1h"), "5400");
        assert_eq!(secs("h-m"), "3540");
        assert_eq!(secs(" 10 "), "10");
        assert_eq!(secs("0"), "0");
        assert_eq!(secs("+5m"), "300");
        assert_eq!(
            parse_interval("20s").unwrap().to_duration(),
            Some(std::time::Duration::from_secs(20))
        );
        assert_eq!(parse_signed("-5m").unwrap().whole_secs(), -300);
        assert_eq!(Span::from_millis(-1250).to_string(), "-1.25");
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            " ",
            "x",
            "5x",
            "1M",
            "1H",
            "5 m",
            "5+",
            "+",
            "-",
            "5++5",
            "5+-5",
            ".",
            "1..2",
            "1.2.3",
            "m-h",
            "0.0001s",
            "1e3",
            "9999999999999999h",
            "200w*100",
            "ö",
            "5\t+5",
        ] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
        assert!(parse_interval(&"1".repeat(MAX_SPEC_LEN + 1)).is_err());
        assert!(parse_interval(&"s".repeat(MAX_SPEC_TERMS + 1)).is_err());
        assert!(parse_interval("5300w").is_err()); // > 100 years
        let e = parse_interval("m-h").unwrap_err();
        assert!(e.to_string().contains("negative"));
    }

    #[test]
    fn epoch_specs() {
        let now = Epoch::parse("1700000000.25").unwrap();
        let ago = parse_epoch_spec("-30m").unwrap();
        assert_eq!(ago, EpochSpec::Ago(Span::from_secs(1800)));
        assert_eq!(ago.resolve(&now).unwrap().to_string(), "1699998200.25");
        assert_eq!(
            parse_epoch_spec("-2h")
                .unwrap()
                .resolve(&now)
                .unwrap()
                .to_string(),
            "1699992800.25"
        );
        assert_eq!(
            parse_epoch_spec("-0.5s")
                .unwrap()
                .resolve(&now)
                .unwrap()
                .to_string(),
            "1699999999.75"
        );
        assert_eq!(
            parse_epoch_spec("-0.25s")
                .unwrap()
                .resolve(&now)
                .unwrap()
                .to_string(),
            "1700000000"
        );
        let abs = parse_epoch_spec("1325093856.49272").unwrap();
        assert_eq!(
            abs,
            EpochSpec::Absolute(Epoch::parse("1325093856.49272").unwrap())
        );
        assert_eq!(abs.resolve(&now).unwrap().to_string(), "1325093856.49272");
        assert!(parse_epoch_spec("-").is_err());
        assert!(parse_epoch_spec("-x").is_err());
        assert!(parse_epoch_spec("30m").is_err()); // relative needs the '-'
        assert!(parse_epoch_spec("").is_err());
        assert_eq!(
            parse_epoch_spec("-1h")
                .unwrap()
                .resolve(&Epoch::from_secs(10)),
            None
        );
    }

    #[test]
    fn random_specs_never_panic() {
        let mut rng = crate::recent::test_support::Rng::new(99);
        let alphabet = b"0123456789..smhdwWx+-- \t\xc3\xa9";
        for _ in 0..50_000 {
            let len = rng.below(24);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(span) = parse_interval(&text) {
                assert!(span.millis() >= 0);
            }
            let _ = parse_signed(&text);
            let _ = parse_epoch_spec(&text);
            let _ = crate::iim::cli::parse_args(text.split(' '));
        }
    }
}
