//! TLS on `--serve`'s TCP listeners: `tls://HOST:PORT` (the line protocol) and
//! `https://HOST:PORT` (HTTP/1.1), with rustls (nothing to install).
//!
//! The certificate chain and its key come from files (`serve.tls_cert`, `serve.tls_key`, PEM);
//! the key is a secret: a file only its owner can read, at most 64 KiB, as the secrets files.
//! Both are read at start, and again on SIGHUP ([`Tls::reload`]): connections that are open keep
//! the certificate they shook hands with, new ones get the new one, and a pair that does not
//! load (a key that does not match, a file being replaced) leaves the old one in place. A
//! handshake that does not finish within [`HANDSHAKE_TIMEOUT`] is dropped, before it takes a
//! connection slot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::ServeSettings;
use crate::error::{Error, Result};
use crate::secrets::ExposeSecret;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest certificate chain file read (1 MiB).
const MAX_CERT_FILE_BYTES: u64 = 1 << 20;

/// A TLS listener's certificate and key, reloadable.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// Client certificates, when `serve.tls_client_ca` is set.
    clients: Option<Clients>,
    /// ALPN protocols offered (`http/1.1` for `https://`).
    alpn: Vec<Vec<u8>>,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl Tls {
    /// Loads the pair `settings` names, for a listener speaking `alpn`; with
    /// `serve.tls_client_ca`, clients may show a certificate (must, when there is no `token`).
    pub(crate) fn load(settings: &ServeSettings, alpn: &[&[u8]], token: bool) -> Result<Tls> {
        let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
            return Err(Error::config(
                "a tls:// or https:// listener needs serve.tls_cert and serve.tls_key",
            )
            .hint("set both to PEM files: the certificate chain, and its private key (a file only you can read, chmod 600)"));
        };
        let clients = settings.tls_client_ca.clone().map(|ca| Clients {
            ca,
            optional: token,
        });
        Tls::with_clients(cert, key, alpn, clients)
    }

    /// The certificate chain and key of the PEM files `cert` and `key` (the key under the
    /// secrets rules), for a listener speaking `alpn` outside `--serve` (fleet's gateway).
    pub fn from_files(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Tls> {
        Tls::with_clients(cert, key, alpn, None)
    }

    fn with_clients(
        cert: &Path,
        key: &Path,
        alpn: &[&[u8]],
        clients: Option<Clients>,
    ) -> Result<Tls> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(cert, key, &alpn, clients.as_ref())?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            clients,
            alpn,
            config: RwLock::new(Arc::new(config)),
        })
    }

    /// Reads the files again; on failure the old pair stays.
    pub fn reload(&self) -> Result<()> {
        let config = server_config(&self.cert, &self.key, &self.alpn, self.clients.as_ref())?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(
            &self.config.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// Who signs the clients' certificates, and whether a client may come without one (and then
/// present the token).
struct Clients {
    ca: PathBuf,
    optional: bool,
}

impl Clients {
    fn verifier(
        &self,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certificates(&self.ca)? {
            roots.add(ca).map_err(|e| {
                Error::config(format!(
                    "serve.tls_client_ca {} holds a certificate that cannot be a CA: {e}",
                    self.ca.display()
                ))
            })?;
        }
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        );
        let builder = match self.optional {
            true => builder.allow_unauthenticated(),
            false => builder,
        };
        builder.build().map_err(|e| {
            Error::config(format!(
                "serve.tls_client_ca {} cannot be used: {e}",
                self.ca.display()
            ))
        })
    }
}

/// Whether the client of a TLS connection showed a certificate that the verifier accepted.
pub(crate) fn client_certified<S>(stream: &tokio_rustls::server::TlsStream<S>) -> bool {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|chain| !chain.is_empty())
}

fn server_config(
    cert: &Path,
    key: &Path,
    alpn: &[Vec<u8>],
    clients: Option<&Clients>,
) -> Result<rustls::ServerConfig> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::config(format!("{what} {} cannot be used: {e}", path.display()))
    };
    let chain = read_certificates(cert)?;
    // The key is a secret: owner only, bounded, never echoed.
    let Some(pem) = crate::secrets::read(key)? else {
        return Err(
            Error::config(format!("the TLS key {} does not exist", key.display()))
                .hint("set serve.tls_key to the certificate's private key (PEM)"),
        );
    };
    let key_der = PrivateKeyDer::from_pem_slice(pem.expose_secret().as_bytes()).map_err(|_| {
        Error::config(format!(
            "the TLS key {} holds no private key",
            key.display()
        ))
        .hint("it must be a PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS cannot be configured: {e}")))?;
    let builder = match clients {
        Some(clients) => builder.with_client_cert_verifier(clients.verifier(&provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        bad("the TLS certificate", cert, &e).hint(
            "check that serve.tls_key is the private key of serve.tls_cert's first certificate",
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// The certificates of the PEM file at `path`, the server's first.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    Ok(read_pem_certificates(path)?.1)
}

/// The PEM file at `path` (at most 1 MiB), and the certificates in it (at least one).
pub(crate) fn read_pem_certificates(path: &Path) -> Result<(String, Vec<CertificateDer<'static>>)> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::config(format!(
            "cannot read the certificate {}: {e}",
            path.display()
        ))
        .hint("set the path of a PEM certificate file")
    })?;
    crate::config::check_small_file(path, &meta, MAX_CERT_FILE_BYTES, "certificate file")?;
    let pem = std::fs::read_to_string(path).map_err(|e| {
        Error::config(format!(
            "cannot read the certificate {}: {e}",
            path.display()
        ))
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::config(format!(
                "the certificate file {} is not valid PEM",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(Error::config(format!(
            "the certificate file {} holds no certificate",
            path.display()
        ))
        .hint("it must hold PEM certificates, the server's first"));
    }
    Ok((pem, chain))
}
