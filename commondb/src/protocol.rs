//! The contract between an executable and whoever runs it: a launcher such as `runmany`, a
//! supervisor, a test, a script. It is what crosses the process boundary: the environment
//! variables that turn the performance report on, the report's line and its phase names, the
//! `--listen` address grammar, the `ready:` line `--serve` prints once it listens, and the JSON
//! answer it sends for every request. Both sides use these definitions, so that a change to the
//! contract is made once, here, and the unit tests below pin its exact bytes.
//!
//! This module depends on nothing else in the crate, so that a client that links `commondb`
//! for it uses none of the rest.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The environment variable that turns the performance report on: the path its line is appended
/// to (`-`: stderr).
pub const PERFORMANCE_REPORT_VAR: &str = "COMMONDB_PERFORMANCE_REPORT";

/// The environment variable in which a launcher says when it spawned the process, in
/// nanoseconds since the Unix epoch, so that the report can include the `start` phase.
pub const SPAWNED_AT_VAR: &str = "COMMONDB_SPAWNED_AT_NS";

/// Set by a supervisor (`fleet`) to its own pid: the executable then gets SIGTERM when that
/// process dies, however it dies, and does not start at all if it is already gone.
pub const PARENT_PID_VAR: &str = "COMMONDB_PARENT_PID";

/// Set by `fleet` to the id of the fleet an instance belongs to: a later `fleet up` of the same
/// fleet finds instances an earlier runtime left behind by it.
pub const FLEET_ID_VAR: &str = "COMMONDB_FLEET_ID";

/// The names of the performance report's phases.
pub mod phase {
    /// From the spawn to `main` (reported only when the launcher set
    /// [`super::SPAWNED_AT_VAR`]).
    pub const START: &str = "start";
    /// Parsing the command line and loading the settings.
    pub const CONFIG: &str = "config";
    /// The task's validation and the work that needs no database.
    pub const PREPARE: &str = "prepare";
    /// Opening the database connection.
    pub const CONNECT: &str = "connect";
    /// The schema check and `BEGIN`.
    pub const BEGIN: &str = "begin";
    /// The task's own statements.
    pub const TASK: &str = "task";
    /// `COMMIT`.
    pub const COMMIT: &str = "commit";
    /// From the report's line to the reap: measured by the launcher, never reported by the
    /// executable.
    pub const EXIT: &str = "exit";
}

/// Every phase, in the order they run.
pub const PHASES: [&str; 8] = [
    phase::START,
    phase::CONFIG,
    phase::PREPARE,
    phase::CONNECT,
    phase::BEGIN,
    phase::TASK,
    phase::COMMIT,
    phase::EXIT,
];

/// One run's performance report: one JSON line.
///
/// The fields are declared in the order they are written (alphabetical, as the report was first
/// written through a sorted JSON map), and every field may be missing when read, so that a
/// launcher reads what it needs from any report line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PerformanceReport {
    /// The executable's name.
    pub executable: String,
    /// `ok`, or the error's kind.
    pub outcome: String,
    /// Microseconds per phase ([`PHASES`]), each from the end of the one before.
    pub phases_us: BTreeMap<String, u64>,
    /// Microseconds from the spawn to the report, when the launcher set [`SPAWNED_AT_VAR`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_spawn_us: Option<u64>,
    /// Microseconds from `main` to the report.
    pub total_us: u64,
}

/// The `--listen` address grammar, as the ready line names addresses too.
///
/// | address           | what                                     |
/// |-------------------|------------------------------------------|
/// | `tcp://HOST:PORT` | the line protocol over TCP               |
/// | `http://HOST:PORT`| HTTP/1.1 over TCP                        |
/// | `unix:PATH`       | the line protocol on a unix socket       |
/// | `http+unix:PATH`  | HTTP on a unix socket                    |
/// | `stdio`           | one line-protocol connection on stdin/stdout |
/// | `systemd`, `http+systemd` | the sockets systemd passed       |
pub mod listen {
    /// The line protocol over TCP: `tcp://HOST:PORT`.
    pub const TCP: &str = "tcp://";
    /// HTTP over TCP: `http://HOST:PORT`.
    pub const HTTP: &str = "http://";
    /// The line protocol over TLS: `tls://HOST:PORT`.
    pub const TLS: &str = "tls://";
    /// HTTP over TLS: `https://HOST:PORT`.
    pub const HTTPS: &str = "https://";
    /// The line protocol on a unix socket: `unix:PATH`.
    pub const UNIX: &str = "unix:";
    /// Put before `unix:` or `systemd`, HTTP instead of the line protocol.
    pub const HTTP_ON: &str = "http+";
    /// HTTP on a unix socket: `http+unix:PATH`.
    pub const HTTP_UNIX: &str = "http+unix:";
    /// One line-protocol connection on stdin and stdout.
    pub const STDIO: &str = "stdio";
    /// The sockets systemd passed, for the line protocol.
    pub const SYSTEMD: &str = "systemd";
    /// The sockets systemd passed, for HTTP.
    pub const HTTP_SYSTEMD: &str = "http+systemd";
    /// Requests from a NATS server, answered in a queue group: `nats://HOST:PORT[?prefix=P]`
    /// ([`super::nats`]).
    pub const NATS: &str = "nats://";
    /// Requests from a JetStream work queue on a NATS server, acknowledged after the commit:
    /// `nats+js://HOST:PORT[?prefix=P]` ([`super::nats`]).
    pub const NATS_JS: &str = "nats+js://";
    /// Requests from a RabbitMQ queue, acknowledged after the commit:
    /// `amqp://[USER@]HOST:PORT[/VHOST][?prefix=P]` ([`super::amqp`]).
    pub const AMQP: &str = "amqp://";
    /// The same over TLS: `amqps://[USER@]HOST:PORT[/VHOST][?prefix=P&ca=FILE]`.
    pub const AMQPS: &str = "amqps://";
    /// Every form, as a usage hint says them.
    pub const FORMS: &str = "tcp://HOST:PORT, http://HOST:PORT, tls://HOST:PORT, https://HOST:PORT, unix:PATH, http+unix:PATH, stdio, systemd, http+systemd, nats://[USER@]HOST:PORT[?prefix=P&tls=true&ca=FILE], nats+js://… or amqp[s]://[USER@]HOST:PORT[/VHOST][?prefix=P&ca=FILE]";
}

/// What a broker's address says of logging in, for both brokers: the user (never a password,
/// which is a secret: `broker_password` in the app secrets), and TLS, with the CA file that
/// signs the broker's certificate (`ca=FILE`, beside the public web roots).
pub mod login {
    use std::path::PathBuf;

    /// The user and TLS parts of a broker's address.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Login {
        /// The user to log in as (`USER@HOST:PORT`).
        pub user: Option<String>,
        /// Whether the connection is TLS (`amqps://`, `?tls=true`, or a `ca=`).
        pub tls: bool,
        /// The CA certificates (PEM) trusted beside the public web roots (`?ca=/PATH`).
        pub ca: Option<PathBuf>,
    }

    /// Whether `u` may be a user name: 1 to 64 of A-Z, a-z, 0-9, `.`, `_` and `-`.
    fn valid_user(u: &str) -> bool {
        (1..=64).contains(&u.len())
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    /// Splits `[USER@]HOST…` into the user and the rest. A password (`USER:PASSWORD@`) is
    /// refused, and neither it nor the address is shown.
    pub(crate) fn split_user(authority: &str) -> Result<(Option<String>, &str), String> {
        let Some((user, rest)) = authority.split_once('@') else {
            return Ok((None, authority));
        };
        if user.contains(':') || !valid_user(user) {
            return Err(
                "takes a broker's user at most (1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'), never a password or token (the address is not shown): the password goes in broker_password in the app secrets file".to_string(),
            );
        }
        Ok((Some(user.to_string()), rest))
    }

    impl Login {
        /// Takes the query parameter `key=value` if it is TLS's (`tls=true`, `ca=/PATH`,
        /// percent-encoded); whether it was.
        pub(crate) fn param(&mut self, key: &str, value: &str) -> Result<bool, String> {
            match key {
                "tls" if value == "true" => self.tls = true,
                "ca" => match super::percent_decode(value) {
                    Some(path) if path.starts_with('/') => {
                        self.ca = Some(PathBuf::from(path));
                        self.tls = true;
                    }
                    _ => return Err("ca= takes the absolute path of a PEM file".to_string()),
                },
                _ => return Ok(false),
            }
            Ok(true)
        }

        /// `USER@`, or nothing.
        pub(crate) fn user_part(&self) -> String {
            self.user
                .as_ref()
                .map(|u| format!("{u}@"))
                .unwrap_or_default()
        }

        /// Writes the parameters as [`Login::param`] reads them, each after `separator` (`?`,
        /// then `&`); `tls=true` only when the scheme does not say it and no CA does.
        pub(crate) fn write_params(
            &self,
            f: &mut std::fmt::Formatter<'_>,
            separator: &mut char,
            scheme_says_tls: bool,
        ) -> std::fmt::Result {
            if let Some(ca) = &self.ca {
                write!(
                    f,
                    "{separator}ca={}",
                    super::percent_encode(&ca.to_string_lossy(), b"/-._~")
                )?;
                *separator = '&';
            } else if self.tls && !scheme_says_tls {
                write!(f, "{separator}tls=true")?;
                *separator = '&';
            }
            Ok(())
        }
    }
}

/// `address` without its scheme, and whether it was `flagged` (`nats+js://`, `amqps://`) rather
/// than `plain`; `None` when it is neither.
fn strip_scheme<'a>(address: &'a str, flagged: &str, plain: &str) -> Option<(&'a str, bool)> {
    match address.strip_prefix(flagged) {
        Some(rest) => Some((rest, true)),
        None => address.strip_prefix(plain).map(|rest| (rest, false)),
    }
}

/// Whether `server` is `HOST:PORT` with a host and a port from 1 to 65535.
fn valid_host_port(server: &str) -> bool {
    server
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
}

/// `%XX` decoded; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `text` with every byte but ASCII letters, digits and `keep` written `%XX`.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Requests through NATS: an executable `--serve --listen nats://HOST:PORT` answers the
/// requests published on subject `<prefix>.<executable>` (prefix `commondb` unless
/// `?prefix=P` says otherwise), in queue group `<executable>` (each request to one of its
/// instances), replying to the request's reply subject with the line protocol's answer. A
/// request is the JSON object an HTTP body would be.
///
/// `nats+js://HOST:PORT` is the durable form: requests are published to JetStream, on subject
/// `<prefix>.queue.<executable>` of the work-queue stream `<prefix>_<executable>` (file
/// storage), which the workers' durable consumer `<executable>` pulls; a worker acknowledges a
/// request after its commit and sends the answer to the subject in the request's
/// [`REPLY_TO`] header. A request that failed for a passing reason is delivered again (at most
/// [`MAX_DELIVER`] times in all), then parked on `<prefix>.dead.<executable>` in the same stream
/// with its error in [`ERROR`].
pub mod nats {
    /// The subject prefix unless the address names one.
    pub const DEFAULT_PREFIX: &str = "commondb";
    /// The header that carries a request's id: JetStream deduplicates publishes by it, and the
    /// executable records it ([`crate::Task`]'s effects happen once per id).
    pub const MSG_ID: &str = "Nats-Msg-Id";
    /// The header that carries a request's id when it differs from its `Nats-Msg-Id`: a
    /// client that got no answer publishes the request again under a new `Nats-Msg-Id` (so that
    /// JetStream does not drop it as a duplicate) and the same request id (so that the
    /// executable answers it with the first answer). It takes precedence over [`MSG_ID`].
    pub const REQUEST_ID: &str = "Commondb-Request-Id";
    /// The header of a durable request naming the subject its answer goes to (a JetStream
    /// message's own reply subject is for its acknowledgement).
    pub const REPLY_TO: &str = "Commondb-Reply-To";
    /// The header of an answer (and of a parked request) saying which delivery of the request
    /// it is: `1` the first, more when the broker delivered it again.
    pub const DELIVERED: &str = "Commondb-Delivered";
    /// The header of a parked request: the error of its last delivery.
    pub const ERROR: &str = "Commondb-Error";
    /// How many times a durable request is delivered at most.
    pub const MAX_DELIVER: i64 = 5;

    /// What a `nats://` address names: the server's `HOST:PORT`, and the subject prefix.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Address {
        /// `HOST:PORT`.
        pub server: String,
        /// The subjects' first token.
        pub prefix: String,
        /// JetStream (`nats+js://`) rather than NATS core (`nats://`).
        pub durable: bool,
        /// How many servers of a JetStream cluster keep the stream (`?replicas=3`; 1 alone).
        pub replicas: usize,
        /// The user, and TLS.
        pub login: super::login::Login,
    }

    /// Whether `p` may prefix subjects, streams and queues: 1 to 64 of a-z, 0-9, `_` and `-`.
    pub(crate) fn valid_prefix(p: &str) -> bool {
        (1..=64).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    }

    impl Address {
        /// Parses `nats://[USER@]HOST:PORT[?prefix=P&tls=true&ca=/PATH]` or `nats+js://…` (P: 1
        /// to 64 of a-z, 0-9, `_` and `-`; `replicas=N` for JetStream).
        pub fn parse(address: &str) -> Result<Address, String> {
            let (rest, durable) =
                super::strip_scheme(address, super::listen::NATS_JS, super::listen::NATS)
                    .ok_or_else(|| format!("{address:?} is not nats://HOST:PORT"))?;
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (user, server) = super::login::split_user(rest)?;
            let server = server.trim_end_matches('/');
            if !super::valid_host_port(server) {
                return Err(format!(
                    "{address:?}: write nats://[USER@]HOST:PORT with a port from 1 to 65535"
                ));
            }
            let mut prefix = DEFAULT_PREFIX.to_string();
            let mut replicas = 1;
            let mut login = super::login::Login {
                user,
                ..Default::default()
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                match (key, value) {
                    ("prefix", p) if valid_prefix(p) => prefix = p.to_string(),
                    ("replicas", r) if durable && matches!(r, "1" | "3" | "5") => {
                        replicas = r.parse().unwrap_or(1);
                    }
                    (key, value) => {
                        let taken = login
                            .param(key, value)
                            .map_err(|e| format!("{address:?}: {e}"))?;
                        if !taken {
                            return Err(format!(
                                "{address:?}: the parameters are prefix=P (1 to 64 of a-z, 0-9, _ and -), tls=true, ca=/PATH and, for nats+js://, replicas=1, 3 or 5"
                            ));
                        }
                    }
                }
            }
            Ok(Address {
                server: server.to_string(),
                prefix,
                durable,
                replicas,
                login,
            })
        }

        /// The subject executable `exe` takes requests on.
        pub fn subject(&self, exe: &str) -> String {
            if self.durable {
                format!("{}.queue.{exe}", self.prefix)
            } else {
                format!("{}.{exe}", self.prefix)
            }
        }

        /// The subject executable `exe` parks the durable requests it gave up on.
        pub fn dead_subject(&self, exe: &str) -> String {
            format!("{}.dead.{exe}", self.prefix)
        }

        /// The JetStream stream of executable `exe`'s durable requests (executable names have
        /// no `_`, so the last one separates).
        pub fn stream(&self, exe: &str) -> String {
            format!("{}_{exe}", self.prefix)
        }
    }

    impl std::fmt::Display for Address {
        /// As [`Address::parse`] reads it (the default prefix left out).
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let scheme = if self.durable {
                super::listen::NATS_JS
            } else {
                super::listen::NATS
            };
            write!(f, "{scheme}{}{}", self.login.user_part(), self.server)?;
            let mut separator = '?';
            if self.prefix != DEFAULT_PREFIX {
                write!(f, "?prefix={}", self.prefix)?;
                separator = '&';
            }
            if self.replicas != 1 {
                write!(f, "{separator}replicas={}", self.replicas)?;
                separator = '&';
            }
            self.login.write_params(f, &mut separator, false)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn addresses_parse_and_print_back() {
            let a = Address::parse("nats://127.0.0.1:4222").unwrap();
            assert_eq!(a.subject("create-user"), "commondb.create-user");
            assert_eq!(a.to_string(), "nats://127.0.0.1:4222");
            let b = Address::parse("nats://h:1?prefix=e2e_7").unwrap();
            assert_eq!(b.subject("x"), "e2e_7.x");
            assert_eq!(Address::parse(&b.to_string()).unwrap(), b);
            let js = Address::parse("nats+js://h:1?prefix=p").unwrap();
            assert!(js.durable);
            assert_eq!(js.subject("x"), "p.queue.x");
            assert_eq!(js.dead_subject("x"), "p.dead.x");
            assert_eq!(js.stream("x"), "p_x");
            assert_eq!(js.to_string(), "nats+js://h:1?prefix=p");
            let r3 = Address::parse("nats+js://h:1?replicas=3").unwrap();
            assert_eq!(
                (r3.replicas, r3.to_string().as_str()),
                (3, "nats+js://h:1?replicas=3")
            );
            assert!(
                Address::parse("nats://h:1?replicas=3").is_err(),
                "core keeps nothing"
            );
            assert!(Address::parse("nats+js://h:1?replicas=2").is_err());
            let tls = Address::parse("nats://worker@h:1?tls=true").unwrap();
            assert_eq!(tls.login.user.as_deref(), Some("worker"));
            assert!(tls.login.tls && tls.login.ca.is_none());
            assert_eq!(tls.to_string(), "nats://worker@h:1?tls=true");
            let ca = Address::parse("nats+js://h:1?replicas=3&ca=/etc/my%20ca.pem").unwrap();
            assert!(ca.login.tls);
            assert_eq!(
                ca.login.ca.as_deref(),
                Some(std::path::Path::new("/etc/my ca.pem"))
            );
            assert_eq!(Address::parse(&ca.to_string()).unwrap(), ca);
            assert_eq!(
                ca.to_string(),
                "nats+js://h:1?replicas=3&ca=/etc/my%20ca.pem"
            );
            let secret = Address::parse("nats://u:s3cret@h:1").unwrap_err();
            assert!(!secret.contains("s3cret"), "{secret}");
            for bad in [
                "nats://h",
                "nats://h:0",
                "nats://u:p@h:1",
                "nats://h:1?ca=relative.pem",
                "nats://h:1?tls=yes",
                "nats://a b@h:1",
                "nats://h:1?prefix=A.B",
                "nats://h:1?x=1",
                "tcp://h:1",
            ] {
                assert!(Address::parse(bad).is_err(), "{bad}");
            }
        }
    }
}

/// Requests through RabbitMQ: an executable `--serve --listen amqp://HOST:PORT[/VHOST]` takes
/// the requests of the durable quorum queue `<prefix>.<executable>` (prefix `commondb` unless
/// `?prefix=P` says otherwise), acknowledging each after its commit, and publishes the answer
/// to the request's `reply_to` (RabbitMQ's direct reply-to works), with its `correlation_id`.
/// A request's `message_id` is its id. Passing failures are delivered again, then parked on
/// `<prefix>.dead.<executable>`, as through JetStream ([`nats`]).
pub mod amqp {
    /// The header of an answer (and of a parked request) saying which delivery it came from.
    pub const DELIVERED: &str = "commondb-delivered";
    /// The header of a parked request: the error of its last delivery.
    pub const ERROR: &str = "commondb-error";
    /// RabbitMQ's pseudo-queue for replies without a queue of one's own.
    pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

    /// What an `amqp://` address names: the broker's `HOST:PORT`, the virtual host, the queue
    /// prefix.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Address {
        /// `HOST:PORT`.
        pub server: String,
        /// The virtual host (`/` unless the path names one).
        pub vhost: String,
        /// The queues' first part.
        pub prefix: String,
        /// The user, and TLS (`amqps://`).
        pub login: super::login::Login,
    }

    impl Address {
        /// Parses `amqp://[USER@]HOST:PORT[/VHOST][?prefix=P]` or `amqps://…[&ca=/PATH]`:
        /// VHOST percent-encoded (`%2f` is `/`, the default), P 1 to 64 of a-z, 0-9, `_` and
        /// `-`. No password: that is a secret, never in an address.
        pub fn parse(address: &str) -> Result<Address, String> {
            let (rest, tls) =
                super::strip_scheme(address, super::listen::AMQPS, super::listen::AMQP)
                    .ok_or_else(|| format!("{address:?} is not amqp://HOST:PORT"))?;
            let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (user, rest) = super::login::split_user(rest)?;
            let (server, vhost) = rest.split_once('/').unwrap_or((rest, ""));
            if !super::valid_host_port(server) {
                return Err(format!(
                    "{address:?}: write amqp[s]://[USER@]HOST:PORT[/VHOST] with a port from 1 to 65535"
                ));
            }
            let vhost = match super::percent_decode(vhost) {
                Some(v) if v.is_empty() => "/".to_string(),
                Some(v) if v.len() <= 255 && !v.chars().any(char::is_control) => v,
                _ => return Err(format!("{address:?}: the virtual host is not a valid name")),
            };
            let mut prefix = super::nats::DEFAULT_PREFIX.to_string();
            let mut login = super::login::Login {
                user,
                tls,
                ca: None,
            };
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("prefix", p)) if super::nats::valid_prefix(p) => prefix = p.to_string(),
                    Some(("ca", p)) if tls => {
                        login
                            .param("ca", p)
                            .map_err(|e| format!("{address:?}: {e}"))?;
                    }
                    _ => {
                        return Err(format!(
                            "{address:?}: the parameters are prefix=P (P of 1 to 64 a-z, 0-9, _ and -) and, for amqps://, ca=/PATH"
                        ));
                    }
                }
            }
            Ok(Address {
                server: server.to_string(),
                vhost,
                prefix,
                login,
            })
        }

        /// The queue executable `exe` takes requests from.
        pub fn queue(&self, exe: &str) -> String {
            format!("{}.{exe}", self.prefix)
        }

        /// The queue executable `exe` parks the requests it gave up on in.
        pub fn dead_queue(&self, exe: &str) -> String {
            format!("{}.dead.{exe}", self.prefix)
        }

        /// The URI a client connects to with `password`: as the address's user, else as
        /// RabbitMQ's `guest` (which it lets in from loopback only). It holds the password:
        /// never print it.
        pub fn uri(&self, password: Option<&str>) -> String {
            let user = self.login.user.as_deref().unwrap_or("guest");
            let password = super::percent_encode(password.unwrap_or("guest"), b"-._~");
            let (scheme, server, vhost) = (self.scheme(), &self.server, self.vhost_path());
            format!("{scheme}{user}:{password}@{server}/{vhost}")
        }

        /// `amqps://` over TLS, else `amqp://`.
        fn scheme(&self) -> &'static str {
            match self.login.tls {
                true => super::listen::AMQPS,
                false => super::listen::AMQP,
            }
        }

        /// The virtual host, percent-encoded for a URI's path.
        fn vhost_path(&self) -> String {
            super::percent_encode(&self.vhost, b"-._~")
        }
    }

    impl std::fmt::Display for Address {
        /// As [`Address::parse`] reads it (the defaults left out).
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let (scheme, user) = (self.scheme(), self.login.user_part());
            write!(f, "{scheme}{user}{}", self.server)?;
            if self.vhost != "/" {
                write!(f, "/{}", self.vhost_path())?;
            }
            let mut separator = '?';
            if self.prefix != super::nats::DEFAULT_PREFIX {
                write!(f, "?prefix={}", self.prefix)?;
                separator = '&';
            }
            self.login.write_params(f, &mut separator, true)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn addresses_parse_and_print_back() {
            let a = Address::parse("amqp://127.0.0.1:5672").unwrap();
            assert_eq!(a.vhost, "/");
            assert_eq!(a.queue("create-user"), "commondb.create-user");
            assert_eq!(a.dead_queue("x"), "commondb.dead.x");
            assert_eq!(a.to_string(), "amqp://127.0.0.1:5672");
            assert_eq!(Address::parse("amqp://h:1/%2f").unwrap().vhost, "/");
            let b = Address::parse("amqp://h:1/prod%2Fusers?prefix=e2e_7").unwrap();
            assert_eq!(
                (b.vhost.as_str(), b.prefix.as_str()),
                ("prod/users", "e2e_7")
            );
            assert_eq!(b.uri(None), "amqp://guest:guest@h:1/prod%2Fusers");
            assert_eq!(Address::parse(&b.to_string()).unwrap(), b);
            let s = Address::parse("amqps://worker@h:5671/prod?ca=/etc/ca.pem").unwrap();
            assert!(s.login.tls);
            assert_eq!(
                s.uri(Some("p@ss/w:rd")),
                "amqps://worker:p%40ss%2Fw%3Ard@h:5671/prod"
            );
            assert_eq!(s.to_string(), "amqps://worker@h:5671/prod?ca=/etc/ca.pem");
            assert_eq!(Address::parse(&s.to_string()).unwrap(), s);
            let secret = Address::parse("amqps://u:s3cret@h:1").unwrap_err();
            assert!(!secret.contains("s3cret"), "{secret}");
            for bad in [
                "amqp://h",
                "amqp://h:0",
                "amqp://u:p@h:1",
                "amqp://h:1/%zz",
                "amqp://h:1?prefix=A.B",
                "amqp://h:1?ca=/etc/ca.pem",
                "amqps://h:1?ca=ca.pem",
                "nats://h:1",
            ] {
                assert!(Address::parse(bad).is_err(), "{bad}");
            }
        }
    }
}

/// What separates the executable's name from the addresses on the ready line.
const READY: &str = ": ready: ";

/// The line `--serve` prints on stderr once every listener is bound (no newline):
/// `create-user: ready: tcp://127.0.0.1:40123 http://127.0.0.1:8080`. The addresses are in
/// `--listen`'s grammar ([`listen`]), with the ports actually bound, separated by one space.
pub fn ready_line(exe: &str, addresses: &[impl AsRef<str>]) -> String {
    let mut line = format!("{exe}{READY}");
    for (i, address) in addresses.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(address.as_ref());
    }
    line
}

/// What a ready line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The executable's name.
    pub exe: String,
    /// The bound addresses, in `--listen`'s grammar.
    pub addresses: Vec<String>,
}

/// Reads a line of the executable's stderr (with or without its newline): the ready line's
/// executable and addresses, or `None` for any other line. A unix socket path with a space in it
/// cannot be told apart from two addresses, so such paths are best avoided.
pub fn parse_ready_line(line: &str) -> Option<Ready> {
    let (exe, addresses) = line.trim_end_matches(['\n', '\r']).split_once(READY)?;
    Some(Ready {
        exe: exe.to_string(),
        addresses: addresses
            .split(' ')
            .filter(|a| !a.is_empty())
            .map(String::from)
            .collect(),
    })
}

/// The first line of a line-protocol connection to a service that needs a token:
/// `AUTH <token>`.
pub const AUTH: &str = "AUTH ";

/// The HTTP path that checks the database: 200 when it answers, else 503.
pub const HEALTH_PATH: &str = "/healthz";

/// The HTTP path of the Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The answer to one request, the same over every protocol: one JSON document (one line on the
/// line protocol, the body over HTTP), `{"ok":true,"result":…}` or
/// `{"error":{"exit_code":…,"hint":…,"kind":…,"message":…},"ok":false}`.
///
/// `R` is the result's type: the task's output when an executable writes an answer, any JSON
/// when a client reads one. The fields are declared in the order they are written: a result
/// after `ok`, an error before it (both answers were first written that way, and the bytes stay
/// the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer<R = serde_json::Value> {
    /// Why the request failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<AnswerError>,
    /// Whether the request succeeded: for a task that writes, whether it committed.
    pub ok: bool,
    /// The document `--json` prints in process mode, when the request succeeded (`None` when
    /// it was JSON `null` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<R>,
}

/// The `error` of a failed answer: what the process would have exited with, and said.
///
/// The fields are declared in the order they are written (alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerError {
    /// The exit code the process would have returned.
    pub exit_code: u8,
    /// What to do about it.
    pub hint: String,
    /// The error's kind: `usage`, `invalid_input`, `conflict`, `unavailable`, … (README, Exit
    /// codes).
    pub kind: String,
    /// What failed.
    pub message: String,
}

impl<R> Answer<R> {
    /// A successful answer.
    pub fn success(result: R) -> Self {
        Answer {
            error: None,
            ok: true,
            result: Some(result),
        }
    }

    /// A failed answer.
    pub fn failure(error: AnswerError) -> Self {
        Answer {
            error: Some(error),
            ok: false,
            result: None,
        }
    }

    /// The error's kind, if the request failed.
    pub fn kind(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.kind.as_str())
    }
}

impl<R: Serialize> fmt::Display for Answer<R> {
    /// The answer as it is sent, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// The command-line flags a launcher passes to an executable (the modes' table in `modes/`
/// declares them with these names).
pub mod flags {
    /// `--self-samples N`: print the first N sample requests, one [`super::SampleLine`] each.
    pub const SAMPLES: &str = "self-samples";
    /// `--self-seed N`: write the rows the first N sample requests of `--run` need.
    pub const SEED: &str = "self-seed";
    /// `--run ID`: the run the samples are unique to.
    pub const RUN: &str = "run";
    /// `--serve`: the task as a service.
    pub const SERVE: &str = "serve";
    /// `--listen ADDR`: where `--serve` listens (repeatable; grammar in [`super::listen`]).
    pub const LISTEN: &str = "listen";
}

/// One line of `--self-samples`: sample request `n` as command-line words (with the verb) for
/// process mode, and as the JSON object a service takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    // In this order, the one its bytes have always had (serde_json's maps sort their keys).
    /// The words after the program name.
    pub argv: Vec<String>,
    /// The sample's number, from 0.
    pub n: u64,
    /// The request as a service takes it (a line of the line protocol, or an HTTP body).
    pub request: serde_json::Value,
    /// What the process reads on its standard input (a password's line), if anything; the
    /// request carries it as its `stdin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_line_keeps_its_bytes() {
        let line = SampleLine {
            argv: vec!["--create".into(), "--username".into(), "u1".into()],
            n: 1,
            request: serde_json::json!({"username": "u1"}),
            input: None,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"argv":["--create","--username","u1"],"n":1,"request":{"username":"u1"}}"#
        );
        assert_eq!(serde_json::from_str::<SampleLine>(&text).unwrap(), line);
    }

    #[test]
    fn the_ready_line_is_pinned_and_reads_back() {
        let line = ready_line(
            "create-user",
            &["tcp://127.0.0.1:40123", "http://127.0.0.1:8080"],
        );
        assert_eq!(
            line,
            "create-user: ready: tcp://127.0.0.1:40123 http://127.0.0.1:8080"
        );
        let ready = parse_ready_line(&format!("{line}\n")).unwrap();
        assert_eq!(ready.exe, "create-user");
        assert_eq!(
            ready.addresses,
            ["tcp://127.0.0.1:40123", "http://127.0.0.1:8080"]
        );
        assert_eq!(
            parse_ready_line("create-user: ready: stdio")
                .unwrap()
                .addresses,
            ["stdio"]
        );
        for other in [
            "create-user: stopped",
            "create-user: first use: created the database /x",
            "ready: tcp://127.0.0.1:1",
            "",
        ] {
            assert_eq!(parse_ready_line(other), None, "{other:?}");
        }
    }

    #[test]
    fn ready_lines_round_trip() {
        let cases: [(&str, &[&str]); 5] = [
            ("create-user", &["tcp://127.0.0.1:0"]),
            ("x", &["unix:/run/x.sock", "http+unix:/run/y.sock", "stdio"]),
            ("a-b.c", &["http://[::1]:8080", "tcp://10.0.0.1:7401"]),
            ("create-user", &["stdio"]),
            ("create-user", &[]),
        ];
        for (exe, addresses) in cases {
            let ready = parse_ready_line(&ready_line(exe, addresses)).unwrap();
            assert_eq!(ready.exe, exe);
            assert_eq!(ready.addresses, addresses);
        }
    }

    #[test]
    fn answers_are_pinned_and_read_back() {
        let ok = Answer::success(serde_json::json!({"id": 1, "username": "alice"}));
        let text = ok.to_string();
        assert_eq!(text, r#"{"ok":true,"result":{"id":1,"username":"alice"}}"#);
        let read: Answer = serde_json::from_str(&text).unwrap();
        assert_eq!(read, ok);
        assert_eq!(read.kind(), None);

        let failed = Answer::<()>::failure(AnswerError {
            exit_code: 73,
            hint: "nothing was written; use a different value".into(),
            kind: "conflict".into(),
            message: "username \"alice\" is already taken".into(),
        });
        let text = failed.to_string();
        assert_eq!(
            text,
            r#"{"error":{"exit_code":73,"hint":"nothing was written; use a different value","kind":"conflict","message":"username \"alice\" is already taken"},"ok":false}"#
        );
        let read: Answer = serde_json::from_str(&text).unwrap();
        assert!(!read.ok);
        assert_eq!(read.kind(), Some("conflict"));
        assert_eq!(read.error.unwrap().exit_code, 73);

        // A task whose output is JSON null still says "result".
        assert_eq!(
            Answer::success(()).to_string(),
            r#"{"ok":true,"result":null}"#
        );
        // An answer without "ok" is no answer.
        assert!(serde_json::from_str::<Answer>(r#"{"result":1}"#).is_err());
    }

    #[test]
    fn the_performance_report_is_pinned_and_reads_back() {
        let report = PerformanceReport {
            executable: "create-user".into(),
            outcome: "ok".into(),
            phases_us: [
                (phase::START, 612),
                (phase::CONFIG, 95),
                (phase::COMMIT, 1400),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            since_spawn_us: Some(2650),
            total_us: 2031,
        };
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(
            text,
            r#"{"executable":"create-user","outcome":"ok","phases_us":{"commit":1400,"config":95,"start":612},"since_spawn_us":2650,"total_us":2031}"#
        );
        assert_eq!(
            serde_json::from_str::<PerformanceReport>(&text).unwrap(),
            report
        );
        // Without a spawn time there is no since_spawn_us; a launcher reads partial lines too.
        let bare = PerformanceReport {
            since_spawn_us: None,
            ..report
        };
        assert!(
            !serde_json::to_string(&bare)
                .unwrap()
                .contains("since_spawn_us")
        );
        let partial: PerformanceReport =
            serde_json::from_str(r#"{"phases_us":{"task":300}}"#).unwrap();
        assert_eq!(partial.phases_us["task"], 300);
        assert_eq!(partial.since_spawn_us, None);
    }

    #[test]
    fn the_phases_are_in_the_order_they_run() {
        assert_eq!(
            PHASES,
            [
                "start", "config", "prepare", "connect", "begin", "task", "commit", "exit"
            ]
        );
    }

    #[test]
    fn the_listen_forms_name_every_prefix() {
        for prefix in [
            listen::TCP,
            listen::HTTP,
            listen::UNIX,
            listen::HTTP_UNIX,
            listen::STDIO,
            listen::SYSTEMD,
            listen::HTTP_SYSTEMD,
        ] {
            let form = prefix.trim_end_matches(['/', ':']);
            assert!(listen::FORMS.contains(form), "{prefix}");
        }
        assert_eq!(
            listen::HTTP_UNIX,
            format!("{}{}", listen::HTTP_ON, listen::UNIX)
        );
        assert_eq!(
            listen::HTTP_SYSTEMD,
            format!("{}{}", listen::HTTP_ON, listen::SYSTEMD)
        );
    }
}
