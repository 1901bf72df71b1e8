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
    let listen = &settings.serve.listen;
    let mut plan = cleanup::plan(&target)?;
    plan.extend(crate::serve::broker_plan(listen, T::NAME)?);
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
    let brokers = crate::serve::login::BrokerSecrets::of(&target);
    let cleanup = async {
        let mut report = cleanup::run(&target).await?;
        report
            .dropped
            .extend(crate::serve::clean_up_brokers(listen, T::NAME, &brokers).await?);
        Ok(report)
    };
    out.result(&block_on(
        Drivers::Io,
        interrupt::guard("run --self-cleanup again to finish it", cleanup),
    )?);
    Ok(ExitCode::SUCCESS)
}
