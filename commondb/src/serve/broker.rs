//! What the workers on a broker share, whichever broker: a message's bounded answer, what to
//! do with a durable request after its answer ([`verdict`]), and the connection state
//! `/healthz` reports ([`Broker`]). How they log in is [`super::login`]'s.

use std::sync::Arc;
use std::time::Duration;

use super::login::BrokerSecrets;
use super::service::{Service, encode_error};
use crate::error::{Error, ErrorKind, Result};
use crate::task::Task;

/// How many times a durable request is delivered at most (then it is parked).
pub(crate) const MAX_DELIVER: i64 = crate::protocol::nats::MAX_DELIVER;

/// The answer to one message's `payload` (refused past `serve.max_request_bytes`), and its
/// outcome.
pub(crate) async fn answer<T: Task>(
    service: &Arc<Service<T>>,
    payload: &[u8],
    id: Option<(&str, &str)>,
) -> (Vec<u8>, Option<ErrorKind>) {
    let max = service.limits.max_request_bytes;
    if payload.len() > max {
        let e = Error::usage(format!("the request is longer than {max} bytes"))
            .hint("send a shorter request, or raise serve.max_request_bytes");
        return (encode_error(e), Some(ErrorKind::Usage));
    }
    service.answer_json(payload, id).await
}

/// What a worker does with a durable request once it has its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer it and acknowledge it: done (also when the task refused it).
    Answer,
    /// Hand it back, to be delivered again after this delay: it failed for a passing reason.
    Retry(Duration),
    /// Park it on the dead-letter subject or queue, then answer and acknowledge it: it failed
    /// for a passing reason at its last delivery.
    Park,
}

/// The verdict on a request at its `delivered`th delivery whose answer had `outcome`.
pub(crate) fn verdict(outcome: Option<ErrorKind>, delivered: i64) -> Verdict {
    let passing = matches!(
        outcome,
        Some(ErrorKind::Unavailable | ErrorKind::Temporary | ErrorKind::Interrupted)
    );
    match passing {
        false => Verdict::Answer,
        // Later, and later again: 1 s, 2 s, 3 s, 4 s.
        true if delivered < MAX_DELIVER => Verdict::Retry(Duration::from_secs(
            u64::try_from(delivered.max(1)).unwrap_or(1),
        )),
        true => Verdict::Park,
    }
}

/// A broker connection a worker holds, for `/healthz`.
#[derive(Clone)]
pub(crate) enum Broker {
    Nats(async_nats::Client),
    /// The current connection's state (replaced when the worker reconnects).
    Amqp(Arc<std::sync::Mutex<Option<lapin::ConnectionStatus>>>),
}

impl Broker {
    /// Whether the connection is up, or what it is instead.
    pub(crate) fn state(&self) -> std::result::Result<(), String> {
        match self {
            Broker::Nats(client) => match client.connection_state() {
                async_nats::connection::State::Connected => Ok(()),
                other => Err(other.to_string()),
            },
            Broker::Amqp(status) => {
                let status = status.lock().unwrap_or_else(|e| e.into_inner());
                match status.as_ref() {
                    Some(s) if s.connected() => Ok(()),
                    _ => Err("disconnected".into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passing_failures_are_retried_then_parked_and_the_rest_answered() {
        assert_eq!(verdict(None, 1), Verdict::Answer);
        assert_eq!(verdict(Some(ErrorKind::Conflict), 1), Verdict::Answer);
        assert_eq!(verdict(Some(ErrorKind::Usage), 9), Verdict::Answer);
        assert_eq!(
            verdict(Some(ErrorKind::Unavailable), 1),
            Verdict::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            verdict(Some(ErrorKind::Temporary), 4),
            Verdict::Retry(Duration::from_secs(4))
        );
        assert_eq!(verdict(Some(ErrorKind::Interrupted), 5), Verdict::Park);
    }
}

/// What `--self-status` says of one broker the configuration names (`serve.listen`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerStatus {
    /// The address, as `--listen` names it.
    pub address: String,
    /// Whether it answered.
    pub reachable: bool,
    /// What waits there: requests queued, handed out and not yet acknowledged, consumers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Why it could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl std::fmt::Display for BrokerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reach = if self.reachable {
            "reachable"
        } else {
            "not reachable"
        };
        write!(f, "broker:    {} ({reach})", self.address)?;
        if let Some(queue) = &self.queue {
            write!(f, "; {queue}")?;
        }
        if let Some(problem) = &self.problem {
            write!(f, "; {problem}")?;
        }
        Ok(())
    }
}

/// Checks the brokers among `listen` (the configured listeners) for executable `exe`, read-only:
/// connects, and reads its stream or queue if it has one. Other listeners are left out.
pub(crate) async fn probe(
    listen: &[String],
    exe: &str,
    secrets: &BrokerSecrets,
) -> Vec<BrokerStatus> {
    let mut found = Vec::new();
    for (spec, named) in named(listen) {
        let status = match named {
            Ok(Named::Nats(address)) => probe_nats(&address, exe, secrets).await,
            Ok(Named::Amqp(address)) => probe_amqp(&address, exe, secrets).await,
            Err(e) => Err(e),
        };
        let (reachable, queue, problem) = match status {
            Ok(queue) => (true, queue, None),
            Err(problem) => (false, None, Some(problem)),
        };
        found.push(BrokerStatus {
            address: spec.clone(),
            reachable,
            queue,
            problem,
        });
    }
    found
}

/// A broker a listener names.
enum Named {
    Nats(crate::protocol::nats::Address),
    Amqp(crate::protocol::amqp::Address),
}

impl Named {
    /// Whether it keeps requests (a JetStream stream, RabbitMQ queues), which setup makes and
    /// cleanup deletes; NATS core keeps nothing.
    fn durable(&self) -> bool {
        match self {
            Named::Nats(address) => address.durable,
            Named::Amqp(_) => true,
        }
    }
}

/// The brokers among `listen` (the configured listeners), each with its address parsed (or
/// why it does not parse); the other listeners are left out.
fn named(listen: &[String]) -> Vec<(&String, std::result::Result<Named, String>)> {
    use crate::protocol::listen::{AMQP, AMQPS, NATS, NATS_JS};
    listen
        .iter()
        .filter_map(|spec| {
            let named = if spec.starts_with(NATS) || spec.starts_with(NATS_JS) {
                crate::protocol::nats::Address::parse(spec).map(Named::Nats)
            } else if spec.starts_with(AMQP) || spec.starts_with(AMQPS) {
                crate::protocol::amqp::Address::parse(spec).map(Named::Amqp)
            } else {
                return None;
            };
            Some((spec, named))
        })
        .collect()
}

/// Whether `listen` names a broker.
pub(crate) fn any(listen: &[String]) -> bool {
    !named(listen).is_empty()
}

/// The durable brokers among `listen`; one that does not parse is a configuration error.
fn durable(listen: &[String]) -> Result<Vec<Named>> {
    let mut found = Vec::new();
    for (spec, named) in named(listen) {
        match named {
            Ok(named) if named.durable() => found.push(named),
            Ok(_) => {}
            // NATS core keeps nothing: a core address setup cannot read is --serve's to refuse.
            Err(_) if spec.starts_with(crate::protocol::listen::NATS) => {}
            Err(e) => return Err(Error::config(format!("serve.listen: {e}"))),
        }
    }
    Ok(found)
}

/// What `--self-cleanup` would delete on the brokers `listen` names, for its prompt.
pub(crate) fn clean_up_plan(listen: &[String], exe: &str) -> Result<Vec<String>> {
    Ok(durable(listen)?
        .into_iter()
        .map(|d| match d {
            Named::Nats(a) => format!(
                "the stream {} on {a}, with the requests waiting and parked in it",
                a.stream(exe)
            ),
            Named::Amqp(a) => format!(
                "the queues {} and {} on {a}, with the requests in them",
                a.queue(exe),
                a.dead_queue(exe)
            ),
        })
        .collect())
}

/// `--self-setup` on the durable brokers `listen` names: their stream or queues made sure of.
pub(crate) async fn set_up(
    listen: &[String],
    exe: &str,
    limits: &crate::config::ServeSettings,
    secrets: &BrokerSecrets,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for broker in durable(listen)? {
        done.push(match broker {
            Named::Nats(address) => super::nats::set_up(&address, exe, limits, secrets).await?,
            Named::Amqp(address) => super::amqp::set_up(&address, exe, secrets).await?,
        });
    }
    Ok(done)
}

/// `--self-cleanup` on the durable brokers `listen` names: their stream or queues deleted.
pub(crate) async fn clean_up(
    listen: &[String],
    exe: &str,
    secrets: &BrokerSecrets,
) -> Result<Vec<String>> {
    let mut gone = Vec::new();
    for broker in durable(listen)? {
        let went = match broker {
            Named::Nats(address) => super::nats::clean_up(&address, exe, secrets).await?,
            Named::Amqp(address) => super::amqp::clean_up(&address, exe, secrets).await?,
        };
        gone.extend(went);
    }
    Ok(gone)
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

async fn probe_nats(
    address: &crate::protocol::nats::Address,
    exe: &str,
    secrets: &BrokerSecrets,
) -> std::result::Result<Option<String>, String> {
    let client = tokio::time::timeout(
        PROBE_TIMEOUT,
        super::login::nats(address, secrets, exe, PROBE_TIMEOUT),
    )
    .await
    .map_err(|_| "it did not answer".to_string())?
    .map_err(|e| e.message().to_string())?;
    if !address.durable {
        return Ok(None);
    }
    let context = async_nats::jetstream::new(client);
    let Ok(mut stream) = context.get_stream(address.stream(exe)).await else {
        return Ok(Some(format!(
            "no stream {} yet (the first worker makes it)",
            address.stream(exe)
        )));
    };
    let info = stream.info().await.map_err(|e| e.to_string())?;
    let mut queue = format!(
        "stream {}: {} request(s) stored",
        info.config.name, info.state.messages
    );
    if let Ok(mut consumer) = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(exe)
        .await
        && let Ok(c) = consumer.info().await
    {
        queue.push_str(&format!(
            ", {} waiting, {} handed out unacknowledged, {} redelivered",
            c.num_pending, c.num_ack_pending, c.num_redelivered
        ));
    }
    Ok(Some(queue))
}

async fn probe_amqp(
    address: &crate::protocol::amqp::Address,
    exe: &str,
    secrets: &BrokerSecrets,
) -> std::result::Result<Option<String>, String> {
    let connection = super::login::amqp(address, secrets, exe, PROBE_TIMEOUT)
        .await
        .map_err(|e| e.message().to_string())?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    let mut queues = Vec::new();
    for name in [address.queue(exe), address.dead_queue(exe)] {
        // Passive: only looks; a queue that is not there closes the channel, so it is the last.
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        match channel
            .queue_declare(name.as_str().into(), passive, Default::default())
            .await
        {
            Ok(q) => queues.push(format!(
                "queue {name}: {} request(s) ready, {} consumer(s)",
                q.message_count(),
                q.consumer_count()
            )),
            Err(_) => {
                queues.push(format!("no queue {name} yet (the first worker makes it)"));
                break;
            }
        }
    }
    let _ = connection.close(200, "status".into()).await;
    Ok(Some(queues.join("; ")))
}
