//! `runmany`: see the `runner` crate.

fn main() -> std::process::ExitCode {
    runner::main()
}
