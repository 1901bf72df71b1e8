//! The runtime's output: every line of every instance, prefixed `service.instance`, interleaved
//! on stdout as they come (whole lines, never torn), the prefix colored per service on a
//! terminal unless `NO_COLOR` is set; and each also in its service's log file ([`LogFiles`]).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use super::logs::LogFiles;

/// Where the fleet's lines go.
pub struct Out {
    stdout: Mutex<std::io::Stdout>,
    color: bool,
    files: Option<LogFiles>,
}

/// The colors the prefixes take, one per service by its name.
const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

impl Out {
    /// Stdout, colored if it is a terminal and `NO_COLOR` is not set.
    pub fn stdout(files: Option<LogFiles>) -> Out {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Out {
            stdout: Mutex::new(std::io::stdout()),
            color,
            files,
        }
    }

    fn prefix(&self, label: &str) -> String {
        if !self.color {
            return label.to_string();
        }
        let service = label.split('.').next().unwrap_or(label);
        let hash = service
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        format!("\x1b[{}m{label}\x1b[0m", COLORS[hash % COLORS.len()])
    }

    fn write(&self, label: &str, line: &str) {
        if let Some(files) = &self.files {
            files.write(label.split('.').next().unwrap_or(label), line);
        }
        let text = format!("{}{}\n", self.prefix(label), &line[label.len()..]);
        let mut out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        // A closed stdout must not stop the fleet.
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// A line an instance wrote: `service.instance | line`.
    pub fn line(&self, label: &str, line: &str) {
        // Control characters (a terminal's escapes) are shown, not obeyed.
        let shown: String = line
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '�'
                } else {
                    c
                }
            })
            .collect();
        self.write(label, &format!("{label} | {shown}"));
    }

    /// A line of the runtime's own about an instance or a service: `label: what`.
    pub fn note(&self, label: &str, what: &str) {
        self.write(label, &format!("{label}: {what}"));
    }
}
