//! `--self-test`: the executable's own checks on a throwaway database.

use std::process::ExitCode;

use crate::config::Settings;
use crate::error::{ErrorKind, Result};
use crate::output::Output;
use crate::selftest;
use crate::task::Task;

/// Runs the self-test and prints its report; exit 1 if a check failed.
pub(super) fn run<T: Task>(settings: &Settings, out: &Output) -> Result<ExitCode> {
    let report = selftest::run::<T>(settings, out)?;
    if out.json() {
        out.result(&report);
    } else {
        println!("{report}");
    }
    if report.failed > 0 {
        return Ok(ExitCode::from(ErrorKind::Failed.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}
