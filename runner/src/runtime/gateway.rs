//! The gateway: one HTTP entry point in front of the fleet (`[gateway] listen`).
//!
//! `POST /<service>` (and `GET /<service>?…` for a read task) is sent to one of the service's
//! ready instances as its own `POST /<verb>`, body and answer unchanged: the instance with the
//! fewest of the gateway's requests in flight, ties taken in turn. An instance that is
//! stopping, restarting or in backoff gets no new request. When none is ready, a request waits
//! up to `wait_ms` for one that is coming (a restart, a scale-up), else is answered 503 with
//! `Retry-After`. A request that could not be sent (a connection refused) is tried on another
//! instance; one sent to an instance that died before answering is answered 502, since it may
//! or may not have been applied. `GET /healthz` says which services have a ready instance;
//! `GET /metrics` gathers every instance's metrics, labelled by service and instance, and the
//! gateway's own. Off loopback every request needs `Authorization: Bearer <token>`, and the
//! gateway listens `https://` (commondb's [`commondb::tls::Tls`], the certificate read again on
//! SIGHUP) unless `allow_plaintext` says the network is trusted.
//!
//! It runs on a tokio runtime of its own, on half the CPUs (one event loop on two); `fleet down` first stops it (no new
//! connection, the requests in flight answered), then the instances.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::config;
use super::instance::{Instance, Shared};
use commondb::protocol::{Answer, AnswerError, HEALTH_PATH, METRICS_PATH};
use commondb::secrets::{ExposeSecret, SecretString};

/// The largest answer passed back from an instance (a page of at most 10,000 rows fits).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// How long an instance that refused or dropped a connection gets no request.
const SHUN: Duration = Duration::from_secs(1);

/// Idle connections kept per instance.
const MAX_IDLE: usize = 64;

/// A running gateway; [`Handle::drain`] stops it.
pub struct Handle {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    /// Where it listens.
    pub address: std::net::SocketAddr,
    /// `http://` or `https://`.
    pub scheme: &'static str,
}

struct Gateway {
    shared: Arc<Shared>,
    token: Option<SecretString>,
    wait: Duration,
    max_body: usize,
    /// Idle keep-alive connections, by instance address.
    idle: Mutex<HashMap<String, Vec<SendRequest<Full<Bytes>>>>>,
    /// Answers given, by service and status.
    answered: Mutex<BTreeMap<String, BTreeMap<u16, u64>>>,
    /// Turns among instances with as few requests in flight.
    turn: AtomicUsize,
}

/// Binds `cfg.listen` and starts serving on a thread of its own.
pub fn start(shared: Arc<Shared>, cfg: &config::Gateway) -> Result<Handle, String> {
    let (address, pair) = cfg.address()?;
    let tls = match pair {
        None => None,
        Some((cert, key)) => Some(Arc::new(
            commondb::tls::Tls::from_files(cert, key, &[b"http/1.1"])
                .map_err(|e| format!("gateway: {}", crate::service::described(&e)))?,
        )),
    };
    let scheme = if tls.is_some() { "https://" } else { "http://" };
    let token = match &cfg.token_file {
        None => None,
        Some(path) => Some(
            commondb::secrets::read(path)
                .map_err(|e| format!("gateway.token_file: {}", e.message()))?
                .ok_or_else(|| format!("gateway.token_file {} does not exist", path.display()))?,
        ),
    };
    let listener = std::net::TcpListener::bind(address).map_err(|e| {
        format!(
            "the gateway cannot listen on {}: {e} (is another fleet or server there? change gateway.listen)",
            cfg.listen
        )
    })?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let gateway = Arc::new(Gateway {
        shared,
        token: token.map(|t| SecretString::from(t.expose_secret().trim().to_string())),
        wait: Duration::from_millis(cfg.wait_ms),
        max_body: cfg.max_body_bytes,
        idle: Mutex::new(HashMap::new()),
        answered: Mutex::new(BTreeMap::new()),
        turn: AtomicUsize::new(0),
    });
    // Half the CPUs: the instances behind it need the rest. On two, one event loop measured
    // the same throughput as two threads, with a lower p99 (scripts/bench-gateway).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() / 2);
    let mut builder = if workers > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = builder
        .thread_name("fleet-gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::spawn(move || {
        runtime.block_on(accept(gateway, listener, tls, stopped));
    });
    Ok(Handle {
        stop,
        thread,
        address,
        scheme,
    })
}

impl Handle {
    /// Stops accepting, lets the requests in flight be answered (up to `grace`), and returns
    /// once the gateway has stopped.
    pub fn drain(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

async fn accept(
    gateway: Arc<Gateway>,
    listener: std::net::TcpListener,
    tls: Option<Arc<commondb::tls::Tls>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // With TLS, SIGHUP reads the certificate and key again: new connections get the new pair,
    // open ones keep theirs, and a pair that does not load leaves the old one.
    let mut hup = match &tls {
        Some(_) => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        None => None,
    };
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, for instance: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (gateway, stopped) = (Arc::clone(&gateway), stopped.clone());
                match &tls {
                    None => connections.spawn(serve(gateway, stream, stopped)),
                    Some(tls) => connections.spawn(handshake(gateway, tls.acceptor(), stream, stopped)),
                };
            }
            Some(()) = async { hup.as_mut()?.recv().await } => {
                if let Some(tls) = &tls {
                    let said = match tls.reload() {
                        Ok(()) => "SIGHUP: the gateway's TLS certificate and key were read again".to_string(),
                        Err(e) => format!("SIGHUP: the gateway keeps its TLS certificate: {}", e.message()),
                    };
                    gateway.shared.out.note("fleet", &said);
                }
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    connections.close();
    let grace = gateway.shared.grace;
    let _ = tokio::time::timeout(grace, connections.wait()).await;
}

/// A TLS connection: its handshake (dropped unfinished after commondb's timeout), then served.
async fn handshake(
    gateway: Arc<Gateway>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let timeout = commondb::tls::HANDSHAKE_TIMEOUT;
    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        serve(gateway, stream, stopped).await;
    }
}

/// One client connection, keep-alive, until it closes or the gateway drains.
async fn serve<S>(gateway: Arc<Gateway>, stream: S, mut stopped: tokio::sync::watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler = hyper::service::service_fn(move |req| {
        let gateway = Arc::clone(&gateway);
        async move { Ok::<_, Infallible>(gateway.route(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .half_close(true)
        .serve_connection(TokioIo::new(stream), handler);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopped.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// A request of the gateway's in flight to an instance: counted while it lives, also when its
/// future is dropped part way (a stop waits for the count to reach 0).
struct InFlight<'a> {
    instance: &'a Instance,
    shared: &'a Shared,
}

impl<'a> InFlight<'a> {
    fn count(instance: &'a Instance, shared: &'a Shared) -> InFlight<'a> {
        instance.outstanding.fetch_add(1, Ordering::SeqCst);
        InFlight { instance, shared }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // A stop waits for the last one; nothing else does.
        if self.instance.outstanding.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.instance.is_ready()
        {
            self.shared.wake();
        }
    }
}

/// How a request to an instance went wrong.
enum Failed {
    /// Not sent (the connection was refused, or closed before it went out): safe to retry.
    NotSent,
    /// Sent, and no answer came: it may have been applied.
    Lost(String),
}

impl Gateway {
    async fn route(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&req) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "permission",
                77,
                "the gateway needs an access token".into(),
                "send `Authorization: Bearer <token>` (gateway.token_file)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET, HEALTH_PATH) => return self.health(),
            (&Method::GET, METRICS_PATH) => return self.metrics().await,
            _ => {}
        }
        let name = path.trim_start_matches('/');
        let Some(service) = self.shared.services.get(name) else {
            let names: Vec<&str> = self.shared.services.keys().map(String::as_str).collect();
            return error(
                StatusCode::NOT_FOUND,
                "usage",
                64,
                format!("there is no service at {path}"),
                &format!(
                    "POST /<service> with the service's JSON body; services: {}; GET {HEALTH_PATH}; GET {METRICS_PATH}",
                    names.join(", ")
                ),
            );
        };
        let method = req.method().clone();
        if method != Method::POST && method != Method::GET {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "usage",
                64,
                format!("{method} is not allowed on {path}; use POST (or GET for a read task)"),
                "POST the service's JSON body",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            return response;
        }
        let target = match req.uri().query() {
            Some(q) => format!("/{}?{q}", service.verb),
            None => format!("/{}", service.verb),
        };
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let body = match Limited::new(req.into_body(), self.max_body).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let mut response = error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "usage",
                    64,
                    format!("the request body is longer than {} bytes", self.max_body),
                    "send a shorter body, or raise gateway.max_body_bytes",
                );
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "usage",
                    64,
                    format!("reading the request body failed: {e}"),
                    "send the whole body",
                );
            }
        };
        let response = self
            .forward(name, &method, &target, content_type, body)
            .await;
        let mut answered = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        let status = response.status().as_u16();
        // Without a new string per request: the service's map exists after its first.
        match answered.get_mut(name) {
            Some(by_status) => *by_status.entry(status).or_default() += 1,
            None => {
                answered.insert(name.to_string(), BTreeMap::from([(status, 1)]));
            }
        }
        drop(answered);
        response
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.expose_secret().as_bytes()))
    }

    /// Sends the request to a ready instance of `service` (another one if it could not be
    /// sent), waiting for one that is coming when none is ready.
    async fn forward(
        &self,
        service: &str,
        method: &Method,
        target: &str,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let deadline = Instant::now() + self.wait;
        for _attempt in 0..8 {
            let Some((instance, address)) = self.pick(service, deadline).await else {
                let mut response = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    69,
                    format!(
                        "no instance of {service} is ready ({})",
                        self.shared
                            .of(service)
                            .iter()
                            .map(|i| i.brief())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "retry later (Retry-After); `fleet ps` shows its instances",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            };
            let mut req = Request::builder()
                .method(method.clone())
                .uri(target)
                .header(header::HOST, &*address);
            if let Some(ct) = &content_type {
                req = req.header(header::CONTENT_TYPE, ct.clone());
            }
            let Ok(req) = req.body(Full::new(body.clone())) else {
                break;
            };
            // Counted, then checked again: a stop that took it off the routes in between
            // either sees the count (and waits for the answer) or is seen here.
            let counted = InFlight::count(&instance, &self.shared);
            if instance.route().is_none() {
                continue;
            }
            let sent = self.send(&address, req).await;
            drop(counted);
            match sent {
                Ok((status, ct, body)) => {
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = status;
                    if let Some(ct) = ct {
                        response.headers_mut().insert(header::CONTENT_TYPE, ct);
                    }
                    if let Ok(label) = HeaderValue::from_str(instance.label()) {
                        response.headers_mut().insert("x-fleet-instance", label);
                    }
                    return response;
                }
                // Likely dying: the next requests go elsewhere until its supervisor knows.
                Err(Failed::NotSent) => {
                    instance.shun(SHUN);
                    continue;
                }
                Err(Failed::Lost(why)) => {
                    instance.shun(SHUN);
                    return error(
                        StatusCode::BAD_GATEWAY,
                        "unavailable",
                        69,
                        format!(
                            "{} gave no whole answer ({why}): the request may or may not have been applied",
                            instance.label()
                        ),
                        "check before retrying a request that writes",
                    );
                }
            }
        }
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            69,
            format!("no instance of {service} took the request"),
            "retry later (Retry-After)",
        )
    }

    /// The ready instance of `service` with the fewest requests in flight, and its HTTP
    /// address; waits until `deadline` for one while one is coming.
    async fn pick(&self, service: &str, deadline: Instant) -> Option<(Arc<Instance>, Arc<str>)> {
        loop {
            // Asked before looking, so that a ready line in between is not missed.
            let became_ready = self.shared.became_ready.notified();
            let all = self.shared.of(service);
            let ready: Vec<(Arc<Instance>, Arc<str>)> = all
                .iter()
                .filter_map(|i| Some((Arc::clone(i), i.route()?)))
                .collect();
            if !ready.is_empty() {
                // One reading of each count: they change under our feet.
                let counts: Vec<usize> = ready
                    .iter()
                    .map(|(i, _)| i.outstanding.load(Ordering::Acquire))
                    .collect();
                let least = counts.iter().copied().min().unwrap_or(0);
                let mut candidates: Vec<_> = ready
                    .into_iter()
                    .zip(counts)
                    .filter(|(_, n)| *n == least)
                    .map(|(r, _)| r)
                    .collect();
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                let at = turn % candidates.len();
                return Some(candidates.swap_remove(at));
            }
            let now = Instant::now();
            if now >= deadline || !all.iter().any(|i| i.coming()) {
                return None;
            }
            // Also on a timer: an instance can stop coming without a ready line.
            let wait = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(wait, became_ready).await;
        }
    }

    /// Sends `req` to the instance at `address` on an idle connection or a new one; its status,
    /// content type and body.
    async fn send(
        &self,
        address: &str,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<HeaderValue>, Bytes), Failed> {
        // An idle connection may have been closed by the instance meanwhile (the request then
        // comes back unsent); a new one is tried once after.
        for fresh in [false, true] {
            let sender = if fresh {
                None
            } else {
                self.idle_sender(address)
            };
            let mut sender = match sender {
                Some(s) => s,
                None => connect(address).await.map_err(|_| Failed::NotSent)?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let status = response.status();
                    let ct = response.headers().get(header::CONTENT_TYPE).cloned();
                    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                        .collect()
                        .await
                        .map_err(|e| Failed::Lost(e.to_string()))?
                        .to_bytes();
                    self.give_back(address, sender);
                    return Ok((status, ct, body));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(Failed::Lost(e.into_error().to_string())),
                },
            }
        }
        Err(Failed::NotSent)
    }

    fn idle_sender(&self, address: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(address)?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, address: &str, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Each restart leaves an address behind: those whose connections all closed go.
        if !idle.contains_key(address) && idle.len() >= MAX_IDLE {
            idle.retain(|_, list| {
                list.retain(|s| !s.is_closed());
                !list.is_empty()
            });
        }
        let list = idle.entry(address.to_string()).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    /// `GET /healthz`: each service's ready instances; 200 when every service has one.
    fn health(&self) -> Response<Full<Bytes>> {
        let mut services = serde_json::Map::new();
        let mut all = true;
        for name in self.shared.services.keys() {
            let instances = self.shared.of(name);
            let ready = instances.iter().filter(|i| i.is_ready()).count();
            all &= ready > 0;
            services.insert(
                name.clone(),
                serde_json::json!({ "ready": ready, "instances": instances.len() }),
            );
        }
        let body = serde_json::json!({ "ok": all, "services": services }).to_string();
        let status = if all {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, body)
    }

    /// `GET /metrics`: every ready instance's metrics, labelled, and the gateway's own.
    async fn metrics(&self) -> Response<Full<Bytes>> {
        let mut families = Families::default();
        for instance in self.shared.instances() {
            let Some(address) = instance.route() else {
                continue;
            };
            let Ok(req) = Request::get(METRICS_PATH)
                .header(header::HOST, &*address)
                .body(Full::new(Bytes::new()))
            else {
                continue;
            };
            let fetched =
                tokio::time::timeout(Duration::from_secs(2), self.send(&address, req)).await;
            if let Ok(Ok((StatusCode::OK, _, body))) = fetched {
                let labels = format!(
                    "service=\"{}\",instance=\"{}\"",
                    instance.service, instance.index
                );
                families.add(&String::from_utf8_lossy(&body), &labels);
            }
        }
        let mut own = String::from(
            "# HELP fleet_gateway_requests_total Requests the gateway answered, by service and status.\n\
             # TYPE fleet_gateway_requests_total counter\n",
        );
        for (service, by_status) in self
            .answered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (status, n) in by_status {
                own.push_str(&format!(
                    "fleet_gateway_requests_total{{service=\"{service}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        own.push_str(
            "# HELP fleet_gateway_in_flight Requests the gateway has sent to an instance and not yet answered.\n\
             # TYPE fleet_gateway_in_flight gauge\n",
        );
        for instance in self.shared.instances() {
            own.push_str(&format!(
                "fleet_gateway_in_flight{{service=\"{}\",instance=\"{}\"}} {}\n",
                instance.service,
                instance.index,
                instance.outstanding.load(Ordering::Relaxed)
            ));
        }
        let text = families.render() + &own;
        let mut response = Response::new(Full::new(Bytes::from(text)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    }
}

/// The metric families of several instances, merged: each family's `# HELP` and `# TYPE`
/// once, then every instance's samples of it, with the instance's labels added.
#[derive(Default)]
struct Families {
    order: Vec<String>,
    by_name: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl Families {
    fn add(&mut self, text: &str, labels: &str) {
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                current = rest.split(' ').next().unwrap_or("").to_string();
                let entry = self.family(&current);
                if !entry.0.iter().any(|l| l == line) {
                    entry.0.push(line.to_string());
                }
                continue;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let family = if current.is_empty() || !line.starts_with(&current) {
                line[..name_end].to_string()
            } else {
                current.clone()
            };
            let labelled = match line[name_end..].strip_prefix('{') {
                Some(rest) if rest.starts_with('}') => {
                    format!("{}{{{labels}{}", &line[..name_end], rest)
                }
                Some(rest) => format!("{}{{{labels},{rest}", &line[..name_end]),
                None => format!("{}{{{labels}}}{}", &line[..name_end], &line[name_end..]),
            };
            self.family(&family).1.push(labelled);
        }
    }

    fn family(&mut self, name: &str) -> &mut (Vec<String>, Vec<String>) {
        if !self.by_name.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.by_name.entry(name.to_string()).or_default()
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for name in &self.order {
            let (comments, samples) = &self.by_name[name];
            for line in comments.iter().chain(samples) {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

async fn connect(address: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer of the gateway's own, in the protocol's form.
fn error(
    status: StatusCode,
    kind: &str,
    exit_code: u8,
    message: String,
    hint: &str,
) -> Response<Full<Bytes>> {
    let answer: Answer = Answer::failure(AnswerError {
        exit_code,
        hint: hint.to_string(),
        kind: kind.to_string(),
        message,
    });
    json(status, answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_merged_by_family_and_labelled() {
        let mut f = Families::default();
        let one =
            "# HELP r Requests.\n# TYPE r counter\nr{outcome=\"ok\"} 3\n# TYPE up gauge\nup 1\n";
        f.add(one, "service=\"a\",instance=\"0\"");
        f.add(one, "service=\"a\",instance=\"1\"");
        assert_eq!(
            f.render(),
            "# HELP r Requests.\n# TYPE r counter\n\
             r{service=\"a\",instance=\"0\",outcome=\"ok\"} 3\n\
             r{service=\"a\",instance=\"1\",outcome=\"ok\"} 3\n\
             # TYPE up gauge\n\
             up{service=\"a\",instance=\"0\"} 1\n\
             up{service=\"a\",instance=\"1\"} 1\n"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
