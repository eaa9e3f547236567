fn main() {
    let code = rmirror::cli::main_with_args(std::env::args_os().collect());
    std::process::exit(code);
}
