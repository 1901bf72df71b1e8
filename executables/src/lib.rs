//! The domain code of the executables built with `commondb`.
//!
//! Each executable is one short file in `src/bin/` that declares its task; the domain logic it
//! shares with its siblings (validation, hashing, storage) lives in the modules here, with its
//! unit tests. Migrations live in `migrations/<domain>/<backend>/`. Two domains so far: `users`
//! (`create-user`) and `events` (`log-event`, an append-only log).

pub mod events;
pub mod users;
