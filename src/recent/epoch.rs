//! Exact decimal epochs as found in RECENT files.
//!
//! The reference writer (File::Rsync::Mirror::Recent) produces epochs as
//! decimal strings such as `"1325093856.49272"` (Perl's default stringification
//! of `Time::HiRes::time`, i.e. 15 significant digits, so 5 fraction digits
//! today).  When it must make two epochs unique it bisects between them in
//! decimal (`_increase_a_bit`), which can produce *many* more fraction digits
//! (30+).  It compares epochs as decimal strings, never as native floats.
//! rrrgo (a Go server) may emit JSON numbers instead of strings.
//!
//! [`Epoch`] therefore stores the integer seconds plus the fraction digits as
//! text (trailing zeros removed), so that ordering and equality are exact for
//! any number of digits up to [`MAX_EPOCH_FRAC_DIGITS`].
//!
//! Accepted text: `DIGITS` or `DIGITS.DIGITS` (leading zeros allowed).
//! Rejected, each with its own error: empty, sign (`-`/`+`), exponent
//! (`1e9` – neither writer produces one for present-day epochs), missing
//! digits around the dot (`.5`, `5.`), whitespace, anything else.

use std::cmp::Ordering;
use std::fmt;

/// Integer part: at most this many digits (and it must fit a `u64`).
pub const MAX_EPOCH_INT_DIGITS: usize = 20;
/// Fraction part: at most this many digits.  `_increase_a_bit` output stays
/// well below this on 64-bit and 128-bit Perl floats.
pub const MAX_EPOCH_FRAC_DIGITS: usize = 64;

/// Why a piece of text is not an epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochError {
    #[error("empty epoch")]
    Empty,
    #[error("epoch {0:?} is negative or signed; RECENT epochs are unsigned decimals")]
    Signed(String),
    #[error("epoch {0:?} uses exponent notation, which no RECENT writer produces")]
    Exponent(String),
    #[error("epoch {0:?} has too many digits (max {MAX_EPOCH_INT_DIGITS} before and {MAX_EPOCH_FRAC_DIGITS} after the dot)")]
    TooLong(String),
    #[error("epoch {0:?} is not a plain decimal (expected DIGITS or DIGITS.DIGITS)")]
    Malformed(String),
}

/// An exact, totally ordered, non-negative decimal timestamp.
///
/// Ordering/equality are numeric: `"5.10" == "5.1"`, `"5.09" < "5.1"`.
/// `Display` prints the normalized form (no trailing fraction zeros, no
/// leading integer zeros) and `Epoch::parse(&e.to_string()) == Ok(e)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch {
    secs: u64,
    /// Fraction digits, ASCII '0'..='9', no trailing '0'.  Lexicographic
    /// order of such strings equals numeric order of the fractions.
    frac: Box<str>,
}

impl Epoch {
    /// Whole-second epoch.
    pub fn from_secs(secs: u64) -> Epoch {
        Epoch {
            secs,
            frac: Box::from(""),
        }
    }

    /// Parse the decimal text form (see module docs for the grammar).
    pub fn parse(s: &str) -> Result<Epoch, EpochError> {
        if s.is_empty() {
            return Err(EpochError::Empty);
        }
        if s.len() > MAX_EPOCH_INT_DIGITS + MAX_EPOCH_FRAC_DIGITS + 1 {
            return Err(EpochError::TooLong(truncate_for_msg(s)));
        }
        if s.starts_with('-') || s.starts_with('+') {
            return Err(EpochError::Signed(s.to_string()));
        }
        if s.bytes().any(|b| b == b'e' || b == b'E')
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b"eE.+-".contains(&b))
        {
            return Err(EpochError::Exponent(s.to_string()));
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EpochError::Malformed(s.to_string()));
        }
        let int_trim = int.trim_start_matches('0');
        if int_trim.len() > MAX_EPOCH_INT_DIGITS {
            return Err(EpochError::TooLong(truncate_for_msg(s)));
        }
        let secs: u64 = if int_trim.is_empty() {
            0
        } else {
            int_trim
                .parse()
                .map_err(|_| EpochError::TooLong(truncate_for_msg(s)))?
        };
        let frac = match frac {
            None => "",
            Some(f) => {
                if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(EpochError::Malformed(s.to_string()));
                }
                if f.len() > MAX_EPOCH_FRAC_DIGITS {
                    return Err(EpochError::TooLong(truncate_for_msg(s)));
                }
                f.trim_end_matches('0')
            }
        };
        Ok(Epoch {
            secs,
            frac: Box::from(frac),
        })
    }

    /// Whole seconds (floor).
    pub fn secs(&self) -> u64 {
        self.secs
    }

    /// Fraction digits after the dot, normalized (may be empty).
    pub fn frac_digits(&self) -> &str {
        &self.frac
    }

    /// Lossy conversion for logging and rough arithmetic only; never use it
    /// to compare epochs.
    pub fn as_f64_lossy(&self) -> f64 {
        let mut s = self.secs as f64;
        let mut scale = 0.1f64;
        for b in self.frac.bytes().take(17) {
            s += f64::from(b - b'0') * scale;
            scale /= 10.0;
        }
        s
    }

    /// `self + secs`, exact; `None` on overflow.
    pub fn checked_add_secs(&self, secs: u64) -> Option<Epoch> {
        Some(Epoch {
            secs: self.secs.checked_add(secs)?,
            frac: self.frac.clone(),
        })
    }

    /// `self - secs`, exact; `None` if the result would be negative.
    pub fn checked_sub_secs(&self, secs: u64) -> Option<Epoch> {
        Some(Epoch {
            secs: self.secs.checked_sub(secs)?,
            frac: self.frac.clone(),
        })
    }

    /// Whole seconds from `older` up to `self` (floor of the exact difference),
    /// `None` if `older > self`.
    pub fn whole_secs_since(&self, older: &Epoch) -> Option<u64> {
        if older > self {
            return None;
        }
        let d = self.secs - older.secs; // older <= self implies older.secs <= self.secs
        if self.frac < older.frac {
            // borrow one second: d >= 1 here because older < self.
            d.checked_sub(1)
        } else {
            Some(d)
        }
    }
}

fn truncate_for_msg(s: &str) -> String {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut t = s[..end].to_string();
    if end < s.len() {
        t.push_str("...");
    }
    t
}

impl Ord for Epoch {
    fn cmp(&self, other: &Self) -> Ordering {
        self.secs
            .cmp(&other.secs)
            .then_with(|| self.frac.cmp(&other.frac))
    }
}

impl PartialOrd for Epoch {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.frac.is_empty() {
            write!(f, "{}", self.secs)
        } else {
            write!(f, "{}.{}", self.secs, self.frac)
        }
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

impl std::str::FromStr for Epoch {
    type Err = EpochError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Epoch::parse(s)
    }
}

/// Serialized as a JSON string (like the Perl writer), so no precision is lost.
impl serde::Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserializes from a string (exact) or an integer (exact).  A float
/// goes through its shortest round-trip decimal form, which is exact for
/// the <=15 significant digits that writers produce; prefer strings.
impl<'de> serde::Deserialize<'de> for Epoch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Epoch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal epoch as string or number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Epoch, E> {
                Epoch::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Epoch, E> {
                Ok(Epoch::from_secs(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Epoch, E> {
                u64::try_from(v)
                    .map(Epoch::from_secs)
                    .map_err(|_| E::custom("negative epoch"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Epoch, E> {
                if !v.is_finite() || v < 0.0 {
                    return Err(E::custom("epoch must be a finite non-negative number"));
                }
                Epoch::parse(&format!("{v}")).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> Epoch {
        Epoch::parse(s).unwrap()
    }

    #[test]
    fn parses_real_forms() {
        assert_eq!(e("1325093856.49272").to_string(), "1325093856.49272");
        assert_eq!(e("1223270911").to_string(), "1223270911");
        assert_eq!(e("1223270911.0").to_string(), "1223270911");
        assert_eq!(e("0001.500").to_string(), "1.5");
        // _increase_a_bit style long fractions stay distinct
        let a = e("1760923093.82076");
        let b = e("1760923093.820760000000000001");
        assert!(b > a);
        assert_ne!(a, b);
    }

    #[test]
    fn ordering_is_numeric() {
        assert_eq!(e("5.10"), e("5.1"));
        assert!(e("5.09") < e("5.1"));
        assert!(e("5.9") > e("5.10"));
        assert!(e("9.99999") < e("10"));
        assert!(e("10") < e("10.00001"));
        let mut v = [e("3"), e("1.5"), e("1.25"), e("2")];
        v.sort();
        let s: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        assert_eq!(s, ["1.25", "1.5", "2", "3"]);
    }

    #[test]
    fn rejects_bad_forms() {
        assert_eq!(Epoch::parse(""), Err(EpochError::Empty));
        assert!(matches!(Epoch::parse("-1"), Err(EpochError::Signed(_))));
        assert!(matches!(Epoch::parse("+1"), Err(EpochError::Signed(_))));
        assert!(matches!(Epoch::parse("1e9"), Err(EpochError::Exponent(_))));
        assert!(matches!(
            Epoch::parse("1.5E+9"),
            Err(EpochError::Exponent(_))
        ));
        for bad in [".5", "5.", "1.2.3", " 1", "1 ", "0x10", "abc", "1,5", "١"] {
            assert!(
                matches!(Epoch::parse(bad), Err(EpochError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Epoch::parse("99999999999999999999"),
            Err(EpochError::TooLong(_))
        ));
        let long = format!("1.{}", "1".repeat(MAX_EPOCH_FRAC_DIGITS + 1));
        assert!(matches!(Epoch::parse(&long), Err(EpochError::TooLong(_))));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "0",
            "1",
            "1.000001",
            "18446744073709551615.9",
            "1223270911.76639",
        ] {
            let x = e(s);
            assert_eq!(Epoch::parse(&x.to_string()).unwrap(), x);
        }
    }

    #[test]
    fn arithmetic() {
        assert_eq!(e("10.5").whole_secs_since(&e("4.25")), Some(6));
        assert_eq!(e("10.25").whole_secs_since(&e("4.5")), Some(5));
        assert_eq!(e("4.5").whole_secs_since(&e("4.5")), Some(0));
        assert_eq!(e("4.5").whole_secs_since(&e("4.6")), None);
        assert_eq!(e("10.5").checked_sub_secs(3).unwrap(), e("7.5"));
        assert_eq!(e("1").checked_sub_secs(3), None);
        assert!((e("1.5").as_f64_lossy() - 1.5).abs() < 1e-9);
    }

    #[test]
    fn serde_forms() {
        let x: Epoch = serde_json::from_str("\"1325093856.49272\"").unwrap();
        assert_eq!(x, e("1325093856.49272"));
        let y: Epoch = serde_json::from_str("1760923093.82076").unwrap();
        assert_eq!(y, e("1760923093.82076"));
        let z: Epoch = serde_json::from_str("17").unwrap();
        assert_eq!(z, e("17"));
        assert!(serde_json::from_str::<Epoch>("-1").is_err());
        assert_eq!(serde_json::to_string(&x).unwrap(), "\"1325093856.49272\"");
    }
}
