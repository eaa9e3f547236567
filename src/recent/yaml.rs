//! Reading RECENT files in their YAML flavour, as the reference writes them
//! through YAML::Syck (its default serializer, `RECENT-<interval>.yaml`):
//! one `---` document holding a `meta:` mapping and a `recent:` sequence of
//! `{epoch, path, type}` mappings (protocol 1), or a bare sequence of such
//! mappings (protocol 0).
//!
//! Built on `yaml_rust2`'s pull parser (its events), never on its loader:
//!
//! * Scalars keep their source text.  A YAML loader would turn the plain
//!   scalar `1325093856.4927212345` into a float and `0x10` into 16; here
//!   every scalar is text, and the epoch grammar of [`super::Epoch`] decides
//!   (as for JSON strings).  Plain `~` and empty plain values are null, as
//!   YAML::Syck loads them; everything else is a string (Perl has no other
//!   scalar types, and YAML::Syck loads without implicit typing by default).
//! * Aliases (`*name`) are rejected: no RECENT writer emits them (they only
//!   appear when one Perl reference occurs twice), and expanding them is
//!   how "billion laughs" documents blow up.  Anchors and tags are ignored.
//! * The same bounds as the JSON reader: nesting depth
//!   [`MAX_JSON_DEPTH`], scalar length [`MAX_JSON_STRING_BYTES`], members
//!   per generic container [`MAX_JSON_CONTAINER_ITEMS`], and the `recent`
//!   sequence is checked event by event as it is read (order, paths,
//!   [`super::file::MAX_RECENT_ENTRIES`]).  The parser is stopped at the
//!   first violation, so a deeply nested or huge input costs no more than
//!   the part read so far.
//! * Exactly one document; anything after it is an error.
//!
//! The values are handed to the same member checks as JSON
//! ([`super::file::read_meta`], [`super::file::read_event`]).

use std::str::Chars;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::file::{
    not_an_array, push_event, read_event, read_meta, Meta, ParseOptions, RecentError, RecentEvent,
    TopMembers,
};
use super::json::{Json, Spanned, MAX_JSON_CONTAINER_ITEMS, MAX_JSON_DEPTH, MAX_JSON_STRING_BYTES};

struct Reader<'t, 'f> {
    p: Parser<Chars<'t>>,
    file: &'f str,
    /// Where the last event was, as (line, column) (for errors).
    last: (usize, usize),
}

/// What a value in the document starts with.
enum Start {
    Scalar(Json<'static>),
    Seq,
    Map,
}

impl<'t, 'f> Reader<'t, 'f> {
    fn err(&self, at: (usize, usize), msg: impl Into<String>) -> RecentError {
        RecentError::Yaml {
            file: self.file.into(),
            line: at.0,
            col: at.1,
            msg: msg.into(),
        }
    }

    fn next(&mut self) -> Result<Event, RecentError> {
        match self.p.next_token() {
            Ok((ev, mark)) => {
                self.last = at(&mark);
                Ok(ev)
            }
            Err(e) => Err(self.err(at(e.marker()), e.info())),
        }
    }

    /// Classify the event that starts a value; `None` for the end of the
    /// enclosing collection.
    fn start(&mut self, ev: Event) -> Result<Option<Start>, RecentError> {
        match ev {
            Event::Scalar(text, style, _anchor, _tag) => {
                if text.len() > MAX_JSON_STRING_BYTES {
                    return Err(self.err(
                        self.last,
                        format!("scalar longer than {MAX_JSON_STRING_BYTES} bytes"),
                    ));
                }
                let null = style == TScalarStyle::Plain && (text.is_empty() || text == "~");
                Ok(Some(Start::Scalar(if null {
                    Json::Null
                } else {
                    Json::Str(text)
                })))
            }
            Event::SequenceStart(..) => Ok(Some(Start::Seq)),
            Event::MappingStart(..) => Ok(Some(Start::Map)),
            Event::SequenceEnd | Event::MappingEnd => Ok(None),
            Event::Alias(_) => Err(self.err(
                self.last,
                "YAML aliases are not accepted in RECENT files (no writer emits them; \
                 expanding them is a known denial of service)",
            )),
            Event::DocumentStart | Event::DocumentEnd | Event::StreamStart | Event::StreamEnd => {
                Err(self.err(self.last, "unexpected document boundary"))
            }
            Event::Nothing => Err(self.err(self.last, "unexpected parser state")),
        }
    }

    /// The rest of a value whose first event was `s`, as a generic tree.
    /// `depth` counts the collections already open around it.
    fn value(&mut self, s: Start, depth: usize) -> Result<Spanned<'static>, RecentError> {
        let v = match s {
            Start::Scalar(j) => j,
            Start::Seq => {
                self.deeper(depth)?;
                let mut items = Vec::new();
                loop {
                    let ev = self.next()?;
                    let Some(s) = self.start(ev)? else { break };
                    if items.len() >= MAX_JSON_CONTAINER_ITEMS {
                        return Err(self.err(
                            self.last,
                            format!("sequence with more than {MAX_JSON_CONTAINER_ITEMS} elements"),
                        ));
                    }
                    items.push(self.value(s, depth + 1)?);
                }
                Json::Arr(items)
            }
            Start::Map => {
                self.deeper(depth)?;
                let mut members = Vec::new();
                while let Some(k) = self.key()? {
                    if members.len() >= MAX_JSON_CONTAINER_ITEMS {
                        return Err(self.err(
                            self.last,
                            format!("mapping with more than {MAX_JSON_CONTAINER_ITEMS} members"),
                        ));
                    }
                    let ev = self.next()?;
                    let s = self
                        .start(ev)?
                        .ok_or_else(|| self.err(self.last, "mapping key without a value"))?;
                    members.push((k, self.value(s, depth + 1)?));
                }
                Json::Obj(members)
            }
        };
        Ok(Spanned {
            v,
            start: 0,
            end: 0,
        })
    }

    fn deeper(&self, depth: usize) -> Result<(), RecentError> {
        if depth + 1 > MAX_JSON_DEPTH {
            return Err(self.err(self.last, format!("nesting deeper than {MAX_JSON_DEPTH}")));
        }
        Ok(())
    }

    /// Inside a mapping: the next key (a scalar), or `None` at its end.
    fn key(&mut self) -> Result<Option<String>, RecentError> {
        let ev = self.next()?;
        match self.start(ev)? {
            None => Ok(None),
            Some(Start::Scalar(Json::Str(k))) => Ok(Some(k)),
            Some(Start::Scalar(_)) => Ok(Some(String::new())),
            Some(_) => Err(self.err(
                self.last,
                "mapping keys must be scalars (complex keys are not used by RECENT files)",
            )),
        }
    }

    /// A sequence of events (its start already read), checked one by one.
    fn events(&mut self, opts: ParseOptions) -> Result<Vec<RecentEvent>, RecentError> {
        let mut out = Vec::new();
        loop {
            let ev = self.next()?;
            let Some(s) = self.start(ev)? else { break };
            let index = out.len();
            let v = self.value(s, 1)?;
            let e = read_event(v, self.file, index)?;
            push_event(&mut out, e, self.file, opts)?;
        }
        Ok(out)
    }
}

/// 1-based line and column of a marker.
fn at(m: &Marker) -> (usize, usize) {
    (m.line(), m.col() + 1)
}

fn kind(s: &Start) -> &'static str {
    match s {
        Start::Scalar(Json::Null) => "null",
        Start::Scalar(_) => "string",
        Start::Seq => "array",
        Start::Map => "object",
    }
}

/// Read one YAML RECENT document: `(meta, events)`, as the JSON reader
/// returns them (protocol 0 for a bare sequence).
pub(crate) fn read_document(
    text: &str,
    file: &str,
    opts: ParseOptions,
) -> Result<(Meta, Vec<RecentEvent>), RecentError> {
    let mut r = Reader {
        p: Parser::new_from_str(text),
        file,
        last: (1, 1),
    };
    match r.next()? {
        Event::StreamStart => {}
        _ => return Err(r.err(r.last, "no YAML stream")),
    }
    match r.next()? {
        Event::DocumentStart => {}
        Event::StreamEnd => return Err(r.err(r.last, "empty document")),
        _ => return Err(r.err(r.last, "no YAML document")),
    }
    let first = r.next()?;
    let top = r
        .start(first)?
        .ok_or_else(|| r.err(r.last, "empty document"))?;
    let (meta, events) = match top {
        Start::Seq => (
            Meta {
                protocol: 0,
                ..Meta::default()
            },
            r.events(opts)?,
        ),
        Start::Map => {
            let mut top = TopMembers::new(file);
            while let Some(k) = r.key()? {
                let ev = r.next()?;
                let s = r
                    .start(ev)?
                    .ok_or_else(|| r.err(r.last, "mapping key without a value"))?;
                match k.as_str() {
                    "meta" => top.meta(|| read_meta(r.value(s, 1)?, file))?,
                    "recent" => top.recent(|| match s {
                        Start::Seq => r.events(opts),
                        other => Err(not_an_array(file, kind(&other))),
                    })?,
                    // tolerate (and skip, bounded) unknown top-level members
                    _ => {
                        r.value(s, 1)?;
                    }
                }
            }
            top.finish()?
        }
        s @ Start::Scalar(_) => {
            return Err(RecentError::TopLevel {
                file: file.into(),
                found: kind(&s),
            })
        }
    };
    match r.next()? {
        Event::DocumentEnd => {}
        _ => return Err(r.err(r.last, "trailing data after the document")),
    }
    match r.next()? {
        Event::StreamEnd => {}
        _ => {
            return Err(r.err(
                r.last,
                "more than one YAML document (a RECENT file holds exactly one)",
            ))
        }
    }
    Ok((meta, events))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_support::Rng;
    use super::super::*;

    fn e(s: &str) -> Epoch {
        Epoch::parse(s).unwrap()
    }

    /// Laid out the way YAML::Syck dumps a hash (keys sorted, `--- ` and
    /// `key: ` with a trailing space before a nested collection, sequence
    /// items as `- ` on their own line), with the quoting styles it uses.
    const SYCK_1H: &str = concat!(
        "--- \n",
        "meta: \n",
        "  Producers: \n",
        "    $0: /usr/local/bin/rrr-server\n",
        "    File::Rsync::Mirror::Recentfile: 0.4.3\n",
        "    time: 1700000100.51234\n",
        "  aggregator: \n",
        "    - 6h\n",
        "    - 1d\n",
        "    - Z\n",
        "  canonize: naive_path_normalize\n",
        "  comment: 'a test set: please ignore'\n",
        "  dirtymark: '1325093856.49272'\n",
        "  filenameroot: RECENT\n",
        "  interval: 1h\n",
        "  merged: \n",
        "    epoch: 1700000000.12345\n",
        "    into_interval: 6h\n",
        "    time: 1700000050.1\n",
        "  minmax: \n",
        "    max: 1700000099.5\n",
        "    min: 1699997000.25\n",
        "    mtime: 1700000101\n",
        "  protocol: 1\n",
        "  serializer_suffix: .yaml\n",
        "recent: \n",
        "  - \n",
        "    epoch: 1700000099.5\n",
        "    path: authors/id/A/AN/ANDK/CHECKSUMS\n",
        "    type: new\n",
        "  - \n",
        "    epoch: '1700000050.25'\n",
        "    path: \"authors/id/X/XY/XYZ/Foo: \\\"q\\\" #1.tar.gz\"\n",
        "    type: delete\n",
        "  - \n",
        "    epoch: 1699997000.25\n",
        "    path: modules/02packages.details.txt.gz\n",
        "    type: new\n",
    );

    /// The same content as JSON.
    const JSON_1H: &str = r#"{"meta":{"Producers":{"$0":"/usr/local/bin/rrr-server","File::Rsync::Mirror::Recentfile":"0.4.3","time":"1700000100.51234"},
"aggregator":["6h","1d","Z"],"canonize":"naive_path_normalize","comment":"a test set: please ignore","dirtymark":"1325093856.49272",
"filenameroot":"RECENT","interval":"1h","merged":{"epoch":"1700000000.12345","into_interval":"6h","time":"1700000050.1"},
"minmax":{"max":"1700000099.5","min":"1699997000.25","mtime":"1700000101"},"protocol":"1","serializer_suffix":".yaml"},
"recent":[{"epoch":"1700000099.5","path":"authors/id/A/AN/ANDK/CHECKSUMS","type":"new"},
{"epoch":"1700000050.25","path":"authors/id/X/XY/XYZ/Foo: \"q\" #1.tar.gz","type":"delete"},
{"epoch":"1699997000.25","path":"modules/02packages.details.txt.gz","type":"new"}]}"#;

    fn yaml_events(events: &[(&str, &str, &str)]) -> String {
        let mut s = String::from("--- \nmeta: \n  interval: 1h\n  protocol: 1\nrecent: \n");
        for (ep, p, t) in events {
            s += &format!("  - \n    epoch: {ep}\n    path: {p}\n    type: {t}\n");
        }
        s
    }

    fn parse_y(text: &str) -> Result<RecentFile, RecentError> {
        parse_recent(text.as_bytes(), "RECENT-1h.yaml")
    }

    #[test]
    fn reads_what_yaml_syck_writes() {
        let f = parse_y(SYCK_1H).unwrap();
        assert_eq!(f.serializer, Serializer::Yaml);
        assert_eq!(f.interval, Interval::parse("1h").unwrap());
        assert_eq!(f.meta.protocol, 1);
        assert_eq!(f.meta.aggregator.len(), 3);
        assert_eq!(f.meta.dirtymark, Some(e("1325093856.49272")));
        assert_eq!(f.merged_epoch(), Some(&e("1700000000.12345")));
        assert_eq!(f.meta.minmax.as_ref().unwrap().mtime, Some(e("1700000101")));
        assert_eq!(f.meta.comment.as_deref(), Some("a test set: please ignore"));
        assert_eq!(f.meta.other["Producers"]["$0"], "/usr/local/bin/rrr-server");
        assert_eq!(f.meta.other["Producers"]["time"], "1700000100.51234");
        assert_eq!(f.events.len(), 3);
        assert_eq!(f.events[1].path, "authors/id/X/XY/XYZ/Foo: \"q\" #1.tar.gz");
        assert_eq!(f.events[1].kind, EventType::Delete);
        assert_eq!(f.events[1].epoch, e("1700000050.25"));
        assert_eq!(f.rfilename(), "RECENT-1h.yaml");
        assert_eq!(
            chain_file_names(&f),
            [
                "RECENT-1h.yaml",
                "RECENT-6h.yaml",
                "RECENT-1d.yaml",
                "RECENT-Z.yaml"
            ]
        );
        // exactly what the same content as JSON gives
        let j = parse_recent(JSON_1H.as_bytes(), "RECENT-1h.json").unwrap();
        assert_eq!(j.serializer, Serializer::Json);
        assert_eq!(
            (&f.meta, &f.events, f.interval),
            (&j.meta, &j.events, j.interval)
        );
    }

    #[test]
    fn flow_style_protocol_0_and_tags() {
        let f = parse_y(
            "---\nmeta: {interval: 1h, protocol: 1, aggregator: [6h, Z]}\n\
             recent: [{epoch: 20.5, path: a/b, type: new}, {epoch: !!float 10, path: 'c d', type: delete}]\n",
        )
        .unwrap();
        assert_eq!(f.events.len(), 2);
        assert_eq!(f.events[1].epoch, e("10"));
        assert_eq!(f.events[1].path, "c d");
        let empty = parse_y("--- \nmeta: \n  interval: 1h\nrecent: []\n").unwrap();
        assert!(empty.events.is_empty());
        // protocol 0: a bare sequence; the interval comes from the name
        let p0 = parse_recent(
            b"--- \n- \n  epoch: 2.5\n  path: a\n  type: new\n- \n  epoch: 1\n  path: b\n  type: delete\n",
            "RECENT-6h.yaml",
        )
        .unwrap();
        assert_eq!(
            (p0.meta.protocol, p0.events.len(), p0.interval.secs()),
            (0, 2, 21_600)
        );
        // unknown top-level members are skipped; a document end marker is fine
        parse_y("---\nextra: {a: [1, 2]}\nmeta: {interval: 1h}\nrecent: []\n...\n").unwrap();
    }

    #[test]
    fn epochs_are_source_text_never_floats() {
        // 34 significant digits: as f64 these three are one number
        let f = parse_y(&yaml_events(&[
            ("1700000000.123456789012345678901234", "a", "new"),
            ("1700000000.123456789012345678901233", "b", "new"),
            ("'1700000000.1234567890123456789012329'", "c", "new"),
        ]))
        .unwrap();
        assert_eq!(
            f.events[0].epoch.to_string(),
            "1700000000.123456789012345678901234"
        );
        assert!(f.events[0].epoch > f.events[1].epoch && f.events[1].epoch > f.events[2].epoch);
        // equal as decimals (trailing zero) is disorder, not "close enough"
        assert!(matches!(
            parse_y(&yaml_events(&[
                ("1700000000.10", "a", "new"),
                ("1700000000.1", "b", "new")
            ])),
            Err(RecentError::Disorder { index: 1, .. })
        ));
        // a YAML loader would make numbers of these; here each is rejected
        for (bad, want) in [
            ("0x10", "not a plain decimal"),
            ("0o17", "not a plain decimal"),
            ("1.7e9", "exponent"),
            (".inf", "not a plain decimal"),
            (".nan", "not a plain decimal"),
            ("-1", "negative"),
            ("1_700_000_000", "not a plain decimal"),
            ("'1700000000.5 '", "not a plain decimal"),
        ] {
            let err = parse_y(&yaml_events(&[(bad, "a", "new")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        // null epoch
        assert!(matches!(
            parse_y(&yaml_events(&[("~", "a", "new")])),
            Err(RecentError::BadEpoch { .. })
        ));
    }

    #[test]
    fn escaping_and_unsafe_paths_are_rejected() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            "'a/./b'",
            "\"a\\nb\"",
            "\"a\\0b\"",
            "\"a\\x00b\"",
            "\"a\\rb\"",
            "a//b",
            "''",
        ] {
            let r = parse_y(&yaml_events(&[("5", bad, "new")]));
            assert!(
                matches!(r, Err(RecentError::BadPath { index: 0, .. })),
                "{bad}: {r:?}"
            );
        }
        // a null path is a missing path
        assert!(matches!(
            parse_y(&yaml_events(&[("5", "~", "new")])),
            Err(RecentError::Missing {
                what: "event path",
                ..
            })
        ));
        // non-string path
        assert!(matches!(
            parse_y(&yaml_events(&[("5", "[a, b]", "new")])),
            Err(RecentError::WrongType { .. })
        ));
        assert!(matches!(
            parse_y(&yaml_events(&[("5", "a", "modify")])),
            Err(RecentError::UnknownType { .. })
        ));
    }

    #[test]
    fn aliases_and_bombs_are_rejected_quickly() {
        // a reused event
        let r = parse_y(
            "--- \nmeta: \n  interval: 1h\nrecent: \n  - &ev\n    epoch: 5\n    path: a\n    type: new\n  - *ev\n",
        );
        assert!(
            matches!(&r, Err(RecentError::Yaml { msg, .. }) if msg.contains("alias")),
            "{r:?}"
        );
        // "billion laughs": 10 levels of 10 aliases each
        let mut bomb = String::from("---\nmeta: {interval: 1h}\nx0: &a0 [lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb += &format!("x{i}: &a{i} [{refs}]\n");
        }
        bomb += "recent: []\n";
        let t = Instant::now();
        let r = parse_y(&bomb);
        assert!(
            matches!(&r, Err(RecentError::Yaml { msg, .. }) if msg.contains("alias")),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        // an anchor alone is harmless
        parse_y("---\nmeta: &m {interval: 1h}\nrecent: []\n").unwrap();
    }

    #[test]
    fn nesting_size_and_count_limits() {
        // deep flow nesting, in meta and as an event: stopped at the limit
        for deep in [
            format!(
                "---\nmeta: {{interval: 1h, x: {}}}\nrecent: []\n",
                "[".repeat(200_000)
            ),
            format!(
                "---\nmeta: {{interval: 1h}}\nrecent: [{}\n",
                "{a: ".repeat(100_000)
            ),
        ] {
            let t = Instant::now();
            let r = parse_y(&deep);
            // our limit, or the parser's own (it stops itself at a fixed depth)
            assert!(
                matches!(&r, Err(RecentError::Yaml { msg, .. }) if msg.contains("nesting") || msg.contains("recursion limit")),
                "{r:?}"
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }
        // deep block nesting
        let mut block = String::from("---\nmeta: \n  interval: 1h\n  x: \n");
        for d in 2..60 {
            block += &format!("{}k: \n", "  ".repeat(d));
        }
        block += "recent: []\n";
        assert!(
            matches!(parse_y(&block), Err(RecentError::Yaml { msg, .. }) if msg.contains("nesting"))
        );
        // the same nesting as the JSON reader accepts is fine
        let ok = format!(
            "---\nmeta: {{interval: 1h, x: {}{}}}\nrecent: []\n",
            "[".repeat(json::MAX_JSON_DEPTH - 2),
            "]".repeat(json::MAX_JSON_DEPTH - 2)
        );
        parse_y(&ok).unwrap();
        // a huge scalar
        let long = format!(
            "---\nmeta: {{interval: 1h, comment: {}}}\nrecent: []\n",
            "x".repeat(MAX_JSON_STRING_BYTES + 1)
        );
        assert!(
            matches!(parse_y(&long), Err(RecentError::Yaml { msg, .. }) if msg.contains("longer"))
        );
        // too many members in a generic container
        let many = format!(
            "---\nmeta: {{interval: 1h, x: [{}]}}\nrecent: []\n",
            vec!["1"; MAX_JSON_CONTAINER_ITEMS + 1].join(",")
        );
        assert!(
            matches!(parse_y(&many), Err(RecentError::Yaml { msg, .. }) if msg.contains("more than"))
        );
        // too many aggregator intervals
        let agg = format!(
            "---\nmeta: {{interval: 1h, aggregator: [{}]}}\nrecent: []\n",
            vec!["Z"; 40].join(",")
        );
        assert!(matches!(
            parse_y(&agg),
            Err(RecentError::TooManyAggregators { .. })
        ));
    }

    #[test]
    fn plausibility_like_json() {
        // disorder
        assert!(matches!(
            parse_y(&yaml_events(&[("5", "a", "new"), ("6", "b", "new")])),
            Err(RecentError::Disorder { index: 1, .. })
        ));
        // span far beyond the interval (a 1h file covering ten days)
        assert!(matches!(
            parse_y(&yaml_events(&[
                ("1700864000", "a", "new"),
                ("1700000000", "b", "new")
            ])),
            Err(RecentError::SpanTooLarge { .. })
        ));
        // meta.interval against the name
        assert!(matches!(
            parse_recent(b"---\nmeta: {interval: 6h}\nrecent: []\n", "RECENT-1h.yaml"),
            Err(RecentError::IntervalMismatch { .. })
        ));
        // duplicate members
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h}\nmeta: {interval: 1h}\nrecent: []\n"),
            Err(RecentError::Duplicate { .. })
        ));
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h, dirtymark: 1, dirtymark: 2}\nrecent: []\n"),
            Err(RecentError::Duplicate { .. })
        ));
        assert!(matches!(
            parse_y(
                "---\nmeta: {interval: 1h}\nrecent: [{epoch: 1, epoch: 2, path: a, type: new}]\n"
            ),
            Err(RecentError::Duplicate { .. })
        ));
        // protocol
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h, protocol: 2}\nrecent: []\n"),
            Err(RecentError::UnsupportedProtocol { .. })
        ));
        // structure
        for (doc, what) in [
            ("---\nrecent: []\n", "meta"),
            ("---\nmeta: {interval: 1h}\n", "recent"),
        ] {
            assert!(
                matches!(parse_y(doc), Err(RecentError::Missing { what: w, .. }) if w == what),
                "{doc}"
            );
        }
        assert!(matches!(
            parse_y("--- 42\n"),
            Err(RecentError::TopLevel {
                found: "string",
                ..
            })
        ));
        assert!(matches!(
            parse_y("---\n"),
            Err(RecentError::TopLevel { found: "null", .. })
        ));
        assert!(matches!(parse_y(""), Err(RecentError::Yaml { .. })));
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h}\nrecent: 5\n"),
            Err(RecentError::WrongType { .. })
        ));
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h}\nrecent: []\n--- \nmeta: {}\n"),
            Err(RecentError::Yaml { msg, .. }) if msg.contains("more than one")
        ));
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h}\n? [a]\n: b\nrecent: []\n"),
            Err(RecentError::Yaml { msg, .. }) if msg.contains("keys must be scalars")
        ));
        assert!(matches!(
            parse_y("---\nmeta: {interval: 1h\nrecent: []\n"),
            Err(RecentError::Yaml { .. })
        ));
        assert!(matches!(
            parse_recent(
                b"---\nmeta: {interval: 1h}\nrecent: [\xff]\n",
                "RECENT-1h.yaml"
            ),
            Err(RecentError::NotUtf8 { .. })
        ));
        // the error names file, line and column
        let msg = parse_y("---\nmeta: {interval: 1h}\nrecent: [}\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("RECENT-1h.yaml: YAML error at line 3"),
            "{msg}"
        );
    }

    #[test]
    fn serializer_is_discovered_not_assumed() {
        // a principal copy (RECENT.recent) that is YAML: the content tells,
        // meta.serializer_suffix names the set
        let f = parse_recent(SYCK_1H.as_bytes(), "RECENT.recent").unwrap();
        assert_eq!(f.serializer, Serializer::Yaml);
        assert_eq!(f.rfilename(), "RECENT-1h.yaml");
        // no meta.serializer_suffix: the file name's suffix (as the reference
        // does after resolving the symlink) ...
        let bare = "---\nmeta: {interval: 1h, aggregator: [1d]}\nrecent: []\n";
        let f = parse_recent(bare.as_bytes(), "RECENT-1h.yaml").unwrap();
        assert_eq!(chain_file_names(&f), ["RECENT-1h.yaml", "RECENT-1d.yaml"]);
        let f = parse_recent(bare.as_bytes(), "RECENT-1h.yml").unwrap();
        assert_eq!(chain_file_names(&f), ["RECENT-1h.yml", "RECENT-1d.yml"]);
        // ... or, for a copy, the format it was read as
        let f = parse_recent(bare.as_bytes(), "RECENT.recent").unwrap();
        assert_eq!(f.rfilename(), "RECENT-1h.yaml");
        let f = parse_recent(
            br#"{"meta":{"interval":"1h"},"recent":[]}"#,
            "RECENT.recent",
        )
        .unwrap();
        assert_eq!(f.rfilename(), "RECENT-1h.json");
        // meta wins over the name (the reference sets it from meta last)
        let f = parse_recent(
            b"---\nmeta: {interval: 1h, serializer_suffix: .json}\nrecent: []\n",
            "RECENT-1h.yaml",
        )
        .unwrap();
        assert_eq!(f.rfilename(), "RECENT-1h.json");
        // names built from meta must stay plain file names
        for bad in ["/../x", ".", ".a/b", ".json\n", "json", ".verylongsuffix16"] {
            let doc =
                format!("---\nmeta: {{interval: 1h, serializer_suffix: {bad:?}}}\nrecent: []\n");
            assert!(
                matches!(
                    parse_y(&doc),
                    Err(RecentError::BadMeta {
                        what: "meta.serializer_suffix",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        for bad in ["../up", "a/b", "", "..", "x\ty"] {
            let doc = format!("---\nmeta: {{interval: 1h, filenameroot: {bad:?}}}\nrecent: []\n");
            assert!(
                matches!(
                    parse_y(&doc),
                    Err(RecentError::BadMeta {
                        what: "meta.filenameroot",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_recent(b"x", "RECENT-1h.sto"),
            Err(RecentError::UnsupportedSerializer { .. })
        ));
    }

    #[test]
    fn mutated_documents_never_panic() {
        let mut rng = Rng::new(0x9a41);
        let alphabet = b"-:[]{}&*!|>'\"#%@`?,~ \n\t.0123456789abcdemtpwy\\\x00\xc3";
        let base = SYCK_1H.as_bytes().to_vec();
        for round in 0..20_000 {
            let mut b = base.clone();
            for _ in 0..=rng.below(6) {
                let i = rng.below(b.len());
                match rng.below(3) {
                    0 => b[i] = alphabet[rng.below(alphabet.len())],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[rng.below(alphabet.len())]),
                }
            }
            let name = if round % 2 == 0 {
                "RECENT-1h.yaml"
            } else {
                "RECENT.recent"
            };
            let _ = parse_recent(&b, name);
        }
        for _ in 0..5_000 {
            let len = rng.below(120);
            let b: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let _ = parse_recent(&b, "RECENT-1h.yaml");
        }
    }
}
