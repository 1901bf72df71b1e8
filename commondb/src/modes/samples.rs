//! `--self-samples N`: the task's first N sample requests, one JSON line each (for runmany).

use std::io::Write;
use std::process::ExitCode;

use crate::error::Result;
use crate::selftest;
use crate::serve;
use crate::task::Task;

/// Prints `count` samples of run `run` (default: a new run id); a closed pipe ends the list.
pub(super) fn run<T: Task>(count: u64, run: Option<String>) -> Result<ExitCode> {
    let run = run.unwrap_or_else(selftest::run_id);
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    for n in 0..count {
        let line = serve::sample_line::<T>(n, &run)?;
        if writeln!(stdout, "{line}").is_err() {
            break; // a closed pipe (| head) ends the list
        }
    }
    let _ = stdout.flush();
    Ok(ExitCode::SUCCESS)
}
