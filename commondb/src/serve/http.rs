//! HTTP/1.1 on hyper: `POST /<verb>` with a JSON body of the arguments (and for a read-only
//! task `GET /<verb>?name=value&…` as well), `GET /healthz`, `GET /metrics`. The body of every answer is the line protocol's answer; the status says the
//! outcome (201 or 200, 400, 401, 409, 413, 422, 503, …).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Stage;
use super::service::{Service, encode, encode_error};
use crate::error::{Error, ErrorKind};
use crate::protocol::{HEALTH_PATH, METRICS_PATH};
use crate::task::Task;

/// Serves one HTTP connection (keep-alive) until it closes or the service drains; a drain
/// lets the request in progress finish, then closes.
pub(crate) async fn serve<T: Task>(
    service: Arc<Service<T>>,
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    needs_token: bool,
) {
    let phase = service.phase.clone();
    let handler = {
        let service = Arc::clone(&service);
        hyper::service::service_fn(move |req| {
            let service = Arc::clone(&service);
            async move { Ok::<_, Infallible>(route(&service, req, needs_token).await) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(service.limits.idle_timeout_ms))
        // A client that shuts its side down after a whole request still gets the answer:
        // without this, hyper closes at the EOF, after the task may have committed.
        .half_close(true)
        .serve_connection(TokioIo::new(io), handler);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = phase.reached(Stage::Draining) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// Answers every request on a connection over the limit with 503, and closes it.
pub(crate) async fn refuse(io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static, error: Error) {
    let body = encode_error(error);
    let handler = hyper::service::service_fn(move |_req| {
        let response = answer(StatusCode::SERVICE_UNAVAILABLE, body.clone());
        let response = with(response, header::CONNECTION, "close");
        async move { Ok::<_, Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(io), handler)
        .await;
}

async fn route<T: Task>(
    service: &Arc<Service<T>>,
    req: Request<Incoming>,
    needs_token: bool,
) -> Response<Full<Bytes>> {
    if needs_token && !authorized(service, &req) {
        let e = Error::permission("this service needs an access token")
            .hint("send `Authorization: Bearer <token>`");
        return with(
            error_as(StatusCode::UNAUTHORIZED, e),
            header::WWW_AUTHENTICATE,
            "Bearer",
        );
    }
    let path = req.uri().path();
    let verb_path = path.strip_prefix('/') == Some(T::VERB);
    match (req.method(), path) {
        (&Method::POST, _) if verb_path => {
            // The IETF draft's header (as Stripe's API and others take it): the request id.
            let key = req
                .headers()
                .get("idempotency-key")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = match read_body(service, req).await {
                Ok(body) => body,
                Err(refused) => return refused,
            };
            let carried = key.as_deref().map(|k| ("the Idempotency-Key header", k));
            let (body, outcome) = service.answer_json(&body, carried).await;
            let status = match outcome {
                None if T::CREATES => StatusCode::CREATED,
                None => StatusCode::OK,
                Some(kind) => status_of(kind),
            };
            answer(status, body)
        }
        (&Method::GET, _) if verb_path && T::READ_ONLY => {
            let (body, outcome) = service.answer_query(req.uri().query()).await;
            answer(outcome.map_or(StatusCode::OK, status_of), body)
        }
        (&Method::GET, HEALTH_PATH) => match service.health().await {
            Ok(value) => answer(StatusCode::OK, encode(Ok(value))),
            Err(e) => error(e),
        },
        (&Method::GET, METRICS_PATH) => {
            let text = service.metrics.render(T::NAME, service.pool.usage());
            let mut response = Response::new(Full::new(Bytes::from(text)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        _ if verb_path || path == HEALTH_PATH || path == METRICS_PATH => {
            let allow = match (verb_path, T::READ_ONLY) {
                (true, true) => "GET, POST",
                (true, false) => "POST",
                (false, _) => "GET",
            };
            let e = Error::usage(format!(
                "{} is not allowed on {path}; use {allow}",
                req.method()
            ));
            with(
                error_as(StatusCode::METHOD_NOT_ALLOWED, e),
                header::ALLOW,
                allow,
            )
        }
        _ => {
            let e = Error::usage(format!("there is nothing at {path}")).hint(format!(
                "POST /{} with a JSON body of the arguments; GET {HEALTH_PATH}; GET {METRICS_PATH}",
                T::VERB
            ));
            error_as(StatusCode::NOT_FOUND, e)
        }
    }
}

/// The request's body, read within the request timeout and up to the size limit; or the
/// answer that refuses it.
async fn read_body<T: Task>(
    service: &Service<T>,
    req: Request<Incoming>,
) -> Result<Bytes, Response<Full<Bytes>>> {
    let max = service.limits.max_request_bytes;
    let wait = Duration::from_millis(service.limits.request_timeout_ms);
    let read = tokio::time::timeout(wait, Limited::new(req.into_body(), max).collect());
    match read.await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if !e.is::<http_body_util::LengthLimitError>() => Err(error(Error::usage(
            format!("reading the request body failed: {e}"),
        ))),
        Err(_) => {
            let e = Error::usage(format!(
                "the request body did not arrive within {} ms",
                wait.as_millis()
            ));
            Err(error_as(StatusCode::REQUEST_TIMEOUT, e))
        }
        Ok(Err(_)) => {
            let e = Error::usage(format!("the request body is longer than {max} bytes"))
                .hint("send a shorter body, or raise serve.max_request_bytes");
            let response = error_as(StatusCode::PAYLOAD_TOO_LARGE, e);
            Err(with(response, header::CONNECTION, "close"))
        }
    }
}

fn authorized<T: Task>(service: &Service<T>, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| service.token_matches(token.trim()))
}

/// The status of an answer that failed with `kind`.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Usage | ErrorKind::NoInput => StatusCode::BAD_REQUEST,
        ErrorKind::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Permission => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable
        | ErrorKind::Temporary
        | ErrorKind::Config
        | ErrorKind::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Failed | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error answer, with the status its kind calls for.
fn error(e: Error) -> Response<Full<Bytes>> {
    error_as(status_of(e.kind()), e)
}

/// An error answer with a status of the protocol's own (401, 404, 405, 408, 413).
fn error_as(status: StatusCode, e: Error) -> Response<Full<Bytes>> {
    answer(status, encode_error(e))
}

/// `response` with one more header.
fn with(
    mut response: Response<Full<Bytes>>,
    name: header::HeaderName,
    value: &'static str,
) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(name, HeaderValue::from_static(value));
    response
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
