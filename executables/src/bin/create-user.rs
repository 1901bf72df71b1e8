//! `create-user`: creates a user account. Everything but the task itself (setup, self-test,
//! cleanup, configuration, secrets, exit codes) comes from `commondb`; the domain code is in
//! `executables::users`.

use commondb::{Case, Context, Grant, Migrations, Result, Right, Task, Tx};
use executables::users::{self, CreateArgs, HashSettings, NewUser, User};

struct CreateUser;

impl Task for CreateUser {
    const NAME: &'static str = "create-user";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Create a user account";
    const VERB: &'static str = "create";
    const MIGRATIONS: &'static Migrations = users::MIGRATIONS;
    const DOMAIN: &'static str = users::DOMAIN;
    const FORMERLY: &'static [&'static str] = users::FORMERLY;
    const GRANTS: &'static [Grant] = &[Grant::on("users", &[Right::Select, Right::Insert])];
    const PORT: u16 = 7401;
    const CREATES: bool = true;
    const SINGLE_STATEMENT: bool = true;
    type Args = CreateArgs;
    type Request = NewUser;
    type Output = User;
    type Settings = HashSettings;

    fn prepare(args: CreateArgs, ctx: &mut Context<'_, HashSettings>) -> Result<NewUser> {
        let password = args
            .password_stdin
            .then(|| ctx.read_secret_line("password"))
            .transpose()?;
        NewUser::new(&args.username, &args.email, password, ctx.settings())
    }

    async fn execute(tx: &mut Tx<'_>, user: NewUser) -> Result<User> {
        users::insert(tx, user).await
    }

    fn sample(n: u64, run: &str) -> CreateArgs {
        CreateArgs::sample(n, run)
    }

    fn invalid_sample() -> CreateArgs {
        CreateArgs::new("sample", "not-an-address", false)
    }

    fn cases() -> Vec<Case<CreateArgs>> {
        users::cases()
    }
}

fn main() -> std::process::ExitCode {
    commondb::main::<CreateUser>()
}
