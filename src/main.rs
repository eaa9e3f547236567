fn main() {
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
