//! One request, whatever the protocol: parsed into the task's own `Args` by the same clap
//! definition as the command line, prepared by [`Task::prepare`], executed by
//! [`crate::run::execute_in`] (as in process mode) on a pooled connection, answered with the
//! JSON document `--json` prints, wrapped with its outcome.
//!
//! A request runs on its connection's task, so that the connection's slot, the drain and the
//! cut all cover it. An answer `ok` means committed. Before the
//! commit, the request is bounded by `request_timeout_ms` and by the shutdown's cut; the time of
//! each phase (prepare, acquire, begin, execute) goes to the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args as _, Command, FromArgMatches};
use serde::Serialize;
use serde_json::Value;

use super::metrics::{Metrics, Step};
use super::pool::Pool;
use super::{Phase, Stage};
use crate::config::ServeSettings;
use crate::db::requests::{self, Recorded, RequestId};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Answer, AnswerError};
use crate::secrets::{ExposeSecret, SecretString};
use crate::stream::RowSink;
use crate::task::{Context, Input, Task};

/// What every connection shares.
pub(crate) struct Service<T: Task> {
    pub(crate) pool: Arc<Pool>,
    /// SQLite's group commit, for a single-statement task.
    batch: Option<super::batch::Batch<T>>,
    pub(crate) limits: ServeSettings,
    pub(crate) metrics: Metrics,
    pub(crate) phase: Phase,
    token: Option<SecretString>,
    task_settings: T::Settings,
    /// The task's arguments, as `clap` parses them from a request (no binary name, no modes).
    command: Command,
    /// The NATS servers it takes requests from, by address: `/healthz` tells their state.
    pub(crate) brokers: std::sync::Mutex<Vec<(String, super::broker::Broker)>>,
    /// Whether the database has the table request ids are recorded in.
    pub(crate) records: bool,
    /// The TLS listeners' certificates, which SIGHUP reads again.
    pub(crate) tls: std::sync::Mutex<Vec<Arc<super::tls::Tls>>>,
}

impl<T: Task> Service<T> {
    pub(crate) fn new(
        pool: Arc<Pool>,
        batch: Option<super::batch::Batch<T>>,
        limits: ServeSettings,
        phase: Phase,
        token: Option<SecretString>,
        task_settings: T::Settings,
        records: bool,
    ) -> Self {
        let mut command = T::Args::augment_args(
            Command::new(T::NAME)
                .no_binary_name(true)
                .disable_help_flag(true)
                .disable_version_flag(true),
        );
        // Built once: each request parses with a clone, which then skips clap's build step.
        command.build();
        Service {
            pool,
            batch,
            limits,
            metrics: Metrics::default(),
            phase,
            token,
            task_settings,
            command,
            brokers: std::sync::Mutex::new(Vec::new()),
            records,
            tls: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Whether clients must present a token.
    pub(crate) fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Checks a token a client presented, in constant time.
    pub(crate) fn token_matches(&self, given: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.token
            .as_ref()
            .is_some_and(|t| bool::from(t.expose_secret().as_bytes().ct_eq(given.as_bytes())))
    }

    /// Answers one request line: shell-quoted arguments, or a JSON object of them (its id, if
    /// any, in `--request-id` or `"request_id"`).
    pub(crate) async fn answer_line(self: &Arc<Self>, line: &[u8]) -> Vec<u8> {
        let started = Instant::now();
        let parsed = parse_line(line).and_then(|(words, input)| self.args(words, input, None));
        self.answer(parsed, started).await.0
    }

    /// Answers a JSON body (HTTP, a broker's message), with the outcome for the status code;
    /// `id` is the request id the transport carried beside the body (`Idempotency-Key`,
    /// `Nats-Msg-Id`), if any.
    pub(crate) async fn answer_json(
        self: &Arc<Self>,
        body: &[u8],
        id: Option<(&str, &str)>,
    ) -> (Vec<u8>, Option<ErrorKind>) {
        let started = Instant::now();
        let parsed = serde_json::from_slice::<Value>(if body.is_empty() { b"{}" } else { body })
            .map_err(|e| {
                Error::usage(format!("the request body is not valid JSON: {e}"))
                    .hint("send a JSON object of the task's arguments")
            })
            .and_then(words_from_json)
            .and_then(|(words, input)| self.args(words, input, id));
        self.answer(parsed, started).await
    }

    /// Answers the query string of a `GET` (HTTP, read-only tasks): `name=value` pairs,
    /// percent-decoded, are the arguments, as a JSON body's fields would be (a name given twice
    /// is a list).
    pub(crate) async fn answer_query(
        self: &Arc<Self>,
        query: Option<&str>,
    ) -> (Vec<u8>, Option<ErrorKind>) {
        let started = Instant::now();
        let mut map = serde_json::Map::new();
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = Value::String(value.into_owned());
            match map.get_mut(key.as_ref()) {
                Some(Value::Array(items)) => items.push(value),
                Some(first) => *first = Value::Array(vec![first.take(), value]),
                None => {
                    map.insert(key.into_owned(), value);
                }
            }
        }
        let parsed = words_from_json(Value::Object(map))
            .and_then(|(words, input)| self.args(words, input, None));
        self.answer(parsed, started).await
    }

    async fn answer(
        self: &Arc<Self>,
        parsed: Result<Parsed<T::Args>>,
        started: Instant,
    ) -> (Vec<u8>, Option<ErrorKind>) {
        // The request runs on the connection's own task, so that its slot, the drain and the
        // cut all cover it. If hyper drops it (the client went away), its connection is dropped
        // unreturned and the database rolls back whatever was not committed; no answer is owed.
        let result = match parsed {
            Ok(parsed) => self.execute(parsed).await,
            Err(e) => Err(e),
        };
        let outcome = result.as_ref().err().map(Error::kind);
        self.metrics.observe(outcome, started.elapsed());
        let bytes = match result {
            Ok(Reply::Recorded(recorded)) => {
                if recorded.replayed {
                    self.metrics
                        .replayed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let mut bytes = recorded.answer.into_bytes();
                bytes.push(b'\n');
                bytes
            }
            Ok(Reply::Served(served)) => encode(Ok(served)),
            Err(e) => encode::<()>(Err(e)),
        };
        (bytes, outcome)
    }

    /// Prepares and executes one request on a pooled connection: the task's output, and the
    /// rows it streamed, if it streams.
    async fn execute(self: &Arc<Self>, parsed: Parsed<T::Args>) -> Result<Reply<T::Output>> {
        /// Counts a request in flight until it ends, also when it is dropped.
        struct InFlight<'a>(&'a std::sync::atomic::AtomicI64);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.metrics
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _counted = InFlight(&self.metrics.in_flight);
        self.execute_counted(parsed).await
    }

    async fn execute_counted(
        self: &Arc<Self>,
        parsed: Parsed<T::Args>,
    ) -> Result<Reply<T::Output>> {
        let Parsed { args, input, id } = parsed;
        // A read changes nothing: reading again is as harmless as an id would make it.
        let id = id.filter(|_| !T::READ_ONLY);
        if id.is_some() && !self.records {
            return Err(crate::db::requests::missing(T::NAME));
        }
        let started = Instant::now();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.limits.request_timeout_ms);
        let request = self.prepare(args, input, deadline).await?;
        let prepared = Instant::now();
        self.metrics.phase(Step::Prepare, started.elapsed());
        if let Some(batch) = &self.batch {
            let output = batch.submit(request, id, deadline).await;
            self.metrics.phase(Step::Execute, prepared.elapsed());
            return output;
        }
        // The request timeout and the shutdown's cut stop the request before its commit, never
        // during it (`execute_in`).
        let stop = || self.stop(deadline);
        let mut lease = bounded(stop(), self.pool.acquire()).await?;
        let acquired = Instant::now();
        self.metrics.phase(Step::Acquire, acquired - prepared);
        if let Some(id) = id {
            let result = self.once(&mut lease, request, &id, deadline).await;
            self.metrics.phase(Step::Execute, acquired.elapsed());
            self.settle_lease(&mut lease, result.as_ref().err(), false);
            return result.map(Reply::Recorded);
        }
        let mut sink = RowSink::collect();
        let tx = bounded(stop(), lease.begin(T::SINGLE_STATEMENT, T::READ_ONLY)).await?;
        let tx = tx.with_sink(&mut sink);
        let begun = Instant::now();
        self.metrics.phase(Step::Begin, begun - acquired);
        let result = crate::run::execute_in::<T>(tx, request, stop()).await;
        self.metrics.phase(Step::Execute, begun.elapsed());
        self.settle_lease(&mut lease, result.as_ref().err(), sink.abandoned);
        result.map(|output| {
            Reply::Served(match sink.collected() {
                Some(rows) => Served::Rows { output, rows },
                None => Served::Plain(output),
            })
        })
    }

    /// What ends a request before its commit: the shutdown's cut, or its `deadline`.
    fn stop(
        &self,
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Error> + use<T> {
        let phase = self.phase.clone();
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        async move {
            tokio::select! {
                biased;
                () = phase.reached(Stage::Cut) => cut_error(),
                () = tokio::time::sleep_until(deadline) => timeout_error(timeout),
            }
        }
    }

    /// Runs a request that carries an id on `lease`: executed and recorded, or, seen before (its
    /// id's row exists, or its task refused a key the first one wrote), the first answer.
    async fn once(
        &self,
        lease: &mut super::pool::Lease<'_>,
        request: T::Request,
        id: &RequestId,
        deadline: tokio::time::Instant,
    ) -> Result<Recorded> {
        let tx = bounded(self.stop(deadline), lease.begin(false, false)).await?;
        match crate::run::execute_once::<T>(tx, request, self.stop(deadline), id).await {
            Ok(answer) => Ok(Recorded {
                answer,
                replayed: false,
            }),
            Err(e) if reusable(e.kind()) => {
                let first = requests::recorded(lease.conn(), T::NAME, id);
                match bounded(self.stop(deadline), first).await? {
                    Some(answer) => Ok(Recorded {
                        answer,
                        replayed: true,
                    }),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Validates a request (and, for a task that reads first, reads).
    async fn prepare(
        self: &Arc<Self>,
        args: T::Args,
        input: Input,
        deadline: tokio::time::Instant,
    ) -> Result<T::Request> {
        // A request with a secret (a password to hash) is prepared on the blocking pool, off the
        // threads that serve sockets; validation alone is cheaper than the hop there.
        let request = if matches!(input, Input::Text(_)) {
            let service = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                T::prepare(args, &mut Context::new(&service.task_settings, input))
            })
            .await
            .map_err(|e| Error::internal(format!("preparing the request failed: {e}")))??
        } else {
            T::prepare(args, &mut Context::new(&self.task_settings, input))?
        };
        if T::READS_FIRST {
            self.read_first(request, deadline).await
        } else {
            Ok(request)
        }
    }

    /// Whether the connection goes back to the pool after a request that ended with `error`.
    fn settle_lease(
        &self,
        lease: &mut super::pool::Lease<'_>,
        error: Option<&Error>,
        abandoned: bool,
    ) {
        match error {
            // A result left part read (an answer over the row limit): the connection goes.
            _ if abandoned => {}
            None => lease.keep(),
            Some(e) if reusable(e.kind()) => lease.keep(),
            // The database went away: the idle connections are as stale as this one.
            Some(e) if e.kind() == ErrorKind::Unavailable => self.pool.forget_idle(),
            Some(_) => {}
        }
    }

    /// A task's read-first phase ([`Task::read_first`]) on a pooled connection, in a read-only
    /// transaction of its own; counted as part of preparing the request.
    async fn read_first(
        &self,
        request: T::Request,
        deadline: tokio::time::Instant,
    ) -> Result<T::Request> {
        let stop = || self.stop(deadline);
        let mut lease = bounded(stop(), self.pool.acquire()).await?;
        let result = async {
            let mut tx = bounded(stop(), lease.begin(false, true)).await?;
            match bounded(stop(), T::read_first(&mut tx, request)).await {
                // Stopped part way, or the connection failed: it is dropped, not rolled back
                // (the server rolls back), and not kept.
                Err(e) if !reusable(e.kind()) => Err(e),
                read => tx.settle(read).await,
            }
        }
        .await;
        match &result {
            Ok(_) => lease.keep(),
            Err(e) if reusable(e.kind()) => lease.keep(),
            Err(_) => {}
        }
        result
    }

    /// The task's arguments from request words, as the command line would parse them, and the
    /// request's id: `--request-id` among the words, or `carried` (what the transport named it,
    /// and the id), which must then agree.
    fn args(
        &self,
        mut words: Vec<String>,
        input: Input,
        carried: Option<(&str, &str)>,
    ) -> Result<Parsed<T::Args>> {
        let mut id = match carried {
            Some((what, text)) => Some(RequestId::parse(text, what)?),
            None => None,
        };
        if let Some(given) = take_request_id(&mut words)? {
            if id.as_ref().is_some_and(|id| *id != given) {
                return Err(Error::usage(format!(
                    "the request id {given} differs from {}'s",
                    carried.map_or("", |c| c.0)
                ))
                .hint("send one id per request, in one place"));
            }
            id = Some(given);
        }
        let verb = format!("--{}", T::VERB);
        if words.first() == Some(&verb) {
            words.remove(0);
        }
        if let Some(mode) = words
            .iter()
            .find(|w| w.starts_with("--self-") || w.starts_with("--serve") || **w == verb)
        {
            let mode = mode.split('=').next().unwrap_or(mode);
            return Err(Error::usage(format!(
                "{mode} is not served: a request holds {verb}'s arguments only"
            ))
            .hint(format!("run `{} {mode}` on the command line", T::NAME)));
        }
        let matches = self
            .command
            .clone()
            .try_get_matches_from(words)
            .map_err(|e| self.usage_error(&e))?;
        let args = T::Args::from_arg_matches(&matches).map_err(|e| self.usage_error(&e))?;
        Ok(Parsed { args, input, id })
    }

    fn usage_error(&self, e: &clap::Error) -> Error {
        // clap's first paragraph says what is wrong (a list of missing arguments may follow
        // on its own lines); its usage and tips are for a command line, not for a socket.
        let text = e.render().to_string();
        let message: Vec<&str> = text
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .map(str::trim)
            .collect();
        let message = message.join(" ");
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        let usage = self.command.clone().render_usage().to_string();
        let usage = usage.trim().strip_prefix("Usage: ").unwrap_or(usage.trim());
        Error::usage(message).hint(format!(
            "a request holds --{}'s arguments: {usage}",
            T::VERB
        ))
    }

    /// Checks that the database answers (`GET /healthz`).
    pub(crate) async fn health(&self) -> Result<Value> {
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        let check = async {
            let mut lease = self.pool.acquire().await?;
            lease.conn().exec("SELECT 1".into()).await?;
            lease.keep();
            Ok::<_, Error>(())
        };
        tokio::time::timeout(timeout, check).await.map_err(|_| {
            Error::unavailable(format!(
                "the database did not answer within {} ms",
                timeout.as_millis()
            ))
        })??;
        let brokers = self
            .brokers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if brokers.is_empty() {
            return Ok(serde_json::json!({ "database": "up" }));
        }
        let mut states = serde_json::Map::new();
        for (address, broker) in brokers {
            if let Err(state) = broker.state() {
                return Err(Error::unavailable(format!(
                    "the broker at {address} is not connected ({state}): no request reaches this worker"
                ))
                .hint("the worker reconnects by itself; check that the broker runs"));
            }
            states.insert(address, "connected".into());
        }
        Ok(serde_json::json!({ "database": "up", "brokers": states }))
    }
}

/// A request parsed: the task's arguments, its secret input, its id.
pub(crate) struct Parsed<A> {
    args: A,
    input: Input,
    id: Option<RequestId>,
}

/// A request's answer: served now, or recorded with its id (now, or the first time).
pub(crate) enum Reply<O> {
    Served(Served<O>),
    Recorded(Recorded),
}

/// Takes `--request-id ID` (or `--request-id=ID`) out of request words: the harness's, not the
/// task's.
fn take_request_id(words: &mut Vec<String>) -> Result<Option<RequestId>> {
    const FLAG: &str = "--request-id";
    let Some(at) = words
        .iter()
        .position(|w| w == FLAG || w.starts_with("--request-id="))
    else {
        return Ok(None);
    };
    let word = words.remove(at);
    let text = match word.strip_prefix("--request-id=") {
        Some(text) => text.to_string(),
        None if at < words.len() => words.remove(at),
        None => {
            return Err(Error::usage("--request-id needs a value")
                .hint("e.g. --request-id 0b6f0c1e-4a3b-4c1d-9e2f-6a7b8c9d0e1f"));
        }
    };
    if words
        .iter()
        .any(|w| w == FLAG || w.starts_with("--request-id="))
    {
        return Err(Error::usage("the request has two ids").hint("send one --request-id"));
    }
    RequestId::parse(&text, "the request").map(Some)
}

/// Runs `step` unless `stop` (the request's deadline, the shutdown's cut) comes first.
async fn bounded<O>(
    stop: impl std::future::Future<Output = Error>,
    step: impl std::future::Future<Output = Result<O>>,
) -> Result<O> {
    tokio::select! {
        biased;
        e = stop => Err(e),
        done = step => done,
    }
}

/// The answer to a request the shutdown's cut stopped before it wrote anything.
pub(crate) fn cut_error() -> Error {
    Error::new(
        ErrorKind::Interrupted,
        "the service stopped before the request was done; nothing was written",
    )
    .hint("send it again to another instance, or after the restart")
}

/// The answer to a request that ran out of time before it wrote anything.
pub(crate) fn timeout_error(timeout: Duration) -> Error {
    Error::temporary(format!(
        "the request did not finish within {} ms; nothing was written",
        timeout.as_millis()
    ))
    .hint("the database is slow or overloaded; try again, or raise serve.request_timeout_ms")
}

/// Whether a connection is still good after a request failed with `kind`: the task refused it
/// (invalid, duplicate) rather than the connection failing.
pub(crate) fn reusable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidInput
            | ErrorKind::NotFound
            | ErrorKind::Conflict
            | ErrorKind::Permission
            | ErrorKind::Failed
    )
}

/// One [`Answer`] and a newline. A result is written straight from the task's output, with no
/// JSON tree in between.
pub(crate) fn encode<O: serde::Serialize>(result: Result<O>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    let written = match result {
        Ok(result) => serde_json::to_writer(&mut bytes, &Answer::success(result)),
        Err(e) => serde_json::to_writer(&mut bytes, &Answer::<()>::failure(answer_error(&e))),
    };
    if let Err(e) = written {
        return encode_error(Error::internal(format!(
            "the task's output cannot be encoded: {e}"
        )));
    }
    bytes.push(b'\n');
    bytes
}

/// A task's answer over `--serve`: its output, with the rows it streamed beside it (the
/// output's fields and `rows` in one object).
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Served<O> {
    /// A task that streams nothing.
    Plain(O),
    /// A task that streams rows.
    Rows {
        #[serde(flatten)]
        output: O,
        rows: Vec<Value>,
    },
}

/// An error answer.
pub(crate) fn encode_error(e: Error) -> Vec<u8> {
    encode::<()>(Err(e))
}

/// The `error` of an answer: what `--json` says of the error in process mode.
fn answer_error(e: &Error) -> AnswerError {
    AnswerError {
        exit_code: e.exit_code(),
        hint: e.advice().to_string(),
        kind: e.kind().as_str().to_string(),
        message: e.message().to_string(),
    }
}

/// Splits a request line into words: a JSON object, or arguments quoted as a POSIX shell would.
pub(crate) fn parse_line(line: &[u8]) -> Result<(Vec<String>, Input)> {
    let text = std::str::from_utf8(line).map_err(|e| {
        Error::usage(format!(
            "the request is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
        .hint("send the arguments as UTF-8 text, one request per line")
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::usage("the request line is empty")
            .hint("send the task's arguments, e.g. --name value, one request per line"));
    }
    if text.starts_with('{') {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Error::usage(format!("the request is not valid JSON: {e}"))
                .hint("send one JSON object per line, or the arguments as on the command line")
        })?;
        return words_from_json(value);
    }
    let words = shlex::split(text).ok_or_else(|| {
        Error::usage("the request's quoting is unbalanced")
            .hint("quote arguments as a POSIX shell would: 'single' or \"double\" quotes, closed")
    })?;
    Ok((words, Input::None))
}

/// The command-line words of a JSON request: `{"username": "alice", "flag": true}` is
/// `--username=alice --flag`; `"stdin"` is what process mode would read on standard input (a
/// password, say), so that a secret never has to be spelled as an argument.
pub(crate) fn words_from_json(value: Value) -> Result<(Vec<String>, Input)> {
    let Value::Object(map) = value else {
        return Err(
            Error::usage("a JSON request must be an object of arguments")
                .hint("e.g. {\"username\": \"alice\", \"email\": \"alice@example.com\"}"),
        );
    };
    let mut words = Vec::with_capacity(map.len());
    let mut input = Input::None;
    for (key, value) in map {
        if key == "stdin" {
            let Value::String(text) = value else {
                return Err(Error::usage("\"stdin\" must be a string"));
            };
            input = Input::Text(text);
            continue;
        }
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::usage(format!("{key:?} is not an argument name"))
                .hint("names are the task's long options without dashes, e.g. \"username\""));
        }
        let flag = format!("--{}", key.replace('_', "-"));
        let scalar = |value: Value| match value {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(Error::usage(format!(
                "the value of \"{key}\" must be a string, a number or a boolean, not {other}"
            ))),
        };
        match value {
            Value::Bool(true) => words.push(flag),
            Value::Bool(false) | Value::Null => {}
            Value::Array(items) => {
                for item in items {
                    words.push(format!("{flag}={}", scalar(item)?));
                }
            }
            other => words.push(format!("{flag}={}", scalar(other)?)),
        }
    }
    Ok((words, input))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        parse_line(line.as_bytes()).unwrap().0
    }

    #[test]
    fn a_line_splits_like_a_shell_and_json_maps_to_the_same_words() {
        assert_eq!(
            words("--username alice --email 'a b@example.com'\r\n"),
            ["--username", "alice", "--email", "a b@example.com"]
        );
        assert_eq!(
            words(r#"{"username": "-alice", "password_stdin": true, "quiet": false, "n": 3}"#),
            ["--n=3", "--password-stdin", "--username=-alice"]
        );
        let (_, input) = parse_line(br#"{"stdin": "s3cret"}"#).unwrap();
        assert!(matches!(input, Input::Text(t) if t == "s3cret"));
    }

    #[test]
    fn unparsable_lines_are_usage_errors() {
        for line in [
            &b"\xff\xfe"[..],
            b"   \n",
            b"--a 'open",
            b"{not json",
            b"{\"a\": {\"b\": 1}}",
            b"{\"a b\": 1}",
            b"{\"stdin\": 1}",
        ] {
            let e = parse_line(line).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Usage, "{line:?}");
        }
    }

    #[test]
    fn answers_are_one_json_line_with_the_outcome() {
        let ok = encode(Ok(serde_json::json!({"id": 1})));
        assert_eq!(ok, b"{\"ok\":true,\"result\":{\"id\":1}}\n");
        let err: Value = serde_json::from_slice(&encode_error(Error::conflict("taken"))).unwrap();
        assert_eq!(err["ok"], false);
        assert_eq!(err["error"]["kind"], "conflict");
        assert_eq!(err["error"]["exit_code"], 73);
    }

    /// The error answers are byte for byte what they were when they were made from the
    /// process mode's JSON error with `"ok": false` added, for every kind, with and without a
    /// hint, and with text that JSON must escape.
    #[test]
    fn error_answers_keep_their_bytes() {
        for kind in ErrorKind::ALL {
            for e in [
                Error::new(kind, "it \"broke\"\n\u{7}é"),
                Error::new(kind, "x").hint("do this\tnow"),
            ] {
                let mut doc = e.to_json();
                doc["ok"] = Value::Bool(false);
                let mut before = serde_json::to_vec(&doc).unwrap();
                before.push(b'\n');
                assert_eq!(
                    String::from_utf8(encode_error(e)).unwrap(),
                    String::from_utf8(before).unwrap(),
                    "{kind:?}"
                );
            }
        }
    }

    // Fuzzing (issue 12): whatever a client sends, a request line parses or is refused with an
    // error; it never panics.
    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_parse_or_are_refused(
            line in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            let _ = parse_line(&line);
        }

        #[test]
        fn json_requests_parse_or_are_refused(
            line in r#"\{( ?"[a-z_-]{0,10}" ?: ?(-?[0-9.e]{1,24}|"[^"]{0,12}"|true|false|null|\[[0-9,"a]{0,6}\]|\{\}) ?,?){0,5}\}"#
        ) {
            let _ = parse_line(line.as_bytes());
        }

        #[test]
        fn word_requests_parse_or_are_refused(line in r#"[ -~\t'"\\]{0,200}"#) {
            let _ = parse_line(line.as_bytes());
        }
    }
}
