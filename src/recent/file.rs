//! Parsing and validating one `RECENT-<interval><suffix>` file.

use super::epoch::{Epoch, EpochError};
use super::interval::{Interval, IntervalError};
use super::json::{Cursor, Json, JsonError, Spanned};
use super::names::split_rfilename;
use super::yaml;

/// Largest RECENT file accepted (bytes).  CPAN's biggest (`RECENT-Z.json`)
/// is tens of MiB.
pub const MAX_RECENT_BYTES: usize = 256 << 20;
/// Most events accepted in one file.
pub const MAX_RECENT_ENTRIES: usize = 2_000_000;
/// Longest event path (bytes).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most `/`-separated components in an event path.
pub const MAX_PATH_COMPONENTS: usize = 128;
/// Most entries in `meta.aggregator`.
pub const MAX_AGGREGATOR_LEN: usize = 32;
/// Default plausibility bound: a finite file whose newest-oldest span exceeds
/// `interval * MAX_SPAN_FACTOR + MAX_SPAN_SLACK_SECS` is rejected.
/// The reference aggregator keeps roughly one to two intervals; rrrgo's
/// bug report shows a broken 6h file spanning 10.8 days (factor 43).
pub const MAX_SPAN_FACTOR: u64 = 4;
/// See [`MAX_SPAN_FACTOR`].
pub const MAX_SPAN_SLACK_SECS: u64 = 3_600;
/// Highest RECENT protocol understood.
pub const MAX_PROTOCOL: u32 = 1;

/// Errors from [`parse_recent`].  Every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecentError {
    #[error("{file}: {size} bytes exceeds the limit of {MAX_RECENT_BYTES} bytes")]
    TooLarge { file: String, size: usize },
    #[error("{file}: serializer {suffix:?} is not supported (only .json and .yaml; .sto and .dd are Perl-only formats)")]
    UnsupportedSerializer { file: String, suffix: String },
    #[error("{file}: not valid UTF-8 text (invalid UTF-8 at byte {offset})")]
    NotUtf8 { file: String, offset: usize },
    #[error("{file}: YAML error at line {line} column {col}: {msg}")]
    Yaml {
        file: String,
        line: usize,
        col: usize,
        msg: String,
    },
    #[error("{file}: {what} {value:?} is not acceptable: {why}")]
    BadMeta {
        file: String,
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{file}: JSON syntax error at byte {offset}: {msg}")]
    Json {
        file: String,
        offset: usize,
        msg: String,
    },
    #[error("{file}: top level must be an object with 'meta' and 'recent' (protocol 1) or an array (protocol 0), found {found}")]
    TopLevel { file: String, found: &'static str },
    #[error("{file}: missing required member {what}")]
    Missing { file: String, what: &'static str },
    #[error("{file}: {what} must be {expected}, found {found}")]
    WrongType {
        file: String,
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{file}: duplicate member {what}")]
    Duplicate { file: String, what: String },
    #[error("{file}: unsupported RECENT protocol {protocol} (this reader knows 0 and 1)")]
    UnsupportedProtocol { file: String, protocol: String },
    #[error("{file}: bad interval in {what}: {source}")]
    BadInterval {
        file: String,
        what: String,
        source: IntervalError,
    },
    #[error("{file}: file name says interval {from_name} but meta.interval is {from_meta}")]
    IntervalMismatch {
        file: String,
        from_name: String,
        from_meta: String,
    },
    #[error("{file}: cannot tell this file's interval (no meta.interval and the name has none)")]
    NoInterval { file: String },
    #[error("{file}: bad epoch in {what}: {source}")]
    BadEpoch {
        file: String,
        what: String,
        source: EpochError,
    },
    #[error("{file}: more than {MAX_RECENT_ENTRIES} events")]
    TooManyEntries { file: String },
    #[error("{file}: more than {MAX_AGGREGATOR_LEN} aggregator intervals")]
    TooManyAggregators { file: String },
    #[error("{file}: event #{index} (path {path:?}): unknown type {kind:?} (expected \"new\" or \"delete\")")]
    UnknownType {
        file: String,
        index: usize,
        path: String,
        kind: String,
    },
    #[error("{file}: event #{index}: unsafe path {path:?}: {why}")]
    BadPath {
        file: String,
        index: usize,
        path: String,
        why: &'static str,
    },
    #[error("{file}: event #{index} (path {path:?}) has epoch {epoch} which is not below the previous event's {previous} (the reference writer emits strictly decreasing, unique epochs)")]
    Disorder {
        file: String,
        index: usize,
        path: String,
        epoch: String,
        previous: String,
    },
    #[error("{file}: events span {span_secs} s, implausibly more than interval {interval} ({interval_secs} s) allows; the server's aggregation is probably broken")]
    SpanTooLarge {
        file: String,
        interval: String,
        interval_secs: u64,
        span_secs: u64,
    },
}

/// `type` of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Creations and changes.
    New,
    Delete,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::New => "new",
            EventType::Delete => "delete",
        }
    }
}

/// One entry of the `recent` array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvent {
    pub epoch: Epoch,
    /// Relative to the directory holding the RECENT file; validated safe.
    pub path: String,
    pub kind: EventType,
}

/// `meta.merged`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Merged {
    /// "The highest epoch we would find if we looked into the next RECENT file."
    pub epoch: Option<Epoch>,
    /// Informational only (the reference marks it unused).
    pub into_interval: Option<String>,
    /// Informational only.
    pub time: Option<Epoch>,
    /// Any other members, verbatim.
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// `meta.minmax`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MinMax {
    pub min: Option<Epoch>,
    pub max: Option<Epoch>,
    pub mtime: Option<Epoch>,
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The `meta` part (protocol 1).  Protocol 0 files have a default `Meta`
/// with `protocol == 0`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    /// Intervals of the larger files, as listed (not yet sorted/deduped;
    /// see [`super::plan::interval_chain`]).
    pub aggregator: Vec<Interval>,
    /// `meta.interval` if present.
    pub interval: Option<Interval>,
    pub merged: Option<Merged>,
    pub minmax: Option<MinMax>,
    /// Compare by inequality only; "may increase or decrease".
    pub dirtymark: Option<Epoch>,
    pub protocol: u32,
    pub filenameroot: Option<String>,
    pub serializer_suffix: Option<String>,
    pub canonize: Option<String>,
    pub comment: Option<String>,
    /// Everything else (e.g. `Producers`), verbatim.
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A parsed, validated RECENT file.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentFile {
    /// The name it was parsed under (for messages).
    pub name: String,
    /// This file's interval (from meta, else from the name).
    pub interval: Interval,
    pub meta: Meta,
    /// Newest first, strictly decreasing epochs.
    pub events: Vec<RecentEvent>,
    /// The format the bytes were actually read as.
    pub serializer: Serializer,
    /// The suffix of the name it was read under (`.yaml` of
    /// `RECENT-1h.yaml`), `None` for `RECENT.recent`.
    pub name_suffix: Option<String>,
}

/// The serializations this reader understands (the reference also knows
/// `.sto` (Storable) and `.dd` (Data::Dumper), which are Perl-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Serializer {
    Json,
    /// YAML as YAML::Syck writes it (the reference's default serializer).
    Yaml,
}

impl Serializer {
    /// The canonical suffix, with its dot.
    pub fn suffix(self) -> &'static str {
        match self {
            Serializer::Json => ".json",
            Serializer::Yaml => ".yaml",
        }
    }

    /// The serializer a file-name suffix selects (`.yml` accepted too).
    pub fn from_suffix(suffix: &str) -> Option<Serializer> {
        match suffix {
            ".json" => Some(Serializer::Json),
            ".yaml" | ".yml" => Some(Serializer::Yaml),
            _ => None,
        }
    }
}

impl RecentFile {
    /// Newest epoch: first event, else `meta.minmax.max`.  (The reference
    /// reader recomputes minmax from the events when it reads a file.)
    pub fn max_epoch(&self) -> Option<&Epoch> {
        self.events
            .first()
            .map(|e| &e.epoch)
            .or_else(|| self.meta.minmax.as_ref()?.max.as_ref())
    }

    /// Oldest epoch: last event, else `meta.minmax.min`.
    pub fn min_epoch(&self) -> Option<&Epoch> {
        self.events
            .last()
            .map(|e| &e.epoch)
            .or_else(|| self.meta.minmax.as_ref()?.min.as_ref())
    }

    /// `meta.merged.epoch`.
    pub fn merged_epoch(&self) -> Option<&Epoch> {
        self.meta.merged.as_ref()?.epoch.as_ref()
    }

    /// `filenameroot`, defaulting to `RECENT`.
    pub fn filenameroot(&self) -> &str {
        self.meta.filenameroot.as_deref().unwrap_or("RECENT")
    }

    /// The suffix of this set's file names, found as the reference finds
    /// it: `meta.serializer_suffix` when present (it overrides the name),
    /// else the suffix of the name the file was read under (for
    /// `RECENT.recent`, the symlink's target), else — a principal copy with
    /// no such member — the format its content was read as.
    pub fn serializer_suffix(&self) -> &str {
        self.meta
            .serializer_suffix
            .as_deref()
            .or(self.name_suffix.as_deref())
            .unwrap_or(self.serializer.suffix())
    }

    /// The canonical file name of this file, e.g. `RECENT-1h.json`
    /// (useful when `RECENT.recent` was a copy rather than a symlink).
    pub fn rfilename(&self) -> String {
        super::names::rfilename(
            self.filenameroot(),
            &self.interval,
            self.serializer_suffix(),
        )
    }
}

/// Knobs for [`parse_recent_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Reject finite files whose span exceeds `interval*factor + slack`;
    /// `None` disables the check.
    pub max_span_factor: Option<u64>,
    /// Accept equal neighbouring epochs (never written by the reference
    /// writer, but produced by old rrrgo float round-trips).
    pub allow_equal_epochs: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_span_factor: Some(MAX_SPAN_FACTOR),
            allow_equal_epochs: false,
        }
    }
}

/// Parse a RECENT file with default options.  `name_hint` is the file name
/// it came from (`RECENT-1h.json`, `RECENT.recent`, ...): it selects the
/// serializer, supplies the interval for protocol 0, is cross-checked
/// against `meta.interval`, and appears in every error.
pub fn parse_recent(bytes: &[u8], name_hint: &str) -> Result<RecentFile, RecentError> {
    parse_recent_with(bytes, name_hint, ParseOptions::default())
}

/// [`parse_recent`] with explicit options.
pub fn parse_recent_with(
    bytes: &[u8],
    name_hint: &str,
    opts: ParseOptions,
) -> Result<RecentFile, RecentError> {
    let file = name_hint.to_string();
    if bytes.len() > MAX_RECENT_BYTES {
        return Err(RecentError::TooLarge {
            file,
            size: bytes.len(),
        });
    }
    let name_parts = split_rfilename(name_hint);
    let name_suffix = name_parts.as_ref().map(|p| p.suffix.clone());
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = body.iter().copied().find(|c| !c.is_ascii_whitespace());
    let serializer = match name_suffix.as_deref() {
        Some(sfx) => Serializer::from_suffix(sfx).ok_or_else(|| RecentError::UnsupportedSerializer {
            file: file.clone(),
            suffix: sfx.chars().take(40).collect(),
        })?,
        // `RECENT.recent` as a copy: the content tells (JSON documents
        // start with `{` or `[`; YAML::Syck's with `---`)
        None => match first {
            Some(b'{' | b'[') | None => Serializer::Json,
            Some(_) => Serializer::Yaml,
        },
    };
    let text = std::str::from_utf8(body).map_err(|e| RecentError::NotUtf8 {
        file: file.clone(),
        offset: e.valid_up_to(),
    })?;
    let (meta, events) = match serializer {
        Serializer::Json => read_json_document(text, first, &file, opts)?,
        Serializer::Yaml => yaml::read_document(text, &file, opts)?,
    };
    check_names(&meta, &file)?;

    // interval: meta wins, name must agree
    let name_interval = match &name_parts {
        Some(p) => match Interval::parse(&p.interval) {
            Ok(i) => Some(i),
            Err(source) => {
                return Err(RecentError::BadInterval {
                    file,
                    what: "the file name".into(),
                    source,
                })
            }
        },
        None => None,
    };
    let interval = match (meta.interval, name_interval) {
        (Some(m), Some(n)) if m != n => {
            return Err(RecentError::IntervalMismatch {
                file,
                from_name: n.to_string(),
                from_meta: m.to_string(),
            })
        }
        (Some(m), _) => m,
        (None, Some(n)) => n,
        (None, None) => return Err(RecentError::NoInterval { file }),
    };

    if let (Some(factor), false) = (opts.max_span_factor, interval.is_z()) {
        if let (Some(newest), Some(oldest)) = (events.first(), events.last()) {
            let span = newest.epoch.whole_secs_since(&oldest.epoch).unwrap_or(0);
            let allowed = interval
                .secs()
                .saturating_mul(factor)
                .saturating_add(MAX_SPAN_SLACK_SECS);
            if span > allowed {
                return Err(RecentError::SpanTooLarge {
                    file,
                    interval: interval.to_string(),
                    interval_secs: interval.secs(),
                    span_secs: span,
                });
            }
        }
    }
    Ok(RecentFile {
        name: file,
        interval,
        meta,
        events,
        serializer,
        name_suffix,
    })
}

fn read_json_document(
    text: &str,
    first: Option<u8>,
    file: &str,
    opts: ParseOptions,
) -> Result<(Meta, Vec<RecentEvent>), RecentError> {
    let mut cur = Cursor::new(text);
    let (meta, events) = match first {
        Some(b'[') => {
            let events = read_events(&mut cur, file, opts)?;
            (
                Meta {
                    protocol: 0,
                    ..Meta::default()
                },
                events,
            )
        }
        Some(b'{') => read_top_object(&mut cur, file, opts)?,
        Some(_) => {
            let found = match cur.value() {
                Ok(v) => v.v.kind(),
                Err(e) => return Err(json_err(file, e)),
            };
            return Err(RecentError::TopLevel {
                file: file.into(),
                found,
            });
        }
        None => {
            return Err(RecentError::Json {
                file: file.into(),
                offset: 0,
                msg: "empty document".into(),
            })
        }
    };
    if !cur.at_end() {
        return Err(RecentError::Json {
            file: file.into(),
            offset: cur.i,
            msg: "trailing data after the document".into(),
        });
    }
    Ok((meta, events))
}

/// Longest `meta.filenameroot` accepted.
pub const MAX_FILENAMEROOT_BYTES: usize = 200;
/// Longest `meta.serializer_suffix` accepted (with its dot).
pub const MAX_SUFFIX_BYTES: usize = 16;

/// `filenameroot` and `serializer_suffix` become file names the client
/// requests and publishes: they must be plain names.
fn check_names(meta: &Meta, file: &str) -> Result<(), RecentError> {
    let bad = |what, value: &str, why| RecentError::BadMeta {
        file: file.into(),
        what,
        value: value.chars().take(80).collect(),
        why,
    };
    if let Some(r) = &meta.filenameroot {
        if r.is_empty() || r.len() > MAX_FILENAMEROOT_BYTES {
            return Err(bad("meta.filenameroot", r, "must be 1 to 200 bytes"));
        }
        if r.contains('/') {
            return Err(bad(
                "meta.filenameroot",
                r,
                "must not contain a directory separator",
            ));
        }
        if r.chars().any(char::is_control) || r == "." || r == ".." {
            return Err(bad(
                "meta.filenameroot",
                r,
                "must be a plain file name without control characters",
            ));
        }
    }
    if let Some(sfx) = &meta.serializer_suffix {
        let ok = sfx.len() >= 2
            && sfx.len() <= MAX_SUFFIX_BYTES
            && sfx.starts_with('.')
            && sfx[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(bad(
                "meta.serializer_suffix",
                sfx,
                "must be a dot and up to 15 letters, digits or '_' (e.g. .json, .yaml)",
            ));
        }
    }
    Ok(())
}

fn json_err(file: &str, e: JsonError) -> RecentError {
    RecentError::Json {
        file: file.to_string(),
        offset: e.offset,
        msg: e.msg,
    }
}

fn read_top_object(
    cur: &mut Cursor<'_>,
    file: &str,
    opts: ParseOptions,
) -> Result<(Meta, Vec<RecentEvent>), RecentError> {
    let j = |e| json_err(file, e);
    cur.open(b'{').map_err(j)?;
    let mut top = TopMembers::new(file);
    if !cur.empty_close(b'}') {
        loop {
            let k = cur.key().map_err(j)?;
            match k.as_str() {
                "meta" => top.meta(|| read_meta(cur.value().map_err(j)?, file))?,
                "recent" => top.recent(|| {
                    if cur.peek() != Some(b'[') {
                        let found = cur.value().map_err(j)?.v.kind();
                        return Err(not_an_array(file, found));
                    }
                    read_events(cur, file, opts)
                })?,
                _ => {
                    // tolerate (and skip) unknown top-level members
                    cur.value().map_err(j)?;
                }
            }
            if !cur.next_sep(b'}').map_err(j)? {
                break;
            }
        }
    }
    top.finish()
}

/// The `meta` and `recent` members of a protocol-1 top level as the JSON
/// and YAML readers meet them: each at most once, both required.
pub(super) struct TopMembers<'f> {
    file: &'f str,
    meta: Option<Meta>,
    events: Option<Vec<RecentEvent>>,
}

impl<'f> TopMembers<'f> {
    pub(super) fn new(file: &'f str) -> Self {
        TopMembers {
            file,
            meta: None,
            events: None,
        }
    }

    fn duplicate(&self, what: &str) -> RecentError {
        RecentError::Duplicate {
            file: self.file.into(),
            what: what.into(),
        }
    }

    /// `meta` comes next; `read` reads its value.
    pub(super) fn meta(
        &mut self,
        read: impl FnOnce() -> Result<Meta, RecentError>,
    ) -> Result<(), RecentError> {
        if self.meta.is_some() {
            return Err(self.duplicate("meta"));
        }
        self.meta = Some(read()?);
        Ok(())
    }

    /// `recent` comes next; `read` reads its events.
    pub(super) fn recent(
        &mut self,
        read: impl FnOnce() -> Result<Vec<RecentEvent>, RecentError>,
    ) -> Result<(), RecentError> {
        if self.events.is_some() {
            return Err(self.duplicate("recent"));
        }
        self.events = Some(read()?);
        Ok(())
    }

    /// Both members, or which one is missing.
    pub(super) fn finish(self) -> Result<(Meta, Vec<RecentEvent>), RecentError> {
        let missing = |what| RecentError::Missing {
            file: self.file.into(),
            what,
        };
        let meta = self.meta.ok_or_else(|| missing("meta"))?;
        let events = self.events.ok_or_else(|| missing("recent"))?;
        Ok((meta, events))
    }
}

/// `recent` holds something other than an array.
pub(super) fn not_an_array(file: &str, found: &'static str) -> RecentError {
    RecentError::WrongType {
        file: file.into(),
        what: "recent".into(),
        expected: "an array",
        found,
    }
}

/// A generic value as `serde_json` (for members kept verbatim in
/// `Meta::other` and friends).  Numbers keep their text where `serde_json`
/// can represent it.
fn to_serde(v: &Json<'_>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Num(n) => serde_json::from_str(n).unwrap_or(Value::Null),
        Json::Str(s) => Value::String(s.clone()),
        Json::Arr(a) => Value::Array(a.iter().map(|x| to_serde(&x.v)).collect()),
        Json::Obj(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), to_serde(&x.v)))
                .collect(),
        ),
    }
}

fn opt_epoch(v: &Spanned<'_>, file: &str, what: &str) -> Result<Option<Epoch>, RecentError> {
    let s = match &v.v {
        Json::Null => return Ok(None),
        Json::Str(s) => s.as_str(),
        Json::Num(n) => n,
        other => {
            return Err(RecentError::WrongType {
                file: file.into(),
                what: what.into(),
                expected: "an epoch (string or number)",
                found: other.kind(),
            })
        }
    };
    Epoch::parse(s)
        .map(Some)
        .map_err(|source| RecentError::BadEpoch {
            file: file.into(),
            what: what.into(),
            source,
        })
}

fn opt_string(v: Spanned<'_>, file: &str, what: &str) -> Result<Option<String>, RecentError> {
    match v.v {
        Json::Null => Ok(None),
        Json::Str(s) => Ok(Some(s)),
        // Perl may serialize scalars like "1" either way; accept numbers as text.
        Json::Num(n) => Ok(Some(n.to_string())),
        other => Err(RecentError::WrongType {
            file: file.into(),
            what: what.into(),
            expected: "a string",
            found: other.kind(),
        }),
    }
}

pub(super) fn read_meta(v: Spanned<'_>, file: &str) -> Result<Meta, RecentError> {
    let members = match v.v {
        Json::Obj(m) => m,
        other => {
            return Err(RecentError::WrongType {
                file: file.into(),
                what: "meta".into(),
                expected: "an object",
                found: other.kind(),
            })
        }
    };
    let mut meta = Meta {
        protocol: 1,
        ..Meta::default()
    };
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in members {
        if seen.contains(&k) {
            return Err(RecentError::Duplicate {
                file: file.into(),
                what: format!("meta.{k}"),
            });
        }
        seen.push(k.clone());
        match k.as_str() {
            "aggregator" => match v.v {
                Json::Null => {}
                Json::Arr(items) => {
                    if items.len() > MAX_AGGREGATOR_LEN {
                        return Err(RecentError::TooManyAggregators { file: file.into() });
                    }
                    for (i, it) in items.into_iter().enumerate() {
                        let what = format!("meta.aggregator[{i}]");
                        let s =
                            opt_string(it, file, &what)?.ok_or_else(|| RecentError::WrongType {
                                file: file.into(),
                                what: what.clone(),
                                expected: "a string",
                                found: "null",
                            })?;
                        let iv =
                            Interval::parse(&s).map_err(|source| RecentError::BadInterval {
                                file: file.into(),
                                what,
                                source,
                            })?;
                        meta.aggregator.push(iv);
                    }
                }
                other => {
                    return Err(RecentError::WrongType {
                        file: file.into(),
                        what: "meta.aggregator".into(),
                        expected: "an array",
                        found: other.kind(),
                    })
                }
            },
            "interval" => {
                if let Some(s) = opt_string(v, file, "meta.interval")? {
                    meta.interval =
                        Some(
                            Interval::parse(&s).map_err(|source| RecentError::BadInterval {
                                file: file.into(),
                                what: "meta.interval".into(),
                                source,
                            })?,
                        );
                }
            }
            "merged" => match v.v {
                Json::Null => {}
                Json::Obj(m) => {
                    let mut merged = Merged::default();
                    for (mk, mv) in m {
                        match mk.as_str() {
                            "epoch" => merged.epoch = opt_epoch(&mv, file, "meta.merged.epoch")?,
                            "time" => merged.time = opt_epoch(&mv, file, "meta.merged.time")?,
                            "into_interval" => {
                                merged.into_interval =
                                    opt_string(mv, file, "meta.merged.into_interval")?
                            }
                            _ => {
                                merged.other.insert(mk, to_serde(&mv.v));
                            }
                        }
                    }
                    meta.merged = Some(merged);
                }
                other => {
                    return Err(RecentError::WrongType {
                        file: file.into(),
                        what: "meta.merged".into(),
                        expected: "an object",
                        found: other.kind(),
                    })
                }
            },
            "minmax" => match v.v {
                Json::Null => {}
                Json::Obj(m) => {
                    let mut mm = MinMax::default();
                    for (mk, mv) in m {
                        match mk.as_str() {
                            "min" => mm.min = opt_epoch(&mv, file, "meta.minmax.min")?,
                            "max" => mm.max = opt_epoch(&mv, file, "meta.minmax.max")?,
                            "mtime" => mm.mtime = opt_epoch(&mv, file, "meta.minmax.mtime")?,
                            _ => {
                                mm.other.insert(mk, to_serde(&mv.v));
                            }
                        }
                    }
                    meta.minmax = Some(mm);
                }
                other => {
                    return Err(RecentError::WrongType {
                        file: file.into(),
                        what: "meta.minmax".into(),
                        expected: "an object",
                        found: other.kind(),
                    })
                }
            },
            "dirtymark" => meta.dirtymark = opt_epoch(&v, file, "meta.dirtymark")?,
            "protocol" => {
                if let Some(p) = opt_string(v, file, "meta.protocol")? {
                    match p.parse::<u32>() {
                        Ok(n) if n <= MAX_PROTOCOL => meta.protocol = n,
                        _ => {
                            return Err(RecentError::UnsupportedProtocol {
                                file: file.into(),
                                protocol: p.chars().take(20).collect(),
                            })
                        }
                    }
                }
            }
            "filenameroot" => meta.filenameroot = opt_string(v, file, "meta.filenameroot")?,
            "serializer_suffix" => {
                meta.serializer_suffix = opt_string(v, file, "meta.serializer_suffix")?
            }
            "canonize" => meta.canonize = opt_string(v, file, "meta.canonize")?,
            "comment" => meta.comment = opt_string(v, file, "meta.comment")?,
            _ => {
                meta.other.insert(k, to_serde(&v.v));
            }
        }
    }
    Ok(meta)
}

/// Append `ev` (event number `out.len()`) after checking the order the
/// reference writer guarantees: strictly decreasing epochs.
pub(super) fn push_event(
    out: &mut Vec<RecentEvent>,
    ev: RecentEvent,
    file: &str,
    opts: ParseOptions,
) -> Result<(), RecentError> {
    if out.len() >= MAX_RECENT_ENTRIES {
        return Err(RecentError::TooManyEntries { file: file.into() });
    }
    if let Some(prev) = out.last() {
        let bad = if opts.allow_equal_epochs {
            ev.epoch > prev.epoch
        } else {
            ev.epoch >= prev.epoch
        };
        if bad {
            return Err(RecentError::Disorder {
                file: file.into(),
                index: out.len(),
                path: ev.path,
                epoch: ev.epoch.to_string(),
                previous: prev.epoch.to_string(),
            });
        }
    }
    out.push(ev);
    Ok(())
}

/// Read the `recent` array straight into events, validating as we go.
fn read_events(
    cur: &mut Cursor<'_>,
    file: &str,
    opts: ParseOptions,
) -> Result<Vec<RecentEvent>, RecentError> {
    let j = |e| json_err(file, e);
    cur.open(b'[').map_err(j)?;
    let mut out: Vec<RecentEvent> = Vec::new();
    if cur.empty_close(b']') {
        return Ok(out);
    }
    loop {
        let index = out.len();
        if index >= MAX_RECENT_ENTRIES {
            return Err(RecentError::TooManyEntries { file: file.into() });
        }
        let v = cur.value().map_err(j)?;
        let ev = read_event(v, file, index)?;
        push_event(&mut out, ev, file, opts)?;
        if !cur.next_sep(b']').map_err(j)? {
            break;
        }
    }
    Ok(out)
}

pub(super) fn read_event(
    v: Spanned<'_>,
    file: &str,
    index: usize,
) -> Result<RecentEvent, RecentError> {
    let members = match v.v {
        Json::Obj(m) => m,
        other => {
            return Err(RecentError::WrongType {
                file: file.into(),
                what: format!("event #{index}"),
                expected: "an object",
                found: other.kind(),
            })
        }
    };
    let mut epoch = None;
    let mut path = None;
    let mut kind = None;
    for (k, v) in members {
        let slot_dup = |f: &str| RecentError::Duplicate {
            file: file.into(),
            what: format!("event #{index}.{f}"),
        };
        match k.as_str() {
            "epoch" => {
                if epoch.is_some() {
                    return Err(slot_dup("epoch"));
                }
                epoch = opt_epoch(&v, file, &format!("event #{index}.epoch"))?;
            }
            "path" => {
                if path.is_some() {
                    return Err(slot_dup("path"));
                }
                path = opt_string(v, file, &format!("event #{index}.path"))?;
            }
            "type" => {
                if kind.is_some() {
                    return Err(slot_dup("type"));
                }
                kind = opt_string(v, file, &format!("event #{index}.type"))?;
            }
            _ => {} // extra members are ignored
        }
    }
    let path = path.ok_or(RecentError::Missing {
        file: file.into(),
        what: "event path",
    })?;
    let epoch = epoch.ok_or_else(|| RecentError::BadEpoch {
        file: file.into(),
        what: format!("event #{index} (path {path:?})"),
        source: EpochError::Empty,
    })?;
    let kind_s = kind.unwrap_or_default();
    let kind = match kind_s.as_str() {
        "new" => EventType::New,
        "delete" => EventType::Delete,
        _ => {
            return Err(RecentError::UnknownType {
                file: file.into(),
                index,
                path,
                kind: kind_s.chars().take(40).collect(),
            })
        }
    };
    if let Err(why) = check_path(&path) {
        return Err(RecentError::BadPath {
            file: file.into(),
            index,
            path: path.chars().take(200).collect(),
            why,
        });
    }
    Ok(RecentEvent { epoch, path, kind })
}

/// Why an event path is unsafe, if it is.  Rules: non-empty, relative
/// (no leading `/`), no empty components (`//`, trailing `/`), no `.` or
/// `..` components, no NUL, no CR/LF (they would break `--files-from`
/// lists), at most [`MAX_PATH_BYTES`] bytes and [`MAX_PATH_COMPONENTS`]
/// components.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("path too long");
    }
    if path.bytes().any(|b| b == 0) {
        return Err("contains NUL");
    }
    if path.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err("contains a line break");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    let mut n = 0usize;
    for comp in path.split('/') {
        n += 1;
        if n > MAX_PATH_COMPONENTS {
            return Err("too many path components");
        }
        match comp {
            "" => return Err("empty path component"),
            "." => return Err("'.' path component"),
            ".." => return Err("'..' path component escapes the tree"),
            _ => {}
        }
    }
    Ok(())
}
