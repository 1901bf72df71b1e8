//! The line protocol: one request per line, one JSON answer per line, in order.
//!
//! Clients may pipeline: lines that arrive together are answered together, and the answers
//! are flushed when no further request is already waiting. A line that is not UTF-8 or does
//! not parse is answered with an error and the connection stays usable; a line longer than
//! `max_request_bytes` is answered with an error and the connection is closed (what follows
//! cannot be framed). Only complete lines are requests: bytes after the last newline when the
//! client closes are dropped, never executed (the client may have been cut off mid-line). With
//! a token configured the first line must be `AUTH <token>`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::Stage;
use super::service::{Service, encode, encode_error};
use crate::error::{Error, Result};
use crate::protocol::AUTH;
use crate::task::Task;

/// What reading one line found.
enum Read {
    Line,
    TooLong,
    Eof,
}

/// Serves one client connection until it closes, idles out, or the service drains.
pub(crate) async fn serve<T: Task>(
    service: Arc<Service<T>>,
    reader: impl AsyncRead + Unpin,
    writer: impl AsyncWrite + Unpin,
    needs_token: bool,
) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut writer = tokio::io::BufWriter::with_capacity(16 * 1024, writer);
    let phase = service.phase.clone();
    let drained = phase.reached(Stage::Draining);
    tokio::pin!(drained);
    let idle = Duration::from_millis(service.limits.idle_timeout_ms);
    let max = service.limits.max_request_bytes;
    let mut authenticated = !needs_token;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let read = tokio::select! {
            biased;
            () = &mut drained => break,
            read = tokio::time::timeout(idle, read_line(&mut reader, &mut line, max)) => read,
        };
        let answer = match read {
            Err(_) | Ok(Ok(Read::Eof)) | Ok(Err(_)) => break,
            Ok(Ok(Read::TooLong)) => {
                let e = Error::usage(format!(
                    "the request is longer than {max} bytes; the connection is closed"
                ))
                .hint("send shorter requests, or raise serve.max_request_bytes");
                let _ = writer.write_all(&encode_error(e)).await;
                break;
            }
            Ok(Ok(Read::Line)) if !authenticated => match authenticate(&service, &line) {
                Ok(()) => {
                    authenticated = true;
                    encode(Ok(serde_json::json!({ "authenticated": true })))
                }
                Err(e) => {
                    let _ = writer.write_all(&encode_error(e)).await;
                    break;
                }
            },
            Ok(Ok(Read::Line)) => service.answer_line(&line).await,
        };
        if writer.write_all(&answer).await.is_err() {
            return;
        }
        // Answers to pipelined requests go out together, once no request is waiting.
        if reader.buffer().is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// Checks an `AUTH <token>` line.
fn authenticate<T: Task>(service: &Service<T>, line: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(line).unwrap_or("").trim_end();
    match text.strip_prefix(AUTH) {
        Some(token) if service.token_matches(token) => Ok(()),
        Some(_) => Err(
            Error::permission("the access token is wrong; the connection is closed")
                .hint("send the serve_token of the service's secrets file"),
        ),
        None => Err(Error::permission(
            "this service needs an access token first; the connection is closed",
        )
        .hint("send `AUTH <token>` as the first line")),
    }
}

/// Reads one line (without its newline) of at most `max` bytes into `line`. A last line whose
/// newline never came before the end of the stream counts as the end: it is not a request.
async fn read_line(
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Read> {
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    (&mut *reader).take(limit).read_until(b'\n', line).await?;
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Read::Line);
    }
    if line.len() > max {
        return Ok(Read::TooLong);
    }
    // Nothing more, or an incomplete last line: the client is gone before finishing it.
    Ok(Read::Eof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_read_up_to_the_limit() {
        let mut input = BufReader::new(&b"short\nexactly8\n123456789\n"[..]);
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, 9).await.unwrap(),
            Read::Line
        ));
        assert_eq!(line, b"short");
        line.clear();
        assert!(matches!(
            read_line(&mut input, &mut line, 9).await.unwrap(),
            Read::Line
        ));
        assert_eq!(line, b"exactly8");
        line.clear();
        assert!(matches!(
            read_line(&mut input, &mut line, 8).await.unwrap(),
            Read::TooLong
        ));
    }

    #[tokio::test]
    async fn a_last_line_without_its_newline_is_not_a_request() {
        let mut input = BufReader::new(&b"whole\n--username x --email y"[..]);
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, 64).await.unwrap(),
            Read::Line
        ));
        assert_eq!(line, b"whole");
        line.clear();
        assert!(matches!(
            read_line(&mut input, &mut line, 64).await.unwrap(),
            Read::Eof
        ));
    }
}
