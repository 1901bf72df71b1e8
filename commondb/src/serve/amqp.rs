//! `--listen amqp://HOST:PORT[/VHOST]`: requests from a RabbitMQ queue
//! ([`crate::protocol::amqp`]).
//!
//! The worker declares the durable quorum queue `<prefix>.<executable>` (at most
//! [`MAX_DELIVER`] deliveries, then dead-lettered: a request that kills its workers ends there
//! too) and `<prefix>.dead.<executable>`, asks for as many unacknowledged requests as it can run
//! at once (the prefetch, four per pooled connection), and consumes with manual
//! acknowledgements. Each request is answered with its `message_id` as its id (the request ids
//! make a redelivery harmless), the answer published to its `reply_to` with its
//! `correlation_id`, then acknowledged. Passing failures are handed back after a delay and
//! parked at the last delivery, as through JetStream ([`broker::verdict`]).
//!
//! A lost connection ends the consumer: what was not acknowledged goes back to the queue, and
//! the worker connects again with backoff (1 s, doubling to 30 s) until it is back. At the drain
//! the consumer is cancelled, the requests in flight are finished and acknowledged, and the
//! connection is closed (requests prefetched but not started go back to the queue).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::Stage;
use super::broker::{self, MAX_DELIVER, Verdict};
use super::login::BrokerSecrets;
use super::service::Service;
use crate::error::{Error, Result};
use crate::protocol::amqp::{Address, DELIVERED, ERROR};
use crate::task::Task;

/// How long connecting to the broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to connect again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A worker's connection to the broker: where, for whom, and its current session.
pub(crate) struct Worker {
    address: Address,
    exe: String,
    prefetch: u16,
    secrets: BrokerSecrets,
    session: Session,
    /// The current connection's state, for `/healthz`.
    pub(crate) status: Arc<Mutex<Option<lapin::ConnectionStatus>>>,
}

/// One connection: a channel that consumes and acknowledges, one in confirm mode that publishes
/// answers and parked requests.
struct Session {
    connection: Connection,
    consume: Channel,
    publish: Channel,
    consumer: lapin::Consumer,
    tag: String,
    /// The queue requests are parked in.
    dead: Arc<str>,
}

/// Connects to the broker `address` names, declares executable `exe`'s queues and starts
/// consuming; `pool_size` sizes the prefetch.
pub(crate) async fn connect(
    address: &Address,
    exe: &str,
    limits: &crate::config::ServeSettings,
    pool_size: usize,
    secrets: &BrokerSecrets,
) -> Result<Worker> {
    let prefetch = u16::try_from((pool_size * 4).max(16))
        .unwrap_or(u16::MAX)
        .min(u16::try_from(limits.max_connections).unwrap_or(u16::MAX));
    let session = open(address, exe, prefetch, secrets).await?;
    let status = Arc::new(Mutex::new(Some(session.connection.status().clone())));
    Ok(Worker {
        address: address.clone(),
        exe: exe.to_string(),
        prefetch,
        secrets: secrets.clone(),
        session,
        status,
    })
}

fn failed(address: &Address, what: &str, e: &dyn std::fmt::Display) -> Error {
    Error::unavailable(format!(
        "the RabbitMQ broker at {} {what}: {e}",
        address.server
    ))
    .hint("start it (rabbitmq-server), or check the address given to --listen")
}

/// Connects to the broker `address` names ([`super::login::amqp`]).
async fn connection(address: &Address, exe: &str, secrets: &BrokerSecrets) -> Result<Connection> {
    super::login::amqp(address, secrets, exe, CONNECT_TIMEOUT).await
}

/// Declares executable `exe`'s queues (idempotent).
async fn declare(channel: &Channel, address: &Address, exe: &str) -> lapin::Result<()> {
    let dead = address.dead_queue(exe);
    channel
        .queue_declare(dead.as_str().into(), durable(), quorum(None))
        .await?;
    channel
        .queue_declare(
            address.queue(exe).as_str().into(),
            durable(),
            quorum(Some(&dead)),
        )
        .await?;
    Ok(())
}

/// `--self-setup`'s part: the queues, declared before any worker starts, so that clients may
/// publish at once. Returns what it made sure of.
pub(crate) async fn set_up(
    address: &Address,
    exe: &str,
    secrets: &BrokerSecrets,
) -> Result<String> {
    let connection = connection(address, exe, secrets).await?;
    let declared = async { declare(&connection.create_channel().await?, address, exe).await };
    declared
        .await
        .map_err(|e| failed(address, "refused the queues", &e))?;
    let _ = connection.close(200, "set up".into()).await;
    Ok(format!(
        "queues {} and {} on {address}",
        address.queue(exe),
        address.dead_queue(exe)
    ))
}

/// `--self-cleanup`'s part: the queues (and the requests in them) deleted (RabbitMQ deletes a
/// queue that is not there without a word); what went.
pub(crate) async fn clean_up(
    address: &Address,
    exe: &str,
    secrets: &BrokerSecrets,
) -> Result<Option<String>> {
    let connection = connection(address, exe, secrets).await?;
    let deleted = async {
        let channel = connection.create_channel().await?;
        for queue in [address.queue(exe), address.dead_queue(exe)] {
            channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await?;
        }
        Ok::<_, lapin::Error>(())
    };
    deleted
        .await
        .map_err(|e| failed(address, "refused to delete the queues", &e))?;
    let _ = connection.close(200, "cleaned up".into()).await;
    Ok(Some(format!(
        "the queues {} and {} on {address}",
        address.queue(exe),
        address.dead_queue(exe)
    )))
}

async fn open(
    address: &Address,
    exe: &str,
    prefetch: u16,
    secrets: &BrokerSecrets,
) -> Result<Session> {
    let connection = connection(address, exe, secrets).await?;
    let declared = async {
        let consume = connection.create_channel().await?;
        declare(&consume, address, exe).await?;
        consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("{exe}-{}", std::process::id());
        let consumer = consume
            .basic_consume(
                address.queue(exe).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, lapin::Error>((consume, publish, consumer, tag))
    }
    .await;
    let (consume, publish, consumer, tag) =
        declared.map_err(|e| failed(address, "refused the queues", &e))?;
    Ok(Session {
        connection,
        consume,
        publish,
        consumer,
        tag,
        dead: address.dead_queue(exe).into(),
    })
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// A quorum queue's arguments: replicated where the broker is a cluster, delivery counted; with
/// `dead`, dead-lettered there after the last delivery.
fn quorum(dead: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dead) = dead {
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(MAX_DELIVER),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(dead.into()),
        );
    }
    arguments
}

/// Answers the queue's requests until the drain, connecting again whenever the connection is
/// lost.
pub(crate) async fn serve<T: Task>(
    service: Arc<Service<T>>,
    mut worker: Worker,
    slots: Arc<Semaphore>,
) {
    let in_flight = TaskTracker::new();
    let drained = service.phase.reached(Stage::Draining);
    tokio::pin!(drained);
    loop {
        if consume(
            &service,
            &mut worker.session,
            &slots,
            &in_flight,
            &mut drained,
        )
        .await
        {
            break;
        }
        // Lost: what was not acknowledged is back in the queue; connect again.
        *worker.status.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut pause = Duration::from_secs(1);
        loop {
            tokio::select! {
                biased;
                () = &mut drained => {
                    in_flight.close();
                    in_flight.wait().await;
                    return;
                }
                () = tokio::time::sleep(pause) => {}
            }
            if let Ok(session) = open(
                &worker.address,
                &worker.exe,
                worker.prefetch,
                &worker.secrets,
            )
            .await
            {
                *worker.status.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(session.connection.status().clone());
                worker.session = session;
                break;
            }
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
    let session = &worker.session;
    let _ = session
        .consume
        .basic_cancel(session.tag.as_str().into(), BasicCancelOptions::default())
        .await;
    in_flight.close();
    in_flight.wait().await;
    let _ = session.connection.close(200, "stopping".into()).await;
}

/// Takes the session's deliveries until the drain (`true`) or until the connection is lost
/// (`false`).
async fn consume<T: Task>(
    service: &Arc<Service<T>>,
    session: &mut Session,
    slots: &Arc<Semaphore>,
    in_flight: &TaskTracker,
    drained: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> bool {
    loop {
        let delivery = tokio::select! {
            biased;
            () = drained.as_mut() => return true,
            delivery = session.consumer.next() => delivery,
        };
        let Some(Ok(delivery)) = delivery else {
            return false;
        };
        let Ok(slot) = Arc::clone(slots).acquire_owned().await else {
            return true;
        };
        let (service, publish, dead) = (
            Arc::clone(service),
            session.publish.clone(),
            Arc::clone(&session.dead),
        );
        in_flight.spawn(async move {
            settle(&service, &publish, &dead, delivery).await;
            drop(slot);
        });
    }
}

/// Answers one request and settles it with the broker: acknowledged once answered, handed back
/// for a passing failure, parked at the last delivery.
async fn settle<T: Task>(
    service: &Arc<Service<T>>,
    publish: &Channel,
    dead: &str,
    delivery: lapin::message::Delivery,
) {
    let properties = &delivery.properties;
    let delivered = delivered(&delivery);
    let id = properties.message_id().as_ref().map(ShortString::as_str);
    let carried = id.map(|id| ("the message_id property", id));
    let (answer, outcome) = broker::answer(service, &delivery.data, carried).await;
    let verdict = broker::verdict(outcome, delivered);
    if let Verdict::Retry(delay) = verdict {
        tokio::time::sleep(delay).await;
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        let _ = delivery.nack(requeue).await;
        return;
    }
    let mut headers = FieldTable::default();
    headers.insert(DELIVERED.into(), AMQPValue::LongLongInt(delivered));
    if verdict == Verdict::Park {
        let mut parked = headers.clone();
        let error = String::from_utf8_lossy(&answer).trim().to_string();
        parked.insert(ERROR.into(), AMQPValue::LongString(error.into()));
        let mut park = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(parked);
        if let Some(id) = properties.message_id() {
            park = park.with_message_id(id.clone());
        }
        let confirmed = match publish
            .basic_publish(
                "".into(),
                dead.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                park,
            )
            .await
        {
            Ok(confirm) => confirm.await.is_ok_and(|c| c.is_ack()),
            Err(_) => false,
        };
        if !confirmed {
            // Not parked: back to the queue, to be delivered again.
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            return;
        }
    }
    if let Some(reply_to) = properties.reply_to() {
        let mut reply = BasicProperties::default().with_headers(headers);
        if let Some(correlation) = properties.correlation_id() {
            reply = reply.with_correlation_id(correlation.clone());
        }
        if let Some(id) = properties.message_id() {
            reply = reply.with_message_id(id.clone());
        }
        // Sent, not waited for: the answer is not what the broker keeps.
        let _ = publish
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                &answer,
                reply,
            )
            .await;
    }
    // If the acknowledgement is lost the request comes again, and its id answers it.
    let _ = delivery.ack(BasicAckOptions::default()).await;
}

/// Which delivery of its request `delivery` is: a quorum queue counts the earlier ones in
/// `x-delivery-count`.
fn delivered(delivery: &lapin::message::Delivery) -> i64 {
    let earlier = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => Some(n),
            AMQPValue::LongInt(n) => Some(i64::from(n)),
            AMQPValue::LongUInt(n) => Some(i64::from(n)),
            AMQPValue::ShortInt(n) => Some(i64::from(n)),
            _ => None,
        });
    match earlier {
        Some(n) => n + 1,
        None => 1 + i64::from(delivery.redelivered),
    }
}
