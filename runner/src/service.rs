//! Serve mode: the same requests sent to a running `--serve` instance over `connections`
//! persistent client connections, each with one request outstanding at a time (a closed loop,
//! as pgbench's clients are), over the line protocol (TCP or a unix socket), HTTP/1.1, or as
//! NATS requests to the executable's subject (answered by whichever instance of its queue group
//! takes each).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commondb::brokers::BrokerSecrets;
use commondb::protocol::Answer;
use commondb::protocol::amqp;
use commondb::protocol::listen::{AMQP, AMQPS, HTTP, HTTPS, NATS, NATS_JS, TCP, TLS, UNIX};
use commondb::protocol::nats::{self, Address};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::report::Record;

/// Where the service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The line protocol over TCP, `host:port`.
    Tcp(String),
    /// The line protocol on a unix socket.
    Unix(PathBuf),
    /// HTTP/1.1, `host:port`.
    Http(String),
    /// The line protocol over TLS, `host:port`.
    Tls(String),
    /// HTTP/1.1 over TLS, `host:port`.
    Https(String),
    /// Requests through a NATS server, on the subject of the executable (set by
    /// [`Endpoint::of_executable`]).
    Nats(Address, String),
    /// Requests through a RabbitMQ queue, the executable's (set by [`Endpoint::of_executable`]).
    Amqp(amqp::Address, String),
}

impl Endpoint {
    /// Parses `tcp://HOST:PORT`, `unix:PATH` or `http://HOST:PORT`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        // HOST:PORT with a port that exists: a typo is a usage error, not an unreachable service.
        let host_port = |a: &str| match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                Ok(a.to_string())
            }
            _ => Err(format!(
                "--serve {s:?}: the address must be HOST:PORT with a port from 1 to 65535"
            )),
        };
        if let Some(a) = s.strip_prefix(TCP) {
            Ok(Endpoint::Tcp(host_port(a)?))
        } else if let Some(a) = s.strip_prefix(TLS) {
            Ok(Endpoint::Tls(host_port(a)?))
        } else if let Some(a) = s.strip_prefix(HTTPS) {
            Ok(Endpoint::Https(host_port(a.trim_end_matches('/'))?))
        } else if let Some(a) = s.strip_prefix(HTTP) {
            Ok(Endpoint::Http(host_port(a.trim_end_matches('/'))?))
        } else if let Some(p) = s.strip_prefix(UNIX) {
            Ok(Endpoint::Unix(PathBuf::from(p)))
        } else if s.starts_with(AMQP) || s.starts_with(AMQPS) {
            let address = amqp::Address::parse(s).map_err(|e| format!("--serve {e}"))?;
            Ok(Endpoint::Amqp(address, String::new()))
        } else if s.starts_with(NATS) || s.starts_with(NATS_JS) {
            let address = Address::parse(s).map_err(|e| format!("--serve {e}"))?;
            Ok(Endpoint::Nats(address, String::new()))
        } else {
            Err(format!(
                "--serve {s:?}: use tcp://HOST:PORT, unix:PATH, http://HOST:PORT (as the service's ready line names them), nats://[USER@]HOST:PORT, nats+js://… or amqp[s]://[USER@]HOST:PORT"
            ))
        }
    }

    /// The endpoint for executable `exe`: through NATS, its subject.
    pub fn of_executable(self, exe: &str) -> Endpoint {
        match self {
            Endpoint::Nats(address, _) => {
                let subject = address.subject(exe);
                Endpoint::Nats(address, subject)
            }
            Endpoint::Amqp(address, _) => {
                let queue = address.queue(exe);
                Endpoint::Amqp(address, queue)
            }
            other => other,
        }
    }

    /// Whether requests go through a durable queue (JetStream), which needs their ids.
    pub fn durable(&self) -> bool {
        matches!(self, Endpoint::Nats(address, _) if address.durable)
            || matches!(self, Endpoint::Amqp(..))
    }

    /// The TCP port, if any.
    pub fn port(&self) -> Option<u16> {
        match self {
            Endpoint::Tcp(a) | Endpoint::Http(a) | Endpoint::Tls(a) | Endpoint::Https(a) => {
                a.rsplit_once(':')?.1.parse().ok()
            }
            // The broker's port is not a service's.
            Endpoint::Unix(_) | Endpoint::Nats(..) | Endpoint::Amqp(..) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    /// As [`Endpoint::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{TCP}{a}"),
            Endpoint::Http(a) => write!(f, "{HTTP}{a}"),
            Endpoint::Tls(a) => write!(f, "{TLS}{a}"),
            Endpoint::Https(a) => write!(f, "{HTTPS}{a}"),
            Endpoint::Unix(p) => write!(f, "{UNIX}{}", p.display()),
            Endpoint::Nats(address, _) => write!(f, "{address}"),
            Endpoint::Amqp(address, _) => write!(f, "{address}"),
        }
    }
}

/// What to send.
#[derive(Clone)]
pub struct Load {
    /// Where the service is.
    pub endpoint: Endpoint,
    /// `POST /<verb>` over HTTP.
    pub verb: Option<String>,
    /// Request `i`: a line of the line protocol (no newline), which for a sample is its JSON
    /// object, also the HTTP body.
    pub request: Arc<dyn Fn(u64) -> String + Send + Sync>,
    /// How many requests.
    pub count: u64,
    /// The index of the first.
    pub first: u64,
    /// Client connections, each with one request outstanding.
    pub connections: u64,
    /// Per request.
    pub timeout: Option<Duration>,
    /// The TLS client configuration (the CAs `--cacert` trusts), for `tls://` and `https://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Give request `i` the id `<ids>-<i>` (the line protocol's `request_id`, HTTP's
    /// `Idempotency-Key`, NATS's `Nats-Msg-Id`); always through JetStream.
    pub ids: Option<String>,
    /// What to log in to a broker with: the executable's own `broker_password`.
    pub brokers: BrokerSecrets,
}

/// An error of commondb's with its hint, as runmany reports it.
pub fn described(e: &commondb::Error) -> String {
    match e.hint_text() {
        Some(hint) => format!("{} ({hint})", e.message()),
        None => e.message().to_string(),
    }
}

/// Sends the requests; returns their records in index order, or why the service could not be
/// used at all.
pub fn run(load: &Load, progress: Arc<dyn Fn() + Send + Sync>) -> Result<Vec<Record>, String> {
    if matches!(
        load.endpoint,
        Endpoint::Http(_) | Endpoint::Https(_) | Endpoint::Nats(..) | Endpoint::Amqp(..)
    ) && load.verb.is_none()
    {
        return Err("over HTTP and brokers the requests come from the executable's samples; give tcp:// or unix: to send explicit task arguments".into());
    }
    // No more threads than connections: one connection is served by one thread, with no
    // wake-ups across threads between a request and its answer.
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let threads = usize::try_from(load.connections.max(1))
        .unwrap_or(cores)
        .min(cores);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let next = Arc::new(AtomicU64::new(0));
    let mut records = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..load.connections.max(1).min(load.count.max(1)) {
            clients.push(Client::connect(load).await?);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for client in clients {
            let mut client = Some(client);
            let (next, load, progress) = (Arc::clone(&next), load.clone(), Arc::clone(&progress));
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= load.count {
                        break;
                    }
                    let i = load.first + k;
                    let request = (load.request)(i);
                    mine.push(call(&mut client, i, &request, &load).await);
                    progress();
                }
                mine
            });
        }
        let mut all = Vec::with_capacity(load.count as usize);
        while let Some(mine) = tasks.join_next().await {
            all.extend(mine.map_err(|e| format!("a client failed: {e}"))?);
        }
        Ok::<_, String>(all)
    })?;
    records.sort_by_key(|r| r.i);
    Ok(records)
}

/// Sends request `i` on `client`, connecting first if it has none. After a timeout or a failed
/// exchange the connection is dropped (it may still owe a late answer, which must never be read
/// as the next request's), and the next request connects afresh.
async fn call(client: &mut Option<Client>, i: u64, request: &str, load: &Load) -> Record {
    let started = Instant::now();
    let mut record = Record::failed(i, String::new());
    if client.is_none() {
        match Client::connect(load).await {
            Ok(fresh) => *client = Some(fresh),
            Err(e) => {
                record.error = e;
                return record;
            }
        }
    }
    let Some(connected) = client.as_mut() else {
        return record;
    };
    let id = load.ids.as_ref().map(|run| format!("{run}-{i}"));
    let exchange = connected.exchange(request, id.as_deref(), &mut record.redelivered);
    let answer = match load.timeout {
        Some(t) => tokio::time::timeout(t, exchange).await.ok(),
        None => Some(exchange.await),
    };
    record.latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match answer {
        None => {
            record.timed_out = true;
            record.error = "no answer within the --timeout".into();
            *client = None;
        }
        Some(Err(e)) => {
            record.error = e;
            *client = None;
        }
        Some(Ok(answer)) => {
            record.ok = answer.ok;
            if !answer.ok {
                match answer.error {
                    Some(error) => {
                        record.code = Some(i32::from(error.exit_code));
                        record.error = error.message;
                    }
                    None => record.error = "a failed answer without its error".into(),
                }
            }
        }
    }
    record
}

enum Client {
    Line {
        reader: BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
        writer: Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
    },
    Http {
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        authority: String,
        path: String,
    },
    Nats {
        client: async_nats::Client,
        subject: String,
    },
    /// Through JetStream: requests published (and confirmed stored), answers on an inbox.
    Queue {
        context: async_nats::jetstream::Context,
        subject: String,
        inbox: String,
        answers: async_nats::Subscriber,
    },
    /// Through RabbitMQ: requests published with confirms, answers by direct reply-to; the
    /// session is opened again after a lost connection.
    Amqp {
        address: amqp::Address,
        queue: String,
        session: Option<Box<AmqpSession>>,
        brokers: BrokerSecrets,
    },
}

/// A runmany client's connection to RabbitMQ: a channel in confirm mode that consumes the
/// direct reply-to pseudo-queue.
struct AmqpSession {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    replies: lapin::Consumer,
}

impl AmqpSession {
    async fn open(address: &amqp::Address, brokers: &BrokerSecrets) -> Result<AmqpSession, String> {
        use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions};
        let failed = |e: lapin::Error| format!("RabbitMQ at {}: {e}", address.server);
        let connection =
            commondb::brokers::amqp(address, brokers, "runmany", Duration::from_secs(5))
                .await
                .map_err(|e| described(&e))?;
        let channel = connection.create_channel().await.map_err(failed)?;
        // Direct reply-to: consumed without acks, before the first publish names it.
        let replies = channel
            .basic_consume(
                amqp::DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_err(failed)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed)?;
        Ok(AmqpSession {
            _connection: connection,
            channel,
            replies,
        })
    }
}

impl Client {
    /// A line-protocol client on the two halves of a connection.
    fn line(
        reader: impl tokio::io::AsyncRead + Unpin + Send + 'static,
        writer: impl tokio::io::AsyncWrite + Unpin + Send + 'static,
    ) -> Client {
        Client::Line {
            reader: BufReader::new(Box::new(reader)),
            writer: Box::new(writer),
        }
    }

    async fn connect(load: &Load) -> Result<Client, String> {
        let (endpoint, verb, tls) = (&load.endpoint, load.verb.as_deref(), load.tls.as_ref());
        let refused =
            |e: std::io::Error| format!("cannot connect to the service at {endpoint}: {e}");

        match endpoint {
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(refused)?;
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                Ok(Client::line(r, w))
            }
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(refused)?;
                let (r, w) = stream.into_split();
                Ok(Client::line(r, w))
            }
            Endpoint::Nats(address, subject) => {
                let client = commondb::brokers::nats(
                    address,
                    &load.brokers,
                    "runmany",
                    Duration::from_secs(5),
                )
                .await
                .map_err(|e| described(&e))?;
                if address.durable {
                    let inbox = client.new_inbox();
                    let answers = client
                        .subscribe(inbox.clone())
                        .await
                        .map_err(|e| format!("cannot subscribe to answers: {e}"))?;
                    return Ok(Client::Queue {
                        context: async_nats::jetstream::new(client),
                        subject: subject.clone(),
                        inbox,
                        answers,
                    });
                }
                Ok(Client::Nats {
                    client,
                    subject: subject.clone(),
                })
            }
            Endpoint::Amqp(address, queue) => Ok(Client::Amqp {
                session: Some(Box::new(AmqpSession::open(address, &load.brokers).await?)),
                address: address.clone(),
                queue: queue.clone(),
                brokers: load.brokers.clone(),
            }),
            Endpoint::Http(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(refused)?;
                let _ = stream.set_nodelay(true);
                Client::http(stream, addr, verb).await
            }
            Endpoint::Tls(addr) => {
                let stream = tls_connect(addr, tls).await?;
                let (r, w) = tokio::io::split(stream);
                Ok(Client::line(r, w))
            }
            Endpoint::Https(addr) => {
                let stream = tls_connect(addr, tls).await?;
                Client::http(stream, addr, verb).await
            }
        }
    }

    /// An HTTP/1.1 client on `stream`, keep-alive.
    async fn http<S>(stream: S, addr: &str, verb: Option<&str>) -> Result<Client, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {addr} failed: {e}"))?;
        tokio::spawn(conn);
        Ok(Client::Http {
            sender,
            authority: addr.to_string(),
            path: format!("/{}", verb.unwrap_or("")),
        })
    }

    /// Sends one request (with `id`, if any) and reads its answer; answers that came from a
    /// request's later delivery are added to `redelivered`.
    async fn exchange(
        &mut self,
        request: &str,
        id: Option<&str>,
        redelivered: &mut u64,
    ) -> Result<Answer, String> {
        let text = match self {
            Client::Line { reader, writer, .. } => {
                let mut line = Vec::with_capacity(request.len() + 48);
                match id {
                    None => line.extend_from_slice(request.as_bytes()),
                    Some(id) => line.extend_from_slice(with_id(request, id).as_bytes()),
                }
                line.push(b'\n');
                writer
                    .write_all(&line)
                    .await
                    .map_err(|e| format!("sending failed: {e}"))?;
                let mut answer = String::new();
                let n = reader
                    .read_line(&mut answer)
                    .await
                    .map_err(|e| format!("reading the answer failed: {e}"))?;
                if n == 0 {
                    return Err("the service closed the connection".into());
                }
                answer
            }
            Client::Http {
                sender,
                authority,
                path,
            } => {
                let body = request.to_string();
                let mut req = hyper::Request::post(path.as_str())
                    .header(hyper::header::HOST, authority.as_str())
                    .header(hyper::header::CONTENT_TYPE, "application/json");
                if let Some(id) = id {
                    req = req.header("idempotency-key", id);
                }
                let req = req
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let response = sender
                    .send_request(req)
                    .await
                    .map_err(|e| format!("the HTTP request failed: {e}"))?;
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("reading the HTTP answer failed: {e}"))?
                    .to_bytes();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Client::Nats { client, subject } => {
                core_exchange(client, subject, request, id, redelivered).await?
            }
            Client::Queue {
                context,
                subject,
                inbox,
                answers,
            } => {
                let id = id.ok_or("a request through JetStream needs an id")?;
                queue_exchange(context, subject, inbox, answers, request, id, redelivered).await?
            }
            Client::Amqp {
                address,
                queue,
                session,
                brokers,
            } => {
                let id = id.ok_or("a request through RabbitMQ needs an id")?;
                let to = (&*address, &*brokers, queue.as_str());
                amqp_exchange(to, session, request, id, redelivered).await?
            }
        };
        serde_json::from_str(&text)
            .map_err(|e| format!("the answer is not the protocol's JSON ({e}): {text:?}"))
    }
}

/// A line-protocol request with its id: a field of a JSON object, or `--request-id` after
/// the words.
fn with_id(request: &str, id: &str) -> String {
    let trimmed = request.trim_start();
    match trimmed.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{\"request_id\":\"{id}\"}}"),
        Some(rest) => format!("{{\"request_id\":\"{id}\",{rest}"),
        None => format!("{request} --request-id {id}"),
    }
}

/// A TLS connection to `addr` (`host:port`), its certificate checked against the CAs `tls`
/// trusts and its name against `host`.
async fn tls_connect(
    addr: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = tls.ok_or(
        "tls:// and https:// need --cacert FILE: the CA that signed the service's certificate",
    )?;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host} is not a name a certificate can carry: {e}"))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to the service at {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("the TLS handshake with {addr} failed: {e}"))
}

/// A TLS client configuration that trusts the CA certificates of the PEM file `path`, and shows
/// `client` (a certificate file and its key, read under the secrets rules) when given.
pub fn tls_client(
    path: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = read_pem(path, "--cacert")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| format!("--cacert {} is not PEM", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--cacert {} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let (chain, key) = client_identity(cert, key)?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert {} with --key: {e}", cert.display()))?
        }
    };
    Ok(Arc::new(config))
}

/// A PEM file given as `flag`, at most 1 MiB.
fn read_pem(path: &std::path::Path, flag: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    let mut pem = Vec::new();
    file.take(MAX + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX {
        return Err(format!("{flag} {} is larger than 1 MiB", path.display()));
    }
    Ok(pem)
}

/// The client certificate chain and its key; the key is a secret (commondb's rules: yours,
/// chmod 600, bounded).
fn client_identity(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<
    (
        Vec<rustls::pki_types::CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    String,
> {
    use commondb::secrets::ExposeSecret;
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(&read_pem(cert, "--cert")?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("--cert {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--cert {} holds no certificate", cert.display()));
    }
    let pem = commondb::secrets::read(key)
        .map_err(|e| format!("--key: {}", described(&e)))?
        .ok_or_else(|| format!("--key {} does not exist", key.display()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.expose_secret().as_bytes())
        .map_err(|_| format!("--key {} holds no private key", key.display()))?;
    Ok((chain, key))
}

/// How long a request through NATS core waits for its answer before it is sent again (with an
/// id) or given up (without).
const CORE_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// One request through NATS core, which delivers at most once: a request a worker never got
/// (it raced the worker's drain, or the worker died) is never answered. With an id it is sent
/// again after [`CORE_ANSWER_WAIT`] (up to three times in all; the id makes a second copy
/// harmless), and each sending again is counted as a redelivery; without, it fails.
async fn core_exchange(
    client: &async_nats::Client,
    subject: &str,
    request: &str,
    id: Option<&str>,
    redelivered: &mut u64,
) -> Result<String, String> {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = id {
        headers.insert(nats::MSG_ID, id);
    }
    let payload = Bytes::from(request.to_string());
    let tries = if id.is_some() { 3 } else { 1 };
    for attempt in 1..=tries {
        let message = async_nats::Request::new()
            .payload(payload.clone())
            .headers(headers.clone())
            .timeout(Some(CORE_ANSWER_WAIT));
        match client.send_request(subject.to_string(), message).await {
            Ok(answer) => return Ok(String::from_utf8_lossy(&answer.payload).into_owned()),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(format!(
                    "no instance answers on {subject} (start one with --serve --listen nats://…)"
                ));
            }
            Err(e) if attempt == tries => return Err(format!("the NATS request failed: {e}")),
            Err(_) => *redelivered += 1,
        }
    }
    Err("the NATS request failed".into())
}

/// One request through JetStream: published with its id and the inbox to answer to, confirmed
/// stored by the server (the publisher's confirm), then its answer awaited on the inbox; with
/// no answer within [`JS_ANSWER_WAIT`], a copy is published (counted as a redelivery). Answers
/// to earlier requests of this client (a later delivery answering again) are counted and
/// skipped.
async fn queue_exchange(
    context: &async_nats::jetstream::Context,
    subject: &str,
    inbox: &str,
    answers: &mut async_nats::Subscriber,
    request: &str,
    id: &str,
    redelivered: &mut u64,
) -> Result<String, String> {
    use futures_util::StreamExt;
    let payload = Bytes::from(request.to_string());
    for copy in 0..=JS_COPIES {
        // A copy after the first has a new Nats-Msg-Id, or JetStream would drop it; the same
        // request id makes its answer the first one.
        let msg_id = match copy {
            0 => id.to_string(),
            n => format!("{id}.{n}"),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(nats::MSG_ID, msg_id.as_str());
        headers.insert(nats::REQUEST_ID, id);
        headers.insert(nats::REPLY_TO, inbox);
        store(context, subject, headers, payload.clone()).await?;
        let deadline = tokio::time::Instant::now() + JS_ANSWER_WAIT;
        loop {
            let answer = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err("the NATS connection closed before the answer".into()),
                // No answer (lost while this client reconnected, say): publish a copy.
                Err(_) => {
                    *redelivered += 1;
                    break;
                }
            };
            let header = |name: &str| {
                answer
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let later = header(nats::DELIVERED).is_some_and(|d| d != "1");
            if header(nats::REQUEST_ID).as_deref() != Some(id) {
                // A late answer to an earlier request: that request was delivered twice.
                *redelivered += 1;
                continue;
            }
            *redelivered += u64::from(later);
            return Ok(String::from_utf8_lossy(&answer.payload).into_owned());
        }
    }
    Err(format!(
        "no answer to {} copies of the request on {subject}",
        JS_COPIES + 1
    ))
}

/// How long a request through JetStream waits for its answer before a copy is published.
const JS_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How many copies of a request through JetStream are published after the first at most.
const JS_COPIES: u32 = 3;

/// Publishes one request to JetStream until the server confirms it stored it (the broker may
/// be restarting): JetStream drops a second copy under the same `Nats-Msg-Id`, so retrying is
/// safe. The --timeout bounds it.
async fn store(
    context: &async_nats::jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: Bytes,
) -> Result<(), String> {
    let mut pause = Duration::from_millis(50);
    for _ in 0..100 {
        let stored = match context
            .publish_with_headers(subject.to_string(), headers.clone(), payload.clone())
            .await
        {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if stored.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    Err(format!(
        "JetStream did not store the request on {subject}: start a worker first (--serve --listen nats+js://…), it makes the stream"
    ))
}

/// One request through RabbitMQ: published persistent with its id (`message_id`,
/// `correlation_id`) and direct reply-to, confirmed by the broker, then its answer awaited.
/// A lost connection is opened again and the request published again under the same id (the
/// executable's request ids make the second copy harmless); the --timeout bounds it. Answers
/// to earlier requests of this client are counted as redeliveries and skipped.
async fn amqp_exchange(
    (address, brokers, queue): (&amqp::Address, &BrokerSecrets, &str),
    session: &mut Option<Box<AmqpSession>>,
    request: &str,
    id: &str,
    redelivered: &mut u64,
) -> Result<String, String> {
    use futures_util::StreamExt;
    use lapin::options::BasicPublishOptions;
    let mut pause = Duration::from_millis(50);
    let mut attempts = 0;
    loop {
        if attempts > 100 {
            return Err(format!("RabbitMQ at {} kept failing", address.server));
        }
        if attempts > 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
        attempts += 1;
        if session.is_none() {
            match AmqpSession::open(address, brokers).await {
                Ok(fresh) => *session = Some(Box::new(fresh)),
                Err(_) => continue,
            }
        }
        let Some(open) = session.as_mut() else {
            continue;
        };
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.into())
            .with_correlation_id(id.into())
            .with_reply_to(amqp::DIRECT_REPLY_TO.into());
        let confirmed = match open
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                request.as_bytes(),
                properties,
            )
            .await
        {
            Ok(confirm) => confirm.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match confirmed {
            Ok(c) if c.is_ack() => {}
            Ok(_) => return Err(format!("RabbitMQ refused the request for {queue}")),
            Err(_) => {
                *session = None;
                continue;
            }
        }
        loop {
            match open.replies.next().await {
                Some(Ok(reply)) => {
                    let correlation = reply.properties.correlation_id().as_ref();
                    if correlation.map(|c| c.as_str()) != Some(id) {
                        *redelivered += 1;
                        continue;
                    }
                    let later = reply
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|h| h.inner().get(amqp::DELIVERED).cloned())
                        .is_some_and(|d| !matches!(d, lapin::types::AMQPValue::LongLongInt(1)));
                    *redelivered += u64::from(later);
                    return Ok(String::from_utf8_lossy(&reply.data).into_owned());
                }
                // The connection is gone, and the answer with it: ask again.
                _ => {
                    *session = None;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:7401").unwrap(),
            Endpoint::Tcp("127.0.0.1:7401".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:80/").unwrap(),
            Endpoint::Http("127.0.0.1:80".into())
        );
        assert_eq!(
            Endpoint::parse("unix:/run/x.sock").unwrap(),
            Endpoint::Unix("/run/x.sock".into())
        );
        assert!(Endpoint::parse("127.0.0.1:1").is_err());
        assert_eq!(Endpoint::parse("tcp://h:7401").unwrap().port(), Some(7401));
        for bad in [
            "tcp://127.0.0.1:99999",
            "tcp://127.0.0.1",
            "http://:80",
            "tcp://h:0",
            "tcp://h:x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
