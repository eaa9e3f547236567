//! The fuzz corpora as regression tests on the stable toolchain: every file
//! under `fuzz/corpus/<target>/` and every crash under
//! `fuzz/artifacts/<target>/` goes through the same `rmirror::fuzzing`
//! function the cargo-fuzz target calls, and must not panic.
//!
//! The `seed-*` files are derived from `protocol-fixtures/` (plus a few
//! hand-written inputs) by [`seeds`]; `seed_corpora_are_current` fails when
//! they are stale. Regenerate them with
//!
//! ```text
//! cargo test --test fuzz_corpus -- --ignored write_seed_corpora
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rmirror::checksum::sum_sizes_sqroot;
use rmirror::fuzzing::{
    self, flist_options, flist_selector, session_selector, sync_config, EmptyDestDriver, TARGETS,
};
use rmirror::proto::flist::{FlistDecoder, FlistProgress};
use rmirror::proto::mux;
use rmirror::proto::options::{CF_ID0_NAMES, CF_SAFE_FLIST, CF_VARINT_FLIST_FLAGS};
use rmirror::proto::token::{TokenFramer, WireToken};
use rmirror::proto::wire::{put, NdxState, Reader, NDX_DONE};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Every corpus file and every recorded crash, through its target.
#[test]
fn corpora_and_crashes_replay_without_panic() {
    let mut problems = Vec::new();
    let mut runs = 0;
    for top in ["fuzz/corpus", "fuzz/artifacts"] {
        for dir in subdirs(&root().join(top)) {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let Some(f) = fuzzing::target(&name) else {
                problems.push(format!(
                    "{top}/{name}: no fuzz target of that name in rmirror::fuzzing::TARGETS"
                ));
                continue;
            };
            for file in files_in(&dir) {
                let data = std::fs::read(&file).unwrap();
                runs += 1;
                if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(&data))) {
                    problems.push(format!(
                        "{}: PANIC: {}",
                        file.strip_prefix(root()).unwrap().display(),
                        panic_text(p)
                    ));
                }
            }
        }
    }
    assert!(runs >= TARGETS.len(), "only {runs} corpus files replayed");
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Targets, shims, `fuzz/Cargo.toml` and corpora agree, and every target has seeds.
#[test]
fn every_target_has_a_shim_a_bin_and_seeds() {
    let fuzz = root().join("fuzz");
    let cargo = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    assert!(
        cargo.contains("\n[workspace]\n"),
        "fuzz/Cargo.toml must be its own workspace"
    );
    let shims: BTreeSet<String> = files_in(&fuzz.join("fuzz_targets"))
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    let names: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        shims, names,
        "fuzz/fuzz_targets/*.rs and rmirror::fuzzing::TARGETS differ"
    );
    for n in &names {
        let shim =
            std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{n}.rs"))).unwrap();
        assert!(
            shim.contains("rmirror::fuzzing::"),
            "{n}.rs does not call rmirror::fuzzing"
        );
        assert!(
            cargo.contains(&format!("name = \"{n}\"\npath = \"fuzz_targets/{n}.rs\"")),
            "fuzz/Cargo.toml lacks [[bin]] {n}"
        );
        let seeds = files_in(&fuzz.join("corpus").join(n));
        assert!(
            seeds.iter().any(|p| p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")),
            "fuzz/corpus/{n}/ has no seed-* file"
        );
    }
    // Each shim must call the function TARGETS lists under its name.
    for (n, f) in TARGETS {
        assert_eq!(fuzzing::target(n).map(|g| g as usize), Some(*f as usize));
    }
}

#[test]
fn seed_corpora_are_current() {
    let want = seeds();
    let mut problems = Vec::new();
    for ((target, name), data) in &want {
        let p = root().join("fuzz/corpus").join(target).join(name);
        match std::fs::read(&p) {
            Ok(d) if &d == data => {}
            Ok(_) => problems.push(format!("{} differs", p.display())),
            Err(_) => problems.push(format!("{} is missing", p.display())),
        }
    }
    for dir in subdirs(&root().join("fuzz/corpus")) {
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        for f in files_in(&dir) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("seed-") && !want.contains_key(&(target.clone(), name.clone())) {
                problems.push(format!("stale seed {}", f.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "seed corpora are out of date (run `cargo test --test fuzz_corpus -- --ignored write_seed_corpora`):\n{}",
        problems.join("\n")
    );
}

#[test]
#[ignore = "writes fuzz/corpus/*/seed-*; run by hand after re-recording fixtures"]
fn write_seed_corpora() {
    let want = seeds();
    for dir in subdirs(&root().join("fuzz/corpus")) {
        for f in files_in(&dir) {
            if f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(f).unwrap();
            }
        }
    }
    for ((target, name), data) in &want {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    }
    eprintln!("wrote {} seeds", want.len());
}

// ---------------------------------------------------------------------------
// Seed derivation.
// ---------------------------------------------------------------------------

type Seeds = BTreeMap<(String, String), Vec<u8>>;

fn add(seeds: &mut Seeds, target: &str, name: &str, data: Vec<u8>) {
    // Identical content under one target is kept once (the first name wins);
    // token streams that differ only in the selector byte count as identical.
    let body = |d: &[u8]| -> Vec<u8> {
        if target.starts_with("token_") {
            d[1..].to_vec()
        } else {
            d.to_vec()
        }
    };
    if seeds
        .iter()
        .any(|((t, _), d)| t == target && body(d) == body(&data))
    {
        return;
    }
    seeds.insert((target.to_string(), format!("seed-{name}")), data);
}

/// What one recorded session decomposes into.
struct Parts {
    greeting_and_text: Vec<u8>,
    mux: Vec<u8>,
    frames: Vec<(usize, usize)>,
    data: Vec<u8>,
    flist_sel: [u8; 2],
    flist_len: usize,
    ndx_bytes: Vec<Vec<u8>>,
    token_streams: Vec<Vec<u8>>,
}

fn decompose(protocol: i32, compress: bool, server: &[u8]) -> Parts {
    // Byte at a time until negotiation: the multiplexed stream starts right after.
    let mut d = EmptyDestDriver::new(sync_config(protocol, compress, "m", "u", None)).unwrap();
    let mut mux_start = None;
    let mut ok_end = None;
    let mut line_start = 0;
    for (i, &b) in server.iter().enumerate() {
        d.input(&[b]);
        if b == b'\n' && ok_end.is_none() {
            if &server[line_start..i] == b"@RSYNCD: OK" {
                ok_end = Some(i + 1);
            }
            line_start = i + 1;
        }
        if d.t.negotiated.is_some() {
            mux_start = Some(i + 1);
            break;
        }
    }
    let mux_start = mux_start.expect("negotiation in the recording");
    let neg = d.t.negotiated.unwrap();
    let mux_bytes = server[mux_start..].to_vec();
    // Demultiplex.
    let mut frames = Vec::new();
    let mut data = Vec::new();
    let mut pos = 0;
    while let Ok(h) = mux::parse_header(&mux_bytes[pos..]) {
        if mux_bytes.len() < pos + 4 + h.len {
            break;
        }
        if h.code == mux::MSG_DATA {
            data.extend_from_slice(&mux_bytes[pos + 4..pos + 4 + h.len]);
        }
        frames.push((pos, 4 + h.len));
        pos += 4 + h.len;
    }
    assert_eq!(pos, mux_bytes.len(), "recording ends inside a frame");
    // The file list, with the target's option encoding of the session's options.
    let c = neg.compat;
    let flist_sel = flist_selector(
        protocol,
        c & CF_VARINT_FLIST_FLAGS != 0,
        protocol >= 31 || c & CF_SAFE_FLIST != 0,
        c & CF_ID0_NAMES != 0,
    );
    let mut dec = FlistDecoder::new(flist_options(flist_sel[0], flist_sel[1]));
    dec.begin_list(0, None);
    let mut off = 0;
    let list = loop {
        let (p, used) = dec
            .step(&data[off..])
            .expect("the recorded file list decodes");
        off += used;
        if let FlistProgress::Done(l) = p {
            break l;
        }
    };
    // The items: ndx, iflags, sum head, tokens, whole-file sum.
    let modern = protocol >= 30;
    let comp = neg.compression;
    let digest = neg.sums.kind.digest_len();
    let mut st = NdxState::default();
    let mut ndx_bytes = Vec::new();
    let mut token_streams = Vec::new();
    let mut p = off;
    let mut dones = 0;
    let max_dones = if protocol >= 29 { 3 } else { 2 };
    while dones < max_dones {
        let mut r = Reader::new(&data[p..]);
        let ndx = st.read(&mut r, modern).expect("ndx");
        ndx_bytes.push(data[p..p + r.consumed()].to_vec());
        p += r.consumed();
        if ndx == NDX_DONE {
            dones += 1;
            continue;
        }
        p += if protocol >= 29 { 2 } else { 0 } + 16;
        let mut framer = TokenFramer::new(comp);
        framer.start_file();
        let start = p;
        loop {
            let (t, used) = framer.step(&data[p..]).expect("tokens");
            p += used;
            if t == WireToken::End {
                break;
            }
        }
        token_streams.push(data[start..p].to_vec());
        p += digest;
    }
    Parts {
        greeting_and_text: server[..ok_end.expect("@RSYNCD: OK")].to_vec(),
        mux: mux_bytes,
        frames,
        data: data[..off].to_vec(),
        flist_sel,
        flist_len: list.entries.len(),
        ndx_bytes,
        token_streams,
    }
}

fn fixture_seeds(seeds: &mut Seeds) {
    let fixtures = root().join("protocol-fixtures");
    for dir in subdirs(&fixtures) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        let protocol = meta["protocol"].as_i64().unwrap() as i32;
        let compress = meta["compress"].as_bool().unwrap();
        let server = std::fs::read(dir.join("server.bin")).unwrap();
        let parts = decompose(protocol, compress, &server);

        // session: selector + everything after the daemon's greeting line.
        let nl = server.iter().position(|&b| b == b'\n').unwrap() + 1;
        assert_eq!(
            &server[..nl],
            fuzzing::SERVER_GREETING,
            "{name}: the daemon greeted differently; update SERVER_GREETING"
        );
        // Whole sessions for -z (smaller), the first 8 KiB for plain ones
        // (handshake, list, first files; they end in an EOF error).
        let mut s = vec![session_selector(protocol, compress)];
        if compress {
            s.extend_from_slice(&server[nl..]);
            add(seeds, "session", &name, s);
        } else {
            s.extend_from_slice(&server[nl..(nl + 8192).min(server.len())]);
            add(seeds, "session", &format!("{name}-head"), s);
        }

        add(
            seeds,
            "greeting",
            &format!("{name}-handshake"),
            parts.greeting_and_text.clone(),
        );

        // mux: the first frames (handshake-side) and the last ones (goodbye).
        let (o, l) = parts.frames[0];
        add(
            seeds,
            "mux",
            &format!("{name}-head"),
            parts.mux[o..o + l].to_vec(),
        );
        let small_tail = parts
            .frames
            .iter()
            .rev()
            .take(8)
            .take_while(|&&(_, l)| l <= 1024)
            .count();
        let tail_start = parts.frames[parts.frames.len() - small_tail].0;
        add(
            seeds,
            "mux",
            &format!("{name}-tail"),
            parts.mux[tail_start..].to_vec(),
        );

        // flist: option selector + the recorded list.
        let mut f = parts.flist_sel.to_vec();
        f.extend_from_slice(&parts.data);
        {
            let mut dec = FlistDecoder::new(flist_options(f[0], f[1]));
            dec.begin_list(0, None);
            let mut b = &f[2..];
            let n = loop {
                let (p, used) = dec.step(b).expect("seed decodes");
                b = &b[used..];
                if let FlistProgress::Done(l) = p {
                    break l.entries.len();
                }
            };
            assert_eq!(n, parts.flist_len);
        }
        add(seeds, "flist", &name, f);

        // varint: the ndx stream as op-4 (modern) / op-5 (legacy) records.
        let op = if protocol >= 30 { 4u8 } else { 5u8 };
        let mut v = Vec::new();
        for b in &parts.ndx_bytes {
            v.push(op);
            v.extend_from_slice(b);
        }
        add(seeds, "varint", &format!("{name}-ndx"), v);

        // tokens: all files' streams, and the small ones alone.
        let sel = (protocol - 27) as u8;
        let target = match (compress, protocol >= 30) {
            (false, _) => "token_plain",
            (true, false) => "token_zlib",
            (true, true) => "token_zstd",
        };
        let mut all = vec![sel];
        let mut small = vec![sel];
        for t in &parts.token_streams {
            all.extend_from_slice(t);
            if t.len() < 2048 {
                small.extend_from_slice(t);
            }
        }
        add(seeds, target, &format!("{name}-all"), all);
        add(seeds, target, &format!("{name}-small"), small);
    }
}

fn handwritten_seeds(seeds: &mut Seeds) {
    for (n, g) in [
        ("listing", &b"@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4\nmotd line\n\nm\tcomment\npub\tpublic files\n@RSYNCD: EXIT\n"[..]),
        ("old", b"@RSYNCD: 29\n@RSYNCD: EXIT\n"),
        ("error", b"@RSYNCD: 31.0\n@ERROR: Unknown module 'x'\n"),
        ("pre", b"@RSYNCD: 32.1 md5\r\n@RSYNCD: EXIT\r\n"),
    ] {
        add(seeds, "greeting", n, g.to_vec());
    }
    for (n, a) in [
        (
            "ok",
            &b"sha512 sha256 sha1 md5 md4\n@RSYNCD: AUTHREQD 0123456789abcdefABCDEF\n@RSYNCD: OK\n"
                [..],
        ),
        ("md4", b"md4\n@RSYNCD: AUTHREQD c0ffee\n@RSYNCD: OK\n"),
        (
            "nolist",
            b"\n@RSYNCD: AUTHREQD xyz\n@ERROR: auth failed on module m\n",
        ),
        ("twice", b"md5\n@RSYNCD: AUTHREQD a\n@RSYNCD: AUTHREQD b\n"),
    ] {
        add(seeds, "auth", n, a.to_vec());
    }
    // varint: each op with a spread of values.
    let mut v = Vec::new();
    for x in [
        0i64,
        1,
        127,
        128,
        0x3FFF,
        0x4000,
        0x1F_FFFF,
        0x7FFF_FFFF,
        -1,
        -2,
        i32::MIN as i64,
    ] {
        v.push(0);
        put::varint(&mut v, x as i32);
        v.push(1); // varlong(3)
        put::varlong(&mut v, x, 3);
        v.push(2);
        put::longint(&mut v, x);
    }
    for x in [1i64 << 33, i64::MAX, -(1i64 << 40)] {
        v.push(1 | 8); // varlong(4)
        put::varlong(&mut v, x, 4);
        v.push(2);
        put::longint(&mut v, x);
    }
    v.push(3);
    put::vstring(&mut v, b"xxh128 xxh3 xxh64 md5 md4");
    let mut st = NdxState::default();
    for n in [0, 1, 2, 300, 70000, -1, -2, -101, -5000, 5] {
        v.push(4);
        st.write(&mut v, n, true);
    }
    add(seeds, "varint", "values", v);
    // sum heads: the generator's own heads for a spread of file lengths.
    for (i, (len, p, bs)) in [
        (0i64, 32, None),
        (1, 32, None),
        (700, 30, None),
        (701, 29, None),
        (490_001, 31, None),
        (24 << 20, 32, None),
        (1 << 40, 27, None),
        (100_000, 30, Some(2048u32)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = vec![(p - 27) as u8];
        let h = sum_sizes_sqroot(len, p, 16, false, bs);
        for x in [h.count, h.blength, h.s2length, h.remainder] {
            s.extend_from_slice(&x.to_le_bytes());
        }
        s.extend_from_slice(&len.to_le_bytes());
        if let Some(b) = bs {
            s.extend_from_slice(&b.to_le_bytes());
        }
        add(seeds, "sum_head", &format!("gen{i}"), s);
    }
    add(
        seeds,
        "recent",
        "1h",
        [&[0u8][..], br#"{"meta":{"Producers":{"$0":"/usr/bin/rrr-server","File::Rsync::Mirror::Recentfile":"0.0.8","time":1700000100.5},"aggregator":["6h","1d","1W","1M","1Q","1Y","Z"],"canonize":"naive_path_normalize","dirtymark":"1325093856.49272","filenameroot":"RECENT","interval":"1h","merged":{"epoch":"1700000000.12345","into_interval":"6h","time":"1700000050.1"},"minmax":{"max":"1700000099.5","min":"1699997000.25","mtime":1700000101},"protocol":1,"serializer_suffix":".json"},"recent":[{"epoch":"1700000099.5","path":"authors/id/A/AN/ANDK/CHECKSUMS","type":"new"},{"epoch":1700000050.25,"path":"authors/id/X/XY/XYZ/Foo-1.0.tar.gz","type":"delete"},{"epoch":"1699997000.25","path":"modules/02packages.details.txt.gz","type":"new"}]}"#].concat(),
    );
    add(
        seeds,
        "recent",
        "z",
        [&[3u8][..], br#"{"meta":{"interval":"Z","protocol":1,"aggregator":["6h","1d","Z"]},"recent":[{"epoch":"1700000000","path":"a/b","type":"new"}]}"#].concat(),
    );
    // YAML as YAML::Syck lays it out; selector 7 is `RECENT-1h.yaml`, 4 `RECENT.recent`
    let syck = "--- \nmeta: \n  Producers: \n    $0: /usr/bin/rrr-server\n    time: 1700000100.51234\n  aggregator: \n    - 6h\n    - Z\n  \
dirtymark: '1325093856.49272'\n  filenameroot: RECENT\n  interval: 1h\n  merged: \n    epoch: 1700000000.12345\n    into_interval: 6h\n  \
minmax: \n    max: 1700000099.5\n    min: 1699997000.25\n  protocol: 1\n  serializer_suffix: .yaml\nrecent: \n  - \n    \
epoch: 1700000099.5\n    path: authors/id/A/AN/ANDK/CHECKSUMS\n    type: new\n  - \n    epoch: '1700000050.25'\n    \
path: \"authors/id/X/XY/XYZ/Foo: \\\"q\\\" 1.0.tar.gz\"\n    type: delete\n  - {epoch: 1699997000.25, path: modules/02packages.details.txt.gz, type: new}\n";
    add(seeds, "recent", "yaml-1h", [&[7u8][..], syck.as_bytes()].concat());
    add(seeds, "recent", "yaml-copy", [&[4u8][..], syck.as_bytes()].concat());
    add(
        seeds,
        "iim_config",
        "full",
        b"# iim config\nlocal /data/CPAN\nremote rsync://cpan-rsync.perl.org/CPAN\nuser mirror\npasswd s3cret\n\
sleep_main_loop 1m\nsleep_init_epoch hm6\nmax_run_time 7d+24h\nscoreboard_file /var/www/iim.html\n\
somekey part1\n  part2\n+ part3\n. part4\n"
            .to_vec(),
    );
    add(
        seeds,
        "iim_config",
        "include",
        b"local /x\nremote rsync://h/m\n. other.conf\n".to_vec(),
    );
    add(
        seeds,
        "filter_rules",
        "mix",
        b"- *.tmp\n+ foo/\n+ /abs/***\n-! /keep\nH hid\nP prot\nR risk\nS show\n-p per\n- [a-z]*.o\n+s **/x/**\nexclude,/ d/\ninclude x?\nclear\n!\nmerge rules.txt\n- \\*literal\n- [[:alpha:]]*\n"
            .to_vec(),
    );
}

fn config_seeds(seeds: &mut Seeds) {
    add(
        seeds,
        "toml_config",
        "example",
        std::fs::read(root().join("contrib/mirrors.toml")).expect("contrib/mirrors.toml"),
    );
    add(
        seeds,
        "mirror_signal",
        "yml",
        b"\x00---\nname: CPAN\ntimestamp: 2026-11-01T10:00:00Z\nmaster:\n  - uri: rsync://up.example.org/CPAN/\nmirrors:\n  - uri: rsync://a.example.org/CPAN/\n  - http://b.example.org/CPAN/\n"
            .to_vec(),
    );
    add(
        seeds,
        "mirror_signal",
        "json",
        br#"\x01{"timestamp":"2026-11-01T10:00:00Z","master":"rsync://up.example.org/CPAN/","mirrors":["rsync://a.example.org/CPAN/"]}"#
            .to_vec(),
    );
    add(
        seeds,
        "mirror_signal",
        "trace",
        b"\x03Mon Nov  2 10:00:00 UTC 2026\nDate: Mon, 02 Nov 2026 10:00:00 +0000\nArchive serial: 2026110201\n".to_vec(),
    );
    add(seeds, "mirror_signal", "marker", b"\x841762077600\n".to_vec());
}

/// Every seed, keyed by (target, file name).
fn seeds() -> Seeds {
    let mut s = Seeds::new();
    fixture_seeds(&mut s);
    handwritten_seeds(&mut s);
    config_seeds(&mut s);
    let targets: BTreeSet<&str> = s.keys().map(|(t, _)| t.as_str()).collect();
    for (t, _) in TARGETS {
        assert!(targets.contains(t), "no seed derived for target {t}");
    }
    s
}

#[test]
fn session_seeds_reproduce_the_fixtures() {
    // The session target's selector + SERVER_GREETING rebuilds the recording:
    // a whole-session seed must finish, like the replay does; a head seed
    // must end in an error at EOF.
    let s = seeds();
    let (mut whole, mut heads) = (0, 0);
    for ((t, name), data) in &s {
        if t != "session" {
            continue;
        }
        let (&sel, rest) = data.split_first().unwrap();
        let cfg = sync_config(
            27 + ((sel & 7) % 6) as i32,
            sel & 0x08 != 0,
            "m",
            "user",
            None,
        );
        let mut input = fuzzing::SERVER_GREETING.to_vec();
        input.extend_from_slice(rest);
        let (t, _) = fuzzing::causal_barriers(cfg, &input, true);
        if name.ends_with("-head") {
            assert!(!t.finished && t.failure.is_some(), "{name}");
            assert!(
                t.list.is_some(),
                "{name}: the head seed should reach the file list"
            );
            heads += 1;
        } else {
            assert!(t.finished && t.failure.is_none(), "{name}: {:?}", t.failure);
            assert!(
                !t.files.is_empty() && t.files.iter().all(|f| f.sender_sum == f.computed_sum),
                "{name}"
            );
            whole += 1;
        }
    }
    assert_eq!((whole, heads), (6, 6));
}

/// The hand-written RECENT seeds are valid documents (JSON and YAML), so
/// the fuzzer starts from inputs that reach the member checks.
#[test]
fn recent_seeds_are_accepted() {
    for (seed, name) in [
        ("seed-1h", "RECENT-1h.json"),
        ("seed-z", "RECENT-Z.json"),
        ("seed-yaml-1h", "RECENT-1h.yaml"),
        ("seed-yaml-copy", "RECENT.recent"),
    ] {
        let data = std::fs::read(root().join("fuzz/corpus/recent").join(seed)).unwrap();
        let f = rmirror::recent::parse_recent(&data[1..], name).unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert!(!f.events.is_empty(), "{seed}");
    }
}
