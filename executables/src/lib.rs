//! The domain code of the executables built with `commondb`.
//!
//! Each executable is one short file in `src/bin/` that declares its task; the domain logic it
//! shares with its siblings (validation, hashing, storage) lives in the modules here, with its
//! unit tests. Migrations live in `migrations/<domain>/<backend>/`. Two domains so far: `users`
//! (`create-user`, `get-user`, `list-users`, `delete-user`, `set-password`, `login`; modules
//! `users`, `accounts`, `sessions`) and `events` (`log-event`, `list-events`: an append-only
//! log).

pub mod accounts;
pub mod events;
pub mod paging;
pub mod passwords;
pub mod sessions;
pub mod users;
