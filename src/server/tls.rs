//! TLS for STARTTLS (RFC 7653, D25, D27): the rustls server configuration built from the
//! `[tls]` table, and what a requestor's certificate says about it.
//!
//! No thread of its own: each upgraded connection holds a `rustls::ServerConnection` that the
//! event loop feeds and drains like the socket itself (see `conn.rs`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{TlsMode, TlsSettings};

/// TLS as the event loop offers it: the mode and the rustls configuration new sessions use.
#[derive(Clone)]
pub struct TlsServer {
    /// Offered or required.
    pub mode: TlsMode,
    /// The files it was built from, read again on reload.
    pub settings: TlsSettings,
    /// New sessions start from this; a reload replaces it, and running sessions keep theirs.
    pub config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer")
            .field("mode", &self.mode)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Reads the certificate chain, key and client CA named by `settings`; `None` when TLS is
    /// off. Errors name the file and what is wrong with it.
    pub fn load(settings: &TlsSettings) -> Result<Option<Self>, String> {
        if settings.mode == TlsMode::Off {
            return Ok(None);
        }
        let (Some(cert_path), Some(key_path)) = (&settings.certificate, &settings.key) else {
            return Err("[tls] needs certificate and key".into());
        };
        let chain = read_certs(cert_path)?;
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| format!("TLS key {}: {e}", key_path.display()))?;
        // The ring provider builds with a C compiler alone (aws-lc-rs wants cmake); rustls
        // 0.23.48 marks it deprecated for lacking post-quantum key exchange, which leasequery
        // peers (OpenSSL 3.0 on Debian 12) do not offer yet either (D27).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // TLS 1.2 and 1.3 with rustls's default suites: what BCP 195 (RFC 9325) recommends.
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = match &settings.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca_path) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(ca_path)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("TLS client CA {}: {e}", ca_path.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("TLS client CA {}: {e}", ca_path.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "TLS certificate {} with key {}: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
        // Leasequery has no ALPN name; sessions are short-lived or very long: no tickets.
        config.send_tls13_tickets = 0;
        Ok(Some(Self {
            mode: settings.mode,
            settings: settings.clone(),
            config: Arc::new(config),
        }))
    }

    /// True when requestors must present a certificate.
    #[must_use]
    pub fn mutual(&self) -> bool {
        self.settings.client_ca.is_some()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("TLS certificate file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("TLS certificate file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate file {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The names a requestor's certificate answers to, in the order a `[[requestor]]` table's
/// `certificate` list is matched against: SAN DNS names, SAN URIs, then the subject's CNs.
/// An unreadable certificate has none (the handshake already verified its signature).
#[must_use]
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, x)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push((*d).to_owned()),
                GeneralName::URI(u) => names.push((*u).to_owned()),
                _ => {}
            }
        }
    }
    for cn in x.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(s.to_owned());
        }
    }
    names
}

/// A certificate for a log line: its subject and names.
#[must_use]
pub fn describe(cert: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let mut out = String::new();
    if let Ok((_, x)) = X509Certificate::from_der(cert.as_ref()) {
        let _ = write!(out, "subject \"{}\"", x.subject());
    } else {
        out.push_str("unreadable certificate");
    }
    let names = certificate_names(cert);
    if !names.is_empty() {
        let _ = write!(out, ", names {}", names.join(", "));
    }
    out
}
