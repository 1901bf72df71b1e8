//! Tasks that return many rows: each row goes out as it is read ([`crate::Tx::stream`]), so
//! memory stays flat whatever the count.
//!
//! Where a row goes is the harness's choice, made once per request ([`RowSink`]): in process
//! mode straight to stdout, one JSON object per line with `--json`, an aligned table on a
//! terminal (aligned a chunk of rows at a time), tab-separated lines otherwise (like `psql
//! -At`); over `--serve` into the answer's `rows`, at most [`MAX_SERVED_ROWS`]; in the self-test
//! nowhere. The task's own output (a count, the next cursor) then goes to stderr in process
//! mode, and beside `rows` in a service's answer.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{Error, Result};

/// A row a task streams: serialized for `--json` and for a service, and as cells for a table.
pub trait Row: Serialize + Send {
    /// The columns' names, in the order of [`Row::cells`].
    const COLUMNS: &'static [&'static str];
    /// The row's cells, as text.
    fn cells(&self) -> Vec<String>;
}

/// The most rows one answer of `--serve` holds: a larger page is refused (page with the
/// task's cursor instead), so that no request can make the service hold an unbounded answer.
pub const MAX_SERVED_ROWS: usize = 10_000;

/// How many rows of a terminal table are aligned together (and held at once).
const TABLE_CHUNK: usize = 1000;

/// Where the rows of one request go, and whether the task sent any there.
pub(crate) struct RowSink {
    to: To,
    /// Whether the task streamed (even no row): its output is then a summary.
    pub(crate) used: bool,
    /// Whether stdout was closed by its reader (`| head`): the listing ends there, quietly.
    pub(crate) closed: bool,
    /// Whether a service's answer overflowed: the statement was left part read, and its
    /// connection must not be used again.
    pub(crate) abandoned: bool,
}

enum To {
    /// Stdout, not opened yet: a task that streams nothing (most) costs no buffer and no
    /// terminal check; the first row chooses the form.
    Stdout { json: bool },
    /// One JSON object per line on stdout.
    Json(std::io::BufWriter<std::io::Stdout>),
    /// Tab-separated cells per line on stdout (not a terminal), without a header.
    Tsv(std::io::BufWriter<std::io::Stdout>),
    /// An aligned table on a terminal, a chunk at a time, the header once.
    Table {
        out: std::io::BufWriter<std::io::Stdout>,
        columns: &'static [&'static str],
        chunk: Vec<Vec<String>>,
        headed: bool,
    },
    /// Into a service's answer.
    Collect(Vec<serde_json::Value>),
    /// Nowhere (the self-test checks the task's outcome, not its rows).
    Discard,
}

impl RowSink {
    fn new(to: To) -> RowSink {
        RowSink {
            to,
            used: false,
            closed: false,
            abandoned: false,
        }
    }

    /// The sink of process mode: stdout, as `--json` and the terminal say.
    pub(crate) fn stdout(json: bool) -> RowSink {
        RowSink::new(To::Stdout { json })
    }

    /// Stdout in the form `--json` and the terminal say, opened for the first row.
    fn open_stdout(json: bool) -> To {
        let out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
        if json {
            To::Json(out)
        } else if std::io::stdout().is_terminal() {
            To::Table {
                out,
                columns: &[],
                chunk: Vec::new(),
                headed: false,
            }
        } else {
            To::Tsv(out)
        }
    }

    /// The sink of a service: the rows go into the answer.
    pub(crate) fn collect() -> RowSink {
        RowSink::new(To::Collect(Vec::new()))
    }

    /// The sink of the self-test: the rows go nowhere.
    pub(crate) fn discard() -> RowSink {
        RowSink::new(To::Discard)
    }

    /// Sends one row on.
    pub(crate) fn push<R: Row>(&mut self, row: &R) -> Result<()> {
        let pushed = self.push_to(row);
        self.note_closed(pushed)
    }

    /// Remembers a closed stdout, which ends the stream.
    fn note_closed(&mut self, result: Result<()>) -> Result<()> {
        if result.as_ref().is_err_and(|e| e.message() == CLOSED) {
            self.closed = true;
        }
        result
    }

    fn push_to<R: Row>(&mut self, row: &R) -> Result<()> {
        if let To::Stdout { json } = self.to {
            self.to = RowSink::open_stdout(json);
        }
        match &mut self.to {
            To::Json(out) => {
                serde_json::to_writer(&mut *out, row)
                    .map_err(|e| Error::internal(format!("a row cannot be encoded: {e}")))?;
                out.write_all(b"\n").map_err(closed)
            }
            To::Tsv(out) => {
                let mut line = String::new();
                for (i, cell) in row.cells().iter().enumerate() {
                    if i > 0 {
                        line.push('\t');
                    }
                    escape_into(&mut line, cell);
                }
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(closed)
            }
            To::Table { columns, chunk, .. } => {
                *columns = R::COLUMNS;
                chunk.push(row.cells());
                if chunk.len() >= TABLE_CHUNK {
                    self.flush_table()?;
                }
                Ok(())
            }
            To::Collect(rows) => {
                if rows.len() >= MAX_SERVED_ROWS {
                    self.abandoned = true;
                    return Err(Error::invalid_input(format!(
                        "an answer of --serve holds at most {MAX_SERVED_ROWS} rows"
                    ))
                    .hint("ask for fewer (the task's limit) and page through the rest with its cursor"));
                }
                let value = serde_json::to_value(row)
                    .map_err(|e| Error::internal(format!("a row cannot be encoded: {e}")))?;
                rows.push(value);
                Ok(())
            }
            To::Stdout { .. } | To::Discard => Ok(()),
        }
    }

    /// Marks the sink as used by a task that streams, before its first row.
    pub(crate) fn start(&mut self) {
        self.used = true;
    }

    /// Prints the table's pending chunk, aligned.
    fn flush_table(&mut self) -> Result<()> {
        let To::Table {
            out,
            columns,
            chunk,
            headed,
        } = &mut self.to
        else {
            return Ok(());
        };
        // Nothing streamed (a task that streams no rows, or one that returns a result).
        if columns.is_empty() {
            return Ok(());
        }
        let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
        for cells in chunk.iter() {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut first = true;
            for (cell, width) in cells.zip(&widths) {
                if !first {
                    text.push_str("  ");
                }
                first = false;
                let _ = write!(text, "{cell:<width$}");
            }
            let end = text.trim_end_matches(' ').len();
            text.truncate(end);
            text.push('\n');
        };
        if !*headed {
            line(&mut columns.iter().copied());
            *headed = true;
        }
        for cells in chunk.drain(..) {
            let shown: Vec<String> = cells.iter().map(|c| c.escape_debug().to_string()).collect();
            line(&mut shown.iter().map(String::as_str));
        }
        out.write_all(text.as_bytes()).map_err(closed)
    }

    /// Writes out what is held: the rest of the table, the buffer.
    pub(crate) fn finish(&mut self) -> Result<()> {
        let flushed = self.flush_table().and_then(|()| match &mut self.to {
            To::Json(out) | To::Tsv(out) | To::Table { out, .. } => out.flush().map_err(closed),
            To::Stdout { .. } | To::Collect(_) | To::Discard => Ok(()),
        });
        self.note_closed(flushed)
    }

    /// The rows collected for a service's answer, if the task streamed.
    pub(crate) fn collected(self) -> Option<Vec<serde_json::Value>> {
        match self.to {
            To::Collect(rows) if self.used => Some(rows),
            _ => None,
        }
    }
}

/// A cell of a tab-separated line: a tab, a line break or a backslash escaped, as PostgreSQL's
/// text format does, so that a line is always one row.
fn escape_into(line: &mut String, cell: &str) {
    for c in cell.chars() {
        match c {
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\\' => line.push_str("\\\\"),
            c => line.push(c),
        }
    }
}

const CLOSED: &str = "stdout was closed before every row was written";

/// A write to stdout failed: most often a closed pipe (`| head`), which ends the listing.
fn closed(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::failed(CLOSED)
    } else {
        Error::temporary(format!("cannot write a row to stdout: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct R(&'static str);
    impl Row for R {
        const COLUMNS: &'static [&'static str] = &["name"];
        fn cells(&self) -> Vec<String> {
            vec![self.0.to_string()]
        }
    }

    #[test]
    fn a_cell_is_escaped_to_one_line() {
        let mut line = String::new();
        escape_into(&mut line, "a\tb\nc\\d");
        assert_eq!(line, "a\\tb\\nc\\\\d");
    }

    #[test]
    fn a_service_collects_a_bounded_answer() {
        let mut sink = RowSink::collect();
        sink.start();
        for _ in 0..MAX_SERVED_ROWS {
            sink.push(&R("x")).unwrap();
        }
        let e = sink.push(&R("x")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert_eq!(sink.collected().unwrap().len(), MAX_SERVED_ROWS);
    }
}
