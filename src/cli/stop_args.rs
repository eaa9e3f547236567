//! `--stop-after=MINS` and `--stop-at=y-m-dTh:m`: rsync's (3.2.3+) overall
//! deadline options, turned into a [`Deadline`] (see `engine::deadline` for
//! what happens when it passes: exit 30, verified files kept, no deletions).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::CliError;
use crate::engine::deadline::Deadline;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StopArgs {
    /// Stop after MINS minutes (exit 30: files already verified are kept, the
    /// one in progress is dropped, nothing is deleted). rsync's --stop-after.
    #[arg(long, value_name = "MINS", visible_alias = "time-limit",
          value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with_all = ["stop_at", "stop_after_secs"], hide_short_help = true)]
    pub stop_after: Option<u64>,
    /// Stop at this local time (exit 30, as --stop-after): y-m-dTh:m, m-dTh:m,
    /// h:m, or a date alone (midnight); the next such time. A past time is an error.
    #[arg(long, value_name = "y-m-dTh:m", conflicts_with = "stop_after_secs", hide_short_help = true)]
    pub stop_at: Option<String>,
    /// --stop-after in seconds, fractions allowed (for tests).
    #[arg(long, value_name = "SECS", hide = true)]
    pub stop_after_secs: Option<f64>,
}

impl StopArgs {
    /// The deadline these options ask for, counted from now.
    pub fn deadline(&self) -> Result<Option<Deadline>, CliError> {
        Ok(self.duration()?.map(|(d, what)| Deadline::after(d, what)))
    }

    /// How long from now, and the name of the option for messages.
    pub fn duration(&self) -> Result<Option<(Duration, String)>, CliError> {
        if let Some(m) = self.stop_after {
            let d = Duration::from_secs(m.saturating_mul(60));
            return Ok(Some((d, format!("--stop-after={m}"))));
        }
        if let Some(s) = self.stop_after_secs {
            let d = Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| CliError::syntax(format!("--stop-after-secs={s}: not a positive number of seconds")))?;
            return Ok(Some((d, format!("--stop-after-secs={s}"))));
        }
        if let Some(s) = &self.stop_at {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
            let local_now = local::civil_at(now)
                .ok_or_else(|| CliError::syntax("--stop-at: cannot read the local time zone".to_string()))?;
            let at = stop_at(s, now, local_now, &local::to_epoch).map_err(CliError::syntax)?;
            let d = Duration::from_secs(at.saturating_sub(now).max(0) as u64);
            return Ok(Some((d, format!("--stop-at={s}"))));
        }
        Ok(None)
    }
}

/// A local date and time to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
}

/// What `--stop-at` gave: any of year, month-day, hour:minute.
#[derive(Debug, PartialEq, Eq)]
struct Spec {
    year: Option<i64>,
    month_day: Option<(u32, u32)>,
    hm: Option<(u32, u32)>,
}

fn num(s: &str, what: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32, String> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad {what} {s:?}"));
    }
    let n: u32 = s.parse().map_err(|_| format!("bad {what} {s:?}"))?;
    if !range.contains(&n) {
        return Err(format!("{what} {n} out of range ({}..{})", range.start(), range.end()));
    }
    Ok(n)
}

fn parse(s: &str) -> Result<Spec, String> {
    let (date, time) = match s.split_once(['T', 't']) {
        Some((d, t)) => (Some(d), Some(t)),
        None if s.contains(':') => (None, Some(s)),
        None => (Some(s), None),
    };
    let hm = match time {
        Some(t) => {
            let (h, m) = t.split_once(':').ok_or_else(|| format!("bad time {t:?} (use h:m)"))?;
            Some((num(h, "hour", 0..=23)?, num(m, "minute", 0..=59)?))
        }
        None => None,
    };
    let (year, month_day) = match date {
        None => (None, None),
        Some(d) => {
            let parts: Vec<&str> = d.split(['-', '/']).collect();
            match parts[..] {
                [m, dd] => (None, Some((num(m, "month", 1..=12)?, num(dd, "day", 1..=31)?))),
                [y, m, dd] => {
                    let y = match y.len() {
                        2 => 2000 + num(y, "year", 0..=99)? as i64,
                        4 => num(y, "year", 1970..=9999)? as i64,
                        _ => return Err(format!("bad year {y:?} (use 4 or 2 digits)")),
                    };
                    (Some(y), Some((num(m, "month", 1..=12)?, num(dd, "day", 1..=31)?)))
                }
                _ => return Err(format!("bad date {d:?} (use y-m-d or m-d)")),
            }
        }
    };
    Ok(Spec { year, month_day, hm })
}

/// The epoch second `--stop-at=s` means: the next local time after `now`
/// that matches what was given. `to_epoch` maps a local time to its epoch,
/// `None` for one that does not exist (February 30th, a DST gap).
pub fn stop_at(s: &str, now: i64, local_now: Civil, to_epoch: &dyn Fn(Civil) -> Option<i64>) -> Result<i64, String> {
    let bad = |why: String| format!("--stop-at={s}: {why} (use y-m-dTh:m, m-dTh:m or h:m, local time)");
    let spec = parse(s).map_err(bad)?;
    let (hour, minute) = spec.hm.unwrap_or((0, 0));
    let at = |year, month, day| to_epoch(Civil { year, month, day, hour, minute });
    match (spec.year, spec.month_day) {
        (Some(y), Some((m, d))) => {
            let t = at(y, m, d).ok_or_else(|| bad(format!("no such local time {y:04}-{m:02}-{d:02}T{hour:02}:{minute:02}")))?;
            if t <= now {
                return Err(format!("--stop-at={s}: {y:04}-{m:02}-{d:02}T{hour:02}:{minute:02} is in the past"));
            }
            Ok(t)
        }
        (None, Some((m, d))) => (local_now.year..local_now.year + 9)
            .filter_map(|y| at(y, m, d))
            .find(|&t| t > now)
            .ok_or_else(|| bad(format!("no such date {m:02}-{d:02}"))),
        _ => {
            let today = crate::text::days_from_civil(local_now.year, local_now.month, local_now.day);
            (0..3)
                .filter_map(|k| {
                    let (y, m, d) = crate::text::civil_from_days(today + k);
                    at(y, m, d)
                })
                .find(|&t| t > now)
                .ok_or_else(|| bad(format!("no such local time {hour:02}:{minute:02}")))
        }
    }
}

/// The machine's local time zone (libc's `localtime_r`/`mktime`, which read TZ).
mod local {
    use super::Civil;

    pub fn civil_at(t: i64) -> Option<Civil> {
        let tt: libc::time_t = t.try_into().ok()?;
        // SAFETY: `tm` is plain data; localtime_r writes it and only reads `tt`.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::localtime_r(&tt, &mut tm) };
        if r.is_null() {
            return None;
        }
        Some(Civil {
            year: tm.tm_year as i64 + 1900,
            month: (tm.tm_mon + 1) as u32,
            day: tm.tm_mday as u32,
            hour: tm.tm_hour as u32,
            minute: tm.tm_min as u32,
        })
    }

    pub fn to_epoch(c: Civil) -> Option<i64> {
        // SAFETY: as above; mktime reads and normalises `tm`.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        tm.tm_year = (c.year - 1900).try_into().ok()?;
        tm.tm_mon = c.month as i32 - 1;
        tm.tm_mday = c.day as i32;
        tm.tm_hour = c.hour as i32;
        tm.tm_min = c.minute as i32;
        tm.tm_isdst = -1;
        let t = unsafe { libc::mktime(&mut tm) };
        if t == -1 {
            return None;
        }
        // mktime moves February 30th to March 2nd: such a time does not exist.
        (civil_at(t as i64)? == c).then_some(t as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests use UTC as the "local" zone, so they don't depend on TZ.
    fn utc(c: Civil) -> Option<i64> {
        let t = crate::text::days_from_civil(c.year, c.month, c.day) * 86_400 + c.hour as i64 * 3600 + c.minute as i64 * 60;
        let u = crate::text::Utc::at(t);
        (u.year == c.year && u.month == c.month && u.day == c.day).then_some(t)
    }

    fn civ(t: i64) -> Civil {
        let u = crate::text::Utc::at(t);
        Civil { year: u.year, month: u.month, day: u.day, hour: u.hour as u32, minute: u.minute as u32 }
    }

    /// 2026-11-22T08:30:15 UTC, a Sunday.
    const NOW: i64 = 1_795_336_215;

    fn at(s: &str) -> Result<String, String> {
        stop_at(s, NOW, civ(NOW), &utc).map(|t| crate::text::Utc::at(t).iso())
    }

    #[test]
    fn stop_at_forms_take_the_next_matching_time() {
        assert_eq!(crate::text::Utc::at(NOW).iso(), "2026-11-22T08:30:15");
        assert_eq!(at("2026-11-22T09:05").unwrap(), "2026-11-22T09:05:00");
        assert_eq!(at("2027/01/02T00:00").unwrap(), "2027-01-02T00:00:00");
        assert_eq!(at("27-01-02T13:07").unwrap(), "2027-01-02T13:07:00");
        // h:m: today if still ahead, else tomorrow
        assert_eq!(at("23:59").unwrap(), "2026-11-22T23:59:00");
        assert_eq!(at("08:00").unwrap(), "2026-11-23T08:00:00");
        assert_eq!(at("8:30").unwrap(), "2026-11-23T08:30:00", "the current minute is not ahead");
        // m-dTh:m: this year if ahead, else next year
        assert_eq!(at("12-24T18:00").unwrap(), "2026-12-24T18:00:00");
        assert_eq!(at("01-01T00:00").unwrap(), "2027-01-01T00:00:00");
        assert_eq!(at("11-22T08:00").unwrap(), "2027-11-22T08:00:00");
        // a date alone is midnight; February 29th is the next leap year's
        assert_eq!(at("12-31").unwrap(), "2026-12-31T00:00:00");
        assert_eq!(at("2-29").unwrap(), "2028-02-29T00:00:00");
        assert_eq!(at("2026-11-23").unwrap(), "2026-11-23T00:00:00");
    }

    #[test]
    fn stop_at_refuses_past_and_malformed_times_by_name() {
        let past = at("2026-11-22T08:30").unwrap_err();
        assert!(past.contains("2026-11-22T08:30 is in the past"), "{past}");
        assert!(at("2020-01-01T00:00").unwrap_err().contains("in the past"));
        for (bad, why) in [
            ("", "bad date"),
            ("tomorrow", "bad time \"omorrow\""),
            ("25:00", "hour 25 out of range"),
            ("12:60", "minute 60 out of range"),
            ("13-01T00:00", "month 13 out of range"),
            ("2027-02-30T10:00", "no such local time 2027-02-30T10:00"),
            ("2-30", "no such date 02-30"),
            ("2027-1-32", "day 32 out of range"),
            ("12:", "bad minute"),
            ("T12:00", "bad date"),
            ("2027-01-01T", "bad time"),
            ("1-2-3-4", "bad date"),
            ("202-01-01", "bad year"),
            ("-5:00", "bad hour"),
            ("+1:00", "bad hour"),
            ("10:00:00", "bad minute"),
        ] {
            let e = at(bad).expect_err(bad);
            assert!(e.starts_with(&format!("--stop-at={bad}: ")) && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn local_zone_round_trips() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let c = local::civil_at(now).unwrap();
        let t = local::to_epoch(c).unwrap();
        assert!(now - t >= 0 && now - t < 60, "{c:?} -> {t}, now {now}");
        assert_eq!(local::to_epoch(Civil { month: 2, day: 30, ..c }), None);
    }

    #[test]
    fn stop_options_parse_from_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct W {
            #[command(flatten)]
            s: StopArgs,
        }
        let d = |args: &[&str]| W::try_parse_from(std::iter::once("w").chain(args.iter().copied())).map(|w| w.s);
        let s = d(&["--stop-after", "5"]).unwrap();
        assert_eq!(s.duration().unwrap(), Some((Duration::from_secs(300), "--stop-after=5".into())));
        assert_eq!(d(&["--time-limit=2"]).unwrap().duration().unwrap().unwrap().0, Duration::from_secs(120));
        assert_eq!(d(&["--stop-after-secs=0.25"]).unwrap().duration().unwrap().unwrap().0, Duration::from_millis(250));
        assert_eq!(d(&[]).unwrap().duration().unwrap(), None);
        for bad in [&["--stop-after=0"][..], &["--stop-after=x"], &["--stop-after=-1"], &["--stop-after=1", "--stop-at=10:00"]] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        for bad in ["--stop-after-secs=0", "--stop-after-secs=-1", "--stop-after-secs=NaN", "--stop-at=2001-01-01T00:00", "--stop-at=x"] {
            let e = d(&[bad]).unwrap().duration().unwrap_err();
            assert_eq!(e.code, crate::exit::ExitCode::Syntax, "{bad}");
            assert!(e.msg.starts_with(bad.split('=').next().unwrap()), "{bad}: {}", e.msg);
        }
        // a stop-at ahead: the duration is less than two days and names the option
        let (dur, what) = d(&["--stop-at=23:59"]).unwrap().duration().unwrap().unwrap();
        assert!(dur <= Duration::from_secs(2 * 86_400) && what == "--stop-at=23:59", "{dur:?} {what}");
    }
}
