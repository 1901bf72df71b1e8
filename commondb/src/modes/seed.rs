//! `--self-seed N --run ID`: the rows the first N sample requests of a run need (for runmany),
//! written as the database's owner.

use std::fmt;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::Settings;
use crate::db::{self, Target};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::run::{Drivers, block_on};
use crate::task::Task;

/// What the seed wrote, for people and for `--json`.
#[derive(Debug, Serialize)]
struct SeedReport {
    /// Where (without credentials).
    database: String,
    /// The run the samples belong to.
    run: String,
    /// How many samples the rows are for.
    samples: u64,
    /// How many rows were written.
    rows: u64,
}

impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows == 0 {
            return write!(f, "nothing to seed: the samples need no rows");
        }
        write!(
            f,
            "seeded {} row(s) into {} for samples 0 to {} of run {}",
            self.rows,
            self.database,
            self.samples.saturating_sub(1),
            self.run
        )
    }
}

/// Writes the rows samples `0..count` of `run` need, if the task's samples need any.
pub(super) fn run<T: Task>(
    count: u64,
    run: Option<String>,
    settings: &Settings,
    out: &Output,
) -> Result<ExitCode> {
    let run = run.ok_or_else(|| {
        Error::usage("--self-seed needs --run ID: the run whose samples will need the rows")
            .hint("runmany passes it; by hand, use the ID given to --self-samples")
    })?;
    let target = Target::of::<T>(settings)?;
    let rows = if T::SEEDS && count > 0 {
        block_on(Drivers::Io, db::seed::<T>(&target, &run, count))?
    } else {
        0
    };
    out.result(&SeedReport {
        database: target.location.to_string(),
        run,
        samples: count,
        rows,
    });
    Ok(ExitCode::SUCCESS)
}
