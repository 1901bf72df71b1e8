//! `get-user`: shows one user, or fails with `not_found`. A read-only task: its role may only
//! read `users`.

use commondb::{Case, Context, ErrorKind, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::accounts::{self, Account, UsernameArgs};
use executables::users::{self, Username};

struct GetUser;

impl Task for GetUser {
    const NAME: &'static str = "get-user";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Show a user account";
    const VERB: &'static str = "get";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const READ_ONLY: bool = true;
    const SINGLE_STATEMENT: bool = true;
    const GRANTS: &'static [Grant] = &[Grant::on("users", &[Right::Select])];
    type Args = UsernameArgs;
    type Request = Username;
    type Output = Account;
    type Settings = ();

    fn prepare(args: UsernameArgs, _: &mut Context<'_, ()>) -> Result<Username> {
        Username::parse(&args.username)
    }

    async fn execute(tx: &mut Tx<'_>, username: Username) -> Result<Account> {
        accounts::get(tx, username).await
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
        Repeat::Succeeds
    }

    fn cases() -> Vec<Case<UsernameArgs>> {
        vec![
            Case::new("a user who exists is shown", UsernameArgs::new("gina")).given(
                "INSERT INTO users (username, email, created_at) \
                 VALUES ('gina', 'gina@example.com', CURRENT_TIMESTAMP)",
            ),
            Case::new(
                "a user who does not exist is not found",
                UsernameArgs::new("nobody"),
            )
            .fails_with(ErrorKind::NotFound),
        ]
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<GetUser>()
}
