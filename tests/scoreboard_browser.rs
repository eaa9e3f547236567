//! The `rmirror run` HTML scoreboard in a real browser: `rmirror run --once`
//! against a real rsync daemon writes `status.html`; headless Chromium
//! (Debian's `chromium`, installed by `scripts/test` when missing) renders it,
//! the test asserts on the rendered DOM (job names, results, lag, no injected
//! markup) and keeps a screenshot in `target/test-artifacts/scoreboard.png`.
//! The same for iim's HTML scoreboard (`scoreboard_file x.html`), written by
//! `rmirror iim` after its loops. Without a Chromium the tests print
//! `SKIPPED` with the reason and pass, unless `RMIRROR_REQUIRE_CHROMIUM=1`
//! (which `scripts/test` sets once it has installed chromium): then a
//! missing or failing browser fails them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, tree, Rsyncd, TestDir};

/// Skip (print why and return true) or, under RMIRROR_REQUIRE_CHROMIUM=1, fail.
fn skip(test: &str, why: &str) -> bool {
    if std::env::var_os("RMIRROR_REQUIRE_CHROMIUM").is_some_and(|v| v == "1") {
        panic!("{test}: {why} (RMIRROR_REQUIRE_CHROMIUM=1)");
    }
    eprintln!("SKIPPED {test}: {why}");
    true
}

fn find_chromium() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err("no chromium on PATH (scripts/test installs Debian's `chromium`; or set CHROMIUM=/path)".into())
}

/// Run chromium headless with a time limit; stdout and stderr collected.
fn chromium(bin: &Path, profile: &Path, extra: &[String], url: &str) -> Result<Output, String> {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
            Err("chromium did not finish in 90 s".into())
        }
    }
}

fn artifacts_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target>/tmp.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("target"));
    let d = target.join("test-artifacts");
    std::fs::create_dir_all(&d).expect("create target/test-artifacts");
    d
}

/// Width and height from a PNG's IHDR.
fn png_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.len() < 24 || &data[..8] != b"\x89PNG\r\n\x1a\n" || &data[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&data[16..20]), be(&data[20..24])))
}

#[test]
fn scoreboard_renders_in_headless_chromium() {
    let bin = match find_chromium() {
        Ok(b) => b,
        Err(why) => {
            skip("scoreboard_renders_in_headless_chromium", &why);
            return;
        }
    };
    // A real run: two good jobs, one whose upstream refuses connections, and a
    // job name and upstream text full of markup that must arrive as text.
    let src = TestDir::new("board-src");
    tree::TreeSpec::new().file("README", "hi\n").random_file("pool/a.deb", 50_000, 3).write(src.path());
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let work = TestDir::new("board-work");
    let dead = free_port();
    // (job names may hold no spaces or '/', so no closing tags; the rest is enough)
    let evil = "evil<b>x<i>y&amp;<script>";
    let cfg = work.join("mirrors.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"state\"\n\
             [[job]]\nname = \"cpan\"\ndestination = \"dest/cpan\"\nupstream = \"{u}\"\n\
             [[job]]\nname = \"debian-security\"\ndestination = \"dest/deb\"\nupstream = \"{u}\"\n\
             [[job]]\nname = \"broken\"\ndestination = \"dest/broken\"\nupstream = \"rsync://127.0.0.1:{dead}/pub/\"\ncontimeout = \"5s\"\n\
             [[job]]\nname = \"{evil}\"\ndestination = \"dest/evil\"\nupstream = \"{u}\"\n",
            u = d.url("pub")
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .args(["run", "--once", "-c", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .expect("run rmirror");
    let page = work.join("state/status.html");
    assert!(page.is_file(), "no status.html; rmirror run said:\n{}", String::from_utf8_lossy(&o.stderr));
    let url = format!("file://{}", page.display());

    let profile = TestDir::new("board-chromium");
    let t0 = Instant::now();
    let dom = match chromium(&bin, profile.path(), &["--dump-dom".into()], &url) {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            skip(
                "scoreboard_renders_in_headless_chromium",
                &format!(
                    "{} --dump-dom failed ({}): {}",
                    bin.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join(" | ")
                ),
            );
            return;
        }
        Err(why) => {
            skip("scoreboard_renders_in_headless_chromium", &why);
            return;
        }
    };
    eprintln!("chromium --dump-dom took {:?}", t0.elapsed());

    // What the browser shows.
    for (job, result) in [("cpan", "ok"), ("debian-security", "ok"), ("broken", "failed")] {
        assert!(dom.contains(&format!("<td class=\"name\">{job}</td>")), "{job} not shown:\n{dom}");
        let row_start = dom.find(&format!("data-job=\"{job}\"")).unwrap();
        let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").unwrap()];
        assert!(row.contains(&format!("<span class=\"badge {result}\">{result}</span>")), "{job}: result {result}:\n{row}");
        if result == "ok" {
            // Lag: seconds since the successful run started, rendered like `3s`.
            let lag = row.split("<td class=\"lag\">").nth(1).and_then(|r| r.split("</td>").next()).unwrap_or("");
            assert!(lag.ends_with('s') && lag[..lag.len() - 1].trim().parse::<u64>().is_ok_and(|n| n < 120), "{job}: lag {lag:?}");
            assert!(row.contains("data-lag-seconds=\""), "{job}");
        } else {
            assert!(row.contains("<td class=\"lag\">—</td>"), "never synced: no lag:\n{row}");
            assert!(dom.contains("Connection refused") || dom.contains("connect"), "the failure's reason is shown");
        }
    }
    assert!(dom.contains("1 failed"), "summary line");
    // The markup in the job name is text, not elements: no script ran, no <b> exists.
    assert!(dom.contains("<td class=\"name\">evil&lt;b&gt;x&lt;i&gt;y&amp;amp;&lt;script&gt;</td>"), "escaped name:\n{dom}");
    assert!(!dom.contains("<b>x") && !dom.contains("<i>y") && !dom.contains("<script"));
    assert!(dom.contains("<title>rmirror mirrors</title>"));

    // The screenshot, kept as an artifact.
    let shot = artifacts_dir().join("scoreboard.png");
    let _ = std::fs::remove_file(&shot);
    let r = chromium(
        &bin,
        profile.path(),
        &[format!("--screenshot={}", shot.display()), "--window-size=1280,480".into()],
        &url,
    );
    let data = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {} ({e}); chromium: {r:?}", shot.display()));
    let (w, h) = png_size(&data).expect("a PNG");
    assert_eq!((w, h), (1280, 480));
    assert!(data.len() > 10_000, "screenshot suspiciously small ({} bytes)", data.len());
    eprintln!("screenshot: {}", shot.display());
}

/// iim's HTML scoreboard: `rmirror iim` with an iim.conf naming an `.html`
/// scoreboard mirrors a real rsync daemon for a few loops (the first a full
/// sync), then stops at `max_run_time`; Chromium renders the page.
#[test]
fn iim_scoreboard_renders_in_headless_chromium() {
    const T: &str = "iim_scoreboard_renders_in_headless_chromium";
    let bin = match find_chromium() {
        Ok(b) => b,
        Err(why) => {
            skip(T, &why);
            return;
        }
    };
    let src = TestDir::new("iimboard-src");
    let mut spec = tree::TreeSpec::new();
    for i in 0..12 {
        spec = spec.file(&format!("authors/id/A/AU/AUTHOR/Dist-{i}.tar.gz"), &format!("dist {i}\n"));
    }
    spec.write(src.path());
    let mut prod = support::recent_producer::Producer::new(src.path());
    for i in 0..12 {
        prod.record(&format!("authors/id/A/AU/AUTHOR/Dist-{i}.tar.gz"), true);
    }
    prod.publish();
    let d = Rsyncd::builder().module("pub", src.path()).start();
    let work = TestDir::new("iimboard-work");
    std::fs::write(
        work.join("iim.conf"),
        format!(
            "local CPAN\nremote {}\nsleep_main_loop 1\nmax_run_time 4s\nallow_full_syncs yes\nscoreboard_file board.html\nscoreboard_file board.json\n",
            d.url("pub")
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_rmirror"))
        .current_dir(work.path())
        .args(["iim", "-q", "-c", "iim.conf"])
        .stdin(Stdio::null())
        .output()
        .expect("run rmirror iim");
    let page = work.join("board.html");
    assert!(page.is_file(), "no board.html; rmirror iim said:\n{}", String::from_utf8_lossy(&o.stderr));
    let board: serde_json::Value = serde_json::from_slice(&std::fs::read(work.join("board.json")).unwrap()).unwrap();
    let loops = board["loops"].as_u64().expect("loops in board.json");
    assert!(loops >= 2, "{board:#}");
    support::oracle::assert_clean(&d.url("pub"), &work.join("CPAN"));

    let url = format!("file://{}", page.display());
    let profile = TestDir::new("iimboard-chromium");
    let dom = match chromium(&bin, profile.path(), &["--dump-dom".into()], &url) {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            skip(T, &format!("--dump-dom failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).lines().take(5).collect::<Vec<_>>().join(" | ")));
            return;
        }
        Err(why) => {
            skip(T, &why);
            return;
        }
    };
    // What the browser shows: the loop count, one full sync, what it fetched,
    // and the upstream it mirrors — the same numbers as the JSON board.
    assert!(dom.contains(&format!("<tr><th>loops</th><td>{loops}</td></tr>")), "loops {loops}:\n{dom}");
    assert!(dom.contains("<tr><th>full syncs</th><td>1</td></tr>"), "full syncs:\n{dom}");
    let fetched = board["fetched"].as_u64().expect("fetched");
    assert!(fetched >= 12, "{board:#}");
    assert!(dom.contains(&format!("<tr><th>files fetched</th><td>{fetched}</td></tr>")), "fetched {fetched}:\n{dom}");
    assert!(dom.contains(&d.url("pub")), "remote not shown:\n{dom}");
    assert!(!dom.contains("<script"), "no script in the page");

    let shot = artifacts_dir().join("iim-scoreboard.png");
    let _ = std::fs::remove_file(&shot);
    let r = chromium(&bin, profile.path(), &[format!("--screenshot={}", shot.display()), "--window-size=1024,640".into()], &url);
    let data = std::fs::read(&shot).unwrap_or_else(|e| panic!("no screenshot at {} ({e}); chromium: {r:?}", shot.display()));
    assert_eq!(png_size(&data), Some((1024, 640)));
    assert!(data.len() > 5_000, "screenshot suspiciously small ({} bytes)", data.len());
    eprintln!("screenshot: {}", shot.display());
}
