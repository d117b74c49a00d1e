//! TLS on lqd's side (`--tls`): RFC 7653 STARTTLS as decision D25 settles it, and a throwaway
//! PKI for the run.
//!
//! The wire: the requestor's first framed message (2-octet length prefix) is STARTTLS (message
//! type 23, its xid, OPTION_CLIENTID); lqd answers STARTTLS with the same xid and
//! OPTION_SERVERID, or refuses with status TLSConnectionRefused (15) in a STARTTLS or a
//! LEASEQUERY-REPLY. The requestor then starts a TLS handshake (TLS 1.2 or 1.3; rustls with
//! the `ring` provider) on the same socket, and every later framed message goes inside TLS.
//!
//! [`Pki`] makes a CA and a server certificate for `::1`, `127.0.0.1` and `localhost` with
//! rcgen (ECDSA P-256) at each run, writes them as PEM files for lqd's `[tls]` table into a
//! temporary directory (removed on drop), and gives the rustls client configuration that
//! trusts that CA and nothing else. The receivers run the handshake non-blocking inside their
//! mio loop (see [`super::fanout::receiver`]); [`connect`] is the blocking version for the
//! bulk mode.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lqd::codec::{BuildOptions, MessageBuilder, MessageRepr, MessageType, OptionCode, Status};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
#[cfg(test)]
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::process::REQUESTOR;

/// The longest STARTTLS answer read before the handshake (a message with a status text).
const MAX_ANSWER: usize = 4096;

/// The `ring` crypto provider, the one lqd uses. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange, which the handshakes measured here do not need; named
/// explicitly rather than through the process default, which would panic if the workspace
/// ever enabled a second provider.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A throwaway CA and server certificate, as PEM files in a temporary directory.
pub(crate) struct Pki {
    dir: PathBuf,
    /// The server's certificate chain (its certificate, then the CA's).
    pub(crate) chain: PathBuf,
    /// The server's private key (PKCS#8).
    pub(crate) key: PathBuf,
    /// The CA's certificate.
    pub(crate) ca: PathBuf,
    ca_der: CertificateDer<'static>,
    /// The server's certificate and key, DER, for the tests' own STARTTLS server.
    #[cfg_attr(not(test), allow(dead_code))]
    server_der: CertificateDer<'static>,
    #[cfg_attr(not(test), allow(dead_code))]
    server_key_der: Vec<u8>,
}

impl Pki {
    /// Makes the CA and the server certificate and writes them out.
    pub(crate) fn new() -> Result<Self, String> {
        fn e(what: &'static str) -> impl Fn(rcgen::Error) -> String {
            move |err| format!("rcgen: {what}: {err}")
        }
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e("CA"))?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "loadgen throwaway CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(e("CA key"))?;
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(e("CA certificate"))?;
        let issuer = Issuer::new(ca_params, ca_key);
        let names = vec!["localhost".to_owned(), "::1".into(), "127.0.0.1".into()];
        let mut params = CertificateParams::new(names).map_err(e("server"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "lqd under loadgen");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(e("server key"))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(e("server certificate"))?;

        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("loadgen-pki-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        let pki = Self {
            chain: dir.join("server-chain.pem"),
            key: dir.join("server-key.pem"),
            ca: dir.join("ca.pem"),
            dir,
            ca_der: ca_cert.der().clone(),
            server_der: cert.der().clone(),
            server_key_der: key.serialize_der(),
        };
        for (path, text) in [
            (&pki.chain, format!("{}{}", cert.pem(), ca_cert.pem())),
            (&pki.key, key.serialize_pem()),
            (&pki.ca, ca_cert.pem()),
        ] {
            std::fs::write(path, text).map_err(|err| format!("{}: {err}", path.display()))?;
        }
        Ok(pki)
    }

    /// lqd's `[tls]` table for this PKI, in `mode` ("offer" or "require").
    pub(crate) fn lqd_table(&self, mode: &str) -> String {
        format!(
            "\n[tls]\nmode = \"{mode}\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
            self.chain.display(),
            self.key.display()
        )
    }

    /// The client configuration: TLS 1.2 and 1.3, this CA as the only root, no client
    /// certificate.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.ca_der.clone())
            .map_err(|e| format!("the throwaway CA: {e}"))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("rustls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// A server configuration with this PKI's certificate (for tests of the client side).
    #[cfg(test)]
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_der.clone(), self.ca_der.clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        // lqd reads its certificate at start (and on SIGHUP): the files outlive its start
        // because the Pki lives as long as the server that uses it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The STARTTLS message a requestor sends first, framed, with transaction id `xid`.
pub(crate) fn starttls_frame(xid: u32) -> Result<Vec<u8>, String> {
    MessageBuilder::new(MessageType::StartTls, xid)
        .client_id(&REQUESTOR)
        .build_frame()
        .map_err(|e| format!("building STARTTLS: {e}"))
}

/// Checks lqd's answer to STARTTLS `xid`: a STARTTLS with the same xid, a Server-ID and no
/// status other than Success. A refusal (TLSConnectionRefused, in a STARTTLS or a
/// LEASEQUERY-REPLY) or anything else is an error naming it.
pub(crate) fn check_starttls_answer(message: &[u8], xid: u32) -> Result<(), String> {
    let m = MessageRepr::parse(message).map_err(|e| format!("STARTTLS answer unparsable: {e}"))?;
    if m.xid().map(|x| x.value()) != Some(xid) {
        return Err(format!(
            "STARTTLS answered with xid {:?}, not {xid}",
            m.xid().map(|x| x.value())
        ));
    }
    let status = m.options.status();
    if let Some(s) = status.as_ref().filter(|s| s.status != Status::Success) {
        return Err(format!(
            "STARTTLS refused: {} ({}) \"{}\" in a {}{}",
            s.status,
            s.status.value(),
            s.message_lossy(),
            m.msg_type(),
            if s.status == Status::TlsConnectionRefused {
                " (lqd without a [tls] table, or one built before STARTTLS)"
            } else {
                ""
            }
        ));
    }
    if m.msg_type() != MessageType::StartTls {
        return Err(format!("STARTTLS answered with a {}", m.msg_type()));
    }
    if m.options.get(OptionCode::ServerId).is_none() {
        return Err("STARTTLS answered without a Server-ID".to_owned());
    }
    Ok(())
}

/// A rustls client connection to lqd at `addr`, verified against the address itself (the
/// certificate names `::1` and `127.0.0.1`).
pub(crate) fn client(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
) -> Result<ClientConnection, String> {
    let name = ServerName::IpAddress(addr.ip().into());
    ClientConnection::new(Arc::clone(config), name).map_err(|e| format!("rustls: {e}"))
}

/// A blocking TLS stream to lqd: what [`connect`] gives.
pub(crate) type Stream = StreamOwned<ClientConnection, TcpStream>;

/// How long a blocking connection took to get through STARTTLS and the handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// From connecting to lqd's STARTTLS answer.
    pub(crate) starttls: Duration,
    /// From the STARTTLS answer to the end of the handshake.
    pub(crate) handshake: Duration,
}

/// Connects to `addr`, sends STARTTLS `xid`, reads the answer (only its frame: the octets
/// after it are TLS) and completes the handshake, blocking, each read bounded by `timeout`.
pub(crate) fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    xid: u32,
    timeout: Duration,
) -> Result<(Stream, Timing), String> {
    let started = Instant::now();
    let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .and_then(|()| sock.set_nodelay(true))
        .map_err(|e| e.to_string())?;
    sock.write_all(&starttls_frame(xid)?)
        .map_err(|e| format!("sending STARTTLS: {e}"))?;
    let mut len = [0u8; 2];
    sock.read_exact(&mut len)
        .map_err(|e| format!("reading the STARTTLS answer: {e}"))?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_ANSWER {
        return Err(format!("a {len}-octet answer to STARTTLS"));
    }
    let mut message = vec![0u8; len];
    sock.read_exact(&mut message)
        .map_err(|e| format!("reading the STARTTLS answer: {e}"))?;
    check_starttls_answer(&message, xid)?;
    let starttls = started.elapsed();
    let mut conn = client(config, addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let handshake = started.elapsed().saturating_sub(starttls);
    Ok((
        StreamOwned::new(conn, sock),
        Timing {
            starttls,
            handshake,
        },
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rustls::ServerConnection;
    use std::net::TcpListener;

    /// Reads one frame from `r` (blocking): its message.
    pub(crate) fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        let mut m = vec![0u8; usize::from(u16::from_be_bytes(len))];
        r.read_exact(&mut m)?;
        Ok(m)
    }

    /// A STARTTLS server on `[::1]` that takes `conns` connections, each: STARTTLS answered
    /// (or refused when `refuse`), the handshake, then `serve` with the TLS stream.
    pub(crate) fn starttls_server(
        pki: &Pki,
        conns: usize,
        refuse: bool,
        serve: impl Fn(usize, &mut StreamOwned<ServerConnection, TcpStream>) + Send + Sync + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("[::1]:0").expect("listen");
        let addr = listener.local_addr().expect("address");
        let config = pki.server_config();
        let serve = Arc::new(serve);
        let h = std::thread::spawn(move || {
            let mut handles = Vec::new();
            for i in 0..conns {
                let (mut sock, _) = listener.accept().expect("accept");
                let (config, serve) = (Arc::clone(&config), Arc::clone(&serve));
                handles.push(std::thread::spawn(move || {
                    let m = read_frame(&mut sock).expect("STARTTLS");
                    let parsed = MessageRepr::parse(&m).expect("a message");
                    assert_eq!(parsed.msg_type(), MessageType::StartTls);
                    let xid = parsed.xid().expect("xid").value();
                    let answer = if refuse {
                        MessageBuilder::reply(xid)
                            .server_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
                            .status(Status::TlsConnectionRefused, "no TLS here")
                    } else {
                        MessageBuilder::new(MessageType::StartTls, xid)
                            .server_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
                    };
                    sock.write_all(&answer.build_frame().expect("answer"))
                        .expect("answer");
                    if refuse {
                        return;
                    }
                    let conn = ServerConnection::new(config).expect("server connection");
                    let mut tls = StreamOwned::new(conn, sock);
                    serve(i, &mut tls);
                }));
            }
            for h in handles {
                h.join().expect("server connection thread");
            }
        });
        (addr, h)
    }

    #[test]
    fn starttls_then_a_query_inside_tls() {
        let pki = Pki::new().expect("PKI");
        for path in [&pki.chain, &pki.key, &pki.ca] {
            let text = std::fs::read_to_string(path).expect("PEM file");
            assert!(text.starts_with("-----BEGIN "), "{}", path.display());
        }
        assert_eq!(
            std::fs::read_to_string(&pki.chain)
                .expect("chain")
                .matches("BEGIN CERTIFICATE")
                .count(),
            2
        );
        assert!(pki.lqd_table("offer").contains("[tls]\nmode = \"offer\"\n"));
        let (addr, server) = starttls_server(&pki, 1, false, |_, tls| {
            let m = read_frame(tls).expect("a query inside TLS");
            assert_eq!(m, b"\x0e\x00\x00\x07");
            tls.write_all(&[0, 4, 15, 0, 0, 7]).expect("answer");
            tls.flush().expect("flush");
        });
        let config = pki.client_config().expect("client config");
        let (mut tls, timing) =
            connect(addr, &config, 0x1234, Duration::from_secs(10)).expect("STARTTLS");
        assert!(timing.handshake > Duration::ZERO);
        assert!(tls.conn.protocol_version().is_some());
        tls.write_all(&[0, 4, 14, 0, 0, 7]).expect("query");
        tls.flush().expect("flush");
        let m = read_frame(&mut tls).expect("answer inside TLS");
        assert_eq!(m, b"\x0f\x00\x00\x07");
        server.join().expect("server");
    }

    #[test]
    fn a_refusal_is_an_error_naming_it() {
        let pki = Pki::new().expect("PKI");
        let (addr, server) = starttls_server(&pki, 1, true, |_, _| {});
        let config = pki.client_config().expect("client config");
        let e = connect(addr, &config, 7, Duration::from_secs(10)).expect_err("refused");
        assert!(e.contains("TLSConnectionRefused"), "{e}");
        server.join().expect("server");
    }

    #[test]
    fn answers_that_are_not_a_starttls() {
        let ok = MessageBuilder::new(MessageType::StartTls, 5)
            .server_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
            .build()
            .expect("message");
        assert_eq!(check_starttls_answer(&ok, 5), Ok(()));
        assert!(check_starttls_answer(&ok, 6).is_err());
        let bare = MessageBuilder::new(MessageType::StartTls, 5)
            .build()
            .expect("message");
        assert!(check_starttls_answer(&bare, 5).is_err());
        let reply = MessageBuilder::reply(5)
            .server_id(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
            .build()
            .expect("message");
        assert!(check_starttls_answer(&reply, 5).is_err());
        assert!(check_starttls_answer(&[23, 0], 5).is_err());
        assert!(check_starttls_answer(&[], 5).is_err());
    }
}
