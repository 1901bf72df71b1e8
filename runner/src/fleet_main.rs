//! `fleet`: see `runner::runtime`.

fn main() -> std::process::ExitCode {
    runner::runtime::main()
}
