//! What `--listen` names, and binding it.
//!
//! | spec              | what                                                          |
//! |-------------------|---------------------------------------------------------------|
//! | `tcp://HOST:PORT` | the line protocol over TCP (port 0: any free port)            |
//! | `http://HOST:PORT`| HTTP/1.1 over TCP                                             |
//! | `unix:PATH`       | the line protocol on a unix socket (mode 0600, or 0660 with `socket_group`) |
//! | `http+unix:PATH`  | HTTP on a unix socket                                         |
//! | `stdio`           | one line-protocol connection on stdin/stdout (inetd, systemd `Accept=yes`) |
//! | `systemd`, `http+systemd` | the sockets systemd passed (`LISTEN_FDS`)             |
//! | `tls://HOST:PORT`, `https://HOST:PORT` | the same over TLS (`serve.tls_cert`, `serve.tls_key`; [`super::tls`]) |
//! | `nats://[USER@]HOST:PORT[?prefix=P&tls=true&ca=/PATH]` | requests from a NATS server, in a queue group ([`crate::protocol::nats`]) |
//! | `nats+js://…` | requests from a JetStream work queue, acknowledged after the commit |
//! | `amqp[s]://[USER@]HOST:PORT[/VHOST][?prefix=P&ca=/PATH]` | requests from a RabbitMQ quorum queue, acknowledged after the commit |
//!
//! A broker is logged in to as [`super::login`] says (off loopback: credentials and TLS).
//!
//! TCP binds loopback unless told otherwise. Off loopback, `tls://` and `https://` need a
//! `serve_token` in the secrets file or client certificates (`serve.tls_client_ca`); `tcp://`
//! and `http://` need the token and the operator's opt-out, `serve.allow_plaintext = true`. The grammar's prefixes are the clients' too: [`crate::protocol::listen`].

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::net::{TcpListener, UnixListener};

use crate::config::ServeSettings;
use crate::error::{Error, Result};
use crate::protocol::listen::{
    AMQP, AMQPS, FORMS, HTTP, HTTP_ON, HTTP_UNIX, HTTPS, NATS, NATS_JS, STDIO, SYSTEMD, TCP, TLS,
    UNIX,
};
use crate::protocol::nats::Address;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Line,
    Http,
}

/// A parsed `--listen` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spec {
    Tcp(Protocol, String, u16),
    /// TCP with TLS (`tls://`, `https://`).
    Tls(Protocol, String, u16),
    Unix(Protocol, PathBuf),
    Stdio,
    Systemd(Protocol),
    Nats(Address),
    Amqp(crate::protocol::amqp::Address),
}

impl Spec {
    pub(crate) fn parse(spec: &str) -> Result<Spec> {
        let bad = |why: &str| {
            Error::usage(format!("--listen {spec:?}: {why}")).hint(format!("use {FORMS}"))
        };
        // A broker's address may name the user this executable logs in as (never a
        // password: its parser refuses one without showing it).
        if spec.starts_with(NATS) || spec.starts_with(NATS_JS) {
            return Address::parse(spec)
                .map(Spec::Nats)
                .map_err(|e| Error::usage(format!("--listen {e}")).hint(format!("use {FORMS}")));
        }
        if spec.starts_with(AMQP) || spec.starts_with(AMQPS) {
            return crate::protocol::amqp::Address::parse(spec)
                .map(Spec::Amqp)
                .map_err(|e| Error::usage(format!("--listen {e}")).hint(format!("use {FORMS}")));
        }
        // Not echoed: what precedes the @ may be a password.
        if let Some((_, address)) = spec.split_once("://")
            && address.contains('@')
        {
            return Err(Error::usage(
                "--listen: an address takes no user or password (it was not shown)",
            )
            .hint(
                "clients present the access token instead: serve_token in the app secrets file",
            ));
        }
        let (protocol, rest) = match spec.strip_prefix(HTTP_ON) {
            Some(rest) => (Protocol::Http, rest),
            None => (Protocol::Line, spec),
        };
        if rest == SYSTEMD {
            return Ok(Spec::Systemd(protocol));
        }
        if protocol == Protocol::Line && rest == STDIO {
            return Ok(Spec::Stdio);
        }
        if let Some(path) = rest.strip_prefix(UNIX) {
            if path.is_empty() {
                return Err(bad("the socket path is empty"));
            }
            return Ok(Spec::Unix(protocol, PathBuf::from(path)));
        }
        let (protocol, address) = match protocol {
            // `http+` goes before unix: and systemd only; over TCP the scheme says the protocol.
            Protocol::Http => return Err(bad("unknown kind of address")),
            Protocol::Line => match [TCP, HTTP, TLS, HTTPS].map(|s| spec.strip_prefix(s)) {
                [Some(address), ..] => (Protocol::Line, address),
                [_, Some(address), ..] => (Protocol::Http, address),
                [_, _, Some(address), _] => (Protocol::Line, address),
                [.., Some(address)] => (Protocol::Http, address),
                _ => return Err(bad("unknown kind of address")),
            },
        };
        let tls = spec.starts_with(TLS) || spec.starts_with(HTTPS);
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| bad("the port is missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        if host.is_empty() {
            return Err(bad("the host is missing (127.0.0.1 is loopback)"));
        }
        Ok(match tls {
            true => Spec::Tls(protocol, host.to_string(), port),
            false => Spec::Tcp(protocol, host.to_string(), port),
        })
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(TcpListener, Protocol),
    /// TCP with TLS, and the certificate it presents.
    Tls(TcpListener, Protocol, std::sync::Arc<super::tls::Tls>),
    /// With the path to remove on shutdown (not for a socket systemd made).
    Unix(UnixListener, Protocol, Option<PathBuf>),
    Stdio,
    /// Subscribed on a NATS server.
    Nats(async_nats::Client, super::nats::Inbox, Address),
    /// Consuming a RabbitMQ queue.
    Amqp(Box<super::amqp::Worker>, crate::protocol::amqp::Address),
}

impl Listener {
    /// The address as `--listen` would name it, with the real port.
    pub(crate) fn address(&self) -> String {
        match self {
            Listener::Tcp(l, protocol) | Listener::Tls(l, protocol, _) => {
                let tls = matches!(self, Listener::Tls(..));
                let scheme = match (*protocol == Protocol::Http, tls) {
                    (true, false) => HTTP,
                    (false, false) => TCP,
                    (true, true) => HTTPS,
                    (false, true) => TLS,
                };
                match l.local_addr() {
                    Ok(SocketAddr::V6(a)) => format!("{scheme}[{}]:{}", a.ip(), a.port()),
                    Ok(a) => format!("{scheme}{a}"),
                    Err(_) => format!("{scheme}?"),
                }
            }
            Listener::Unix(l, protocol, _) => {
                let prefix = if *protocol == Protocol::Http {
                    HTTP_UNIX
                } else {
                    UNIX
                };
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| "?".into());
                format!("{prefix}{path}")
            }
            Listener::Stdio => STDIO.into(),
            Listener::Nats(_, _, address) => address.to_string(),
            Listener::Amqp(_, address) => address.to_string(),
        }
    }
}

/// Binds every spec. TCP on anything but loopback needs `has_token`. If one fails, the unix
/// sockets already bound are removed again.
pub(crate) async fn bind(
    specs: &[Spec],
    settings: &ServeSettings,
    has_token: bool,
    exe: &str,
    pool_size: usize,
    brokers: &super::login::BrokerSecrets,
) -> Result<Vec<Listener>> {
    let mut bound = Vec::with_capacity(specs.len());
    let worker = (exe, pool_size, brokers);
    match bind_all(specs, settings, has_token, worker, &mut bound).await {
        Ok(()) => Ok(bound),
        Err(e) => {
            for listener in &bound {
                if let Listener::Unix(_, _, Some(path)) = listener {
                    let _ = std::fs::remove_file(path);
                }
            }
            Err(e)
        }
    }
}

/// Who may connect to a TCP listener off loopback: what the settings and secrets provide.
#[derive(Clone, Copy)]
struct Access {
    token: bool,
    client_ca: bool,
    plaintext: bool,
}

impl Access {
    /// Why a listener (TLS or not) may not listen on `host` off loopback, if it may not: TLS
    /// needs a token or client certificates; clear text needs the operator's opt-out and a token.
    fn refuses(&self, host: &str, tls: bool) -> Option<Error> {
        if tls {
            return (!self.token && !self.client_ca).then(|| {
                Error::config(format!(
                    "{host} is not a loopback address, and neither an access token nor client certificates are configured"
                ))
                .hint("put `serve_token = \"<a long random string>\"` in the executable's secrets file (chmod 600), or set serve.tls_client_ca to the CA that signs your clients' certificates, or listen on 127.0.0.1")
            });
        }
        if !self.plaintext {
            return Some(Error::config(format!(
                "{host} is not a loopback address: requests (and the access token) would cross the network in clear text"
            ))
            .hint("listen on tls://… or https://… instead (serve.tls_cert, serve.tls_key), or set serve.allow_plaintext = true for a network you trust"));
        }
        (!self.token).then(|| no_token(host))
    }
}

/// Binds TCP `host:port`: loopback, or anywhere `access` allows.
async fn bind_tcp(host: &str, port: u16, access: Access, tls: bool) -> Result<TcpListener> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| {
            Error::config(format!("cannot resolve {host}: {e}"))
                .hint("use an IP address, e.g. 127.0.0.1")
        })?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        return Err(Error::config(format!("{host} resolves to no address")));
    };
    if !addrs.iter().all(|a| a.ip().is_loopback())
        && let Some(refused) = access.refuses(host, tls)
    {
        return Err(refused);
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(&format!("{addr}"), e))
}

async fn bind_all(
    specs: &[Spec],
    settings: &ServeSettings,
    has_token: bool,
    (exe, pool_size, brokers): (&str, usize, &super::login::BrokerSecrets),
    bound: &mut Vec<Listener>,
) -> Result<()> {
    let access = Access {
        token: has_token,
        client_ca: settings.tls_client_ca.is_some(),
        plaintext: settings.allow_plaintext,
    };
    for spec in specs {
        match spec {
            Spec::Tls(protocol, host, port) => {
                let alpn: &[&[u8]] = match protocol {
                    Protocol::Http => &[b"http/1.1"],
                    Protocol::Line => &[],
                };
                let tls = std::sync::Arc::new(super::tls::Tls::load(settings, alpn, has_token)?);
                let listener = bind_tcp(host, *port, access, true).await?;
                bound.push(Listener::Tls(listener, *protocol, tls));
            }
            Spec::Tcp(protocol, host, port) => {
                let listener = bind_tcp(host, *port, access, false).await?;
                bound.push(Listener::Tcp(listener, *protocol));
            }
            Spec::Unix(protocol, path) => {
                let listener = bind_unix(path, settings)?;
                bound.push(Listener::Unix(listener, *protocol, Some(path.clone())));
            }
            Spec::Stdio => bound.push(Listener::Stdio),
            Spec::Nats(address) => {
                let (client, inbox) =
                    super::nats::subscribe(address, exe, settings, brokers).await?;
                bound.push(Listener::Nats(client, inbox, address.clone()));
            }
            Spec::Amqp(address) => {
                let worker =
                    super::amqp::connect(address, exe, settings, pool_size, brokers).await?;
                bound.push(Listener::Amqp(Box::new(worker), address.clone()));
            }
            Spec::Systemd(protocol) => {
                for listener in systemd(*protocol)? {
                    // The same rule for a socket systemd bound as for one we bind.
                    if let Listener::Tcp(l, _) = &listener
                        && let Ok(addr) = l.local_addr()
                        && !addr.ip().is_loopback()
                        && let Some(refused) = access.refuses(&addr.ip().to_string(), false)
                    {
                        return Err(refused);
                    }
                    bound.push(listener);
                }
            }
        }
    }
    Ok(())
}

fn no_token(host: &str) -> Error {
    Error::config(format!(
        "{host} is not a loopback address, and no access token is configured"
    ))
    .hint("put `serve_token = \"<a long random string>\"` in the executable's secrets file (chmod 600), or listen on 127.0.0.1")
}

fn bind_error(what: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            Error::config(format!("{what} is in use by another program"))
                .hint("stop it, or listen on another port (port 0 takes any free one)")
        }
        std::io::ErrorKind::PermissionDenied => {
            Error::permission(format!("not allowed to listen on {what}: {e}"))
                .hint("ports below 1024 need privileges; use a higher port")
        }
        _ => Error::config(format!("cannot listen on {what}: {e}")),
    }
}

/// Binds a unix socket readable and writable by its owner only (and `socket_group`); a stale
/// socket file that nobody listens on is replaced, a live one or any other file is refused.
fn bind_unix(path: &Path, settings: &ServeSettings) -> Result<UnixListener> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::config(format!("{shown} exists and is not a socket"))
                .hint("choose another path for the socket"));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(
                    Error::config(format!("{shown} is in use by another service"))
                        .hint("stop it, or choose another path"),
                );
            }
            // Only a socket nobody listens on is stale; one we may not even try is not ours.
            Err(e) if e.kind() != std::io::ErrorKind::ConnectionRefused => {
                return Err(Error::permission(format!(
                    "cannot tell whether {shown} is in use: {e}"
                ))
                .hint("choose another path for the socket"));
            }
            Err(_) => {}
        }
        std::fs::remove_file(path).map_err(|e| {
            Error::permission(format!("cannot replace the stale socket {shown}: {e}"))
        })?;
    }
    let gid = settings.socket_group.as_deref().map(group_id).transpose()?;
    // Created with no access for others from the start: no window in which it is open.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let listener = UnixListener::bind(path);
    rustix::process::umask(old);
    let listener = listener.map_err(|e| bind_error(&shown.to_string(), e))?;
    if let Some(gid) = gid {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .and_then(|()| rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(0o660)))
            .map_err(|e| {
                let _ = std::fs::remove_file(path);
                Error::permission(format!("cannot give {shown} to group {gid}: {e}"))
                    .hint("the user must be a member of socket_group")
            })?;
    }
    Ok(listener)
}

/// A group's id from its number or its name. A name is looked up through NSS (/etc/group, LDAP,
/// SSSD, …) by `getent group`: these binaries are linked statically, and a static glibc cannot
/// load NSS modules, so `getgrnam` here would crash or miss directory groups. Without `getent`,
/// /etc/group is read.
fn group_id(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        // 4294967295 is (gid_t)-1, "no change" to chown, not a group.
        if gid == u32::MAX {
            return Err(
                Error::config(format!("socket_group {gid} is not a group id"))
                    .hint("give a group name, or a number below 4294967295"),
            );
        }
        return Ok(gid);
    }
    let entry = match std::process::Command::new("getent")
        .args(["group", "--", group])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(_) => std::fs::read_to_string("/etc/group").ok(),
    };
    // `name:password:gid:members`, one line per group.
    entry
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                (fields.next() == Some(group))
                    .then(|| fields.nth(1).and_then(|gid| gid.parse().ok()))
                    .flatten()
            })
        })
        .ok_or_else(|| {
            Error::config(format!(
                "socket_group {group:?} is not a group of this system"
            ))
            .hint("give a group name that `getent group` lists, or a number")
        })
}

/// The sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`).
fn systemd(protocol: Protocol) -> Result<Vec<Listener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Err(
            Error::config("--listen systemd, but systemd passed no sockets")
                .hint("start it from a .socket unit, or listen on an address"),
        );
    }
    let mut bound = Vec::with_capacity(fds.len());
    for i in 0..fds.len() {
        let invalid = |e: std::io::Error| Error::config(format!("socket {i} from systemd: {e}"));
        if let Ok(Some(l)) = fds.take_tcp_listener(i) {
            l.set_nonblocking(true).map_err(invalid)?;
            bound.push(Listener::Tcp(
                TcpListener::from_std(l).map_err(invalid)?,
                protocol,
            ));
        } else if let Some(l) = fds.take_unix_listener(i).map_err(invalid)? {
            l.set_nonblocking(true).map_err(invalid)?;
            bound.push(Listener::Unix(
                UnixListener::from_std(l).map_err(invalid)?,
                protocol,
                None,
            ));
        }
    }
    Ok(bound)
}

/// The mode bits of a socket file, for tests.
#[cfg(test)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(test)]
mod tests {
    /// No broker credentials: these tests bind no broker.
    fn none() -> crate::serve::login::BrokerSecrets {
        crate::serve::login::BrokerSecrets::default()
    }

    use super::*;

    #[test]
    fn groups_are_found_by_number_or_by_name_through_nss() {
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("1234").unwrap(), 1234);
        // Every Unix system has group 0, named root (wheel on the BSDs).
        assert_eq!(group_id("root").unwrap(), 0);
        // 4294967295 is (gid_t)-1, "no change" to chown; 4294967296 is no u32 and no name.
        for bad in ["no-such-group-here", "4294967295", "4294967296", ""] {
            let e = group_id(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn specs_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!(
            Spec::parse("tcp://127.0.0.1:7401").unwrap(),
            Spec::Tcp(Protocol::Line, "127.0.0.1".into(), 7401)
        );
        assert_eq!(
            Spec::parse("http://[::1]:0").unwrap(),
            Spec::Tcp(Protocol::Http, "::1".into(), 0)
        );
        assert_eq!(
            Spec::parse("tls://127.0.0.1:7443").unwrap(),
            Spec::Tls(Protocol::Line, "127.0.0.1".into(), 7443)
        );
        assert_eq!(
            Spec::parse("https://[::1]:0").unwrap(),
            Spec::Tls(Protocol::Http, "::1".into(), 0)
        );
        assert_eq!(
            Spec::parse("http+unix:/run/x.sock").unwrap(),
            Spec::Unix(Protocol::Http, "/run/x.sock".into())
        );
        assert_eq!(Spec::parse("stdio").unwrap(), Spec::Stdio);
        assert_eq!(
            Spec::parse("systemd").unwrap(),
            Spec::Systemd(Protocol::Line)
        );
        for bad in [
            "udp://h:1",
            "tcp://h",
            "tcp://h:70000",
            "tcp://:1",
            "unix:",
            "http+stdio",
            "x",
        ] {
            let e = Spec::parse(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Usage, "{bad}");
            assert_eq!(
                e.hint_text(),
                Some(format!("use {FORMS}").as_str()),
                "{bad}"
            );
        }
    }

    /// What the ready line names is what `--listen` takes: each bound address parses back to
    /// the spec it was bound from (with the port bound).
    #[tokio::test]
    async fn bound_addresses_parse_back_to_their_specs() {
        let dir = tempfile::tempdir().unwrap();
        let specs = [
            Spec::Tcp(Protocol::Line, "127.0.0.1".into(), 0),
            Spec::Tcp(Protocol::Http, "::1".into(), 0),
            Spec::Unix(Protocol::Line, dir.path().join("line.sock")),
            Spec::Unix(Protocol::Http, dir.path().join("http.sock")),
            Spec::Stdio,
        ];
        let Ok(bound) = bind(&specs, &ServeSettings::default(), false, "test", 1, &none()).await
        else {
            // Without IPv6 on loopback, IPv4 alone.
            let bound = bind(
                &specs[..1],
                &ServeSettings::default(),
                false,
                "test",
                1,
                &none(),
            )
            .await
            .unwrap();
            let address = bound[0].address();
            assert!(address.starts_with("tcp://127.0.0.1:"), "{address}");
            return;
        };
        for (spec, listener) in specs.iter().zip(&bound) {
            let address = listener.address();
            let parsed = Spec::parse(&address).unwrap();
            match (spec, parsed) {
                (Spec::Tcp(p, host, 0), Spec::Tcp(q, h, port)) => {
                    assert_eq!((*p, host.as_str()), (q, h.as_str()), "{address}");
                    assert_ne!(port, 0, "{address}");
                }
                (spec, parsed) => assert_eq!(*spec, parsed, "{address}"),
            }
        }
    }

    #[test]
    fn off_loopback_tls_needs_a_token_or_client_certificates_clear_text_both_opt_out_and_token() {
        let access = |token, client_ca, plaintext| Access {
            token,
            client_ca,
            plaintext,
        };
        let refused = |a: Access, tls| a.refuses("10.0.0.1", tls).map(|e| e.message().to_string());
        assert!(
            refused(access(false, false, false), true)
                .unwrap()
                .contains("neither")
        );
        assert!(refused(access(true, false, false), true).is_none());
        assert!(refused(access(false, true, false), true).is_none());
        assert!(
            refused(access(true, true, false), false)
                .unwrap()
                .contains("clear text")
        );
        assert!(
            refused(access(false, true, true), false)
                .unwrap()
                .contains("no access token")
        );
        assert!(refused(access(true, false, true), false).is_none());
    }

    #[tokio::test]
    async fn non_loopback_needs_a_token_and_sockets_are_private() {
        let settings = ServeSettings::default();
        let e = bind(
            &[Spec::Tcp(Protocol::Line, "0.0.0.0".into(), 0)],
            &settings,
            false,
            "test",
            1,
            &none(),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let bound = bind(
            &[Spec::Unix(Protocol::Line, path.clone())],
            &settings,
            false,
            "test",
            1,
            &none(),
        )
        .await
        .unwrap();
        assert_eq!(mode(&path), 0o600);
        // A live socket is refused; once its listener is gone the stale file is replaced.
        let e = bind(
            &[Spec::Unix(Protocol::Line, path.clone())],
            &settings,
            false,
            "test",
            1,
            &none(),
        )
        .await
        .err()
        .unwrap();
        assert!(e.message().contains("in use"), "{}", e.message());
        drop(bound);
        bind(
            &[Spec::Unix(Protocol::Line, path.clone())],
            &settings,
            false,
            "test",
            1,
            &none(),
        )
        .await
        .unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let e = bind(
            &[Spec::Unix(Protocol::Line, file)],
            &settings,
            false,
            "test",
            1,
            &none(),
        )
        .await
        .err()
        .unwrap();
        assert!(e.message().contains("not a socket"), "{}", e.message());
    }
}
