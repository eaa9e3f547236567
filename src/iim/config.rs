//! iim's configuration dialect and typed configuration.
//!
//! ## Syntax
//!
//! The iim manual's config section could not be retrieved; the syntax below
//! is the one documented (and implemented) by mirmon, Henk Penning's sibling
//! tool, whose config features are exactly the ones the iim brief lists
//! (comments, indented-line glue, `+` concatenation, `.` newline glue, tabs,
//! `include` with duplicate-include being fatal):
//!
//! * A line starting with `#` (column 1) is a comment.  Blank lines are
//!   ignored.  Tabs are replaced by a space.
//! * An entry is a key starting in column 1; the value is the rest of the
//!   line after the blanks following the key.
//! * A line starting with a blank continues the previous entry: it is glued
//!   on with a single space (`key a` / `  b` → `a b`).
//! * A line starting with `+` is concatenated: the `+` and the blanks after
//!   it are dropped (`key a` / `+ b` → `ab`).
//! * A line starting with `.` adds a newline: the `.` is replaced by `\n`
//!   and the rest is kept as is (`key a` / `. b` → `"a\n b"`).
//! * Continuation lines after a comment belong to the comment.
//! * `include FILE` processes FILE in place; including the same name twice
//!   (the top file counts) is fatal; files come from an [`IncludeResolver`]
//!   so this module does no I/O.
//! * A value that is exactly `EMPTY` means "empty": it unsets an optional
//!   entry, clears the list of a multi-valued one (`scoreboard_file`) and
//!   restores the default of the others (`loglevel`, `hot_config`, …).
//!   (Inferred; handy for `--entry EMPTY` on the command line.)
//!
//! Deviations from mirmon's regex pipeline, all deliberate: a whitespace-only
//! line is blank (mirmon would glue the *next* line onto the previous entry);
//! `+` need not be followed by a blank; trailing blanks of values and a
//! trailing `\r` (CRLF files) are removed; a `.` line with no entry before it
//! is an error instead of an unknown key.

use super::interval::{parse_interval, Span, SpecError};

/// Largest config file (bytes), per file.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// Deepest `include` nesting.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files (top file plus includes) in one configuration.
pub const MAX_CONFIG_FILES: usize = 64;
/// Most entries over all files and overrides.
pub const MAX_CONFIG_ENTRIES: usize = 10_000;
/// Longest value (bytes) after gluing.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most `scoreboard_file` entries.
pub const MAX_SCOREBOARD_FILES: usize = 32;
/// Most rotated log files kept.
pub const MAX_ROTATE_COUNT: u32 = 10_000;

/// Name used for entries that came from the command line.
pub const COMMAND_LINE: &str = "<command line>";

/// Every key iim's config knows.
pub const CONFIG_KEYS: &[&str] = &[
    "local",
    "remote",
    "user",
    "passwd",
    "sleep_main_loop",
    "sleep_init_epoch",
    "max_run_time",
    "scoreboard_file",
    "scoreboard_template",
    "hot_config",
    "loglevel",
    "rotate",
    "full_sync_interval",
    "allow_full_syncs",
    "timeout",
    "iim_umask",
    "include",
    "temp",
    "prog_rsync",
    "prog_iim",
    "metrics_listen",
    "log_format",
    "pass_timeout",
];

/// Keys accepted for compatibility but not needed by rmirror (it uses its
/// own temp handling and speaks rsync itself).
pub const NOT_NEEDED_KEYS: &[&str] = &["temp", "prog_rsync", "prog_iim"];

pub fn is_known_key(key: &str) -> bool {
    CONFIG_KEYS.contains(&key)
}

/// Supplies the text of included files.  `from` is the including file.
pub trait IncludeResolver {
    fn load(&mut self, name: &str, from: &str) -> Result<String, String>;
}

impl<F> IncludeResolver for F
where
    F: FnMut(&str, &str) -> Result<String, String>,
{
    fn load(&mut self, name: &str, from: &str) -> Result<String, String> {
        self(name, from)
    }
}

/// A resolver for configs that must not include anything.
pub struct NoIncludes;
impl IncludeResolver for NoIncludes {
    fn load(&mut self, name: &str, _from: &str) -> Result<String, String> {
        Err(format!("includes are not available here (wanted {name:?})"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { file: String },
    #[error("{file}:{line}: unknown config entry {key:?} (known: {})", CONFIG_KEYS.join(", "))]
    UnknownKey {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{file}:{line}: {key}: {why}")]
    BadValue {
        file: String,
        line: usize,
        key: String,
        why: String,
    },
    #[error("{file}:{line}: value of {key} is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong {
        file: String,
        line: usize,
        key: String,
    },
    #[error("missing required config entry {key:?}")]
    Missing { key: &'static str },
    #[error("{file}:{line}: {name:?} is included twice (fatal, as in iim/mirmon)")]
    DuplicateInclude {
        file: String,
        line: usize,
        name: String,
    },
    #[error("{file}:{line}: includes nested deeper than {MAX_INCLUDE_DEPTH}")]
    IncludeTooDeep { file: String, line: usize },
    #[error("{file}:{line}: more than {MAX_CONFIG_FILES} config files")]
    TooManyFiles { file: String, line: usize },
    #[error("{file}:{line}: cannot include {name:?}: {why}")]
    IncludeFailed {
        file: String,
        line: usize,
        name: String,
        why: String,
    },
    #[error("{file}: more than {MAX_CONFIG_ENTRIES} entries")]
    TooManyEntries { file: String },
    #[error("{file}:{line}: a '.' continuation line without an entry before it")]
    OrphanContinuation { file: String, line: usize },
}

/// One `key value` entry after gluing, with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub key: String,
    pub value: String,
    pub file: String,
    /// 1-based line of the key; 0 for command-line overrides.
    pub line: usize,
}

struct Logical {
    comment: bool,
    text: String,
    line: usize,
}

/// Split one file into glued logical entries (no include processing).
fn logical_entries(text: &str, file: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: file.to_string(),
        });
    }
    let mut out: Vec<(String, String, usize)> = Vec::new();
    let mut cur: Option<Logical> = None;
    let flush = |cur: &mut Option<Logical>,
                 out: &mut Vec<(String, String, usize)>|
     -> Result<(), ConfigError> {
        if let Some(l) = cur.take() {
            if !l.comment {
                let t = l.text.trim_start();
                let (key, rest) = match t.find(|c: char| c.is_whitespace()) {
                    Some(i) => (&t[..i], &t[i..]),
                    None => (t, ""),
                };
                let value = rest.trim();
                if value.len() > MAX_VALUE_BYTES {
                    return Err(ConfigError::ValueTooLong {
                        file: file.to_string(),
                        line: l.line,
                        key: key.to_string(),
                    });
                }
                if out.len() >= MAX_CONFIG_ENTRIES {
                    return Err(ConfigError::TooManyEntries {
                        file: file.to_string(),
                    });
                }
                if !key.is_empty() {
                    out.push((key.to_string(), value.to_string(), l.line));
                }
            }
        }
        Ok(())
    };
    for (idx, raw) in text.split('\n').enumerate() {
        let lineno = idx + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let line = raw.replace('\t', " ");
        if line.trim().is_empty() {
            continue;
        }
        let first = line.as_bytes().first().copied().unwrap_or(b' ');
        let glue = |cur: &mut Option<Logical>, piece: &str| -> Result<(), ConfigError> {
            if let Some(l) = cur.as_mut() {
                if l.text.len() + piece.len() > MAX_VALUE_BYTES + 1024 {
                    return Err(ConfigError::ValueTooLong {
                        file: file.to_string(),
                        line: l.line,
                        key: "?".into(),
                    });
                }
                l.text.push_str(piece);
            }
            Ok(())
        };
        match first {
            b' ' | b'+' if cur.is_none() => {
                // like mirmon's leading `s/^[+ ]+//`: start a normal entry
                let t = line.trim_start_matches([' ', '+']);
                cur = Some(Logical {
                    comment: t.starts_with('#'),
                    text: t.to_string(),
                    line: lineno,
                });
            }
            b' ' => {
                let piece = format!(" {}", line.trim_start());
                glue(&mut cur, &piece)?;
            }
            b'+' => {
                let piece = line[1..].trim_start().to_string();
                glue(&mut cur, &piece)?;
            }
            b'.' => {
                if cur.is_none() {
                    return Err(ConfigError::OrphanContinuation {
                        file: file.to_string(),
                        line: lineno,
                    });
                }
                let piece = format!("\n{}", &line[1..]);
                glue(&mut cur, &piece)?;
            }
            _ => {
                flush(&mut cur, &mut out)?;
                cur = Some(Logical {
                    comment: first == b'#',
                    text: line,
                    line: lineno,
                });
            }
        }
    }
    flush(&mut cur, &mut out)?;
    Ok(out)
}

struct Reader<'r> {
    resolver: &'r mut dyn IncludeResolver,
    seen: Vec<String>,
    out: Vec<RawEntry>,
}

impl Reader<'_> {
    fn file(&mut self, text: &str, name: &str, depth: usize) -> Result<(), ConfigError> {
        for (key, value, line) in logical_entries(text, name)? {
            if key == "include" {
                self.include(&value, name, line, depth)?;
            } else {
                self.push(RawEntry {
                    key,
                    value,
                    file: name.to_string(),
                    line,
                })?;
            }
        }
        Ok(())
    }

    fn push(&mut self, e: RawEntry) -> Result<(), ConfigError> {
        if self.out.len() >= MAX_CONFIG_ENTRIES {
            return Err(ConfigError::TooManyEntries { file: e.file });
        }
        self.out.push(e);
        Ok(())
    }

    fn include(
        &mut self,
        target: &str,
        from: &str,
        line: usize,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let target = target.trim();
        if target.is_empty() || target == "EMPTY" {
            return Err(ConfigError::BadValue {
                file: from.into(),
                line,
                key: "include".into(),
                why: "needs a file name".into(),
            });
        }
        if self.seen.iter().any(|s| s == target) {
            return Err(ConfigError::DuplicateInclude {
                file: from.into(),
                line,
                name: target.into(),
            });
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ConfigError::IncludeTooDeep {
                file: from.into(),
                line,
            });
        }
        if self.seen.len() >= MAX_CONFIG_FILES {
            return Err(ConfigError::TooManyFiles {
                file: from.into(),
                line,
            });
        }
        self.seen.push(target.to_string());
        let text = self
            .resolver
            .load(target, from)
            .map_err(|why| ConfigError::IncludeFailed {
                file: from.into(),
                line,
                name: target.into(),
                why,
            })?;
        self.file(&text, target, depth + 1)
    }
}

/// Glue and expand a config file (and its includes, then the command-line
/// `overrides`, which may include files too) into ordered raw entries.
/// Returns the entries and the list of files read (top file first).
pub fn read_entries(
    text: &str,
    name: &str,
    overrides: &[(String, String)],
    resolver: &mut dyn IncludeResolver,
) -> Result<(Vec<RawEntry>, Vec<String>), ConfigError> {
    let mut r = Reader {
        resolver,
        seen: vec![name.to_string()],
        out: Vec::new(),
    };
    r.file(text, name, 0)?;
    for (k, v) in overrides {
        if k == "include" {
            r.include(v, COMMAND_LINE, 0, 0)?;
        } else {
            r.push(RawEntry {
                key: k.clone(),
                value: v.clone(),
                file: COMMAND_LINE.into(),
                line: 0,
            })?;
        }
    }
    Ok((r.out, r.seen))
}

/// `loglevel` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    Quiet,
    /// The documented default: errors and relevant (non-periodic) updates.
    Terse,
    Verbose,
    Debug,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "quiet" => LogLevel::Quiet,
            "terse" => LogLevel::Terse,
            "verbose" => LogLevel::Verbose,
            "debug" => LogLevel::Debug,
            _ => return None,
        })
    }
}

/// `rotate count [interval]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotate {
    /// Number of old logs kept.
    pub count: u32,
    /// How often to rotate; `None` = iim's default period.
    pub interval: Option<Span>,
}

/// An accepted entry rmirror does not need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNeeded {
    pub key: String,
    pub value: String,
    pub file: String,
    pub line: usize,
}

/// Defaults.  Only `loglevel = terse` and "rotation on" are stated in the
/// retrieved part of the manual; the numbers are ASSUMPTIONS (marked) to be
/// checked against the full iim manual.
pub mod defaults {
    use super::super::interval::Span;
    /// ASSUMED; the rrr reference client loops at least every 20 s and CPAN's
    /// wiki says synced clients pick changes up "every 20 seconds".
    pub const SLEEP_MAIN_LOOP: Span = Span::from_secs(20);
    /// ASSUMED.
    pub const SLEEP_INIT_EPOCH: Span = Span::from_secs(0);
    /// ASSUMED; rrr-client passes rsync `timeout=30`.
    pub const TIMEOUT: Span = Span::from_secs(30);
    /// ASSUMED count; the manual says the log is rotated periodically by default.
    pub const ROTATE_COUNT: u32 = 7;
    /// ASSUMED.
    pub const ROTATE_INTERVAL: Span = Span::from_secs(86_400);
    /// ASSUMED: full syncs allowed (the manual describes iim doing a full
    /// sync first when the local copy is incomplete or too old).
    pub const ALLOW_FULL_SYNCS: bool = true;
    /// ASSUMED.
    pub const HOT_CONFIG: bool = false;
}

/// The typed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IimConfig {
    /// Local copy root (required).
    pub local: String,
    /// Remote archive, rsync syntax (required).
    pub remote: String,
    pub user: Option<String>,
    pub passwd: Option<String>,
    pub sleep_main_loop: Span,
    pub sleep_init_epoch: Span,
    pub max_run_time: Option<Span>,
    pub scoreboard_files: Vec<String>,
    pub scoreboard_template: Option<String>,
    pub hot_config: bool,
    pub loglevel: LogLevel,
    /// `None` = rotation off (`rotate 0` or `rotate EMPTY`).
    pub rotate: Option<Rotate>,
    /// Periodic full syncs; `None` = off.
    pub full_sync_interval: Option<Span>,
    pub allow_full_syncs: bool,
    pub timeout: Span,
    /// Octal umask; `None` = inherit.
    pub iim_umask: Option<u32>,
    /// Files read, top file first, then includes in order.
    pub files: Vec<String>,
    /// `temp`, `prog_rsync`, `prog_iim` (accepted, not needed).
    pub not_needed: Vec<NotNeeded>,
    /// rmirror extension: serve Prometheus `/metrics` here (`127.0.0.1:9464`,
    /// `[::1]:9464`, or a bare port on loopback); `None` = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// rmirror extension: `text` or `json` log lines; `None` = the default.
    pub log_format: Option<String>,
    /// rmirror extension: an overall deadline for each pass (`--stop-after`
    /// of `watch`), so a server trickling bytes below `timeout` cannot hold
    /// a pass forever: the pass fails with exit 30, nothing deleted, and the
    /// loop goes on. `None` = no deadline.
    pub pass_timeout: Option<Span>,
}

fn bad(e: &RawEntry, why: impl Into<String>) -> ConfigError {
    ConfigError::BadValue {
        file: e.file.clone(),
        line: e.line,
        key: e.key.clone(),
        why: why.into(),
    }
}

fn span(e: &RawEntry) -> Result<Span, ConfigError> {
    parse_interval(&e.value).map_err(|err: SpecError| bad(e, err.to_string()))
}

fn opt_span(e: &RawEntry) -> Result<Option<Span>, ConfigError> {
    if is_empty(e) {
        Ok(None)
    } else {
        span(e).map(Some)
    }
}

fn is_empty(e: &RawEntry) -> bool {
    e.value == "EMPTY" || e.value.is_empty()
}

fn boolean(e: &RawEntry) -> Result<bool, ConfigError> {
    match e.value.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(bad(
            e,
            format!(
                "expected a boolean (1/0, yes/no, true/false, on/off), got {:?}",
                e.value
            ),
        )),
    }
}

fn opt_string(e: &RawEntry) -> Option<String> {
    (!is_empty(e)).then(|| e.value.clone())
}

impl IimConfig {
    /// Build from raw entries (later entries override earlier ones, except
    /// `scoreboard_file`, which accumulates).  `files` is recorded as is.
    pub fn from_entries(
        entries: &[RawEntry],
        files: Vec<String>,
    ) -> Result<IimConfig, ConfigError> {
        let mut local = None;
        let mut remote = None;
        let mut c = IimConfig {
            local: String::new(),
            remote: String::new(),
            user: None,
            passwd: None,
            sleep_main_loop: defaults::SLEEP_MAIN_LOOP,
            sleep_init_epoch: defaults::SLEEP_INIT_EPOCH,
            max_run_time: None,
            scoreboard_files: Vec::new(),
            scoreboard_template: None,
            hot_config: defaults::HOT_CONFIG,
            loglevel: LogLevel::Terse,
            rotate: Some(Rotate {
                count: defaults::ROTATE_COUNT,
                interval: Some(defaults::ROTATE_INTERVAL),
            }),
            full_sync_interval: None,
            allow_full_syncs: defaults::ALLOW_FULL_SYNCS,
            timeout: defaults::TIMEOUT,
            iim_umask: None,
            files,
            not_needed: Vec::new(),
            metrics_listen: None,
            pass_timeout: None,
            log_format: None,
        };
        for e in entries {
            match e.key.as_str() {
                "local" => local = opt_string(e),
                "remote" => remote = opt_string(e),
                "user" => c.user = opt_string(e),
                "passwd" => c.passwd = opt_string(e),
                "sleep_main_loop" => {
                    c.sleep_main_loop = if is_empty(e) {
                        defaults::SLEEP_MAIN_LOOP
                    } else {
                        span(e)?
                    }
                }
                "sleep_init_epoch" => {
                    c.sleep_init_epoch = if is_empty(e) {
                        defaults::SLEEP_INIT_EPOCH
                    } else {
                        span(e)?
                    }
                }
                "max_run_time" => c.max_run_time = opt_span(e)?,
                "scoreboard_file" => {
                    if is_empty(e) {
                        c.scoreboard_files.clear();
                    } else {
                        if c.scoreboard_files.len() >= MAX_SCOREBOARD_FILES {
                            return Err(bad(
                                e,
                                format!("more than {MAX_SCOREBOARD_FILES} scoreboard files"),
                            ));
                        }
                        c.scoreboard_files.push(e.value.clone());
                    }
                }
                "scoreboard_template" => c.scoreboard_template = opt_string(e),
                // EMPTY (or an empty value) restores the default, as for the other entries
                "hot_config" if is_empty(e) => c.hot_config = defaults::HOT_CONFIG,
                "hot_config" => c.hot_config = boolean(e)?,
                "loglevel" if is_empty(e) => c.loglevel = LogLevel::Terse,
                "loglevel" => {
                    c.loglevel = LogLevel::parse(&e.value).ok_or_else(|| {
                        bad(
                            e,
                            format!("expected quiet, terse, verbose or debug, got {:?}", e.value),
                        )
                    })?
                }
                "rotate" => c.rotate = parse_rotate(e)?,
                "full_sync_interval" => c.full_sync_interval = opt_span(e)?,
                "allow_full_syncs" if is_empty(e) => c.allow_full_syncs = defaults::ALLOW_FULL_SYNCS,
                "allow_full_syncs" => c.allow_full_syncs = boolean(e)?,
                "timeout" => {
                    c.timeout = if is_empty(e) {
                        defaults::TIMEOUT
                    } else {
                        span(e)?
                    }
                }
                "iim_umask" => {
                    c.iim_umask = if is_empty(e) {
                        None
                    } else {
                        Some(parse_umask(e)?)
                    }
                }
                "temp" | "prog_rsync" | "prog_iim" => c.not_needed.push(NotNeeded {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    file: e.file.clone(),
                    line: e.line,
                }),
                "pass_timeout" => c.pass_timeout = opt_span(e)?.filter(|s| s.as_secs_f64() > 0.0),
                "metrics_listen" if is_empty(e) => c.metrics_listen = None,
                "metrics_listen" => c.metrics_listen = Some(crate::metrics::parse_addr(&e.value).map_err(|why| bad(e, why))?),
                "log_format" if is_empty(e) => c.log_format = None,
                "log_format" => {
                    let v = e.value.to_ascii_lowercase();
                    if v != "text" && v != "json" {
                        return Err(bad(e, format!("expected text or json, got {:?}", e.value)));
                    }
                    c.log_format = Some(v);
                }
                "include" => return Err(bad(e, "include must be expanded by read_entries")),
                _ => {
                    return Err(ConfigError::UnknownKey {
                        file: e.file.clone(),
                        line: e.line,
                        key: e.key.chars().take(80).collect(),
                    })
                }
            }
        }
        c.local = local.ok_or(ConfigError::Missing { key: "local" })?;
        c.remote = remote.ok_or(ConfigError::Missing { key: "remote" })?;
        Ok(c)
    }
}

fn parse_rotate(e: &RawEntry) -> Result<Option<Rotate>, ConfigError> {
    if is_empty(e) {
        return Ok(None);
    }
    let mut it = e.value.split_whitespace();
    let count_s = it.next().unwrap_or("");
    let count: u32 = count_s
        .parse()
        .ok()
        .filter(|c| *c <= MAX_ROTATE_COUNT)
        .ok_or_else(|| {
            bad(
                e,
                format!(
                    "expected 'count [interval]' with count 0..={MAX_ROTATE_COUNT}, got {:?}",
                    e.value
                ),
            )
        })?;
    let interval = match it.next() {
        None => None,
        Some(s) => Some(parse_interval(s).map_err(|err| bad(e, err.to_string()))?),
    };
    if it.next().is_some() {
        return Err(bad(e, "expected 'count [interval]'"));
    }
    Ok((count > 0).then_some(Rotate { count, interval }))
}

fn parse_umask(e: &RawEntry) -> Result<u32, ConfigError> {
    let v = e.value.as_str();
    if v.is_empty() || v.len() > 4 || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad(
            e,
            format!("expected an octal umask like 022, got {v:?}"),
        ));
    }
    u32::from_str_radix(v, 8).map_err(|_| bad(e, "bad octal number"))
}

/// Read, glue, expand and type a configuration: the one-call entry point.
/// `overrides` are `--entry value` pairs from the command line, applied
/// after the file (so they win).
pub fn parse_config(
    text: &str,
    name: &str,
    overrides: &[(String, String)],
    resolver: &mut dyn IncludeResolver,
) -> Result<IimConfig, ConfigError> {
    let (entries, files) = read_entries(text, name, overrides, resolver)?;
    IimConfig::from_entries(&entries, files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn entries(text: &str) -> Vec<(String, String)> {
        let (e, _) = read_entries(text, "t.conf", &[], &mut NoIncludes).unwrap();
        e.into_iter().map(|e| (e.key, e.value)).collect()
    }

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn dialect_examples() {
        // the syntax examples of the (mirmon) manual
        let text = "# lines that start with '#' are comment\n\
                    # blank lines are ignored too\n\
                    \n\
                    somekey  A_val B_val ...\n\
                    otherkey X_val Y_val ...\n\
                    \n\
                    somekey part1\n  part2\n  part3\n\
                    \n\
                    somekey part1\n+ part2\n+ part3\n\
                    \n\
                    somekey part1\n. part2\n. part3\n";
        assert_eq!(
            entries(text),
            vec![
                kv("somekey", "A_val B_val ..."),
                kv("otherkey", "X_val Y_val ..."),
                kv("somekey", "part1 part2 part3"),
                kv("somekey", "part1part2part3"),
                kv("somekey", "part1\n part2\n part3"),
            ]
        );
    }

    #[test]
    fn dialect_details() {
        assert_eq!(entries("key\tval\t x\n"), vec![kv("key", "val  x")]);
        assert_eq!(entries("key\n"), vec![kv("key", "")]);
        assert_eq!(
            entries("key val   \r\nk2 v\r\n"),
            vec![kv("key", "val"), kv("k2", "v")]
        );
        // continuation of a comment is part of the comment
        assert_eq!(entries("# c\n  more\nkey v\n"), vec![kv("key", "v")]);
        // whitespace-only lines are blank lines
        assert_eq!(
            entries("key v\n   \nk2 w\n"),
            vec![kv("key", "v"), kv("k2", "w")]
        );
        // '+' without a following blank
        assert_eq!(entries("key a\n+b\n"), vec![kv("key", "ab")]);
        // leading blanks / plus on the first line start a normal entry
        assert_eq!(entries("  key v\n"), vec![kv("key", "v")]);
        // continuation lines glue onto a key without value
        assert_eq!(entries("key\n  v\n"), vec![kv("key", "v")]);
        // '#' not in column 1 of a continuation is text
        assert_eq!(entries("key a\n  # b\n"), vec![kv("key", "a # b")]);
        let err = read_entries(". x\n", "t.conf", &[], &mut NoIncludes).unwrap_err();
        assert_eq!(
            err,
            ConfigError::OrphanContinuation {
                file: "t.conf".into(),
                line: 1
            }
        );
    }

    fn minimal() -> &'static str {
        "local /data/CPAN\nremote cpan-rsync.perl.org::CPAN\n"
    }

    #[test]
    fn typed_defaults() {
        let c = parse_config(minimal(), "iim.conf", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.local, "/data/CPAN");
        assert_eq!(c.remote, "cpan-rsync.perl.org::CPAN");
        assert_eq!(c.loglevel, LogLevel::Terse);
        assert!(c.rotate.is_some());
        assert_eq!(c.sleep_main_loop, defaults::SLEEP_MAIN_LOOP);
        assert_eq!(c.full_sync_interval, None);
        assert_eq!(c.files, vec!["iim.conf".to_string()]);
    }

    #[test]
    fn every_entry() {
        let text = "local /data/CPAN\n\
                    remote rsync://cpan-rsync.perl.org/CPAN\n\
                    user mirror\n\
                    passwd s3cret\n\
                    sleep_main_loop 1m\n\
                    sleep_init_epoch hm6\n\
                    max_run_time 7d+24h\n\
                    scoreboard_file /var/www/iim.html\n\
                    scoreboard_file /var/www/iim.json\n\
                    scoreboard_template /etc/iim/sb.tmpl\n\
                    hot_config 1\n\
                    loglevel verbose\n\
                    rotate 5 dw\n\
                    full_sync_interval w-0.5h\n\
                    allow_full_syncs no\n\
                    timeout 22\n\
                    iim_umask 022\n\
                    temp /tmp\n\
                    prog_rsync /usr/bin/rsync\n\
                    prog_iim /usr/local/bin/iim\n";
        let c = parse_config(text, "iim.conf", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.user.as_deref(), Some("mirror"));
        assert_eq!(c.passwd.as_deref(), Some("s3cret"));
        assert_eq!(c.sleep_main_loop, Span::from_secs(60));
        assert_eq!(c.sleep_init_epoch, Span::from_secs(3666));
        assert_eq!(c.max_run_time, Some(Span::from_secs(691_200)));
        assert_eq!(
            c.scoreboard_files,
            vec!["/var/www/iim.html", "/var/www/iim.json"]
        );
        assert_eq!(c.scoreboard_template.as_deref(), Some("/etc/iim/sb.tmpl"));
        assert!(c.hot_config);
        assert_eq!(c.loglevel, LogLevel::Verbose);
        assert_eq!(
            c.rotate,
            Some(Rotate {
                count: 5,
                interval: Some(Span::from_secs(691_200))
            })
        );
        assert_eq!(c.full_sync_interval, Some(Span::from_secs(603_000)));
        assert!(!c.allow_full_syncs);
        assert_eq!(c.timeout, Span::from_secs(22));
        assert_eq!(c.iim_umask, Some(0o022));
        let nn: Vec<&str> = c.not_needed.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(nn, ["temp", "prog_rsync", "prog_iim"]);
        assert_eq!(c.not_needed[0].line, 18);
    }

    #[test]
    fn empty_and_rotate_forms() {
        let t = format!("{}scoreboard_file a\nscoreboard_file b\nscoreboard_file EMPTY\nscoreboard_file c\nuser u\nuser EMPTY\nrotate 3\n", minimal());
        let c = parse_config(&t, "x", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.scoreboard_files, vec!["c"]);
        assert_eq!(c.user, None);
        assert_eq!(
            c.rotate,
            Some(Rotate {
                count: 3,
                interval: None
            })
        );
        let c = parse_config(
            &format!("{}rotate 0\n", minimal()),
            "x",
            &[],
            &mut NoIncludes,
        )
        .unwrap();
        assert_eq!(c.rotate, None);
        let c = parse_config(
            &format!("{}rotate EMPTY\n", minimal()),
            "x",
            &[],
            &mut NoIncludes,
        )
        .unwrap();
        assert_eq!(c.rotate, None);
        // EMPTY restores the default of the boolean and level entries too
        let c = parse_config(
            &format!("{}loglevel debug\nhot_config 1\nallow_full_syncs 0\nloglevel EMPTY\nhot_config EMPTY\nallow_full_syncs EMPTY\n", minimal()),
            "x",
            &[],
            &mut NoIncludes,
        )
        .unwrap();
        assert_eq!(c.loglevel, LogLevel::Terse);
        assert_eq!(c.hot_config, defaults::HOT_CONFIG);
        assert_eq!(c.allow_full_syncs, defaults::ALLOW_FULL_SYNCS);
    }

    #[test]
    fn errors_have_line_numbers() {
        let t = format!("{}\n# c\nbogus_key 1\n", minimal());
        let err = parse_config(&t, "iim.conf", &[], &mut NoIncludes).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { line: 5, key, .. } if key == "bogus_key"),
            "{err}"
        );
        assert!(err
            .to_string()
            .starts_with("iim.conf:5: unknown config entry"));
        for (line, why) in [
            ("loglevel loud", "quiet, terse"),
            ("hot_config maybe", "boolean"),
            ("timeout 5x", "unknown unit"),
            ("rotate x", "count"),
            ("rotate 1 2 3", "count [interval]"),
            ("iim_umask 0999", "octal"),
            ("sleep_main_loop m-h", "negative"),
        ] {
            let t = format!("{}{line}\n", minimal());
            let err = parse_config(&t, "c", &[], &mut NoIncludes).unwrap_err();
            match &err {
                ConfigError::BadValue {
                    line: 3, why: w, ..
                } => assert!(w.contains(why), "{line}: {w}"),
                other => panic!("{line}: {other}"),
            }
        }
        assert_eq!(
            parse_config("local x\n", "c", &[], &mut NoIncludes).unwrap_err(),
            ConfigError::Missing { key: "remote" }
        );
        assert_eq!(
            parse_config("remote x\nlocal EMPTY\n", "c", &[], &mut NoIncludes).unwrap_err(),
            ConfigError::Missing { key: "local" }
        );
        let many = "scoreboard_file x\n".repeat(MAX_SCOREBOARD_FILES + 1);
        assert!(parse_config(&format!("{}{many}", minimal()), "c", &[], &mut NoIncludes).is_err());
        let big = "#".repeat(MAX_CONFIG_BYTES + 1);
        assert!(matches!(
            parse_config(&big, "c", &[], &mut NoIncludes),
            Err(ConfigError::TooLarge { .. })
        ));
    }

    #[test]
    fn includes() {
        let mut files: HashMap<&str, &str> = HashMap::new();
        files.insert(
            "common.conf",
            "remote host::CPAN\ninclude inner.conf\nloglevel debug\n",
        );
        files.insert("inner.conf", "user bob\n");
        files.insert("self.conf", "include self.conf\n");
        files.insert("a.conf", "include b.conf\n");
        files.insert("b.conf", "include a.conf\n");
        let mut resolver = |name: &str, _from: &str| {
            files
                .get(name)
                .map(|s| s.to_string())
                .ok_or_else(|| "no such file".to_string())
        };
        let c = parse_config(
            "local /x\ninclude common.conf\nloglevel quiet\n",
            "top.conf",
            &[],
            &mut resolver,
        )
        .unwrap();
        assert_eq!(c.remote, "host::CPAN");
        assert_eq!(c.user.as_deref(), Some("bob"));
        assert_eq!(c.loglevel, LogLevel::Quiet); // later line in the top file wins
        assert_eq!(c.files, vec!["top.conf", "common.conf", "inner.conf"]);

        let err = parse_config(
            "include common.conf\ninclude common.conf\n",
            "top.conf",
            &[],
            &mut resolver,
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateInclude { line: 2, .. }),
            "{err}"
        );
        let err = parse_config("include self.conf\n", "top.conf", &[], &mut resolver).unwrap_err();
        assert!(
            matches!(err, ConfigError::DuplicateInclude { ref file, line: 1, .. } if file == "self.conf"),
            "{err}"
        );
        let err = parse_config("include a.conf\n", "top.conf", &[], &mut resolver).unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateInclude { .. }), "{err}");
        let err = parse_config("include top.conf\n", "top.conf", &[], &mut resolver).unwrap_err();
        assert!(matches!(err, ConfigError::DuplicateInclude { .. }), "{err}");
        let err = parse_config("include nope.conf\n", "top.conf", &[], &mut resolver).unwrap_err();
        assert!(matches!(err, ConfigError::IncludeFailed { .. }), "{err}");
        let err = parse_config("include\n", "top.conf", &[], &mut resolver).unwrap_err();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err}");

        // deep chains stop at MAX_INCLUDE_DEPTH
        let mut deep = |name: &str, _from: &str| -> Result<String, String> {
            let n: usize = name
                .trim_start_matches('f')
                .parse()
                .map_err(|_| "bad".to_string())?;
            Ok(format!("include f{}\n", n + 1))
        };
        let err = parse_config("include f0\n", "top.conf", &[], &mut deep).unwrap_err();
        assert!(matches!(err, ConfigError::IncludeTooDeep { .. }), "{err}");
    }

    #[test]
    fn overrides_win() {
        let ov = vec![
            ("loglevel".to_string(), "debug".to_string()),
            ("scoreboard_file".to_string(), "/s.json".to_string()),
            ("remote".to_string(), "other::CPAN".to_string()),
        ];
        let c = parse_config(minimal(), "iim.conf", &ov, &mut NoIncludes).unwrap();
        assert_eq!(c.loglevel, LogLevel::Debug);
        assert_eq!(c.remote, "other::CPAN");
        assert_eq!(c.scoreboard_files, vec!["/s.json"]);
        let bad_ov = vec![("timeout".to_string(), "soon".to_string())];
        let err = parse_config(minimal(), "iim.conf", &bad_ov, &mut NoIncludes).unwrap_err();
        assert!(
            err.to_string().starts_with("<command line>:0: timeout:"),
            "{err}"
        );
        // overrides can supply required entries
        let ov = vec![
            ("local".to_string(), "/l".to_string()),
            ("remote".to_string(), "r::m".to_string()),
        ];
        assert!(parse_config("", "empty.conf", &ov, &mut NoIncludes).is_ok());
    }

    #[test]
    fn rmirror_extensions_metrics_listen_and_log_format() {
        let c = parse_config(&format!("{}metrics_listen 9464\nlog_format JSON\n", minimal()), "iim.conf", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert_eq!(c.log_format.as_deref(), Some("json"));
        let ov = vec![("metrics_listen".to_string(), "EMPTY".to_string())];
        let c = parse_config(&format!("{}metrics_listen [::1]:1\n", minimal()), "iim.conf", &ov, &mut NoIncludes).unwrap();
        assert_eq!(c.metrics_listen, None);
        for bad in ["metrics_listen example.org:80", "metrics_listen 99999", "log_format xml"] {
            let err = parse_config(&format!("{}{bad}\n", minimal()), "iim.conf", &[], &mut NoIncludes).unwrap_err();
            assert!(matches!(err, ConfigError::BadValue { .. }), "{bad}: {err}");
        }
        assert_eq!(parse_config(minimal(), "iim.conf", &[], &mut NoIncludes).unwrap().metrics_listen, None);
    }

    #[test]
    fn rmirror_extension_pass_timeout() {
        let c = parse_config(&format!("{}pass_timeout 15m\n", minimal()), "iim.conf", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.pass_timeout, Some(Span::from_secs(900)));
        let c = parse_config(&format!("{}pass_timeout 0\n", minimal()), "iim.conf", &[], &mut NoIncludes).unwrap();
        assert_eq!(c.pass_timeout, None);
        assert_eq!(parse_config(minimal(), "iim.conf", &[], &mut NoIncludes).unwrap().pass_timeout, None);
        let err = parse_config(&format!("{}pass_timeout soon\n", minimal()), "iim.conf", &[], &mut NoIncludes).unwrap_err();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{err}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::recent::test_support::Rng::new(77);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz_ \t\n\r+.#0123456789EMPTYincludelocalremoteloglevelrotate-\xc3\xa9";
        let mut resolver = |_: &str, _: &str| -> Result<String, String> {
            Ok("include again\nlocal x\n".to_string())
        };
        for round in 0..20_000 {
            let len = rng.below(160);
            let bytes: Vec<u8> = if round % 3 == 0 {
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                (0..len)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect()
            };
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_config(&text, "fuzz.conf", &[], &mut resolver);
        }
    }
}
