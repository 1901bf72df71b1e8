//! The connections `--serve` keeps warm: at most `pool_size`, shared by every client.
//!
//! A pool of [`Conn`]s, the same connections process mode opens, so that a request runs the
//! same code either way. A connection goes back to the pool only after a request that ended
//! cleanly (committed, or refused by the task and rolled back); after a connection-level
//! failure, a timeout or a cut it is dropped, and the server rolls back whatever it held. A
//! connection that went stale while idle (the server restarted) is replaced before anything
//! was sent on it that could write ([`Conn::begin_task_or_reconnect`]), so a database that
//! comes back is used again without a restart of the service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::db::{self, Conn, Migrations, Target, Tx};
use crate::error::{Error, ErrorKind, Result};

/// How long a pooled server connection goes without re-checking the schema: the service checks
/// it at start and on every new connection, and then at most this often, so that a schema
/// migrated under a running service is noticed within a second, at the cost of one query a
/// second per connection instead of one per request. (On SQLite the schema is checked when the
/// service starts; a file migrated under a running service is not noticed.)
const RECHECK: Duration = Duration::from_secs(1);

/// How many times a connection refused for its credentials reads them again.
const ROTATION_TRIES: u32 = 3;

pub(crate) struct Pool {
    /// Where and as whom to connect: replaced when the credentials change ([`Pool::reload`]).
    target: std::sync::RwLock<Arc<Target>>,
    /// Resolves the target again from the settings and the secrets (`Target::of` of the task).
    resolve: fn(&crate::config::Settings) -> Result<Target>,
    migrations: &'static Migrations,
    /// Idle connections, with when their schema was last checked.
    idle: Mutex<Vec<(Conn, Option<Instant>)>>,
    permits: Semaphore,
    size: usize,
    open: AtomicUsize,
}

impl Pool {
    /// A pool of at most `size` connections to `target`. Connecting is tried once, for at most
    /// `connect_timeout_ms`: a request fails fast with "unavailable" while the database is
    /// down, instead of queueing behind retries.
    pub(crate) fn new(
        mut target: Target,
        resolve: fn(&crate::config::Settings) -> Result<Target>,
        migrations: &'static Migrations,
        size: usize,
    ) -> Pool {
        target.settings.connect_retry_ms = 0;
        Pool {
            target: std::sync::RwLock::new(Arc::new(target)),
            resolve,
            migrations,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            size,
            open: AtomicUsize::new(0),
        }
    }

    /// Connections in use and idle, and the most the pool opens, for the metrics.
    pub(crate) fn usage(&self) -> (usize, usize, usize) {
        let idle = self.lock().len();
        let open = self.open.load(Ordering::Relaxed);
        (open.saturating_sub(idle), idle, self.size)
    }

    /// Waits for a free connection (callers bound the wait with the request's deadline).
    pub(crate) async fn acquire(&self) -> Result<Lease<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable("the service is shutting down"))?;
        let idle = self.lock().pop();
        let (conn, checked) = match idle {
            Some(idle) => idle,
            None => (self.connect().await?, None),
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            checked,
            keep: false,
            _permit: permit,
        })
    }

    /// The target connections are made to now.
    pub(crate) fn target(&self) -> Arc<Target> {
        Arc::clone(&self.target.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the secrets again (after `--self-setup --rotate-credentials`, or on SIGHUP): new
    /// connections use them; open ones, which the server keeps, drain as they are.
    pub(crate) fn reload(&self) -> Result<Arc<Target>> {
        let current = self.target();
        let mut fresh = (self.resolve)(&current.settings)?;
        fresh.settings.connect_retry_ms = 0;
        let fresh = Arc::new(fresh);
        *self.target.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// One attempt, bounded by `connect_timeout_ms` (the server connection's own limit; the
    /// pool's target allows no retries). Refused credentials are read again, a few times over a
    /// moment: a rotation may have changed them (setup writes the new password down an instant
    /// before the server has it).
    async fn connect(&self) -> Result<Conn> {
        let mut target = self.target();
        let mut tries = 0;
        let mut conn = loop {
            match db::connect(&target).await {
                Ok(conn) => break conn,
                Err(e) if e.kind() == ErrorKind::Permission && tries < ROTATION_TRIES => {
                    tries += 1;
                    if tries > 1 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    target = self.reload()?;
                }
                Err(e) => return Err(e),
            }
        };
        // A statement that is sent is never cancelled by the service (a single statement is its
        // own commit), so the server bounds it: past the request timeout it fails, having
        // written nothing.
        let timeout_ms = target.settings.serve.request_timeout_ms;
        if let Some(sql) = conn.backend().dialect().statement_timeout(timeout_ms) {
            conn.exec(sql).await?;
        }
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Drops the idle connections: after one of them turned out stale, the others (opened
    /// before the same restart) are too.
    pub(crate) fn forget_idle(&self) {
        let stale = std::mem::take(&mut *self.lock());
        self.open.fetch_sub(stale.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Conn, Option<Instant>)>> {
        // A panic while holding the lock cannot leave the vector half-changed.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection taken from the pool; it goes back when dropped if [`Lease::keep`] was called.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    conn: Option<Conn>,
    checked: Option<Instant>,
    keep: bool,
    _permit: SemaphorePermit<'p>,
}

impl Lease<'_> {
    /// Begins the task's transaction (`single`: [`crate::Task::SINGLE_STATEMENT`]; `read_only`:
    /// [`crate::Task::READ_ONLY`]), checking
    /// the schema if it was not checked within [`RECHECK`], and replacing a connection that went
    /// stale while idle.
    pub(crate) async fn begin(&mut self, single: bool, read_only: bool) -> Result<Tx<'_>> {
        let pool = self.pool;
        let now = Instant::now();
        let check = self
            .checked
            .is_none_or(|at| now.duration_since(at) >= RECHECK);
        if check {
            self.checked = Some(now);
        }
        let conn = self.conn.as_mut().expect("a lease holds its connection");
        let reconnect = async {
            pool.forget_idle();
            let fresh = pool.connect().await?;
            // The stale connection it replaces is dropped.
            pool.open.fetch_sub(1, Ordering::Relaxed);
            Ok(fresh)
        };
        let begin = crate::db::Begin {
            check,
            single,
            read_only,
        };
        let target = pool.target();
        conn.begin_task_or_reconnect(&target.location, pool.migrations, begin, reconnect)
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
                self.pool.lock().push((conn, self.checked));
            } else {
                self.pool.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}
