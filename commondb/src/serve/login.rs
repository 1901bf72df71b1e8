//! How a worker, `--self-status`, setup, cleanup and `runmany` reach a broker: one place for the
//! rules, the password and TLS, whichever broker.
//!
//! - On loopback, as before: RabbitMQ's `guest`, NATS with no credentials, unless the address
//!   names a user.
//! - Elsewhere, only logged in — the address's user with its password, or (NATS) the server's
//!   token — and over TLS, unless `serve.allow_plaintext` says the network is trusted.
//! - The password (or token) is `broker_password` in the app secrets file, or the systemd
//!   credential of that name ([`crate::secrets::BROKER_PASSWORD_CREDENTIAL`]): never in an
//!   address, the command line or a log.
//! - TLS trusts the public web roots (webpki-roots) and the CA file the address names
//!   (`ca=/PATH`), and checks the broker's name or address against its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::ServeSettings;
use crate::error::{Error, Result};
use crate::protocol::login::Login;
use crate::protocol::{amqp, nats};
use crate::secrets::{ExposeSecret, SecretString};

/// What an executable logs in to its brokers with: the password from its secrets, whether
/// plaintext is allowed off loopback, and where the password belongs (for hints).
#[derive(Clone, Debug, Default)]
pub struct BrokerSecrets {
    password: Option<SecretString>,
    allow_plaintext: bool,
    source: PathBuf,
}

impl BrokerSecrets {
    pub(crate) fn new(
        password: Option<SecretString>,
        serve: &ServeSettings,
        source: &Path,
    ) -> Self {
        BrokerSecrets {
            password,
            allow_plaintext: serve.allow_plaintext,
            source: source.to_path_buf(),
        }
    }

    /// The target's: its secrets and settings.
    pub(crate) fn of(target: &crate::db::Target) -> Self {
        let file = crate::secrets::app_file(&target.settings, target.exe);
        Self::new(
            target.secrets.broker_password.clone(),
            &target.settings.serve,
            &file,
        )
    }

    /// Executable `exe`'s, as its own settings and secrets give them (the same files and
    /// environment): for a client that runs beside it, such as `runmany`.
    pub fn of_executable(exe: &str) -> Result<BrokerSecrets> {
        let settings = crate::config::load(&crate::config::Sources::standard(exe, None)?)?;
        let (secrets, file) = crate::secrets::load_app(&settings, exe)?;
        Ok(Self::new(secrets.broker_password, &settings.serve, &file))
    }

    fn hint(&self) -> String {
        format!(
            "put `broker_password = \"…\"` in {} (chmod 600), or pass it as the systemd credential {}",
            self.source.display(),
            crate::secrets::BROKER_PASSWORD_CREDENTIAL
        )
    }
}

/// Whether every address `server` (`HOST:PORT`) resolves to is a loopback one.
async fn on_loopback(server: &str) -> bool {
    tokio::net::lookup_host(server)
        .await
        .map(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        .unwrap_or(false)
}

/// Refuses a login that would be unsafe or cannot work: a user without its password; off
/// loopback, no credentials (`token`: the password alone may log in, as NATS's token), or no
/// TLS without `serve.allow_plaintext`. `what` names the broker ("NATS server").
async fn check(
    server: &str,
    login: &Login,
    secrets: &BrokerSecrets,
    what: &str,
    token: bool,
) -> Result<()> {
    if login.user.is_some() && secrets.password.is_none() {
        return Err(Error::config(format!(
            "the {what} address names a user, and its password (broker_password) is not set"
        ))
        .hint(secrets.hint()));
    }
    if on_loopback(server).await {
        return Ok(());
    }
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    let logged_in = secrets.password.is_some() && (login.user.is_some() || token);
    if !logged_in {
        let form = match token {
            true => "nats://USER@HOST:PORT (or leave the user out and give the server's token)",
            false => "amqps://USER@HOST:PORT",
        };
        return Err(Error::config(format!(
            "the {what} {host} is not on loopback, and this executable has no credentials for it: whoever can publish there could run this task"
        ))
        .hint(format!("name the user in the address, {form}; {}", secrets.hint())));
    }
    if !login.tls && !secrets.allow_plaintext {
        let how = match token {
            true => "add ?tls=true to the address (ca=/PATH for a private CA)",
            false => "use amqps:// (with ?ca=/PATH for a private CA)",
        };
        return Err(Error::config(format!(
            "the {what} {host} is not on loopback, and the connection would carry the password and the requests in clear"
        ))
        .hint(format!("{how}, or set serve.allow_plaintext = true on a network you trust")));
    }
    Ok(())
}

/// A TLS client configuration trusting the public web roots and the certificates of `ca`.
fn client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = ca {
        for cert in super::tls::read_certificates(ca)? {
            roots.add(cert).map_err(|e| {
                Error::config(format!(
                    "the broker's CA file {} holds a certificate that cannot be a CA: {e}",
                    ca.display()
                ))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS cannot be configured: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The hint for a connection that failed: the TLS one when it is TLS that failed.
fn failure_hint(e: &str, login: &Login, start: &str) -> String {
    let tls = [
        "certificate",
        "Tls",
        "tls",
        "handshake",
        "UnknownIssuer",
        "NotValid",
    ];
    if login.tls && tls.iter().any(|w| e.contains(w)) {
        return "check that the broker speaks TLS on that port, and that ca= names the CA that signed its certificate for that host name or address".into();
    }
    format!("start it ({start}), or check the address")
}

/// Connects to the NATS server `address` names as `name`, within `timeout`.
pub async fn nats(
    address: &nats::Address,
    secrets: &BrokerSecrets,
    name: &str,
    timeout: Duration,
) -> Result<async_nats::Client> {
    let login = &address.login;
    check(&address.server, login, secrets, "NATS server", true).await?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(timeout);
    if let Some(password) = &secrets.password {
        let password = password.expose_secret().to_string();
        options = match &login.user {
            Some(user) => options.user_and_password(user.clone(), password),
            None => options.token(password),
        };
    }
    if login.tls {
        options = options
            .require_tls(true)
            .tls_client_config(client_config(login.ca.as_deref())?);
    }
    options.connect(address.server.as_str()).await.map_err(|e| {
        use async_nats::ConnectErrorKind::{Authentication, AuthorizationViolation};
        let message = format!("the NATS server at {} refused: {e}", address.server);
        match e.kind() {
            AuthorizationViolation | Authentication => Error::permission(message).hint(format!(
                "check the user in the address and broker_password; {}",
                secrets.hint()
            )),
            _ => Error::unavailable(format!(
                "cannot reach the NATS server at {}: {e}",
                address.server
            ))
            .hint(failure_hint(&format!("{e} {e:?}"), login, "nats-server")),
        }
    })
}

/// Connects to the RabbitMQ broker `address` names as `name`, within `timeout`: as the
/// address's user with `broker_password`, else as `guest` (which RabbitMQ lets in from
/// loopback only).
pub async fn amqp(
    address: &amqp::Address,
    secrets: &BrokerSecrets,
    name: &str,
    timeout: Duration,
) -> Result<lapin::Connection> {
    let login = &address.login;
    check(&address.server, login, secrets, "RabbitMQ broker", false).await?;
    let password = match login.user {
        Some(_) => secrets.password.as_ref().map(|p| p.expose_secret()),
        None => None,
    };
    // The URI holds the password: it goes to the client and nowhere else.
    let uri = SecretString::from(address.uri(password));
    let ca = match &login.ca {
        Some(ca) => Some(super::tls::read_pem_certificates(ca)?.0),
        None => None,
    };
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: ca,
    };
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| Error::internal(format!("no runtime for the RabbitMQ client: {e}")))?;
    let properties = lapin::ConnectionProperties::default().with_connection_name(name.into());
    let connect =
        lapin::Connection::connect_with_config(uri.expose_secret(), properties, tls, runtime);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        format!("the RabbitMQ broker at {} {what}: {e}", address.server)
    };
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(Error::unavailable(failed("did not answer", &"timed out"))
            .hint(failure_hint("", login, "rabbitmq-server"))),
        Ok(Err(e))
            if ["ACCESS_REFUSED", "ACCESS-REFUSED"]
                .iter()
                .any(|w| e.to_string().contains(w)) =>
        {
            Err(
                Error::permission(failed("refused the login", &e)).hint(format!(
                    "check the user in the address and broker_password; {}",
                    secrets.hint()
                )),
            )
        }
        Ok(Err(e)) => Err(
            Error::unavailable(failed("refused the connection", &e)).hint(failure_hint(
                &format!("{e} {e:?}"),
                login,
                "rabbitmq-server",
            )),
        ),
        Ok(Ok(connection)) => Ok(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn secrets(password: Option<&str>, allow_plaintext: bool) -> BrokerSecrets {
        BrokerSecrets {
            password: password.map(|p| SecretString::from(p.to_string())),
            allow_plaintext,
            source: PathBuf::from("/home/u/.config/commondb/secrets/x.toml"),
        }
    }

    fn login(user: Option<&str>, tls: bool) -> Login {
        Login {
            user: user.map(String::from),
            tls,
            ca: None,
        }
    }

    /// The rules, decided before anything is sent (192.0.2.1 is TEST-NET-1).
    #[tokio::test]
    async fn off_loopback_a_broker_needs_credentials_and_tls() {
        let far = "192.0.2.1:4222";
        let kind = |r: Result<()>| r.err().map(|e| e.kind());
        let none = secrets(None, false);
        let pw = secrets(Some("pw"), false);
        let trusted = secrets(Some("pw"), true);
        // On loopback, as before: nothing needed.
        assert!(
            check("127.0.0.1:4222", &login(None, false), &none, "x", true)
                .await
                .is_ok()
        );
        // A user always needs its password.
        let missing = check("127.0.0.1:4222", &login(Some("u"), true), &none, "x", true).await;
        assert!(
            missing
                .unwrap_err()
                .hint_text()
                .unwrap()
                .contains("broker_password")
        );
        // Off loopback: credentials (a NATS token alone will do, not for RabbitMQ) and TLS.
        let no_creds = check(far, &login(None, true), &none, "x", true).await;
        assert_eq!(kind(no_creds), Some(ErrorKind::Config));
        assert!(check(far, &login(None, true), &pw, "x", true).await.is_ok());
        let amqp_token = check(far, &login(None, true), &pw, "x", false).await;
        assert_eq!(kind(amqp_token), Some(ErrorKind::Config));
        assert!(
            check(far, &login(Some("u"), true), &pw, "x", false)
                .await
                .is_ok()
        );
        let clear = check(far, &login(Some("u"), false), &pw, "x", false).await;
        assert!(clear.unwrap_err().message().contains("in clear"));
        // ... unless the operator says the network is trusted.
        assert!(
            check(far, &login(Some("u"), false), &trusted, "x", false)
                .await
                .is_ok()
        );
    }
}
