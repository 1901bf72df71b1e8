//! Group commit on SQLite for a single-statement task: requests that arrive while the database
//! is busy are written together, in one transaction, so that many share one sync to disk.
//!
//! SQLite has one writer at a time, so `--serve` gives it one connection, and each commit
//! waits for its `fsync`. One writer task takes the requests queued meanwhile (up to
//! [`MAX_BATCH`]), runs each one's statement inside `BEGIN IMMEDIATE` … `COMMIT`, and answers
//! all of them after the commit. A statement the task refuses (a duplicate, invalid data) fails
//! alone: SQLite undoes that statement and keeps the transaction. Any other failure (the disk,
//! the commit) fails the whole batch, rolled back, and every request in it is answered with the
//! error: an answer `ok` still means committed, an error still means nothing was written. A
//! request alone in the queue commits by itself, as without the batch.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::pool::{Lease, Pool};
use super::service::{Reply, Served, cut_error, reusable, timeout_error};
use super::{Phase, Stage};
use crate::db::requests::{self, Recorded, RequestId};
use crate::error::{Error, Result};
use crate::task::Task;

/// The most requests one transaction carries.
const MAX_BATCH: usize = 64;

/// The queue to the writer.
pub(crate) struct Batch<T: Task> {
    queue: mpsc::Sender<Job<T>>,
}

struct Job<T: Task> {
    request: T::Request,
    id: Option<RequestId>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Reply<T::Output>>>,
}

impl<T: Task> Batch<T> {
    /// Starts the writer; it ends when the `Batch` is dropped.
    pub(crate) fn start(pool: Arc<Pool>, phase: Phase) -> Batch<T> {
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(writer::<T>(pool, phase, jobs));
        Batch { queue }
    }

    /// Queues a prepared request and waits for its answer (the writer answers every request
    /// it takes, also one past its deadline).
    pub(crate) async fn submit(
        &self,
        request: T::Request,
        id: Option<RequestId>,
        deadline: Instant,
    ) -> Result<Reply<T::Output>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            id,
            deadline,
            reply,
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| Error::unavailable("the service is shutting down"))?;
        answer
            .await
            .map_err(|_| Error::internal("the writer stopped before it answered"))?
    }
}

async fn writer<T: Task>(pool: Arc<Pool>, phase: Phase, mut jobs: mpsc::Receiver<Job<T>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write::<T>(&pool, &phase, &mut batch).await;
    }
}

/// Writes one batch and answers every request in it.
async fn write<T: Task>(pool: &Pool, phase: &Phase, batch: &mut Vec<Job<T>>) {
    // Requests whose time ran out in the queue, or that the shutdown cut, are not run.
    let now = Instant::now();
    let cut = phase.is(Stage::Cut);
    let (live, late): (Vec<_>, Vec<_>) =
        batch.drain(..).partition(|job| !cut && job.deadline > now);
    for job in late {
        let e = if cut {
            cut_error()
        } else {
            timeout_error(job.deadline.duration_since(now))
        };
        let _ = job.reply.send(Err(e));
    }
    if live.is_empty() {
        return;
    }
    let mut lease = match pool.acquire().await {
        Ok(lease) => lease,
        Err(e) => return answer_all(live, &e),
    };
    // A request with an id writes its id's row beside its statement: two statements, so a
    // transaction even alone.
    let grouped = live.len() > 1 || live.iter().any(|job| job.id.is_some());
    let begin = lease.conn().backend().dialect().begin();
    if grouped && let Err(e) = lease.conn().exec(begin.into()).await {
        return answer_all(live, &e);
    }
    let mut done = Vec::with_capacity(live.len());
    let mut failed: Option<Error> = None;
    for job in live {
        if let Some(e) = &failed {
            // The batch is lost: the rest is answered with the same error, unrun.
            let _ = job.reply.send(Err(e.clone()));
            continue;
        }
        let outcome = match job.id {
            None => match lease.begin(true, false).await {
                Ok(mut tx) => T::execute(&mut tx, job.request)
                    .await
                    .map(|output| Reply::Served(Served::Plain(output))),
                Err(e) => Err(e),
            },
            Some(id) => once::<T>(&mut lease, job.request, &id)
                .await
                .map(Reply::Recorded),
        };
        if let Err(e) = &outcome
            && !reusable(e.kind())
        {
            failed = Some(e.clone());
        }
        done.push((job.reply, outcome));
    }
    if grouped
        && failed.is_none()
        && let Err(e) = lease.conn().exec("COMMIT".into()).await
    {
        failed = Some(e);
    }
    if let Some(e) = failed {
        if grouped {
            // Undo whatever the batch wrote, so that its error answers are true.
            let _ = lease.conn().exec("ROLLBACK".into()).await;
        }
        for (reply, outcome) in done {
            let _ = reply.send(match outcome {
                Ok(_) if grouped => Err(e.clone()),
                other => other,
            });
        }
        return;
    }
    lease.keep();
    for (reply, outcome) in done {
        let _ = reply.send(outcome);
    }
}

/// One request with an id inside the batch's transaction: its statement and its id's row
/// under a savepoint, undone together if either fails; a request seen before gets the first
/// answer.
async fn once<T: Task>(
    lease: &mut Lease<'_>,
    request: T::Request,
    id: &RequestId,
) -> Result<Recorded> {
    lease.conn().exec("SAVEPOINT request".into()).await?;
    let done = async {
        let output = {
            let mut tx = lease.begin(true, false).await?;
            T::execute(&mut tx, request).await?
        };
        let answer = requests::answer_text(&output)?;
        requests::record_on(lease.conn(), T::NAME, id, &answer).await?;
        Ok::<_, Error>(answer)
    }
    .await;
    match done {
        Ok(answer) => {
            lease.conn().exec("RELEASE request".into()).await?;
            Ok(Recorded {
                answer,
                replayed: false,
            })
        }
        Err(e) => {
            let conn = lease.conn();
            conn.exec("ROLLBACK TO request".into()).await?;
            conn.exec("RELEASE request".into()).await?;
            if reusable(e.kind())
                && let Some(answer) = requests::recorded(conn, T::NAME, id).await?
            {
                return Ok(Recorded {
                    answer,
                    replayed: true,
                });
            }
            Err(e)
        }
    }
}

fn answer_all<T: Task>(jobs: Vec<Job<T>>, e: &Error) {
    for job in jobs {
        let _ = job.reply.send(Err(e.clone()));
    }
}
