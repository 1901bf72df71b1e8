//! `--self-status`: where the database is and how its schema compares, read-only.

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::{Target, status};
use crate::error::Result;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Prints the report; exits with the code of what is wrong, if something is.
pub(super) fn run<T: Task>(settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    let report = block_on(
        Drivers::for_target(&target),
        status::run(&target, T::MIGRATIONS),
    )?;
    out.result(&report);
    if let Some(kind) = report.failure() {
        out.note(format_args!("{}: {}", kind, report.advice()));
        return Ok(ExitCode::from(kind.exit_code()));
    }
    Ok(ExitCode::SUCCESS)
}
