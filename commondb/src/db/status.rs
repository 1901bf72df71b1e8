//! `--self-status`: a read-only report for people and deploy scripts: where the database is,
//! whether it answers, and how its schema compares with the binary's migrations.

use std::fmt;

use serde::Serialize;

use super::schema::{self, MigrationInfo};
use super::{Backend, Migrations, Target};
use crate::error::{ErrorKind, Result};

/// How the database's schema compares with the binary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Every migration of the binary is applied, unchanged, and no other.
    Current,
    /// The database does not exist or has no schema yet.
    NotSetUp,
    /// Some of the binary's migrations are not applied yet.
    Behind,
    /// The database has migrations the binary does not know (it is newer).
    Ahead,
    /// An applied migration differs from the binary's (checksum drift).
    Drifted,
    /// A migration failed part way.
    Failed,
    /// The database could not be reached.
    Unreachable,
}

/// The status report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The backend.
    pub backend: Backend,
    /// Where the database is (without credentials).
    pub database: String,
    /// Whether it answered.
    pub reachable: bool,
    /// The verdict.
    pub state: State,
    /// The newest applied migration, if any.
    pub schema_version: Option<i64>,
    /// The newest migration the binary has.
    pub binary_version: i64,
    /// The binary's migrations not yet applied.
    pub pending: Vec<MigrationInfo>,
    /// Applied migrations whose contents differ from the binary's.
    pub drifted: Vec<i64>,
    /// Applied migrations the binary does not have.
    pub unknown: Vec<i64>,
    /// Migrations recorded as failed.
    pub failed: Vec<i64>,
    /// Why the database could not be checked, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip)]
    problem_kind: Option<ErrorKind>,
    /// Whether the connection to a server is encrypted: `TLS (TLSv1.3)`, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The server's certificate when the connection is encrypted: subject, issuer, expiry.
    pub certificate: Option<String>,
    /// The brokers the configuration's listeners name (`serve.listen`), checked by the mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<crate::serve::BrokerStatus>,
}

impl StatusReport {
    /// The kind of failure the state amounts to (its exit code), or `None` when all is well.
    pub fn failure(&self) -> Option<ErrorKind> {
        match self.state {
            State::Current => None,
            State::Unreachable => Some(self.problem_kind.unwrap_or(ErrorKind::Unavailable)),
            _ => Some(ErrorKind::Config),
        }
    }

    /// What to do about the state, for stderr.
    pub fn advice(&self) -> &'static str {
        match self.state {
            State::Current => "nothing to do",
            State::NotSetUp | State::Behind => "run --self-setup",
            State::Ahead => "run a newer version of this executable",
            State::Drifted | State::Failed => {
                "the schema differs from the binary's: restore a backup, or clean up and set up again"
            }
            State::Unreachable => {
                "check that the database is running and the credentials are right"
            }
        }
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = serde_json::to_value(self.state).ok();
        let state = state
            .as_ref()
            .and_then(|s| s.as_str())
            .unwrap_or("?")
            .replace('_', " ");
        writeln!(f, "backend:   {}", self.backend.name())?;
        let reach = if self.reachable {
            "reachable"
        } else {
            "not reachable"
        };
        writeln!(f, "database:  {} ({reach})", self.database)?;
        if let Some(encryption) = &self.encryption {
            writeln!(f, "encryption: {encryption}")?;
        }
        if let Some(certificate) = &self.certificate {
            writeln!(f, "certificate: {certificate}")?;
        }
        match self.schema_version {
            Some(v) => write!(
                f,
                "schema:    version {v}, binary has {}: {state}",
                self.binary_version
            )?,
            None => write!(
                f,
                "schema:    none, binary has {}: {state}",
                self.binary_version
            )?,
        }
        for m in &self.pending {
            write!(f, "\npending:   {} {}", m.version, m.description)?;
        }
        for (label, versions) in [
            ("drifted", &self.drifted),
            ("unknown", &self.unknown),
            ("failed", &self.failed),
        ] {
            for v in versions {
                write!(
                    f,
                    "\n{label}:{:width$}{v}",
                    "",
                    width = 10 - label.len() - 1
                )?;
            }
        }
        if let Some(p) = &self.problem {
            write!(f, "\nproblem:   {p}")?;
        }
        for broker in &self.brokers {
            write!(f, "\n{broker}")?;
        }
        Ok(())
    }
}

impl StatusReport {
    /// The report before anything was checked: not set up, as far as it knows.
    fn unchecked(target: &Target, binary_version: i64) -> StatusReport {
        StatusReport {
            backend: target.backend(),
            database: target.location.to_string(),
            reachable: false,
            state: State::NotSetUp,
            schema_version: None,
            binary_version,
            pending: Vec::new(),
            drifted: Vec::new(),
            unknown: Vec::new(),
            failed: Vec::new(),
            problem: None,
            problem_kind: None,
            encryption: None,
            certificate: None,
            brokers: Vec::new(),
        }
    }
}

/// Whether the connection is encrypted, as the server sees it; unknown (a server without the
/// view, or an embedded file) is left out rather than guessed.
async fn encryption(conn: &mut super::Conn) -> Option<String> {
    let sql = conn.backend().dialect().encryption()?;
    let version = conn.strings(sql).await.ok()?.into_iter().next()?;
    Some(match version.is_empty() {
        true => "none: the connection is not encrypted (sslmode in database_url)".into(),
        false => format!("TLS ({version})"),
    })
}

/// Reports on `target` without changing anything.
pub(crate) async fn run(target: &Target, migrations: &Migrations) -> Result<StatusReport> {
    let migrator = migrations.for_backend(target.backend());
    let (_, binary_version) = schema::embedded(migrator);
    let mut report = StatusReport::unchecked(target, binary_version);
    if let Some(missing) = target.location.missing() {
        report.problem = Some(missing);
        return Ok(report);
    }
    let mut conn = match super::connect(target).await {
        Ok(conn) => conn,
        Err(e) => {
            // Missing credentials or database mean setup has not run; the rest, unreachable.
            if e.kind() != ErrorKind::Config {
                report.state = State::Unreachable;
                report.problem_kind = Some(e.kind());
            }
            report.problem = Some(e.message().to_string());
            return Ok(report);
        }
    };
    report.reachable = true;
    report.encryption = encryption(&mut conn).await;
    if report
        .encryption
        .as_deref()
        .is_some_and(|e| e.starts_with("TLS"))
    {
        report.certificate = target.location.certificate().await;
    }
    let applied = schema::applied(&mut conn).await;
    let _ = conn.close().await;
    let applied = applied?;
    report.schema_version = applied
        .iter()
        .filter(|a| a.success)
        .map(|a| a.version)
        .max();
    for a in &applied {
        match migrator
            .iter()
            .find(|m| m.version == a.version && !m.migration_type.is_down_migration())
        {
            None => report.unknown.push(a.version),
            Some(_) if !a.success => report.failed.push(a.version),
            Some(m) if *m.checksum != *a.checksum => report.drifted.push(a.version),
            Some(_) => {}
        }
    }
    report.pending = migrator
        .iter()
        .filter(|m| {
            !m.migration_type.is_down_migration() && !applied.iter().any(|a| a.version == m.version)
        })
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect();
    report.state = if applied.is_empty() {
        State::NotSetUp
    } else if !report.failed.is_empty() {
        State::Failed
    } else if !report.drifted.is_empty() {
        State::Drifted
    } else if !report.unknown.is_empty() {
        State::Ahead
    } else if !report.pending.is_empty() {
        State::Behind
    } else {
        State::Current
    };
    Ok(report)
}
