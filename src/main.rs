fn main() {
    limit_malloc_arenas();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Run as `iim` (e.g. through a symlink): iim's own command line.
    let as_iim = args.first().and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|n| n == "iim");
    let code = if as_iim {
        rmirror::cli::iim_main(args.into_iter().skip(1).collect())
    } else {
        rmirror::cli::main_with_args(args)
    };
    std::process::exit(code);
}

/// glibc gives each thread that allocates an arena of its own; rmirror's
/// threads (reactor, generator, receiver) hand buffers to one another, so
/// per-thread arenas only add resident pages (about 1 MB of a 13 MB peak on
/// a fresh pull). Two arenas keep contention negligible for so few threads.
/// Called before any thread exists; `MALLOC_ARENA_MAX` in the environment
/// still wins, as glibc reads it first.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; no thread has
        // been started yet, and a rejected value leaves the default.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
