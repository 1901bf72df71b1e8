//! `commondb` turns a short task definition into a self-contained multi-mode executable.
//!
//! An executable defines one [`Task`] (its name, verb, arguments, migrations, validation,
//! handler, sample request and self-test cases) and calls [`main`]. It then has the task mode
//! (`create-user --create …`), `--self-setup`, `--self-test`, `--self-backup`, `--self-restore`,
//! `--self-cleanup` and `--serve` (the same task as a socket service), layered
//! configuration, private secrets files, a documented exit-code contract, and the embedded
//! SQLite database that needs no setup at all.
//!
//! `commondb` is not an ORM and not a server framework: a task writes its own SQL, through the
//! small [`Tx`] API, and runs inside one transaction per request.

pub mod backup;
mod cli;
pub mod config;
mod db;
pub mod error;
mod interrupt;
mod modes;
mod output;
mod perf;
pub mod protocol;
mod run;
pub mod secrets;
mod selftest;
mod serve;
mod stream;
mod task;
#[cfg(test)]
mod testing;

pub use db::{Backend, Migrations, Param, Params, Record, Tx};
pub use error::{Error, ErrorKind, Result};
pub use run::main;
pub use serve::login as brokers;
pub use serve::tls;
pub use stream::{MAX_SERVED_ROWS, Row};
pub use task::{Case, Context, Grant, Repeat, Right, Task, default_port};

/// The `sqlx` this crate is built on, for `sqlx::migrate!` and `#[derive(sqlx::FromRow)]`.
pub use sqlx;
