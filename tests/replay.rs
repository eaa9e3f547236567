//! Replays the recorded daemon sessions in `protocol-fixtures/` through the
//! sans-IO [`ClientSession`] with no server: the bytes the session writes must
//! equal what rmirror sent when the fixture was recorded, the session must
//! finish, and every file must reassemble to the recorded source content and
//! to the whole-file checksum the sender sent. Truncated and corrupted
//! recordings must fail cleanly, never panic.
//!
//! Fixtures are written by `scripts/record-fixtures` (see its header); each
//! `protocol-fixtures/<name>/` holds `server.bin`, `client.bin`, `meta.json`.
//! The engine side is `rmirror::fuzzing::EmptyDestDriver`, which behaves as
//! the engine does for an empty DEST (the recording's situation).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use rmirror::fuzzing::{causal_barriers, drive_empty_dest, sync_config, Failure, Transcript};
use rmirror::proto::mux;
use rmirror::proto::token::Compression;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Chunkings every fixture is replayed with (0 = all at once; a list cycles),
/// besides the byte-at-a-time pass. A chunk never crosses a causal barrier
/// (see `rmirror::fuzzing::drive_empty_dest`): a live server cannot send the
/// replies to requests the client has not made yet.
const CHUNKINGS: &[&[usize]] = &[&[0], &[1], &[7], &[4096], &[1, 7, 4096, 13, 2, 65536]];

/// The fixture matrix the recording script produces; the meta-test insists
/// on all of it.
fn expected_fixture_names() -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for p in 27..=32 {
        s.insert(format!("p{p}"));
        s.insert(format!("p{p}-z"));
    }
    s
}

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-fixtures")
}

fn fixture_dirs() -> Vec<PathBuf> {
    let root = fixtures_root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", root.display()))
        .map(|e| e.expect("readdir").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

struct Fixture {
    name: String,
    protocol: i32,
    compress: bool,
    meta: Value,
    server: Vec<u8>,
    client: Vec<u8>,
}

fn load(dir: &Path) -> Result<Fixture, String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let read = |f: &str| -> Result<Vec<u8>, String> {
        let p = dir.join(f);
        let b = std::fs::read(&p).map_err(|e| format!("{name}: cannot read {f}: {e}"))?;
        if b.is_empty() {
            return Err(format!("{name}: {f} is empty"));
        }
        Ok(b)
    };
    let meta: Value = serde_json::from_slice(&read("meta.json")?)
        .map_err(|e| format!("{name}: meta.json: {e}"))?;
    let server = read("server.bin")?;
    let client = read("client.bin")?;
    let extra: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| !["meta.json", "server.bin", "client.bin"].contains(&f.as_str()))
        .collect();
    if !extra.is_empty() {
        return Err(format!("{name}: unexpected files {extra:?}"));
    }
    let protocol = meta["protocol"]
        .as_i64()
        .ok_or(format!("{name}: meta.json lacks protocol"))? as i32;
    let compress = meta["compress"]
        .as_bool()
        .ok_or(format!("{name}: meta.json lacks compress"))?;
    if meta["server_bytes"].as_u64() != Some(server.len() as u64)
        || meta["client_bytes"].as_u64() != Some(client.len() as u64)
    {
        return Err(format!(
            "{name}: server.bin/client.bin sizes differ from meta.json"
        ));
    }
    Ok(Fixture {
        name,
        protocol,
        compress,
        meta,
        server,
        client,
    })
}

fn config(fx: &Fixture) -> rmirror::proto::session::SessionConfig {
    let module = fx.meta["module"].as_str().expect("module");
    let user = fx.meta["user"].as_str().expect("user");
    let cfg = sync_config(fx.protocol, fx.compress, module, user, None);
    let paths: Vec<Vec<u8>> = fx.meta["remote_paths"]
        .as_array()
        .expect("remote_paths")
        .iter()
        .map(|p| p.as_str().unwrap().as_bytes().to_vec())
        .collect();
    assert_eq!(
        cfg.remote_paths, paths,
        "{}: sync_config's remote path differs from meta.json",
        fx.name
    );
    cfg
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What the recorded source tree held: regular file name → sha256, and the
/// names of all entries.
struct Source {
    files: BTreeMap<Vec<u8>, (String, u64)>,
    all: BTreeSet<Vec<u8>>,
    hard_links: Vec<Vec<Vec<u8>>>,
}

fn source(fx: &Fixture) -> Source {
    let mut files = BTreeMap::new();
    let mut all = BTreeSet::new();
    for f in fx.meta["files"].as_array().expect("files") {
        let name = unhex(f["name_hex"].as_str().unwrap());
        if f["type"] == "file" {
            files.insert(
                name.clone(),
                (
                    f["sha256"].as_str().unwrap().to_string(),
                    f["size"].as_u64().unwrap(),
                ),
            );
        }
        all.insert(name);
    }
    let hard_links = fx.meta["hard_links"]
        .as_array()
        .expect("hard_links")
        .iter()
        .map(|g| {
            g.as_array()
                .unwrap()
                .iter()
                .map(|n| unhex(n.as_str().unwrap()))
                .collect()
        })
        .collect();
    Source {
        files,
        all,
        hard_links,
    }
}

/// The multiplexed part of a client stream, normalised: consecutive MSG_DATA
/// payloads joined, other messages kept. (Used only to explain a mismatch.)
fn describe_mismatch(want: &[u8], got: &[u8]) -> String {
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let lo = at.saturating_sub(16);
    format!(
        "client bytes differ at offset {at} (recorded {} bytes, session wrote {}):\n  recorded …{}\n  session  …{}",
        want.len(),
        got.len(),
        hex(&want[lo..want.len().min(at + 24)]),
        hex(&got[lo..got.len().min(at + 24)])
    )
}

/// Every check for one replay; returns the problems found.
fn check(fx: &Fixture, src: &Source, t: &Transcript, chunking: &[usize]) -> Vec<String> {
    let mut bad = Vec::new();
    let tag = format!("{} chunks {chunking:?}", fx.name);
    if let Some(f) = &t.failure {
        bad.push(format!(
            "{tag}: session failed after {} of {} bytes: {f:?}",
            t.fed,
            fx.server.len()
        ));
        return bad;
    }
    if !t.finished {
        bad.push(format!("{tag}: session did not end with Event::Finished"));
    }
    if t.output != fx.client {
        bad.push(format!(
            "{tag}: {}",
            describe_mismatch(&fx.client, &t.output)
        ));
    }
    match t.negotiated {
        None => bad.push(format!("{tag}: no Event::Negotiated")),
        Some(n) => {
            if n.protocol != fx.protocol {
                bad.push(format!(
                    "{tag}: negotiated protocol {} (recorded with {})",
                    n.protocol, fx.protocol
                ));
            }
            if (n.compression != Compression::None) != fx.compress {
                bad.push(format!(
                    "{tag}: compression {:?} but the fixture compress={}",
                    n.compression, fx.compress
                ));
            }
        }
    }
    if t.phases_ended != [0, 1] {
        bad.push(format!(
            "{tag}: phases ended {:?}, want [0, 1]",
            t.phases_ended
        ));
    }
    if t.stats.is_none() {
        bad.push(format!("{tag}: no server statistics"));
    }
    if !t.no_send.is_empty() {
        bad.push(format!("{tag}: server declined {:?}", t.no_send));
    }
    for (kind, text) in &t.messages {
        bad.push(format!(
            "{tag}: unexpected server message {kind:?}: {}",
            String::from_utf8_lossy(text)
        ));
    }
    let Some(list) = &t.list else {
        bad.push(format!("{tag}: no file list"));
        return bad;
    };
    // The list names exactly the source tree (plus "." for the root).
    let names: BTreeSet<Vec<u8>> = list
        .entries
        .iter()
        .flatten()
        .map(|e| e.name.to_vec())
        .filter(|n| n != b".")
        .collect();
    if names != src.all {
        bad.push(format!(
            "{tag}: file list names {names:?}, source has {:?}",
            src.all
        ));
    }
    // Requests: every regular file but hard-link followers, in index order.
    let mut want_req = Vec::new();
    let mut seen_groups: Vec<usize> = Vec::new();
    for (i, e) in list.entries.iter().enumerate() {
        let Some(e) = e else { continue };
        if !e.is_reg() {
            continue;
        }
        let group = src.hard_links.iter().position(|g| g.contains(&e.name.to_vec()));
        if let Some(g) = group {
            if seen_groups.contains(&g) {
                continue;
            }
            seen_groups.push(g);
        }
        want_req.push(list.ndx_start + i as i32);
    }
    if t.requested != want_req {
        bad.push(format!(
            "{tag}: requested {:?}, want {want_req:?}",
            t.requested
        ));
    }
    let got: Vec<i32> = t.files.iter().map(|f| f.ndx).collect();
    if got != t.requested {
        bad.push(format!(
            "{tag}: received {got:?}, requested {:?}",
            t.requested
        ));
    }
    // Each file: the sender's checksum, our checksum and the source content agree.
    for f in &t.files {
        let Some(Some(e)) = list.entries.get((f.ndx - list.ndx_start) as usize) else {
            bad.push(format!("{tag}: received index {} outside the list", f.ndx));
            continue;
        };
        let shown = String::from_utf8_lossy(&e.name);
        if f.sender_sum != f.computed_sum {
            bad.push(format!(
                "{tag}: {shown}: whole-file checksum {} from the sender, {} computed",
                hex(&f.sender_sum),
                hex(&f.computed_sum)
            ));
        }
        match src.files.get(e.name.as_bytes()) {
            None => bad.push(format!(
                "{tag}: {shown} is not a regular file in the source"
            )),
            Some((sha, size)) => {
                let got = hex(&Sha256::digest(&f.data));
                if &got != sha || f.data.len() as u64 != *size {
                    bad.push(format!(
                        "{tag}: {shown}: {} bytes sha256 {got}, source {size} bytes {sha}",
                        f.data.len()
                    ));
                }
                if e.size as u64 != *size {
                    bad.push(format!(
                        "{tag}: {shown}: file list says {} bytes, source {size}",
                        e.size
                    ));
                }
            }
        }
    }
    bad
}

#[test]
fn replays_every_fixture() {
    let dirs = fixture_dirs();
    assert!(
        !dirs.is_empty(),
        "protocol-fixtures/ holds no fixtures: run scripts/record-fixtures"
    );
    let names: BTreeSet<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let missing: Vec<_> = expected_fixture_names()
        .difference(&names)
        .cloned()
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "fixtures missing from protocol-fixtures/: {missing:?}"
        ));
    }
    let mut replayed = BTreeSet::new();
    for dir in &dirs {
        let fx = match load(dir) {
            Ok(f) => f,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let src = source(&fx);
        if src.files.is_empty() {
            problems.push(format!("{}: meta.json lists no files", fx.name));
        }
        // Byte at a time first: that pass also finds the causal barriers.
        let (bytewise, barriers) = causal_barriers(config(&fx), &fx.server, true);
        problems.extend(check(&fx, &src, &bytewise, &[1]));
        let mut runs = vec![bytewise];
        for chunking in CHUNKINGS {
            let t = drive_empty_dest(config(&fx), &fx.server, chunking, &barriers, true);
            problems.extend(check(&fx, &src, &t, chunking));
            runs.push(t);
        }
        // Nothing observable may depend on the chunking.
        for t in &runs[1..] {
            if t.files != runs[0].files || t.list != runs[0].list || t.output != runs[0].output {
                problems.push(format!(
                    "{}: the replay result depends on how server.bin is chunked",
                    fx.name
                ));
                break;
            }
        }
        replayed.insert(fx.name.clone());
    }
    let never: Vec<_> = names.difference(&replayed).collect();
    if !never.is_empty() {
        problems.push(format!("fixture directories never replayed: {never:?}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(replayed.len(), dirs.len());
}

/// Cheap deterministic PRNG (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn run_guarded(
    fx: &Fixture,
    input: &[u8],
    chunking: &[usize],
    barriers: &[usize],
) -> Result<Transcript, String> {
    catch_unwind(AssertUnwindSafe(|| {
        drive_empty_dest(config(fx), input, chunking, barriers, true)
    }))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Offsets to cut at: every byte of the first 2 KiB (handshake, negotiation,
/// file list), ~250 spread over the rest, and the last 64 bytes (goodbye).
fn cut_points(len: usize, rng: &mut Rng) -> Vec<usize> {
    let mut v: BTreeSet<usize> = (0..len.min(2048)).collect();
    v.extend(len.saturating_sub(64)..len);
    for _ in 0..250 {
        v.insert((rng.next() % len as u64) as usize);
    }
    v.into_iter().collect()
}

#[test]
fn truncated_recordings_fail_cleanly() {
    let mut problems = Vec::new();
    let mut cuts = 0usize;
    for dir in fixture_dirs() {
        let fx = load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (_, barriers) = causal_barriers(config(&fx), &fx.server, true);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ fx.server.len() as u64);
        for cut in cut_points(fx.server.len(), &mut rng) {
            cuts += 1;
            match run_guarded(&fx, &fx.server[..cut], &[4096], &barriers) {
                Err(panic) => problems.push(format!(
                    "{}: PANIC with server.bin cut at {cut}: {panic}",
                    fx.name
                )),
                Ok(t) => {
                    if t.finished {
                        problems.push(format!(
                            "{}: cut at {cut} of {} still reported Finished",
                            fx.name,
                            fx.server.len()
                        ));
                    }
                    match &t.failure {
                        Some(Failure::Session(_)) => {}
                        Some(Failure::Engine(e)) => problems.push(format!(
                            "{}: cut at {cut}: engine-side failure instead of a session error: {e}",
                            fx.name
                        )),
                        None => problems.push(format!(
                            "{}: cut at {cut}: EOF mid-session gave no error",
                            fx.name
                        )),
                    }
                }
            }
        }
    }
    assert!(cuts > 1000);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn corrupted_recordings_never_panic() {
    let mut panics = Vec::new();
    let mut runs = 0usize;
    for dir in fixture_dirs() {
        let fx = load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (_, barriers) = causal_barriers(config(&fx), &fx.server, true);
        let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ fx.server.len() as u64);
        // Every byte of the handshake and file-list region, then random spots.
        let mut spots: Vec<usize> = (0..fx.server.len().min(1024)).collect();
        for _ in 0..200 {
            spots.push((rng.next() % fx.server.len() as u64) as usize);
        }
        let mut buf = fx.server.clone();
        for at in spots {
            let flip = (rng.next() % 255 + 1) as u8;
            buf[at] ^= flip;
            runs += 1;
            if let Err(p) = run_guarded(&fx, &buf, &[4096], &barriers) {
                panics.push(format!(
                    "{}: PANIC with byte {at} ^= 0x{flip:02x}: {p}",
                    fx.name
                ));
            }
            buf[at] ^= flip;
        }
        // A few multi-byte corruptions: overwrite a whole mux header.
        for _ in 0..50 {
            let at = (rng.next() % fx.server.len() as u64) as usize;
            let mut b = fx.server.clone();
            for x in b.iter_mut().skip(at).take(4) {
                *x = rng.next() as u8;
            }
            runs += 1;
            if let Err(p) = run_guarded(&fx, &b, &[4096], &barriers) {
                panics.push(format!(
                    "{}: PANIC with 4 random bytes at {at}: {p}",
                    fx.name
                ));
            }
        }
    }
    assert!(runs > 1000);
    assert!(
        panics.is_empty(),
        "{} panic(s):\n{}",
        panics.len(),
        panics.join("\n")
    );
}

/// The end of a transfer costs no round trips beyond rsync's own client:
/// our final NDX_DONE ("goodbye", main.c client_run) leaves with the last
/// phase end, before the server's statistics, and once the server's last
/// word is in (its statistics; from protocol 31 also its echo of the
/// goodbye, which we answer) the session is over without waiting for the
/// server to close. Both used to cost a round trip each: 100 ms on a 50 ms
/// link.
#[test]
fn the_goodbye_leaves_early_and_the_end_needs_no_eof() {
    for dir in fixture_dirs() {
        let fx = load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let (_, barriers) = causal_barriers(config(&fx), &fx.server, true);
        let t = drive_empty_dest(config(&fx), &fx.server, &[4096], &barriers, false);
        assert!(t.failure.is_none(), "{}: {:?}", fx.name, t.failure);
        assert!(t.finished, "{}: the session still waits for the server to close", fx.name);
        assert_eq!(t.output, fx.client, "{}", fx.name);
        let at = t.output_at_stats.unwrap_or_else(|| panic!("{}: no statistics", fx.name));
        // Written after the statistics arrived: only the answer to the echo.
        let want: &[u8] = if fx.protocol >= 31 { &[1, 0, 0, 7, 0] } else { &[] };
        assert_eq!(&t.output[at..], want, "{}: written after the statistics", fx.name);
    }
}

/// The recorded client stream is well-formed on its own: after the text
/// handshake it is MSG_DATA frames only (protocol ≥ 30), ending with the
/// goodbye NDX_DONEs.
#[test]
fn recorded_client_streams_are_well_formed() {
    for dir in fixture_dirs() {
        let fx = load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let greeting_end = fx
            .client
            .iter()
            .position(|&b| b == b'\n')
            .expect("greeting line")
            + 1;
        assert!(
            fx.client
                .starts_with(format!("@RSYNCD: {}.0 ", fx.protocol).as_bytes()),
            "{}",
            fx.name
        );
        assert!(greeting_end < fx.client.len());
        if fx.protocol >= 30 {
            // The last frame is the final NDX_DONE (one zero byte).
            let tail = &fx.client[fx.client.len() - 5..];
            assert_eq!(
                mux::parse_header(tail).ok(),
                Some(mux::FrameHeader {
                    code: mux::MSG_DATA,
                    len: 1
                }),
                "{}",
                fx.name
            );
            assert_eq!(tail[4], 0, "{}", fx.name);
        } else {
            assert_eq!(
                &fx.client[fx.client.len() - 4..],
                &(-1i32).to_le_bytes(),
                "{}",
                fx.name
            );
        }
    }
}
