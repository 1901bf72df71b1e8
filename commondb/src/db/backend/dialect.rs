//! The SQL text that differs between the backends, behind two traits: [`Dialect`], what every
//! backend answers (transactions, snapshots, emptying tables, the catalog, session limits,
//! placeholders, the pool a service opens), and [`ServerDialect`], what setup and cleanup say to
//! a server (databases, roles, grants, the setup lock). The implementations live in
//! `sqlite.rs`, `postgres.rs` and `mysql.rs`.
//!
//! A dialect only builds SQL; the flows that run it are written once, outside the seam. Every
//! identifier passed in has already passed [`super::check_identifier`], so quoting cannot be
//! escaped.

use std::borrow::Cow;

use secrecy::SecretString;

use crate::error::{Error, Result};
use crate::task::Right;

/// What differs between SQLite, PostgreSQL and MySQL/MariaDB as SQL text and as choices.
pub(crate) trait Dialect: Sync {
    /// The character that quotes an identifier.
    fn quote_char(&self) -> char;
    /// Quotes an identifier that passed [`super::check_identifier`]: the one implementation
    /// of quoting, for every backend.
    fn quote(&self, name: &str) -> String {
        let q = self.quote_char();
        format!("{q}{name}{q}")
    }
    /// The statement that begins a task's write transaction.
    fn begin(&self) -> &'static str;
    /// The statement that begins a read-only task's transaction.
    fn begin_read_only(&self) -> &'static str;
    /// Session settings a task's connection needs before its first statement, sent in the round
    /// trip that checks the schema and begins.
    fn session(&self) -> Option<&'static str> {
        None
    }
    /// `sql` with the task's `?` placeholders as this backend takes them.
    fn placeholders<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        Cow::Borrowed(sql)
    }
    /// The statements that begin a backup's snapshot: one read-only transaction that sees one
    /// consistent state of every table.
    fn begin_snapshot(&self) -> &'static [&'static str];
    /// The statements that begin a restore's transaction and lock writers (not readers) out of
    /// `tables` (quoted), so that nothing is committed between the safety backup and the load.
    fn begin_restore(&self, tables: &[String]) -> Vec<String>;
    /// The statements that empty `tables` (quoted) inside the restore's transaction.
    fn empty(&self, tables: &[String]) -> Vec<String> {
        tables.iter().map(|t| format!("DELETE FROM {t}")).collect()
    }
    /// The names of the current database's (schema's) tables, in name order.
    fn tables(&self) -> &'static str;
    /// `COUNT(*)` of the current database's (schema's) tables named by the one parameter.
    fn table_exists(&self) -> &'static str;
    /// A query of one text column: the TLS version of this connection, empty when it is not
    /// encrypted (`--self-status`); `None` where there is no connection to encrypt.
    fn encryption(&self) -> Option<&'static str> {
        None
    }
    /// The statements that create the request ids' table (`db::requests`) if it is missing:
    /// `(executable, id)` the primary key, compared byte for byte; `answer` the JSON text;
    /// `at` seconds since the epoch, indexed for pruning.
    fn requests_table(&self) -> &'static [&'static str];
    /// The session settings that bound one statement of a pooled connection to `timeout_ms`,
    /// where the database has them.
    fn statement_timeout(&self, timeout_ms: u64) -> Option<String>;
    /// How many connections `--serve` opens unless configured.
    fn default_pool_size(&self) -> usize;
    /// Whether the database takes one writer at a time (then `--serve` commits a
    /// single-statement task's requests in groups, on one connection).
    fn one_writer(&self) -> bool;
    /// Whether talking to the database needs sockets (a runtime with the I/O driver).
    fn over_sockets(&self) -> bool;
}

/// The SQL that setup, cleanup and the checks run on one kind of server.
pub(crate) trait ServerDialect: Dialect {
    /// An administrator's URL on this server, for hints.
    fn example_admin_url(&self) -> &'static str;
    /// The database an administrator's URL that names none means, where the server needs one.
    fn maintenance_database(&self) -> Option<&'static str>;
    /// The longest role name the server accepts.
    fn max_role_len(&self) -> usize;
    /// One row, one `BIGINT`: 1 if the server-wide setup lock was taken, else 0.
    fn try_lock(&self) -> &'static str;
    /// Releases the setup lock.
    fn unlock(&self) -> &'static str;
    /// `COUNT(*)` of databases named by the one parameter.
    fn database_exists(&self) -> &'static str;
    /// Creates database `db` (quoted).
    fn create_database(&self, db: &str) -> String;
    /// Drops database `db` (quoted), ending other sessions on it.
    fn drop_database(&self, db: &str) -> String;
    /// Ids of other sessions using the database named by the one parameter, where the server
    /// needs them ended before a drop.
    fn other_sessions(&self) -> Option<&'static str>;
    /// Ends session `id`.
    fn kill_session(&self, id: i64) -> String;
    /// `COUNT(*)` of roles named by the one parameter.
    fn role_exists(&self) -> &'static str;
    /// Creates login role `role` (quoted) with the password given as a server-side verifier.
    fn create_role(&self, role: &str, verifier: &str) -> String;
    /// Sets the password of `role` (quoted).
    fn set_password(&self, role: &str, verifier: &str) -> String;
    /// Revokes what `role` (quoted) was granted in the current database, before the role is
    /// dropped from a database that stays.
    fn revoke_in_database(&self, role: &str) -> Option<String>;
    /// Drops `role` (quoted).
    fn drop_role(&self, role: &str) -> String;
    /// The grants that give `app` exactly `rights` (quoted table, what on it), `backup` read
    /// on every one of `tables`, and both read on the migrations table; database-level rights
    /// too where the server has them.
    fn grants(
        &self,
        db: &str,
        tables: &[String],
        rights: &[(String, &[Right])],
        app: &str,
        backup: &str,
        created_db: bool,
    ) -> Vec<String>;
    /// One text column, `<table>:<RIGHT>`, for every table right the role named by the one
    /// text parameter holds in the current database.
    fn held_rights(&self) -> &'static str;
    /// Takes `right` on `table` (quoted) away from `role` (quoted).
    fn revoke(&self, db: &str, table: &str, right: &str, role: &str) -> String;
    /// The password as the server stores it, so that the clear text never reaches the server,
    /// its logs or its statement statistics.
    fn verifier(&self, password: &SecretString) -> Result<String>;
    /// Creates the table in which setup records what it created.
    fn marker_table(&self) -> &'static str;
    /// Records `item` (a validated name) as created or found by setup, unless recorded already.
    fn mark(&self, item: &str, created: bool) -> String;
}

/// The table in which setup records what it created, so that cleanup drops only that.
pub(crate) const MARKER_TABLE: &str = "_commondb_setup";

/// Rewrites `?` placeholders to PostgreSQL's `$1`, `$2`, …, leaving `?` inside string
/// literals, quoted identifiers and comments alone.
pub(crate) fn numbered_placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('?') {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::internal(format!("the operating system gave no random bytes: {e}")))?;
    Ok(bytes)
}

/// A strong password: 32 characters from an alphabet of 62 (190 bits), so it needs no quoting.
pub(crate) fn generate_password() -> Result<SecretString> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        for b in random_bytes::<64>()? {
            // Rejection sampling keeps every character equally likely (248 = 4 × 62).
            if b < 248 && password.len() < 32 {
                password.push(ALPHABET[b as usize % 62] as char);
            }
        }
    }
    Ok(SecretString::from(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            numbered_placeholders("INSERT INTO t (a, b) VALUES (?, ?) RETURNING id"),
            "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING id"
        );
        assert_eq!(
            numbered_placeholders("SELECT '?', \"a?\", ? -- why?\n, ?"),
            "SELECT '?', \"a?\", $1 -- why?\n, $2"
        );
        assert!(matches!(
            numbered_placeholders("SELECT 1"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_different() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.expose_secret().len(), 32);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
