//! The `repx` command.

fn main() {
    let code = repx::cli::main();
    std::process::exit(code);
}
