//! The database server's certificate, for `--self-status`: who it says it is, who signed it and
//! when it expires. sqlx does not expose the peer certificate, so this opens a connection of its
//! own, asks for TLS the way the server's protocol does (PostgreSQL's `SSLRequest`, MySQL's
//! `SSL Request` packet after the server's greeting), completes the handshake, reads the
//! certificate and closes, before any credential is sent. The handshake accepts any certificate:
//! it only reads; the connections that carry credentials and data verify as `sslmode` says.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::options::ServerOptions;

/// How long the whole probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A certificate's subject, issuer and validity.
#[derive(Debug, Clone)]
pub(crate) struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub not_after: DateTime<Utc>,
}

impl Certificate {
    /// `CN=db.internal (issued by CN=Example CA), expires 2027-03-01 12:00 UTC (in 90 days)`,
    /// with a warning when that is less than 30 days away or past.
    pub(crate) fn describe(&self, now: DateTime<Utc>) -> String {
        let left = self.not_after.signed_duration_since(now);
        let when = self.not_after.format("%Y-%m-%d %H:%M UTC");
        let days = match left.num_days() {
            1 => "1 day".to_string(),
            n => format!("{n} days"),
        };
        let term = if left.num_seconds() <= 0 {
            format!("EXPIRED on {when}: the server must renew it")
        } else if left.num_days() < 30 {
            format!("expires {when} (in {days}: renew it soon)")
        } else {
            format!("expires {when} (in {days})")
        };
        format!("{} (issued by {}), {term}", self.subject, self.issuer)
    }
}

/// The certificate the server at `server` presents, or why it could not be read. `None` for a
/// unix socket (no TLS there).
pub(crate) async fn read(server: &ServerOptions) -> Option<Result<Certificate, String>> {
    let (host, port) = server.tcp()?;
    Some(
        match tokio::time::timeout(PROBE_TIMEOUT, probe(server, host, port)).await {
            Ok(read) => read,
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        },
    )
}

async fn probe(server: &ServerOptions, host: &str, port: u16) -> Result<Certificate, String> {
    let mut tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    match server {
        ServerOptions::Postgres(_) => ask_postgres(&mut tcp).await?,
        ServerOptions::MySql(_) => ask_mysql(&mut tcp).await?,
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| format!("{host} is not a host name: {e}"))?;
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the server sent no certificate")?
        .clone();
    // close_notify, then the socket: nothing was sent that a server would log as an error.
    let _ = tls.shutdown().await;
    parse(&der)
}

/// PostgreSQL: `SSLRequest` (length 8, code 80877103); the server answers `S` or `N`.
async fn ask_postgres(tcp: &mut TcpStream) -> Result<(), String> {
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend(80877103u32.to_be_bytes());
    tcp.write_all(&request).await.map_err(|e| e.to_string())?;
    match tcp.read_u8().await.map_err(|e| e.to_string())? {
        b'S' => Ok(()),
        _ => Err("the server does not offer TLS".into()),
    }
}

/// MySQL/MariaDB: read the server's greeting (protocol 10), check that it offers TLS
/// (`CLIENT_SSL`), and answer with an `SSL Request` packet (sequence 1).
async fn ask_mysql(tcp: &mut TcpStream) -> Result<(), String> {
    const CLIENT_LONG_PASSWORD: u32 = 0x1;
    const CLIENT_PROTOCOL_41: u32 = 0x200;
    const CLIENT_SSL: u32 = 0x800;
    const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header)
        .await
        .map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    // A greeting is well under 1 KiB; bounded before it is read.
    if len > 16 * 1024 {
        return Err(format!("the server's greeting is {len} bytes"));
    }
    let mut greeting = vec![0u8; len];
    tcp.read_exact(&mut greeting)
        .await
        .map_err(|e| e.to_string())?;
    if greeting.first() == Some(&0xff) {
        return Err("the server refused the connection before TLS".into());
    }
    // protocol(1) version(NUL-terminated) thread id(4) scramble(8) filler(1) capabilities(2)
    let nul = greeting
        .iter()
        .skip(1)
        .position(|&b| b == 0)
        .ok_or("the server's greeting is malformed")?;
    let at = 1 + nul + 1 + 4 + 8 + 1;
    let caps = greeting
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
        .ok_or("the server's greeting is malformed")?;
    if caps & CLIENT_SSL == 0 {
        return Err("the server does not offer TLS".into());
    }
    let flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    let mut packet = vec![32, 0, 0, 1];
    packet.extend(flags.to_le_bytes());
    packet.extend((16u32 << 20).to_le_bytes());
    packet.push(45); // utf8mb4_general_ci
    packet.extend([0u8; 23]);
    tcp.write_all(&packet).await.map_err(|e| e.to_string())
}

fn parse(der: &CertificateDer<'_>) -> Result<Certificate, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the server's certificate does not parse: {e}"))?;
    let not_after = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or("the certificate's expiry is out of range")?;
    Ok(Certificate {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after,
    })
}

/// Accepts whatever certificate the server shows (signatures are still checked, so the
/// handshake is a real one): the probe reads it and sends nothing after it.
#[derive(Debug)]
struct ReadOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_described_with_a_warning_when_near_or_past() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let cert = |days: i64| Certificate {
            subject: "CN=db.internal".into(),
            issuer: "CN=Example CA".into(),
            not_after: now + chrono::Duration::days(days),
        };
        let far = cert(90).describe(now);
        assert!(far.starts_with("CN=db.internal (issued by CN=Example CA), expires 2027-"));
        assert!(far.ends_with("(in 90 days)"), "{far}");
        assert!(cert(10).describe(now).contains("renew it soon"));
        assert!(cert(1).describe(now).contains("(in 1 day: renew"));
        assert!(cert(-1).describe(now).contains("EXPIRED"));
    }
}
