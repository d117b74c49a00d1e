//! TLS for the requestor's TCP connections: STARTTLS (RFC 7653; digest §12, decisions D25 and
//! D28), with rustls (TLS 1.2 or later, the `ring` provider).
//!
//! [`TlsOptions`] says where the trust anchors, the client certificate and its key are, and
//! which name the server's certificate must carry; [`TlsClient::new`] reads them once into a
//! rustls client configuration that every connection of a requestor then shares (a
//! [`Subscription`](super::Subscription) or a [`Watch`](super::Watch) reconnects with it).
//!
//! - Trust anchors: the PEM certificates in [`TlsOptions::ca`], or else the system's trust
//!   store (rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR`, then the distribution's
//!   bundle).
//! - The server's name: [`TlsOptions::server_name`] (a DNS name or an IP address), or else the
//!   address connected to, which the certificate must then carry as an IP address SAN.
//! - A client certificate (mutual TLS) when [`TlsOptions::cert`] and [`TlsOptions::key`] are
//!   given, both or neither.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::error::{Error, Result};

/// Where a requestor's TLS material is, and which name the server must prove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of trusted CA certificates; `None`: the system's trust store.
    pub ca: Option<PathBuf>,
    /// PEM file of our certificate chain (leaf first), for mutual TLS.
    pub cert: Option<PathBuf>,
    /// PEM file of the key of [`cert`](Self::cert) (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The name the server's certificate must hold: a DNS name, or an IP address (checked
    /// against the IP address SANs). `None`: the server's address.
    pub server_name: Option<String>,
}

/// A requestor's TLS setup, ready for connections: cheap to clone (the configuration is
/// shared).
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field(
                "client_auth",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Reads the files `options` names and builds the configuration: TLS 1.2 and 1.3 only,
    /// the `ring` provider. [`Error::TlsConfig`] when a file cannot be read or holds nothing
    /// usable, or the key does not fit the certificate.
    pub fn new(options: &TlsOptions) -> Result<Self> {
        let server_name = options
            .server_name
            .as_deref()
            .map(|n| {
                ServerName::try_from(n.trim_matches(['[', ']']).to_owned()).map_err(|_| {
                    Error::TlsConfig(format!(
                        "'{n}' is neither a DNS name nor an IP address (server name)"
                    ))
                })
            })
            .transpose()?;
        let roots = match &options.ca {
            Some(path) => roots_from_file(path)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| Error::TlsConfig(format!("TLS versions: {e}")))?
            .with_root_certificates(roots);
        let config = match (&options.cert, &options.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "client certificate")?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    Error::TlsConfig(format!("client key {}: {}", key.display(), pem_reason(&e)))
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    Error::TlsConfig(format!(
                        "client certificate {} with key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?
            }
            (Some(_), None) => {
                return Err(Error::TlsConfig(
                    "a client certificate needs its key as well".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::TlsConfig(
                    "a client key needs its certificate as well".into(),
                ));
            }
        };
        Ok(Self::from_config(Arc::new(config), server_name))
    }

    /// A setup from a rustls configuration made elsewhere, and the name to verify
    /// (`None`: the server's address).
    #[must_use]
    pub const fn from_config(
        config: Arc<ClientConfig>,
        server_name: Option<ServerName<'static>>,
    ) -> Self {
        Self {
            config,
            server_name,
        }
    }

    /// The name the certificate of `server` must carry.
    #[must_use]
    pub fn server_name_for(&self, server: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(server.ip().into()))
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

/// rustls' `ring` provider (the project's choice: no C toolchain or cmake for aws-lc).
/// rustls 0.23.48 deprecates it for its lack of post-quantum key exchange; the deprecation
/// is a note, not a flaw in what it offers (TLS 1.2 and 1.3 with X25519 and the NIST curves).
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the right kind".into(),
        other => format!("not valid PEM ({other})"),
    }
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let fail = |reason: String| Error::TlsConfig(format!("{what} {}: {reason}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_reason(&e)))?
        .collect::<core::result::Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(fail("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, "CA file")? {
        roots.add(cert).map_err(|e| {
            Error::TlsConfig(format!(
                "CA file {}: a certificate cannot be a trust anchor: {e}",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "it is empty".to_owned(), ToString::to_string);
        return Err(Error::TlsConfig(format!(
            "no trust anchors in the system's trust store ({why}): give a CA file"
        )));
    }
    Ok(roots)
}

/// The rustls error inside an I/O error from a TLS stream, if there is one.
pub(crate) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// A rustls failure as one line that says whose fault it is.
pub(crate) fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let why = match c {
                CertificateError::UnknownIssuer => {
                    "it is not signed by a trusted CA (UnknownIssuer)".to_owned()
                }
                CertificateError::Expired => "it has expired".to_owned(),
                CertificateError::ExpiredContext { time, not_after } => format!(
                    "it has expired: not valid after Unix time {}, {} days ago",
                    not_after.as_secs(),
                    time.as_secs().saturating_sub(not_after.as_secs()) / 86_400
                ),
                CertificateError::NotValidForName => {
                    "name mismatch: it is not valid for the name".to_owned()
                }
                c @ CertificateError::NotValidForNameContext { .. } => {
                    format!("name mismatch: {c}")
                }
                other => other.to_string(),
            };
            format!("the server's certificate is not accepted: {why}")
        }
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::CertificateRequired => {
                "the server requires a client certificate (alert CertificateRequired)".into()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied => {
                format!("the server did not accept our client certificate (alert {a:?})")
            }
            AlertDescription::ProtocolVersion => {
                "no TLS version in common: TLS 1.2 or later is required (alert ProtocolVersion)"
                    .into()
            }
            other => format!("the server ended the handshake (alert {other:?})"),
        },
        rustls::Error::NoCertificatesPresented => "the server sent no certificate".into(),
        other => other.to_string(),
    }
}
