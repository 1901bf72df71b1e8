//! The runtime's output: every line of every instance, prefixed `service.instance`, interleaved
//! on stdout as they come (whole lines, never torn), the prefix colored per service on a
//! terminal unless `NO_COLOR` is set; and each also in its service's log file ([`LogFiles`]).

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::sync::Mutex;

use super::logs::LogFiles;

/// Calls `f` with each line of `input` (without its line ending; a line longer than `max`
/// bytes is cut there, the rest of it dropped without being held) until the end of the input.
/// Every reader of what others write (instances' output, log files, performance reports) reads
/// lines through it.
pub fn each_line(input: impl Read, max: usize, mut f: impl FnMut(&str)) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(max as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() >= max {
            let _ = reader.skip_until(b'\n');
        }
        let text = String::from_utf8_lossy(&line);
        f(text.trim_end_matches(['\n', '\r']));
    }
}

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
