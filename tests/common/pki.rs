//! A throwaway PKI for the TLS tests, written as PEM files into a directory: a CA, a server
//! certificate for loopback, client certificates with chosen names, one expired, and a second
//! CA that lqd does not trust. Made with rcgen (ECDSA P-256) at each run, so nothing secret is
//! committed and nothing expires in the repository.
//!
//! Include it with `#[path = "common/pki.rs"] mod pki;`.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub(crate) struct Pair {
    /// The certificate (PEM).
    pub(crate) cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub(crate) key: PathBuf,
}

/// A CA that signs certificates into a directory.
pub(crate) struct Ca {
    dir: PathBuf,
    /// The CA's certificate (PEM).
    pub(crate) cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new CA named `name`, its certificate in `dir/name.pem`.
    pub(crate) fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}.pem"));
        fs::write(&path, cert.pem()).expect("write the CA");
        Self {
            dir: dir.to_path_buf(),
            cert: path,
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, file: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signed certificate");
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        fs::write(&pair.cert, cert.pem()).expect("write the certificate");
        fs::write(&pair.key, key.serialize_pem()).expect("write the key");
        pair
    }

    /// A server certificate for `localhost`, 127.0.0.1 and ::1 (and `extra` DNS names).
    pub(crate) fn server(&self, file: &str, extra: &[&str]) -> Pair {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra.iter().map(|s| (*s).to_string()));
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "lqd test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A client certificate with subject CN `cn`, SAN DNS names `dns` and SAN URIs `uris`.
    pub(crate) fn client(&self, file: &str, cn: &str, dns: &[&str], uris: &[&str]) -> Pair {
        let mut params = self.client_params(cn, dns, uris);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        self.sign(file, params)
    }

    /// Like [`client`](Self::client), but expired in 2021.
    pub(crate) fn expired_client(&self, file: &str, cn: &str) -> Pair {
        let mut params = self.client_params(cn, &[], &[]);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(file, params)
    }

    /// A server certificate that expired in 2021.
    pub(crate) fn expired_server(&self, file: &str) -> Pair {
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()])
            .expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(file, params)
    }

    fn client_params(&self, cn: &str, dns: &[&str], uris: &[&str]) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().expect("a DNS name")));
        }
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().expect("a URI")));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params
    }
}
