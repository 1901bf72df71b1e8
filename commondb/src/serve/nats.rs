//! `--listen nats://HOST:PORT`: requests from a NATS server ([`crate::protocol::nats`]).
//!
//! The executable subscribes to `<prefix>.<executable>` in queue group `<executable>`, so the
//! server hands each request to one of its instances. Each message is answered as an HTTP body
//! would be, on its own task (at most `serve.max_connections` at once: past that, reading waits),
//! and the answer published to the message's reply subject. The client reconnects by itself,
//! with backoff, and resubscribes. At the drain the subscription is drained: the server sends no
//! more, the messages it had sent are still answered, and the answers are flushed to the server
//! before the listener returns.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Stage;
use super::service::{Service, encode_error};
use crate::error::{Error, Result};
use crate::protocol::nats::Address;
use crate::task::Task;

/// The header that carries a request's id (JetStream's own, for deduplicating publishes).
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// How long connecting to the server may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the server `address` names and subscribes to executable `exe`'s subject.
pub(crate) async fn subscribe(
    address: &Address,
    exe: &str,
) -> Result<(async_nats::Client, async_nats::Subscriber)> {
    let unreachable = |e: &dyn std::fmt::Display| {
        Error::unavailable(format!(
            "cannot reach the NATS server at {}: {e}",
            address.server
        ))
        .hint("start it (nats-server), or check the address given to --listen")
    };
    // Anyone who can publish to the server is a client, and this client has no credentials or
    // TLS to offer yet: a server off loopback is refused rather than trusted.
    let host = address.server.rsplit_once(':').map_or("", |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = tokio::net::lookup_host(address.server.as_str())
        .await
        .map(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if !loopback {
        return Err(Error::config(format!(
            "the NATS server {host} is not on loopback, and whoever can publish there could run this task"
        ))
        .hint("use a NATS server on 127.0.0.1 (or reach one through a tunnel); credentials and TLS for a remote broker are not supported yet"));
    }
    let client = async_nats::ConnectOptions::new()
        .name(exe)
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(address.server.as_str())
        .await
        .map_err(|e| unreachable(&e))?;
    let subscriber = client
        .queue_subscribe(address.subject(exe), exe.to_string())
        .await
        .map_err(|e| unreachable(&e))?;
    // The subscription reaches the server before the ready line says we listen.
    client.flush().await.map_err(|e| unreachable(&e))?;
    Ok((client, subscriber))
}

/// Answers the subscription's messages until the drain.
pub(crate) async fn serve<T: Task>(
    service: Arc<Service<T>>,
    client: async_nats::Client,
    mut subscriber: async_nats::Subscriber,
    slots: Arc<Semaphore>,
) {
    let in_flight = TaskTracker::new();
    let drained = service.phase.reached(Stage::Draining);
    tokio::pin!(drained);
    let mut draining = false;
    loop {
        let message = if draining {
            subscriber.next().await
        } else {
            tokio::select! {
                biased;
                () = &mut drained => {
                    // No more from the server; what it already sent is still answered (the
                    // stream ends after it), rather than left for the requester's timeout.
                    draining = true;
                    let _ = tokio::time::timeout(Duration::from_secs(2), subscriber.drain()).await;
                    continue;
                }
                message = subscriber.next() => message,
            }
        };
        let Some(message) = message else { break };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (service, client) = (Arc::clone(&service), client.clone());
        in_flight.spawn(async move {
            let max = service.limits.max_request_bytes;
            let answer = if message.payload.len() > max {
                encode_error(
                    Error::usage(format!("the request is longer than {max} bytes"))
                        .hint("send a shorter request, or raise serve.max_request_bytes"),
                )
            } else {
                let id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(MSG_ID))
                    .map(|v| ("the Nats-Msg-Id header", v.as_str()));
                service.answer_json(&message.payload, id).await.0
            };
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, answer.into()).await;
            }
            drop(slot);
        });
    }
    in_flight.close();
    in_flight.wait().await;
    let _ = client.flush().await;
}
