//! `--listen nats://HOST:PORT` and `nats+js://HOST:PORT`: requests from a NATS server
//! ([`crate::protocol::nats`]).
//!
//! NATS core: the executable subscribes to `<prefix>.<executable>` in queue group
//! `<executable>`, so the server hands each request to one of its instances, and answers on the
//! message's reply subject. Delivery is at most once.
//!
//! JetStream: the executable makes sure of the work-queue stream `<prefix>_<executable>` (file
//! storage, publishes deduplicated by `Nats-Msg-Id` for two minutes) and its durable pull
//! consumer `<executable>`, shared by every worker, and pulls. A request is acknowledged after
//! its commit and its answer sent; a request seen before (a redelivery after a worker died
//! between its commit and its acknowledgement) gets the first answer from the request ids'
//! table and writes nothing. A request that failed for a passing reason (the database down, a
//! timeout, the shutdown's cut) is handed back with a delay growing with each delivery; at the
//! last one ([`MAX_DELIVER`]) it is parked on `<prefix>.dead.<executable>` with its error, and
//! the requester gets the error. Delivery is at least once, and effects happen once.
//!
//! Each message is answered on its own task (at most `serve.max_connections` at once: past
//! that, reading waits). The client reconnects by itself, with backoff. At the drain no more is
//! read, the messages already taken are answered (and acknowledged), and the answers are
//! flushed before the listener returns.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Stage;
use super::broker::{self, Verdict};
use super::login::BrokerSecrets;
use super::service::Service;
use crate::error::{Error, Result};
use crate::protocol::nats::{Address, DELIVERED, ERROR, MAX_DELIVER, MSG_ID, REPLY_TO, REQUEST_ID};
use crate::task::Task;

/// How long JetStream remembers a request id to drop a second publish of it.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// The least time a delivered request has to be acknowledged before it is delivered again
/// (twice `serve.request_timeout_ms` unless that is shorter).
const MIN_ACK_WAIT: Duration = Duration::from_secs(1);
/// How many requests the consumer hands out unacknowledged, over all workers.
const MAX_ACK_PENDING: i64 = 1024;
/// How many requests one pull asks for.
const PULL_BATCH: usize = 64;

/// How long connecting to the server may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a worker's requests come from.
pub(crate) enum Inbox {
    /// NATS core: a queue subscription.
    Core(async_nats::Subscriber),
    /// JetStream: the durable consumer's messages.
    Queue(Box<Queue>),
}

/// A JetStream worker's inbox: the durable consumer's messages, the context to park requests
/// with, and where.
pub(crate) struct Queue {
    messages: jetstream::consumer::pull::Stream,
    context: jetstream::Context,
    dead: String,
}

/// Connects to the server `address` names and subscribes to executable `exe`'s subject (for
/// JetStream: makes sure of the stream and the consumer, and starts pulling).
pub(crate) async fn subscribe(
    address: &Address,
    exe: &str,
    limits: &crate::config::ServeSettings,
    secrets: &BrokerSecrets,
) -> Result<(async_nats::Client, Inbox)> {
    let client = super::login::nats(address, secrets, exe, CONNECT_TIMEOUT).await?;
    if address.durable {
        let (messages, context) = pull(&client, address, exe, limits).await?;
        let dead = address.dead_subject(exe);
        let queue = Queue {
            messages,
            context,
            dead,
        };
        return Ok((client, Inbox::Queue(Box::new(queue))));
    }
    let subscriber = client
        .queue_subscribe(address.subject(exe), exe.to_string())
        .await
        .map_err(|e| unreachable(address, &e))?;
    // The subscription reaches the server before the ready line says we listen.
    client.flush().await.map_err(|e| unreachable(address, &e))?;
    Ok((client, Inbox::Core(subscriber)))
}

fn unreachable(address: &Address, e: &dyn std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "cannot reach the NATS server at {}: {e}",
        address.server
    ))
    .hint("start it (nats-server), or check the address given to --listen")
}

/// Makes sure of executable `exe`'s stream and durable consumer, and starts pulling.
async fn pull(
    client: &async_nats::Client,
    address: &Address,
    exe: &str,
    limits: &crate::config::ServeSettings,
) -> Result<(jetstream::consumer::pull::Stream, jetstream::Context)> {
    let context = jetstream::new(client.clone());
    let consumer = make_sure(&context, address, exe, limits).await?;
    let batch = usize::try_from(limits.max_connections)
        .unwrap_or(usize::MAX)
        .min(PULL_BATCH);
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| refused(address, "the pull", &e))?;
    Ok((messages, context))
}

fn refused(address: &Address, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "the NATS server at {} refused {what}: {e}",
        address.server
    ))
    .hint("start nats-server with JetStream (-js), or use nats:// for NATS core")
}

/// Makes sure of executable `exe`'s stream and durable consumer (a worker at start, and
/// `--self-setup`).
async fn make_sure(
    context: &jetstream::Context,
    address: &Address,
    exe: &str,
    limits: &crate::config::ServeSettings,
) -> Result<jetstream::consumer::PullConsumer> {
    let refused = |what: &str, e: &dyn std::fmt::Display| refused(address, what, e);
    let stream = context
        .get_or_create_stream(jetstream::stream::Config {
            name: address.stream(exe),
            subjects: vec![address.subject(exe), address.dead_subject(exe)],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            max_message_size: i32::try_from(limits.max_request_bytes).unwrap_or(i32::MAX),
            num_replicas: address.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| refused("the stream", &e))?;
    // Long enough for a request that waits its whole timeout, then commits; a request a dead
    // worker held is delivered again after it.
    let ack_wait =
        Duration::from_millis(limits.request_timeout_ms.saturating_mul(2)).max(MIN_ACK_WAIT);
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            exe,
            jetstream::consumer::pull::Config {
                durable_name: Some(exe.to_string()),
                filter_subject: address.subject(exe),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait,
                max_deliver: MAX_DELIVER,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused("the consumer", &e))?;
    Ok(consumer)
}

/// `--self-setup`'s part: the stream and the consumer, made before any worker starts, so that
/// clients may publish at once. Returns what it made sure of.
pub(crate) async fn set_up(
    address: &Address,
    exe: &str,
    limits: &crate::config::ServeSettings,
    secrets: &BrokerSecrets,
) -> Result<String> {
    let client = super::login::nats(address, secrets, exe, CONNECT_TIMEOUT).await?;
    make_sure(&jetstream::new(client), address, exe, limits).await?;
    Ok(format!(
        "stream {} and consumer {exe} on {address}",
        address.stream(exe)
    ))
}

/// `--self-cleanup`'s part: the stream (and its consumer, its waiting and parked requests)
/// deleted; what went, if anything did.
pub(crate) async fn clean_up(
    address: &Address,
    exe: &str,
    secrets: &BrokerSecrets,
) -> Result<Option<String>> {
    let client = super::login::nats(address, secrets, exe, CONNECT_TIMEOUT).await?;
    let context = jetstream::new(client);
    let name = address.stream(exe);
    if context.get_stream(&name).await.is_err() {
        return Ok(None);
    }
    context
        .delete_stream(&name)
        .await
        .map_err(|e| refused(address, "to delete the stream", &e))?;
    Ok(Some(format!("the stream {name} on {address}")))
}

/// Answers the inbox's messages until the drain.
pub(crate) async fn serve<T: Task>(
    service: Arc<Service<T>>,
    client: async_nats::Client,
    inbox: Inbox,
    slots: Arc<Semaphore>,
) {
    match inbox {
        Inbox::Core(subscriber) => serve_core(service, client, subscriber, slots).await,
        Inbox::Queue(queue) => serve_queue(service, client, *queue, slots).await,
    }
}

/// Answers a queue subscription's messages until the drain.
async fn serve_core<T: Task>(
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
            let id = request_id(message.headers.as_ref());
            let (answer, _) = broker::answer(&service, &message.payload, id).await;
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

/// A message's request id, and the header it came in: `Commondb-Request-Id`, else
/// `Nats-Msg-Id`.
fn request_id(headers: Option<&async_nats::HeaderMap>) -> Option<(&'static str, &str)> {
    let headers = headers?;
    if let Some(id) = headers.get(REQUEST_ID) {
        return Some(("the Commondb-Request-Id header", id.as_str()));
    }
    headers
        .get(MSG_ID)
        .map(|id| ("the Nats-Msg-Id header", id.as_str()))
}

/// Answers the durable consumer's messages until the drain.
async fn serve_queue<T: Task>(
    service: Arc<Service<T>>,
    client: async_nats::Client,
    queue: Queue,
    slots: Arc<Semaphore>,
) {
    let Queue {
        mut messages,
        context,
        dead,
    } = queue;
    let in_flight = TaskTracker::new();
    let drained = service.phase.reached(Stage::Draining);
    tokio::pin!(drained);
    loop {
        // At the drain no more is taken: what the pull brought and nobody took is delivered
        // again, after its acknowledgement wait, to a worker that is still running.
        let message = tokio::select! {
            biased;
            () = &mut drained => break,
            message = messages.next() => message,
        };
        let message = match message {
            Some(Ok(message)) => message,
            // A missed heartbeat or a pull the server refused: the stream pulls again.
            Some(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            None => break,
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let (service, client, context, dead) = (
            Arc::clone(&service),
            client.clone(),
            context.clone(),
            dead.clone(),
        );
        in_flight.spawn(async move {
            settle(&service, &client, &context, &dead, message).await;
            drop(slot);
        });
    }
    // What the last pull brought and nobody took goes back at once, not after its wait.
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
    }
    drop(messages);
    in_flight.close();
    in_flight.wait().await;
    let _ = client.flush().await;
}

/// Answers one durable request and settles it with the server: acknowledged once answered,
/// handed back for a passing failure, parked at the last delivery.
async fn settle<T: Task>(
    service: &Arc<Service<T>>,
    client: &async_nats::Client,
    context: &jetstream::Context,
    dead: &str,
    message: jetstream::Message,
) {
    let (delivered, sequence) = message
        .info()
        .map_or((1, 0), |i| (i.delivered, i.stream_sequence));
    let header = |name: &str| {
        message
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    // Without an id of the publisher's, the stream's sequence number is the request's: a
    // redelivery still finds the first answer.
    let fallback = format!("seq-{sequence}");
    let carried =
        request_id(message.headers.as_ref()).unwrap_or(("the stream's sequence", &fallback));
    let (answer, outcome) = broker::answer(service, &message.payload, Some(carried)).await;
    let verdict = broker::verdict(outcome, delivered);
    if let Verdict::Retry(delay) = verdict {
        let _ = message.ack_with(jetstream::AckKind::Nak(Some(delay))).await;
        return;
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(MSG_ID, carried.1);
    headers.insert(REQUEST_ID, carried.1);
    headers.insert(DELIVERED, delivered.to_string().as_str());
    if verdict == Verdict::Park {
        let mut parked = headers.clone();
        let error = String::from_utf8_lossy(&answer).trim().to_string();
        parked.insert(ERROR, error.as_str());
        if let Some(reply) = header(REPLY_TO) {
            parked.insert(REPLY_TO, reply.as_str());
        }
        // Parked under its own id: a second parking of it is dropped by the stream.
        parked.insert(MSG_ID, format!("dead-{}", carried.1).as_str());
        let published = context
            .publish_with_headers(dead.to_string(), parked, message.payload.clone())
            .await;
        if let Ok(ack) = published
            && ack.await.is_err()
        {
            // Not parked: left for its acknowledgement wait, to be delivered again.
            return;
        }
    }
    if let Some(reply) = header(REPLY_TO) {
        let _ = client
            .publish_with_headers(reply, headers, answer.into())
            .await;
    }
    // If the acknowledgement is lost the request comes again, and its id answers it.
    let _ = message.ack().await;
}
