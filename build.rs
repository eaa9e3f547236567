//! Release builds on Linux link with `link/hot-text.ld`, which puts the
//! functions a sync runs (a list `scripts/hot-text` generates from
//! callgrind profiles) together at the front of `.text`.
//!
//! Why: the kernel maps executable pages 64 KiB at a time around each page
//! fault, so scattered hot code drags its cold neighbours into the resident
//! set. Packed together, rmirror's resident code went from ~3.9 MB to
//! ~1.5 MB (peak RSS of a 500 MB delta update −2.4 MiB; README § Speed).
//! The script only orders sections (`INSERT BEFORE .text` keeps the default
//! layout otherwise): a stale list costs memory, never correctness.
//! `RMIRROR_NO_HOT_TEXT=1` builds without it.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=link/hot-text.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RMIRROR_NO_HOT_TEXT");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let script = Path::new(&var("CARGO_MANIFEST_DIR")).join("link").join("hot-text.ld");
    let wanted = var("PROFILE") == "release"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && std::env::var_os("RMIRROR_NO_HOT_TEXT").map_or(true, |v| v.is_empty() || v == "0");
    // A path the linker would split (-Wl, separates on commas) is skipped.
    match script.to_str() {
        Some(p) if wanted && script.is_file() && !p.contains(',') => {
            println!("cargo:rustc-link-arg-bin=rmirror=-Wl,-T,{p}");
        }
        _ => {}
    }
}
