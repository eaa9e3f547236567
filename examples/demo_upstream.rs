//! The changing upstream of `scripts/demo`: a small CPAN-like tree that keeps
//! changing (uploads, new versions, deletions) and publishes RECENT files the
//! way PAUSE does (File::Rsync::Mirror::Recent format, via
//! `rmirror::publish::recent`).
//!
//! ```text
//! cargo run --example demo_upstream -- DIR [SECONDS] [CHANGE_EVERY_SECS]
//! ```
//!
//! Writes the tree into DIR, then changes it every CHANGE_EVERY_SECS (default
//! 3) for SECONDS (default 3600), or until killed.

use std::path::Path;
use std::time::{Duration, Instant};

use rmirror::publish::recent::{now_quanta, RecentLog, DEFAULT_CHAIN};

const WORDS: [&str; 16] =
    ["Foo", "Bar", "Net", "HTTP", "Tiny", "XML", "JSON", "DBI", "Moose", "Test", "Data", "App", "Mojo", "Path", "File", "Time"];

/// xorshift64*: deterministic, no dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn author(rng: &mut Rng) -> String {
    let len = 4 + rng.below(5) as usize;
    (0..len).map(|_| (b'A' + rng.below(26) as u8) as char).collect()
}

fn author_dir(id: &str) -> String {
    format!("authors/id/{}/{}/{id}", &id[..1], &id[..2])
}

/// Write a file atomically (temp + rename), as an archive's uploader does.
fn put(root: &Path, rel: &str, data: &[u8]) -> std::io::Result<()> {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap_or(root))?;
    let tmp = p.with_file_name(format!(".upload-{}", p.file_name().unwrap_or_default().to_string_lossy()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &p)
}

fn tarball(rng: &mut Rng, name: &str) -> Vec<u8> {
    let size = 2_000 + rng.below(30_000) as usize;
    let mut v = format!("{name}\n").into_bytes();
    while v.len() < size {
        v.extend_from_slice(&rng.next().to_le_bytes());
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(root) = args.get(1) else {
        eprintln!("usage: demo_upstream DIR [SECONDS] [CHANGE_EVERY_SECS]");
        std::process::exit(2);
    };
    let root = Path::new(root);
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3600);
    let every: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    std::fs::create_dir_all(root)?;
    let mut rng = Rng(0x5eed_cafe ^ u64::from(std::process::id()));
    let mut log = RecentLog::new(&DEFAULT_CHAIN, now_quanta()).map_err(|e| e.to_string())?;
    log.producer = "demo_upstream".into();

    // the initial tree: 40 authors, 150 distributions, an index
    let authors: Vec<String> = (0..40).map(|_| author(&mut rng)).collect();
    let mut dists: Vec<String> = Vec::new();
    for k in 0..150 {
        let a = &authors[k % authors.len()];
        let name = format!(
            "{}-{}-{}.{:02}.tar.gz",
            WORDS[rng.below(16) as usize],
            WORDS[rng.below(16) as usize],
            rng.below(4),
            rng.below(100)
        );
        let rel = format!("{}/{name}", author_dir(a));
        put(root, &rel, &tarball(&mut rng, &rel))?;
        log.record(&rel, true, now_quanta());
        dists.push(rel);
    }
    let index = "modules/02packages.details.txt";
    put(root, index, format!("File: 02packages.details.txt\nLine-Count: {}\n", dists.len()).as_bytes())?;
    log.record(index, true, now_quanta());
    log.publish(root, now_quanta())?;
    println!("demo upstream: {} files in {}, changing every {every}s", dists.len() + 1, root.display());

    let end = Instant::now() + Duration::from_secs(seconds);
    let mut round = 0u64;
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs_f64(every));
        round += 1;
        // an upload of a new version, sometimes a new author, sometimes a deletion
        let a = if rng.below(4) == 0 { author(&mut rng) } else { authors[rng.below(authors.len() as u64) as usize].clone() };
        let rel = format!("{}/{}-Demo-{round}.{:02}.tar.gz", author_dir(&a), WORDS[rng.below(16) as usize], rng.below(100));
        put(root, &rel, &tarball(&mut rng, &rel))?;
        log.record(&rel, true, now_quanta());
        dists.push(rel);
        if round % 3 == 0 && dists.len() > 10 {
            let victim = dists.remove(rng.below(dists.len() as u64) as usize);
            if std::fs::remove_file(root.join(&victim)).is_ok() {
                log.record(&victim, false, now_quanta());
            }
        }
        put(root, index, format!("File: 02packages.details.txt\nLine-Count: {}\nRound: {round}\n", dists.len()).as_bytes())?;
        log.record(index, true, now_quanta());
        log.publish(root, now_quanta())?;
    }
    Ok(())
}
