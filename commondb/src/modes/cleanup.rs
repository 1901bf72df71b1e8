//! `--self-cleanup`: remove what setup made, after asking (or `--yes`).

use std::process::ExitCode;

use crate::config::Settings;
use crate::db::{Target, cleanup};
use crate::error::Result;
use crate::interrupt;
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// Shows what would go, asks unless `yes`, cleans up and prints the report.
pub(super) fn run<T: Task>(yes: bool, settings: &Settings, out: &Output) -> Result<ExitCode> {
    let target = Target::of::<T>(settings)?;
    let plan = cleanup::plan(&target)?;
    if !plan.is_empty() && !yes {
        let mut text = String::from("This removes (backups are kept):");
        for item in &plan {
            text.push_str(&format!("\n  {item}"));
        }
        super::confirm(
            "--self-cleanup removes the database",
            &text,
            "Remove them?",
            "cleanup cancelled: nothing was removed",
        )?;
    }
    out.result(&block_on(
        Drivers::Io,
        interrupt::guard(
            "run --self-cleanup again to finish it",
            cleanup::run(&target),
        ),
    )?);
    Ok(ExitCode::SUCCESS)
}
