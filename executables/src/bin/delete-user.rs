//! `delete-user`: removes a user and their sessions, or fails with `not_found`. Its role may
//! read and delete rows of `users` and `sessions`, and nothing else.

use commondb::{Case, Context, ErrorKind, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::accounts::{self, Deleted, UsernameArgs};
use executables::users::{self, Username};

struct DeleteUser;

impl Task for DeleteUser {
    const NAME: &'static str = "delete-user";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Delete a user account and its sessions";
    const VERB: &'static str = "delete";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const SEEDS: bool = true;
    const GRANTS: &'static [Grant] = &[
        Grant::on("users", &[Right::Select, Right::Delete]),
        Grant::on("sessions", &[Right::Select, Right::Delete]),
    ];
    type Args = UsernameArgs;
    type Request = Username;
    type Output = Deleted;
    type Settings = ();

    fn prepare(args: UsernameArgs, _: &mut Context<'_, ()>) -> Result<Username> {
        Username::parse(&args.username)
    }

    async fn execute(tx: &mut Tx<'_>, username: Username) -> Result<Deleted> {
        accounts::delete(tx, username).await
    }

    async fn seed(tx: &mut Tx<'_>, run: &str, count: u64) -> Result<u64> {
        accounts::seed(tx, run, count, false).await
    }

    fn sample(n: u64, run: &str) -> UsernameArgs {
        UsernameArgs::new(&accounts::sample_username(n, run))
    }

    fn invalid_sample() -> UsernameArgs {
        UsernameArgs::new("Not A Name")
    }

    fn on_repeat() -> Repeat {
        Repeat::NotFound
    }

    fn cases() -> Vec<Case<UsernameArgs>> {
        vec![
            Case::new(
                "a user is deleted with their sessions, and no one else's",
                UsernameArgs::new("dora"),
            )
            .given(
                "INSERT INTO users (username, email, created_at) \
                 VALUES ('dora', 'dora@example.com', CURRENT_TIMESTAMP)",
            )
            .given(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
                 SELECT 'dora1', id, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM users \
                 WHERE username = 'dora'",
            )
            .given(
                "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
                 VALUES ('other', -1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            )
            .then_count("SELECT COUNT(*) FROM sessions", 1),
            Case::new(
                "a user who does not exist is not found",
                UsernameArgs::new("nobody"),
            )
            .fails_with(ErrorKind::NotFound),
        ]
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<DeleteUser>()
}
