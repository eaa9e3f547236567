//! Tests for RECENT parsing, validation and planning helpers.

use super::test_support::Rng;
use super::*;

fn e(s: &str) -> Epoch {
    Epoch::parse(s).unwrap()
}

const SAMPLE_1H: &str = r#"{
  "meta": {
    "Producers": {"$0": "/usr/bin/rrr-server", "File::Rsync::Mirror::Recentfile": "0.0.8", "time": 1700000100.5},
    "aggregator": ["6h", "1d", "1W", "1M", "1Q", "1Y", "Z"],
    "canonize": "naive_path_normalize",
    "dirtymark": "1325093856.49272",
    "filenameroot": "RECENT",
    "interval": "1h",
    "merged": {"epoch": "1700000000.12345", "into_interval": "6h", "time": "1700000050.1"},
    "minmax": {"max": "1700000099.5", "min": "1699997000.25", "mtime": 1700000101},
    "protocol": 1,
    "serializer_suffix": ".json"
  },
  "recent": [
    {"epoch": "1700000099.5", "path": "authors/id/A/AN/ANDK/CHECKSUMS", "type": "new"},
    {"epoch": 1700000050.25, "path": "authors/id/X/XY/XYZ/Foo-1.0.tar.gz", "type": "delete"},
    {"epoch": "1699997000.25", "path": "modules/02packages.details.txt.gz", "type": "new"}
  ]
}"#;

fn sample() -> RecentFile {
    parse_recent(SAMPLE_1H.as_bytes(), "RECENT-1h.json").unwrap()
}

fn file_with(interval: &str, events: &[(&str, &str, &str)], merged: Option<&str>) -> RecentFile {
    let evs: Vec<String> = events
        .iter()
        .map(|(ep, p, t)| format!(r#"{{"epoch":"{ep}","path":"{p}","type":"{t}"}}"#))
        .collect();
    let merged = merged
        .map(|m| format!(r#","merged":{{"epoch":"{m}"}}"#))
        .unwrap_or_default();
    let text = format!(
        r#"{{"meta":{{"interval":"{interval}","protocol":1,"aggregator":["6h","1d","Z"]{merged}}},"recent":[{}]}}"#,
        evs.join(",")
    );
    parse_recent_with(
        text.as_bytes(),
        &format!("RECENT-{interval}.json"),
        ParseOptions {
            max_span_factor: None,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn parses_protocol_1() {
    let f = sample();
    assert_eq!(f.interval, Interval::parse("1h").unwrap());
    assert_eq!(f.meta.protocol, 1);
    assert_eq!(f.meta.aggregator.len(), 7);
    assert_eq!(f.meta.dirtymark, Some(e("1325093856.49272")));
    assert_eq!(f.merged_epoch(), Some(&e("1700000000.12345")));
    assert_eq!(
        f.meta.merged.as_ref().unwrap().into_interval.as_deref(),
        Some("6h")
    );
    assert_eq!(f.meta.minmax.as_ref().unwrap().mtime, Some(e("1700000101")));
    assert!(f.meta.other.contains_key("Producers"));
    assert_eq!(f.meta.other["Producers"]["$0"], "/usr/bin/rrr-server");
    assert_eq!(f.events.len(), 3);
    assert_eq!(f.events[1].kind, EventType::Delete);
    assert_eq!(f.events[1].epoch, e("1700000050.25"));
    assert_eq!(f.max_epoch(), Some(&e("1700000099.5")));
    assert_eq!(f.min_epoch(), Some(&e("1699997000.25")));
    assert_eq!(f.rfilename(), "RECENT-1h.json");
}

#[test]
fn parses_protocol_0_and_principal_copy() {
    let p0 =
        r#"[{"epoch":"2.5","path":"a","type":"new"},{"epoch":"1","path":"b","type":"delete"}]"#;
    let f = parse_recent(p0.as_bytes(), "RECENT-6h.json").unwrap();
    assert_eq!(f.meta.protocol, 0);
    assert_eq!(f.interval.secs(), 21_600);
    // protocol 0 has no meta, so the name must carry the interval
    assert!(matches!(
        parse_recent(p0.as_bytes(), "RECENT.recent"),
        Err(RecentError::NoInterval { .. })
    ));
    // RECENT.recent as a copy of the principal: meta tells the real name
    let f = parse_recent(SAMPLE_1H.as_bytes(), "RECENT.recent").unwrap();
    assert_eq!(f.rfilename(), "RECENT-1h.json");
    // a YAML copy is recognised as YAML (and read as such)
    assert!(matches!(
        parse_recent(b"--- \nmeta: {}\n", "RECENT.recent"),
        Err(RecentError::Missing { what: "recent", .. })
    ));
}

#[test]
fn serializer_and_size_errors() {
    assert!(matches!(
        parse_recent(b"---\n", "RECENT-1h.yaml"),
        Err(RecentError::TopLevel { found: "null", .. })
    ));
    assert!(matches!(
        parse_recent(b"x", "RECENT-1h.sto"),
        Err(RecentError::UnsupportedSerializer { .. })
    ));
    assert!(matches!(
        parse_recent(b"\xff{}", "RECENT-1h.json"),
        Err(RecentError::NotUtf8 { .. })
    ));
    assert!(matches!(
        parse_recent(b"", "RECENT-1h.json"),
        Err(RecentError::Json { .. })
    ));
    assert!(matches!(
        parse_recent(b"42", "RECENT-1h.json"),
        Err(RecentError::TopLevel {
            found: "number",
            ..
        })
    ));
    assert!(matches!(
        parse_recent(b"{\"recent\":[]}", "RECENT-1h.json"),
        Err(RecentError::Missing { what: "meta", .. })
    ));
    assert!(matches!(
        parse_recent(b"{\"meta\":{}}", "RECENT-1h.json"),
        Err(RecentError::Missing { what: "recent", .. })
    ));
    assert!(matches!(
        parse_recent(b"[] x", "RECENT-1h.json"),
        Err(RecentError::Json { .. })
    ));
    let big = vec![b' '; file::MAX_RECENT_BYTES + 1];
    assert!(matches!(
        parse_recent(&big, "RECENT-1h.json"),
        Err(RecentError::TooLarge { .. })
    ));
}

#[test]
fn meta_errors() {
    let bad_proto = r#"{"meta":{"interval":"1h","protocol":2},"recent":[]}"#;
    assert!(matches!(
        parse_recent(bad_proto.as_bytes(), "RECENT-1h.json"),
        Err(RecentError::UnsupportedProtocol { .. })
    ));
    let str_proto = r#"{"meta":{"interval":"1h","protocol":"1"},"recent":[]}"#;
    assert_eq!(
        parse_recent(str_proto.as_bytes(), "RECENT-1h.json")
            .unwrap()
            .meta
            .protocol,
        1
    );
    let mismatch = r#"{"meta":{"interval":"6h"},"recent":[]}"#;
    let err = parse_recent(mismatch.as_bytes(), "RECENT-1h.json").unwrap_err();
    assert!(matches!(err, RecentError::IntervalMismatch { .. }));
    assert!(err.to_string().contains("RECENT-1h.json"), "{err}");
    let bad_agg = r#"{"meta":{"interval":"1h","aggregator":["6h","7x"]},"recent":[]}"#;
    let err = parse_recent(bad_agg.as_bytes(), "RECENT-1h.json").unwrap_err();
    assert!(err.to_string().contains("meta.aggregator[1]"), "{err}");
    let dup = r#"{"meta":{"interval":"1h","interval":"1h"},"recent":[]}"#;
    assert!(matches!(
        parse_recent(dup.as_bytes(), "RECENT-1h.json"),
        Err(RecentError::Duplicate { .. })
    ));
    let bad_dm = r#"{"meta":{"interval":"1h","dirtymark":"1e9"},"recent":[]}"#;
    assert!(matches!(
        parse_recent(bad_dm.as_bytes(), "RECENT-1h.json"),
        Err(RecentError::BadEpoch { .. })
    ));
    let wrong = r#"{"meta":{"interval":"1h","merged":[1]},"recent":[]}"#;
    assert!(matches!(
        parse_recent(wrong.as_bytes(), "RECENT-1h.json"),
        Err(RecentError::WrongType { .. })
    ));
    let many: Vec<String> = (0..=file::MAX_AGGREGATOR_LEN)
        .map(|_| "\"1d\"".to_string())
        .collect();
    let too_many = format!(
        r#"{{"meta":{{"interval":"1h","aggregator":[{}]}},"recent":[]}}"#,
        many.join(",")
    );
    assert!(matches!(
        parse_recent(too_many.as_bytes(), "RECENT-1h.json"),
        Err(RecentError::TooManyAggregators { .. })
    ));
}

fn one_event(ev: &str) -> Result<RecentFile, RecentError> {
    let text = format!(r#"{{"meta":{{"interval":"1h"}},"recent":[{ev}]}}"#);
    parse_recent(text.as_bytes(), "RECENT-1h.json")
}

#[test]
fn event_errors_name_the_entry() {
    let err = one_event(r#"{"epoch":"1","path":"a","type":"rename"}"#).unwrap_err();
    assert!(matches!(err, RecentError::UnknownType { index: 0, .. }));
    assert!(err.to_string().contains("\"rename\""));
    assert!(matches!(
        one_event(r#"{"epoch":"1","path":"a"}"#),
        Err(RecentError::UnknownType { .. })
    ));
    assert!(matches!(
        one_event(r#"{"path":"a","type":"new"}"#),
        Err(RecentError::BadEpoch { .. })
    ));
    assert!(matches!(
        one_event(r#"{"epoch":"1","type":"new"}"#),
        Err(RecentError::Missing { .. })
    ));
    assert!(matches!(
        one_event(r#"{"epoch":true,"path":"a","type":"new"}"#),
        Err(RecentError::WrongType { .. })
    ));
    assert!(matches!(
        one_event(r#"{"epoch":"-1","path":"a","type":"new"}"#),
        Err(RecentError::BadEpoch { .. })
    ));
    assert!(matches!(
        one_event(r#"{"epoch":1e9,"path":"a","type":"new"}"#),
        Err(RecentError::BadEpoch { .. })
    ));
    assert!(matches!(
        one_event(r#"[1]"#),
        Err(RecentError::WrongType { .. })
    ));
    assert!(matches!(
        one_event(r#"{"epoch":"1","epoch":"2","path":"a","type":"new"}"#),
        Err(RecentError::Duplicate { .. })
    ));
    // extra members are tolerated
    assert!(one_event(r#"{"epoch":"1","path":"a","type":"new","size":3}"#).is_ok());
}

#[test]
fn unsafe_paths() {
    for (p, why) in [
        ("", "empty path"),
        ("/etc/passwd", "absolute path"),
        ("a/../../b", "'..' path component escapes the tree"),
        ("..", "'..' path component escapes the tree"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("./a", "'.' path component"),
        ("a\\u0000b", "contains NUL"),
        ("a\\nb", "contains a line break"),
    ] {
        let err = one_event(&format!(r#"{{"epoch":"1","path":"{p}","type":"new"}}"#)).unwrap_err();
        match err {
            RecentError::BadPath { why: w, .. } => assert_eq!(w, why, "{p}"),
            other => panic!("{p}: {other}"),
        }
    }
    assert!(check_path("a/b..c/.hidden/...").is_ok());
    assert!(check_path(&"a/".repeat(200)).is_err());
    assert!(check_path(&"x".repeat(file::MAX_PATH_BYTES + 1)).is_err());
}

#[test]
fn ordering_rules() {
    let two = |a: &str, b: &str| {
        let t = format!(
            r#"{{"meta":{{"interval":"1h"}},"recent":[{{"epoch":"{a}","path":"x","type":"new"}},{{"epoch":"{b}","path":"y","type":"new"}}]}}"#
        );
        parse_recent(t.as_bytes(), "RECENT-1h.json")
    };
    assert!(two("10.5", "10.25").is_ok());
    let err = two("10.5", "10.50").unwrap_err();
    assert!(
        matches!(err, RecentError::Disorder { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("strictly decreasing"));
    assert!(matches!(two("10", "11"), Err(RecentError::Disorder { .. })));
    // equal epochs can be tolerated on request
    let t = r#"{"meta":{"interval":"1h"},"recent":[{"epoch":"10","path":"x","type":"new"},{"epoch":"10.0","path":"y","type":"new"}]}"#;
    let opts = ParseOptions {
        allow_equal_epochs: true,
        ..Default::default()
    };
    assert!(parse_recent_with(t.as_bytes(), "RECENT-1h.json", opts).is_ok());
}

#[test]
fn span_check() {
    let t = |interval: &str, old: &str| {
        format!(
            r#"{{"meta":{{"interval":"{interval}"}},"recent":[{{"epoch":"100000","path":"x","type":"new"}},{{"epoch":"{old}","path":"y","type":"new"}}]}}"#
        )
    };
    // 1h: allowed 4*3600+3600 = 18000
    assert!(parse_recent(t("1h", "82000").as_bytes(), "RECENT-1h.json").is_ok());
    let err = parse_recent(t("1h", "81999").as_bytes(), "RECENT-1h.json").unwrap_err();
    assert!(
        matches!(
            err,
            RecentError::SpanTooLarge {
                span_secs: 18001,
                ..
            }
        ),
        "{err}"
    );
    // Z is never span-checked
    assert!(parse_recent(t("Z", "0").as_bytes(), "RECENT-Z.json").is_ok());
    // check can be disabled
    let opts = ParseOptions {
        max_span_factor: None,
        ..Default::default()
    };
    assert!(parse_recent_with(t("1h", "0").as_bytes(), "RECENT-1h.json", opts).is_ok());
}

#[test]
fn chain_and_names() {
    let f = sample();
    let chain: Vec<String> = interval_chain(&f).iter().map(|i| i.to_string()).collect();
    assert_eq!(chain, ["1h", "6h", "1d", "1W", "1M", "1Q", "1Y", "Z"]);
    assert_eq!(chain_file_names(&f)[7], "RECENT-Z.json");
    // unsorted, duplicated, shorter-than-principal entries are normalised
    let t = r#"{"meta":{"interval":"6h","aggregator":["Z","1d","1h","1d","6h"]},"recent":[]}"#;
    let g = parse_recent(t.as_bytes(), "RECENT-6h.json").unwrap();
    let chain: Vec<String> = interval_chain(&g).iter().map(|i| i.to_string()).collect();
    assert_eq!(chain, ["6h", "1d", "Z"]);
}

#[test]
fn refresh_rule() {
    // this.merged.epoch = 50; next.max = 60 -> overlap, no refresh
    let this = file_with("1h", &[("100", "a", "new")], Some("50"));
    let next_ok = file_with("6h", &[("60", "a", "new")], Some("10"));
    assert!(!needs_refresh(&this, &next_ok));
    // next.max == merged.epoch -> still overlapping
    let next_eq = file_with("6h", &[("50", "a", "new")], None);
    assert!(!needs_refresh(&this, &next_eq));
    // next.max < merged.epoch -> refresh
    let next_old = file_with("6h", &[("49.99", "a", "new")], None);
    assert!(needs_refresh(&this, &next_old));
    // no merged epoch -> refresh (as the reference)
    let nomerge = file_with("1h", &[("100", "a", "new")], None);
    assert!(needs_refresh(&nomerge, &next_ok));
}

#[test]
fn plan_reads_walks_until_covered() {
    let chain: Vec<Interval> = ["1h", "6h", "1d", "Z"]
        .iter()
        .map(|s| Interval::parse(s).unwrap())
        .collect();
    let f0 = file_with(
        "1h",
        &[("1000000", "a", "new"), ("900000", "b", "new")],
        Some("950000"),
    );
    let f1 = file_with(
        "6h",
        &[("960000", "a", "new"), ("500000", "c", "new")],
        Some("700000"),
    );
    let f2 = file_with(
        "1d",
        &[("800000", "c", "new"), ("100000", "d", "new")],
        Some("150000"),
    );
    let f3 = file_with("Z", &[("160000", "d", "new"), ("1000", "e", "new")], None);
    let files = [Some(&f0), Some(&f1), Some(&f2), Some(&f3)];
    use ReadReason::*;

    // fresh start: everything down to Z
    let p = plan_reads(&chain, &files, None);
    assert_eq!(
        p.reasons,
        vec![
            Some(Principal),
            Some(Coverage),
            Some(Coverage),
            Some(Coverage)
        ]
    );
    assert_eq!(p.missing, None);

    // applied 950: the 1h file (oldest 900) covers -> nothing else
    let p = plan_reads(&chain, &files, Some(&e("950000")));
    assert_eq!(p.reasons, vec![Some(Principal), None, None, None]);
    // exactly the oldest epoch of the principal is covered too
    let p = plan_reads(&chain, &files, Some(&e("900000")));
    assert_eq!(p.reasons[1], None);

    // applied 600: gap (600, 900) -> need 6h (oldest 500 covers)
    let p = plan_reads(&chain, &files, Some(&e("600000")));
    assert_eq!(p.reasons, vec![Some(Principal), Some(Coverage), None, None]);

    // applied 200: need 6h and 1d
    let p = plan_reads(&chain, &files, Some(&e("200000")));
    assert_eq!(
        p.reasons,
        vec![Some(Principal), Some(Coverage), Some(Coverage), None]
    );

    // a needed file that is not available locally stops the plan
    let files_missing = [Some(&f0), None, Some(&f2), Some(&f3)];
    let p = plan_reads(&chain, &files_missing, Some(&e("200000")));
    assert_eq!(p.missing, Some(1));

    // staleness: 6h copy too old for the principal's merged epoch
    let f1_old = file_with(
        "6h",
        &[("940000", "a", "new"), ("500000", "c", "new")],
        Some("700000"),
    );
    let files_stale = [Some(&f0), Some(&f1_old), Some(&f2), Some(&f3)];
    let p = plan_reads(&chain, &files_stale, Some(&e("950000")));
    assert_eq!(p.reasons, vec![Some(Principal), Some(Stale), None, None]);
    // a not-needed file absent locally is fine
    let p = plan_reads(&chain, &[Some(&f0), None, None, None], Some(&e("950000")));
    assert_eq!(p.reasons, vec![Some(Principal), None, None, None]);
    assert_eq!(p.missing, None);
    // empty principal cannot prove coverage
    let empty = file_with("1h", &[], Some("950000"));
    let p = plan_reads(
        &chain,
        &[Some(&empty), Some(&f1), Some(&f2), Some(&f3)],
        Some(&e("950000")),
    );
    assert_eq!(p.reasons[1], Some(Coverage));
    assert_eq!(plan_reads(&[], &[], None).reasons.len(), 0);
}

#[test]
fn dirtymark() {
    assert_eq!(
        check_dirtymark(None, Some(&e("1"))),
        DirtymarkCheck::FirstSeen
    );
    assert_eq!(
        check_dirtymark(Some(&e("1.50")), Some(&e("1.5"))),
        DirtymarkCheck::Unchanged
    );
    assert_eq!(
        check_dirtymark(Some(&e("2")), Some(&e("1"))),
        DirtymarkCheck::Changed
    );
    assert_eq!(
        check_dirtymark(Some(&e("2")), None),
        DirtymarkCheck::Changed
    );
}

fn ev(epoch: &str, path: &str, kind: EventType) -> RecentEvent {
    RecentEvent {
        epoch: e(epoch),
        path: path.into(),
        kind,
    }
}

#[test]
fn collapse_newest_wins() {
    use EventType::*;
    let small = [
        ev("30", "a/x", Delete),
        ev("20", "a/y", New),
        ev("10", "b", New),
    ];
    let big = [
        ev("25", "a/x", New),
        ev("21", "b", Delete),
        ev("5", "c/d/e", Delete),
        ev("4", "c/d", Delete),
        ev("3", "c", Delete),
    ];
    let c = collapse_events(small.iter().chain(big.iter()));
    let fetch: Vec<&str> = c.fetch.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(fetch, ["a/y"]);
    let del: Vec<&str> = c.delete.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(del, ["c/d/e", "a/x", "c/d", "b", "c"]);
    assert_eq!(c.delete[1].epoch, e("30"));
}

#[test]
fn collapse_ties_and_subtrees() {
    use EventType::*;
    // tie: new wins
    let c = collapse_events(&[ev("5", "p", Delete), ev("5", "p", New)]);
    assert_eq!(c.fetch.len(), 1);
    assert!(c.delete.is_empty());
    // fetch under a directory deleted later is dropped
    let c = collapse_events(&[ev("9", "d", Delete), ev("3", "d/f", New)]);
    assert!(c.fetch.is_empty());
    assert_eq!(c.delete.len(), 1);
    // a directory re-populated after its delete is not deleted
    let c = collapse_events(&[ev("9", "d/f", New), ev("3", "d", Delete)]);
    assert_eq!(c.fetch.len(), 1);
    assert!(c.delete.is_empty());
    // fetch order: newest first
    let c = collapse_events(&[ev("1", "a", New), ev("3", "b", New), ev("2", "c", New)]);
    let f: Vec<&str> = c.fetch.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(f, ["b", "c", "a"]);
}

#[test]
fn delete_ordering() {
    let d = |p: &str| PathEvent {
        path: p.into(),
        epoch: e("1"),
    };
    let dels = [
        d("a/b/c"),
        d("a/b"),
        d("a"),
        d("z/file"),
        d("gone"),
        d("a/bb/longer"),
    ];
    let ops = order_deletes(&dels, |p| match p {
        "a" | "a/b" | "a/bb/longer" => LocalKind::Dir,
        "gone" => LocalKind::Missing,
        _ => LocalKind::NotDir,
    });
    assert_eq!(
        ops,
        vec![
            DeleteOp::Unlink("a/b/c".into()),
            DeleteOp::Unlink("z/file".into()),
            DeleteOp::Rmdir("a/bb/longer".into()),
            DeleteOp::Rmdir("a/b".into()),
            DeleteOp::Rmdir("a".into()),
            DeleteOp::NotFound("gone".into()),
        ]
    );
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(0x5eed);
    let alphabet =
        b"{}[]\":,.-+0123456789eE \n\\utrfalsenul/abcmetarecentepochpathtypenewdelete\x00\xff\xc3";
    for round in 0..20_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        };
        let _ = parse_recent(&bytes, "RECENT-1h.json");
        let _ = parse_recent(&bytes, "RECENT.recent");
    }
    // mutate a valid document
    let base = SAMPLE_1H.as_bytes().to_vec();
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(b.len());
            match rng.below(3) {
                0 => b[i] = rng.next() as u8,
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, alphabet[rng.below(alphabet.len())]),
            }
        }
        let _ = parse_recent(&b, "RECENT-1h.json");
    }
}

/// The JSON and the YAML reader hold the top level's `meta` and `recent`
/// to the same rules: each once, both present, `recent` an array.
#[test]
fn top_level_members_same_rules_in_json_and_yaml() {
    let cases: [(&str, &str, &str); 6] = [
        (r#"{"meta":{"interval":"1h"},"meta":{"interval":"1h"},"recent":[]}"#, "---\nmeta: {interval: 1h}\nmeta: {interval: 1h}\nrecent: []\n", "duplicate meta"),
        (r#"{"meta":{"interval":"1h"},"recent":[],"recent":[]}"#, "---\nmeta: {interval: 1h}\nrecent: []\nrecent: []\n", "duplicate recent"),
        (r#"{"recent":[]}"#, "---\nrecent: []\n", "missing meta"),
        (r#"{"meta":{"interval":"1h"}}"#, "---\nmeta: {interval: 1h}\n", "missing recent"),
        (r#"{"meta":{"interval":"1h"},"recent":{}}"#, "---\nmeta: {interval: 1h}\nrecent: {}\n", "recent not an array"),
        (r#"{"x":1,"meta":{"interval":"1h"},"recent":[]}"#, "---\nx: 1\nmeta: {interval: 1h}\nrecent: []\n", "ok"),
    ];
    for (json, yaml, want) in cases {
        for (doc, name) in [(json, "RECENT-1h.json"), (yaml, "RECENT-1h.yaml")] {
            let got = parse_recent(doc.as_bytes(), name);
            let ok = match (want, &got) {
                ("duplicate meta", Err(RecentError::Duplicate { what, .. })) => what == "meta",
                ("duplicate recent", Err(RecentError::Duplicate { what, .. })) => what == "recent",
                ("missing meta", Err(RecentError::Missing { what: "meta", .. })) => true,
                ("missing recent", Err(RecentError::Missing { what: "recent", .. })) => true,
                ("recent not an array", Err(RecentError::WrongType { what, expected, found, .. })) => {
                    what == "recent" && *expected == "an array" && *found == "object"
                }
                ("ok", Ok(f)) => f.events.is_empty(),
                _ => false,
            };
            assert!(ok, "{name}: {want}: got {got:?}");
            if let Err(e) = &got {
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }
}
