//! Where things are printed: results on stdout, everything else on stderr.
//!
//! A result is printed once, as text for people or as one JSON document with `--json`. Notes
//! (what the program did on the user's behalf) go to stderr unless `-q`; details go to stderr
//! with `-v`. Errors always go to stderr, and with `--json` also to stdout as a JSON document so
//! that a script reading stdout always gets one. Long work shows a [`Progress`] bar on stderr
//! when stderr is a terminal, and nothing when it is not.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::Error;

/// The process's output, for the few places deep in the database layer that report details
/// (connection retries) with `-v`.
static INSTALLED: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

/// Reports a detail through the process's output, if one was installed and `-v` was given.
pub(crate) fn detail(message: impl Display) {
    if let Some(out) = INSTALLED.get() {
        out.detail(message);
    }
}

/// Reports a note through the process's output, if one was installed (unless `-q`).
pub(crate) fn note(message: impl Display) {
    if let Some(out) = INSTALLED.get() {
        out.note(message);
    }
}

/// How much to print, and in which form.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    name: &'static str,
    json: bool,
    verbosity: i8,
}

impl Output {
    /// Output for executable `name`; `verbosity` is 0 by default, -1 with `-q`, +n with `-v`s.
    pub fn new(name: &'static str, json: bool, verbosity: i8) -> Self {
        Output {
            name,
            json,
            verbosity,
        }
    }

    /// Makes this the process's output for [`detail`].
    pub fn install(self) {
        let _ = INSTALLED.set(self);
    }

    /// An output that prints no notes and no details (for runs inside the self-test).
    pub fn silent(name: &'static str) -> Self {
        Output::new(name, false, -1)
    }

    /// Whether results are printed as JSON.
    pub fn json(&self) -> bool {
        self.json
    }

    /// Prints the result of the run on stdout.
    pub fn result<T: Serialize + Display>(&self, value: &T) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (say `| head`) must not turn a success into a panic.
        let _ = if self.json {
            serde_json::to_writer(&mut stdout, value)
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(stdout))
        } else {
            writeln!(stdout, "{value}")
        };
        let _ = stdout.flush();
    }

    /// Prints the summary of a task that streamed its rows to stdout (a count, the next
    /// cursor): on stderr, as JSON with `--json`; silenced by `-q`.
    pub fn summary<T: Serialize + Display>(&self, value: &T) {
        if self.verbosity < 0 {
            return;
        }
        if self.json {
            let text = serde_json::to_string(value).unwrap_or_default();
            eprintln!("{text}");
        } else {
            eprintln!("{}: {value}", self.name);
        }
    }

    /// Tells the user something the program did on their behalf (stderr; silenced by `-q`).
    pub fn note(&self, message: impl Display) {
        if self.verbosity >= 0 {
            eprintln!("{}: {message}", self.name);
        }
    }

    /// A detail for `-v` (stderr).
    pub fn detail(&self, message: impl Display) {
        if self.verbosity >= 1 {
            eprintln!("{}: {message}", self.name);
        }
    }

    /// Reports an error: always on stderr, and with `--json` also as a JSON document on stdout.
    pub fn error(&self, error: &Error) {
        eprintln!("{}: error: {}", self.name, error.message());
        eprintln!("{}: hint: {}", self.name, error.advice());
        if self.json {
            // A closed stdout must not turn an error into a panic.
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", error.to_json());
        }
    }
}

/// A progress bar on stderr for work counted in rows (a backup, a restore): rows, bytes of
/// data, rows per second and ETA. Drawn only when stderr is a terminal and `-q` was not given; otherwise it is
/// nothing, and an update costs a branch.
pub(crate) struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// How many rows pass between two updates: the bar redraws at most a few times a second
    /// anyway, and this keeps the cost per row to a counter.
    pub(crate) const EVERY: u64 = 4096;

    /// No bar.
    pub(crate) fn none() -> Progress {
        Progress(None)
    }

    /// A bar for `total` rows, labelled `what` (`backup`), if the process's output shows one.
    pub(crate) fn rows(total: u64, what: &str) -> Progress {
        let shown =
            INSTALLED.get().is_some_and(|o| o.verbosity >= 0) && std::io::stderr().is_terminal();
        if !shown {
            return Progress::none();
        }
        let style = indicatif::ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {human_pos}/{human_len} rows, {msg}, ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        let Ok(style) = style else {
            return Progress::none();
        };
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        )
        .with_style(style)
        .with_prefix(format!(
            "{}: {what}",
            INSTALLED.get().map_or("", |o| o.name)
        ))
        .with_message("0 B");
        Progress(Some(bar))
    }

    /// `rows` rows done, `bytes` bytes of their data.
    pub(crate) fn update(&self, rows: u64, bytes: u64) {
        if let Some(bar) = &self.0 {
            let seconds = bar.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{}, {} rows/s",
                indicatif::HumanBytes(bytes),
                indicatif::HumanCount((rows as f64 / seconds) as u64)
            ));
            bar.set_position(rows);
        }
    }
}

impl Drop for Progress {
    /// The bar goes once the work ends, however it ends: what follows is the result or the
    /// error, not a finished bar.
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
