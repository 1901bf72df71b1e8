//! Errors and the exit-code contract.
//!
//! Every failure in `commondb` and in a task is an [`Error`]: a [`ErrorKind`] that decides the
//! exit code (and, later, the status of a socket answer), a message that says what failed, and a
//! hint that says what to do about it. The table below is the contract that the README
//! documents; codes never change meaning once released.
//!
//! | kind           | exit | meaning                                                        |
//! |----------------|------|----------------------------------------------------------------|
//! | `failed`       | 1    | a check failed (self-test) or the user declined a confirmation |
//! | `usage`        | 2    | bad command line (clap uses 2 as well)                         |
//! | `invalid_input`| 65   | the request's data is invalid (sysexits `EX_DATAERR`)          |
//! | `no_input`     | 66   | an input file is missing or unreadable (`EX_NOINPUT`)          |
//! | `not_found`    | 67   | what the request names does not exist (`EX_NOUSER`)            |
//! | `unavailable`  | 69   | the database cannot be reached (`EX_UNAVAILABLE`)              |
//! | `internal`     | 70   | a bug or a damaged database (`EX_SOFTWARE`)                    |
//! | `conflict`     | 73   | the record already exists (`EX_CANTCREAT`)                     |
//! | `temporary`    | 75   | busy or locked; retrying later may succeed (`EX_TEMPFAIL`)     |
//! | `permission`   | 77   | not allowed: file modes, credentials (`EX_NOPERM`)             |
//! | `config`       | 78   | configuration is wrong or setup is needed (`EX_CONFIG`)        |
//! | `interrupted`  | 130  | stopped by Ctrl-C or SIGTERM (the shell's 128 + SIGINT)        |

use std::fmt;

use serde::Serialize;

/// What kind of failure an [`Error`] is; it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A check failed or the user declined: exit 1.
    Failed,
    /// The command line was wrong: exit 2.
    Usage,
    /// The request's data is invalid, or a file given is damaged or foreign: exit 65.
    InvalidInput,
    /// An input file (a backup to restore) does not exist or cannot be read: exit 66.
    NoInput,
    /// What the request names does not exist (no such user): exit 67. Nothing was written.
    NotFound,
    /// The database cannot be reached: exit 69.
    Unavailable,
    /// A bug, or a database in a state the program cannot handle: exit 70.
    Internal,
    /// The record already exists: exit 73.
    Conflict,
    /// Busy or locked; trying again later may succeed: exit 75.
    Temporary,
    /// Not allowed: file modes, ownership, credentials: exit 77.
    Permission,
    /// The configuration is wrong, or setup is needed: exit 78.
    Config,
    /// Stopped by Ctrl-C or SIGTERM after cleaning up: exit 130.
    Interrupted,
}

impl ErrorKind {
    /// What to do about an error of this kind when the error itself says nothing more.
    pub fn advice(self) -> &'static str {
        match self {
            ErrorKind::Failed => "see the lines above for what failed",
            ErrorKind::Usage => "see --help for the options and modes",
            ErrorKind::InvalidInput => "correct the value named above and try again",
            ErrorKind::NoInput => "check the path and that you can read it",
            ErrorKind::NotFound => {
                "check the name: nothing by that name exists, and nothing was changed"
            }
            ErrorKind::Unavailable => {
                "check that the database server runs and is reachable, then try again"
            }
            ErrorKind::Internal => {
                "this is a bug or a damaged database: please report it with the command and this message"
            }
            ErrorKind::Conflict => "choose another value, or change the existing record",
            ErrorKind::Temporary => "try again in a moment",
            ErrorKind::Permission => "check the owner and mode of the file or the role's rights",
            ErrorKind::Config => "fix the setting named above (README: Configuration)",
            ErrorKind::Interrupted => "run the same command again to go on",
        }
    }

    /// A few words for `--help`'s list of exit codes.
    pub const fn summary(self) -> &'static str {
        match self {
            ErrorKind::Failed => "check failed or declined",
            ErrorKind::Usage => "usage",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::NoInput => "input file missing",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unavailable => "database unavailable",
            ErrorKind::Internal => "internal error",
            ErrorKind::Conflict => "already exists",
            ErrorKind::Temporary => "temporary failure (retry)",
            ErrorKind::Permission => "permission denied or bad credentials",
            ErrorKind::Config => "configuration or setup needed",
            ErrorKind::Interrupted => "interrupted",
        }
    }

    /// `--help`'s list of exit codes, made from [`ErrorKind::ALL`] so that it misses none.
    pub fn help_line() -> String {
        let codes: Vec<String> = ErrorKind::ALL
            .iter()
            .map(|k| format!("{} {}", k.exit_code(), k.summary()))
            .collect();
        format!("Exit codes: 0 success, {}.", codes.join(", "))
    }

    /// Every kind, in exit-code order (for documentation and tests).
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Failed,
        ErrorKind::Usage,
        ErrorKind::InvalidInput,
        ErrorKind::NoInput,
        ErrorKind::NotFound,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
        ErrorKind::Conflict,
        ErrorKind::Temporary,
        ErrorKind::Permission,
        ErrorKind::Config,
        ErrorKind::Interrupted,
    ];

    /// The process exit code for this kind of failure.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failed => 1,
            ErrorKind::Usage => 2,
            ErrorKind::InvalidInput => 65,
            ErrorKind::NoInput => 66,
            ErrorKind::NotFound => 67,
            ErrorKind::Unavailable => 69,
            ErrorKind::Internal => 70,
            ErrorKind::Conflict => 73,
            ErrorKind::Temporary => 75,
            ErrorKind::Permission => 77,
            ErrorKind::Config => 78,
            ErrorKind::Interrupted => 130,
        }
    }

    /// The name used in JSON output (`invalid_input`, `conflict`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Failed => "failed",
            ErrorKind::Usage => "usage",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NoInput => "no_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Temporary => "temporary",
            ErrorKind::Permission => "permission",
            ErrorKind::Config => "config",
            ErrorKind::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first `max_chars` characters of `text`, and whether there was more: how much of a value
/// (a request's field, a line of a file) an error may show.
pub fn cut(text: &str, max_chars: usize) -> (&str, bool) {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// `value` as an error shows it: quoted, escaped, at most `max_chars` characters, then `…`.
pub fn shown(value: &str, max_chars: usize) -> String {
    let (cut, more) = cut(value, max_chars);
    format!("\"{}\"{}", cut.escape_debug(), if more { "…" } else { "" })
}

/// A failure with its kind, what failed, and what to do about it.
///
/// Messages never contain secrets: code that builds an `Error` from something that might hold
/// one (a URL, a secrets file) redacts it first.
#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl Error {
    /// A new error of `kind` saying what failed.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds what the user should do about it.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint unless there is one already.
    #[must_use]
    pub fn hint_if_none(self, hint: impl Into<String>) -> Self {
        if self.hint.is_some() {
            self
        } else {
            self.hint(hint)
        }
    }

    /// The request's data is invalid (exit 65).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// An input file does not exist or cannot be read (exit 66).
    pub fn no_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoInput, message)
    }

    /// What the request names does not exist (exit 67).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The record already exists (exit 73).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// The database cannot be reached (exit 69).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A bug or an unexpected state (exit 70).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Busy or locked; worth retrying (exit 75).
    pub fn temporary(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Temporary, message)
    }

    /// Not allowed (exit 77).
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permission, message)
    }

    /// The configuration is wrong or setup is needed (exit 78).
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// The command line is wrong (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// A check failed or the user declined (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, if there is something to say.
    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// What to do about it: the hint, or else the advice that fits every error of its kind, so
    /// that no error reaches a person or a client without one.
    pub fn advice(&self) -> &str {
        self.hint.as_deref().unwrap_or(self.kind.advice())
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// Replaces the message of a [`ErrorKind::Conflict`] with one the task can phrase better
    /// (the database only knows that a unique key was violated); other errors pass unchanged.
    #[must_use]
    pub fn on_conflict(self, message: impl FnOnce() -> String) -> Self {
        if self.kind == ErrorKind::Conflict {
            Error {
                message: message(),
                ..self
            }
        } else {
            self
        }
    }

    /// The JSON document printed for this error with `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "kind": self.kind,
                "exit_code": self.exit_code(),
                "message": self.message,
                "hint": self.advice(),
            }
        })
    }
}

/// `commondb`'s result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_follow_sysexits() {
        let mut codes: Vec<u8> = ErrorKind::ALL.iter().map(|k| k.exit_code()).collect();
        assert_eq!(codes, [1, 2, 65, 66, 67, 69, 70, 73, 75, 77, 78, 130]);
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }

    /// The documentation lists every code: this module's table, the README's, `--help`'s.
    #[test]
    fn every_exit_code_is_documented_everywhere() {
        let readme = include_str!("../../README.md");
        let module = include_str!("error.rs");
        let help = ErrorKind::help_line();
        for kind in ErrorKind::ALL {
            let (code, name) = (kind.exit_code(), kind.as_str());
            assert!(
                readme.contains(&format!("| {code} | `{name}` |")),
                "README's exit codes miss {code}"
            );
            let row = format!("`{name}`");
            assert!(
                module.lines().any(|l| l.starts_with("//! |")
                    && l.contains(&row)
                    && l.contains(&format!(" {code} "))),
                "error.rs's table misses {code}"
            );
            assert!(help.contains(&format!("{code} ")), "--help misses {code}");
        }
    }

    #[test]
    fn json_carries_kind_code_message_and_hint() {
        let e = Error::conflict("user exists").hint("choose another name");
        let j = e.to_json();
        assert_eq!(j["error"]["kind"], "conflict");
        assert_eq!(j["error"]["exit_code"], 73);
        assert_eq!(j["error"]["message"], "user exists");
        assert_eq!(j["error"]["hint"], "choose another name");
    }

    #[test]
    fn an_error_without_a_hint_still_carries_advice_never_null() {
        for kind in ErrorKind::ALL {
            let j = Error::new(kind, "it broke").to_json();
            let hint = j["error"]["hint"].as_str().unwrap_or_default();
            assert!(hint.len() > 10, "{kind:?} has no advice: {j}");
        }
        let hinted = Error::internal("x").hint("do this");
        assert_eq!(hinted.advice(), "do this");
    }

    #[test]
    fn on_conflict_rewrites_only_conflicts() {
        let c = Error::conflict("UNIQUE constraint failed").on_conflict(|| "taken".into());
        assert_eq!(c.message(), "taken");
        let u = Error::unavailable("down").on_conflict(|| "taken".into());
        assert_eq!(u.message(), "down");
    }
}
