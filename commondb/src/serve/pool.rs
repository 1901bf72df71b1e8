//! The connections `--serve` keeps warm: at most `pool_size`, shared by every client.
//!
//! A pool of [`Conn`]s, the same connections process mode opens, so that a request runs the
//! same code either way. A connection goes back to the pool only after a request that ended
//! cleanly (committed, or refused by the task and rolled back); after a connection-level
//! failure, a timeout or a cut it is dropped, and the server rolls back whatever it held. A
//! connection that went stale while idle (the server restarted) is replaced before anything
//! was sent on it that could write ([`Conn::begin_task_or_reconnect`]), so a database that
//! comes back is used again without a restart of the service.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::db::{self, Conn, Migrations, Target, Tx};
use crate::error::{Error, Result};

pub(crate) struct Pool {
    target: Target,
    migrations: &'static Migrations,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    size: usize,
    open: AtomicUsize,
}

impl Pool {
    /// A pool of at most `size` connections to `target`. Connecting is tried once, for at most
    /// `connect_timeout_ms`: a request fails fast with "unavailable" while the database is
    /// down, instead of queueing behind retries.
    pub(crate) fn new(mut target: Target, migrations: &'static Migrations, size: usize) -> Pool {
        target.settings.connect_retry_ms = 0;
        Pool {
            target,
            migrations,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            size,
            open: AtomicUsize::new(0),
        }
    }

    /// Connections in use and idle, for the metrics.
    pub(crate) fn usage(&self) -> (usize, usize) {
        let idle = self.lock().len();
        (self.open.load(Ordering::Relaxed).saturating_sub(idle), idle)
    }

    /// The most connections the pool opens.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Waits for a free connection (callers bound the wait with the request's deadline).
    pub(crate) async fn acquire(&self) -> Result<Lease<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable("the service is shutting down"))?;
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            keep: false,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        let limit = Duration::from_millis(self.target.settings.connect_timeout_ms);
        let conn = tokio::time::timeout(limit, db::connect(&self.target))
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "connecting to the database timed out after {} ms",
                    limit.as_millis()
                ))
                .hint("check that the database is running and reachable")
            })??;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Drops the idle connections: after one of them turned out stale, the others (opened
    /// before the same restart) are too.
    fn forget_idle(&self) {
        let stale = std::mem::take(&mut *self.lock());
        self.open.fetch_sub(stale.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        // A panic while holding the lock cannot leave the vector half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection taken from the pool; it goes back when dropped if [`Lease::keep`] was called.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    keep: bool,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// Begins the task's transaction, replacing a connection that went stale while idle.
    pub(crate) async fn begin(&mut self) -> Result<Tx<'_>> {
        let pool = self.pool;
        let conn = self.conn.as_mut().expect("a lease holds its connection");
        let reconnect = async {
            pool.forget_idle();
            pool.open.fetch_sub(1, Ordering::Relaxed);
            pool.connect().await
        };
        conn.begin_task_or_reconnect(&pool.target.location, pool.migrations, reconnect)
            .await
    }

    /// The connection, for a health check.
    pub(crate) fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("a lease holds its connection")
    }

    /// Returns the connection to the pool when the lease ends: it is in a known state.
    pub(crate) fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep {
                self.pool.lock().push(conn);
            } else {
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
