//! `set-password`: gives a user a new password (read from stdin, stored as its argon2id hash),
//! or fails with `not_found`. Its role may read and update `users`, and nothing else.

use commondb::{Case, Context, ErrorKind, Grant, Migrations, Repeat, Result, Right, Task, Tx};
use executables::accounts::{self, NewPassword, PasswordArgs, PasswordSet};
use executables::users::{self, HashSettings};

struct SetPassword;

impl Task for SetPassword {
    const NAME: &'static str = "set-password";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Set a user's password";
    const VERB: &'static str = "set";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const SEEDS: bool = true;
    const SINGLE_STATEMENT: bool = true;
    const GRANTS: &'static [Grant] = &[Grant::on("users", &[Right::Select, Right::Update])];
    type Args = PasswordArgs;
    type Request = NewPassword;
    type Output = PasswordSet;
    type Settings = HashSettings;

    fn prepare(args: PasswordArgs, ctx: &mut Context<'_, HashSettings>) -> Result<NewPassword> {
        let password = args.password(ctx)?;
        NewPassword::new(&args.username, &password, ctx.settings())
    }

    async fn execute(tx: &mut Tx<'_>, new: NewPassword) -> Result<PasswordSet> {
        accounts::set_password(tx, new).await
    }

    async fn seed(tx: &mut Tx<'_>, run: &str, count: u64) -> Result<u64> {
        accounts::seed(tx, run, count, false).await
    }

    fn sample(n: u64, run: &str) -> PasswordArgs {
        PasswordArgs::new(&accounts::sample_username(n, run))
    }

    fn sample_input(_: u64, run: &str) -> Option<String> {
        Some(format!("{}\n", accounts::sample_password(run)))
    }

    fn invalid_sample() -> PasswordArgs {
        PasswordArgs::new("Not A Name")
    }

    fn on_repeat() -> Repeat {
        Repeat::Succeeds
    }

    fn cases() -> Vec<Case<PasswordArgs>> {
        let hashed = "SELECT COUNT(*) FROM users WHERE username = 'pat' \
                      AND password_hash LIKE '$argon2id$%' AND password_hash NOT LIKE '%staple%'";
        vec![
            Case::new(
                "a new password is stored only as its argon2id hash",
                PasswordArgs::new("pat"),
            )
            .given(
                "INSERT INTO users (username, email, created_at) \
                 VALUES ('pat', 'pat@example.com', CURRENT_TIMESTAMP)",
            )
            .input("correct horse battery staple\n")
            .then_count(hashed, 1),
            Case::new(
                "a user who does not exist is not found",
                PasswordArgs::new("nobody"),
            )
            .input("a password\n")
            .fails_with(ErrorKind::NotFound),
            Case::new("an empty password is refused", PasswordArgs::new("pat"))
                .input("\n")
                .fails_with(ErrorKind::InvalidInput),
        ]
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<SetPassword>()
}
