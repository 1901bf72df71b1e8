//! `--serve`: the same task as a long-running socket service.
//!
//! [`Server::start`] checks the database, builds one [`service::Service`] (a pool of warm
//! connections, the limits, the metrics) and binds every listener ([`listen`]); [`Server::run`]
//! accepts connections until it is told to stop, and hands each to its protocol: [`line`] or
//! [`http`]. Both parse a request into the task's own arguments and run it through the same
//! `prepare` and [`crate::run::execute_in`] as process mode.
//!
//! Shutdown has two stages: *draining* (stop accepting and reading; requests in flight go on)
//! and, after `grace_ms`, the *cut* (requests that have not reached their commit stop and are
//! answered with an error). Then unix socket files are removed and `run` returns.

mod amqp;
mod batch;
mod broker;
mod http;
mod line;
mod listen;
pub mod login;
mod metrics;
mod nats;
mod pool;
mod service;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::db::{self, Target, requests, schema};
use crate::error::{Error, ErrorKind, Result};
use crate::output::Output;
use crate::task::Task;
pub(crate) use listen::Spec;
use listen::{Listener, Protocol};
use pool::Pool;
use service::{Service, encode_error};

/// The stages of a shutdown that connections and requests wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Stop accepting and reading; requests in flight go on.
    Draining,
    /// Requests that have not reached their commit stop.
    Cut,
}

/// The shutdown as connections and requests see it: two cancellation tokens, the drain a child
/// of the cut, so that a cut is a drain too.
#[derive(Clone)]
pub(crate) struct Phase {
    drain: CancellationToken,
    cut: CancellationToken,
}

impl Phase {
    fn new() -> Phase {
        let cut = CancellationToken::new();
        Phase {
            drain: cut.child_token(),
            cut,
        }
    }

    fn token(&self, stage: Stage) -> &CancellationToken {
        match stage {
            Stage::Draining => &self.drain,
            Stage::Cut => &self.cut,
        }
    }

    /// Moves the shutdown to `stage`.
    fn enter(&self, stage: Stage) {
        self.token(stage).cancel();
    }

    /// Whether the shutdown has reached `stage`.
    pub(crate) fn is(&self, stage: Stage) -> bool {
        self.token(stage).is_cancelled()
    }

    /// Returns once the shutdown reached `stage`. A loop that waits for it beside each of its
    /// steps pins this future once, outside the loop: each new one registers a waiter with the
    /// token, under the lock that every connection's waiters share.
    pub(crate) async fn reached(&self, stage: Stage) {
        self.token(stage).cancelled().await;
    }
}

/// A bound server, ready to run.
pub(crate) struct Server<T: Task> {
    service: Arc<Service<T>>,
    listeners: Vec<Listener>,
    phase: Phase,
}

impl<T: Task> Server<T> {
    /// Checks the database (setting up the embedded one on first use, as process mode does),
    /// then binds `specs` (the configured listeners, or the task's default port).
    pub(crate) async fn start(
        target: Target,
        task_settings: T::Settings,
        specs: &[String],
        out: &Output,
    ) -> Result<Server<T>> {
        let limits = target.settings.serve.clone();
        let specs = listen_specs::<T>(specs, &target.settings)?;
        if limits.max_request_bytes == 0 || limits.max_connections == 0 {
            return Err(Error::config(
                "serve.max_request_bytes and serve.max_connections must be at least 1",
            ));
        }
        let pool_size = match (limits.pool_size, target.backend()) {
            (Some(0), _) => {
                return Err(Error::config("serve.pool_size must be at least 1"));
            }
            (Some(n), _) => n as usize,
            (None, backend) => {
                let dialect = backend.dialect();
                // With one writer, a task that reads on the pool (a read-only task, or the
                // read-first phase of one that checks before it writes, beside the writer) gets
                // a connection per CPU more: readers never wait for each other.
                let readers = dialect.one_writer() && (T::READ_ONLY || T::READS_FIRST);
                let cpus = std::thread::available_parallelism().map_or(1, usize::from);
                dialect.default_pool_size() + if readers { cpus } else { 0 }
            }
        };
        let records = check_database::<T>(&target, out).await?;
        let token = target.secrets.serve_token.clone();
        if let Some(token) = &token {
            use crate::secrets::ExposeSecret;
            if token.expose_secret().len() < 16 {
                return Err(Error::config("serve_token is shorter than 16 characters")
                    .hint("use a long random string, e.g. from `openssl rand -hex 32`"));
            }
        }
        let brokers = login::BrokerSecrets::of(&target);
        let listeners = listen::bind(
            &specs,
            &limits,
            token.is_some(),
            T::NAME,
            pool_size,
            &brokers,
        )
        .await?;
        let phase = Phase::new();
        // Reads need no single writer: they run beside it on their own connections.
        let group_commit =
            target.backend().dialect().one_writer() && T::SINGLE_STATEMENT && !T::READ_ONLY;
        let pool = Arc::new(Pool::new(target, Target::of::<T>, T::MIGRATIONS, pool_size));
        let batch = group_commit.then(|| batch::Batch::start(Arc::clone(&pool), phase.clone()));
        let service = Arc::new(Service::new(
            pool,
            batch,
            limits,
            phase.clone(),
            token,
            task_settings,
            records,
        ));
        Ok(Server {
            service,
            listeners,
            phase,
        })
    }

    /// The bound addresses, as `--listen` would name them.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.listeners.iter().map(Listener::address).collect()
    }

    /// Serves until `stop` resolves (or, with only `stdio`, until its one connection ends),
    /// then shuts down gracefully.
    pub(crate) async fn run(self, stop: impl Future<Output = ()>) {
        let Server {
            service,
            listeners,
            phase,
        } = self;
        // Every connection runs on the tracker, so that the shutdown can wait for all of them.
        let connections = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(service.limits.max_connections as usize));
        let mut paths = Vec::new();
        let mut accepting = tokio::task::JoinSet::new();
        for listener in listeners {
            if let Listener::Unix(_, _, Some(path)) = &listener {
                paths.push(path.clone());
            }
            if let Listener::Tls(_, _, tls) = &listener {
                service
                    .tls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::clone(tls));
            }
            let broker = match &listener {
                Listener::Nats(client, _, address) => {
                    Some((address.to_string(), broker::Broker::Nats(client.clone())))
                }
                Listener::Amqp(worker, address) => Some((
                    address.to_string(),
                    broker::Broker::Amqp(Arc::clone(&worker.status)),
                )),
                _ => None,
            };
            if let Some(broker) = broker {
                service
                    .brokers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(broker);
            }
            accepting.spawn(accept(
                Arc::clone(&service),
                listener,
                Arc::clone(&slots),
                connections.clone(),
            ));
        }
        if service.records {
            tokio::spawn(prune(Arc::clone(&service)));
        }
        let mut stop = std::pin::pin!(stop);
        tokio::select! {
            () = &mut stop => {}
            // Only listeners that end by themselves (stdio) finish before a stop.
            () = async { while accepting.join_next().await.is_some() {} } => {}
        }
        phase.enter(Stage::Draining);
        // The stdio connection runs inside its accept task: the grace period covers it too.
        let grace = Duration::from_millis(service.limits.grace_ms);
        let mut finished = async || {
            while accepting.join_next().await.is_some() {}
            // No accept loop is left to add a connection.
            connections.close();
            connections.wait().await;
        };
        if tokio::time::timeout(grace, finished()).await.is_err() {
            phase.enter(Stage::Cut);
            // Requests that were cut answer at once; one that is committing gets a moment more.
            let _ = tokio::time::timeout(Duration::from_secs(5), finished()).await;
        }
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Opens the database once at start: first-use setup on SQLite, the schema checked, and
/// whether request ids can be recorded. A database that is down is noted and served anyway.
async fn check_database<T: Task>(target: &Target, out: &Output) -> Result<bool> {
    // A task that writes records request ids; a database set up by an earlier version lacks
    // their table until setup runs again (on SQLite, whose file is ours, it is added now).
    let mut records = !T::READ_ONLY;
    match db::open(target, T::MIGRATIONS).await {
        Ok((mut conn, setup)) => {
            if let Some(report) = setup {
                out.note(report.summary());
            }
            // On a server `open` does not look at the schema (a task checks it in the round
            // trip that begins); it is checked now, so that a database that needs setup is
            // refused at start, not per request. (SQLite's, set up by `open`, passes.)
            let checked = async {
                schema::require_current(&mut conn, T::MIGRATIONS, &target.location).await?;
                // The app role of a server may not create it: then only setup can.
                if records
                    && !requests::available(&mut conn).await?
                    && requests::create(&mut conn).await.is_err()
                {
                    records = false;
                    out.note(format_args!(
                        "{}; requests without an id are served",
                        requests::missing(T::NAME).message()
                    ));
                }
                Ok(())
            }
            .await;
            conn.close_after(checked).await?;
        }
        Err(e) if e.kind() == ErrorKind::Unavailable => out.note(format_args!(
            "{}; serving anyway: requests are answered \"unavailable\" until it is back",
            e.message()
        )),
        Err(e) => return Err(e),
    }
    Ok(records)
}

/// Removes the executable's request ids older than `serve.request_ids_keep_s`, at start and then
/// every tenth of that window (at most every minute), until the drain. A failure is retried at
/// the next round: ids kept a little longer harm nothing.
async fn prune<T: Task>(service: Arc<Service<T>>) {
    let keep_s = service.limits.request_ids_keep_s;
    let every = Duration::from_secs((keep_s / 10).clamp(1, 60));
    let draining = service.phase.reached(Stage::Draining);
    tokio::pin!(draining);
    loop {
        if let Ok(mut lease) = service.pool.acquire().await
            && requests::prune(lease.conn(), T::NAME, keep_s).await.is_ok()
        {
            lease.keep();
        }
        tokio::select! {
            () = &mut draining => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

pub use broker::BrokerStatus;

pub(crate) use broker::{
    any as brokers_among, clean_up as clean_up_brokers, clean_up_plan as broker_plan,
    set_up as set_up_brokers,
};

/// `--self-status` on the brokers `listen` names, for executable `exe`.
pub(crate) async fn probe_brokers(
    listen: &[String],
    exe: &str,
    secrets: &login::BrokerSecrets,
) -> Vec<BrokerStatus> {
    broker::probe(listen, exe, secrets).await
}

/// The listeners: `--listen`, else `serve.listen`, else systemd's sockets if it passed some,
/// else the task's default port on loopback.
fn listen_specs<T: Task>(given: &[String], settings: &Settings) -> Result<Vec<Spec>> {
    let specs: Vec<String> = if !given.is_empty() {
        given.to_vec()
    } else if !settings.serve.listen.is_empty() {
        settings.serve.listen.clone()
    } else if std::env::var_os("LISTEN_FDS").is_some() {
        vec![crate::protocol::listen::SYSTEMD.into()]
    } else {
        vec![format!(
            "{}127.0.0.1:{}",
            crate::protocol::listen::TCP,
            T::PORT
        )]
    };
    specs.iter().map(|s| Spec::parse(s)).collect()
}

/// Accepts connections on one listener until the drain.
async fn accept<T: Task>(
    service: Arc<Service<T>>,
    listener: Listener,
    slots: Arc<Semaphore>,
    connections: TaskTracker,
) {
    let phase = service.phase.clone();
    let needs_token = service.needs_token();
    match listener {
        Listener::Stdio => {
            let _slot = slots.try_acquire_owned();
            let stdio = line::serve(
                Arc::clone(&service),
                tokio::io::stdin(),
                tokio::io::stdout(),
                false,
            );
            counted(&service, stdio).await;
        }
        Listener::Tcp(listener, protocol) => {
            let accept = || listener.accept();
            accept_until_drained(&phase, accept, |(stream, _)| {
                let _ = stream.set_nodelay(true);
                spawn_connection(
                    &service,
                    stream,
                    protocol,
                    needs_token,
                    &slots,
                    &connections,
                );
            })
            .await;
        }
        Listener::Tls(listener, protocol, tls) => {
            let accept = || listener.accept();
            accept_until_drained(&phase, accept, |(stream, _)| {
                let _ = stream.set_nodelay(true);
                let (service, slots, tracker) = (
                    Arc::clone(&service),
                    Arc::clone(&slots),
                    connections.clone(),
                );
                let acceptor = tls.acceptor();
                // The handshake runs on the connection's own task, bounded, before it takes a
                // slot: a client that never finishes it holds nothing.
                connections.spawn(async move {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, handshake).await
                    {
                        // A client certificate the CA signed stands for the token.
                        let needs_token = needs_token && !tls::client_certified(&stream);
                        spawn_connection(&service, stream, protocol, needs_token, &slots, &tracker);
                    }
                });
            })
            .await;
        }
        // The broker decides who may publish: no token.
        Listener::Amqp(worker, _) => {
            amqp::serve(Arc::clone(&service), *worker, slots).await;
        }
        Listener::Nats(client, inbox, _) => {
            nats::serve(Arc::clone(&service), client, inbox, slots).await;
        }
        // The socket file's mode decides who may connect: no token.
        Listener::Unix(listener, protocol, _) => {
            let accept = || listener.accept();
            accept_until_drained(&phase, accept, |(stream, _)| {
                spawn_connection(&service, stream, protocol, false, &slots, &connections);
            })
            .await;
        }
    }
}

/// Hands each accepted connection to `serve` until the drain begins.
async fn accept_until_drained<C, F: Future<Output = std::io::Result<C>>>(
    phase: &Phase,
    mut accept: impl FnMut() -> F,
    mut serve: impl FnMut(C),
) {
    let drained = phase.reached(Stage::Draining);
    tokio::pin!(drained);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut drained => return,
            accepted = accept() => accepted,
        };
        match accepted {
            Ok(connection) => serve(connection),
            Err(e) => accept_failed(e).await,
        }
    }
}

/// After a failed accept (out of file descriptors, say), waits a little instead of spinning.
async fn accept_failed(e: std::io::Error) {
    crate::output::detail(format_args!("accepting a connection failed: {e}"));
    tokio::time::sleep(Duration::from_millis(20)).await;
}

fn spawn_connection<T: Task, S>(
    service: &Arc<Service<T>>,
    stream: S,
    protocol: Protocol,
    needs_token: bool,
    slots: &Arc<Semaphore>,
    connections: &TaskTracker,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = Arc::clone(service);
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
        let error = Error::temporary(format!(
            "the service has {} connections open, its limit; this one is closed",
            service.limits.max_connections
        ))
        .hint("try again later, or raise serve.max_connections");
        connections.spawn(async move {
            match protocol {
                Protocol::Line => {
                    use tokio::io::AsyncWriteExt;
                    let mut stream = stream;
                    let _ = stream.write_all(&encode_error(error)).await;
                    let _ = stream.shutdown().await;
                }
                Protocol::Http => http::refuse(stream, error).await,
            }
        });
        return;
    };
    connections.spawn(async move {
        let connection = Arc::clone(&service);
        match protocol {
            Protocol::Line => {
                let (reader, writer) = tokio::io::split(stream);
                counted(
                    &service,
                    line::serve(connection, reader, writer, needs_token),
                )
                .await;
            }
            Protocol::Http => counted(&service, http::serve(connection, stream, needs_token)).await,
        }
        drop(slot);
    });
}

/// Runs one client connection, counted in the metrics while it is open.
async fn counted<T: Task>(service: &Service<T>, connection: impl Future<Output = ()>) {
    use std::sync::atomic::Ordering::Relaxed;
    service.metrics.connections.fetch_add(1, Relaxed);
    connection.await;
    service.metrics.connections.fetch_sub(1, Relaxed);
}

/// Sample request `n` of run `run` ([`crate::protocol::SampleLine`]): the command-line words
/// (with the verb) for process mode and the JSON object for a service, its secret input as
/// the request's `stdin`.
pub(crate) fn sample<T: Task>(n: u64, run: &str) -> Result<crate::protocol::SampleLine> {
    let mut request = serde_json::to_value(T::sample(n, run))
        .map_err(|e| Error::internal(format!("sample {n} cannot be encoded: {e}")))?;
    let (words, _) = service::words_from_json(request.clone())?;
    let argv: Vec<String> = std::iter::once(format!("--{}", T::VERB))
        .chain(words)
        .collect();
    let input = T::sample_input(n, run);
    if let (Some(text), Some(map)) = (&input, request.as_object_mut()) {
        map.insert("stdin".into(), text.clone().into());
    }
    Ok(crate::protocol::SampleLine {
        argv,
        n,
        request,
        input,
    })
}

/// [`sample`] as one JSON line for the runner.
pub(crate) fn sample_line<T: Task>(n: u64, run: &str) -> Result<String> {
    serde_json::to_string(&sample::<T>(n, run)?)
        .map_err(|e| Error::internal(format!("sample {n} cannot be encoded: {e}")))
}

/// `--serve`: starts, says it is ready (a line on stderr naming the addresses, and `READY=1`
/// to systemd), serves until SIGTERM or SIGINT, and shuts down gracefully.
/// SIGHUP: the secrets are read again (after a credential rotation), and the TLS listeners'
/// certificates and keys; new connections use them, open ones drain as they are. Says so on
/// stderr, without a secret.
async fn reload_on_hangup<T: Task>(service: &Service<T>, out: &Output) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        return std::future::pending().await;
    };
    while hangups.recv().await.is_some() {
        match service.pool.reload() {
            Ok(_) => out.note("SIGHUP: read the secrets again; new connections use them"),
            Err(e) => out.note(format_args!(
                "SIGHUP: the secrets could not be read again, the old ones stay: {}",
                e.message()
            )),
        }
        let listeners = service
            .tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for tls in listeners {
            match tls.reload() {
                Ok(()) => out.note("SIGHUP: read the TLS certificate and key again"),
                Err(e) => out.note(format_args!(
                    "SIGHUP: the TLS certificate or key could not be read, the old ones stay: {}",
                    e.message()
                )),
            }
        }
    }
    std::future::pending().await
}

pub(crate) async fn main<T: Task>(
    target: Target,
    task_settings: T::Settings,
    specs: &[String],
    out: &Output,
) -> Result<()> {
    let stop = crate::interrupt::signals()
        .map_err(|e| Error::internal(format!("cannot handle signals: {e}")))?;
    let server = Server::<T>::start(target, task_settings, specs, out).await?;
    // Always printed (also with -q): scripts and the runner wait for it, and read the ports.
    eprintln!(
        "{}",
        crate::protocol::ready_line(T::NAME, &server.addresses())
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let service = Arc::clone(&server.service);
    let reload = reload_on_hangup(&service, out);
    let run = server.run(async {
        stop.await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        out.note("stopping: finishing the requests in flight");
    });
    tokio::select! {
        () = run => {}
        // Never ends while the service runs.
        () = reload => {}
    }
    out.note("stopped");
    Ok(())
}
