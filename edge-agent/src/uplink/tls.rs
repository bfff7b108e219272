//! The box's TLS identity and client configurations, on ring only (no process-wide provider).
//!
//! - Mutual TLS for sessions: the hub's CA from `ca.pem` as the only root, the box certificate
//!   and key as the client identity, TLS 1.3, ALPN [`protocol::ALPN`], no early data. The config
//!   is kept while the identity files stay the same ([`SessionConfigCache`]), so a reconnect
//!   resumes the TLS session; a renewed certificate starts afresh.
//! - Enrollment: no client certificate; the hub's chain must contain a CA certificate whose
//!   SHA-256 is the fingerprint the token carries, and the server certificate must verify
//!   against that CA.
//! - Identity files are replaced crash-safely on renewal (see [`install_identity`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::Timestamp;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest as _, Sha256};

use super::UplinkError;

/// Where the identity lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    /// The hub CA certificate (PEM).
    pub ca_path: PathBuf,
    /// The box certificate (PEM).
    pub cert_path: PathBuf,
    /// The box private key (PEM, mode 0600).
    pub key_path: PathBuf,
}

impl IdentityPaths {
    /// The files under their usual names in `dir`: `ca.pem`, `box.pem`, `box.key` (what
    /// `edge-agent enroll --tls-dir` writes and `[uplink]` reads by default).
    pub fn in_dir(dir: &std::path::Path) -> IdentityPaths {
        IdentityPaths {
            ca_path: dir.join("ca.pem"),
            cert_path: dir.join("box.pem"),
            key_path: dir.join("box.key"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config for box sessions from the identity files (finishing an interrupted
/// renewal first). Also returns the certificate's expiry.
pub(crate) fn session_config(
    paths: &IdentityPaths,
    transport: Arc<quinn::TransportConfig>,
) -> Result<(quinn::ClientConfig, Timestamp), UplinkError> {
    repair_identity(paths)?;
    let ca = read_certs(&paths.ca_path)?;
    let chain = read_certs(&paths.cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key_path).map_err(|e| UplinkError::Identity {
        path: paths.key_path.clone(),
        detail: e.to_string(),
    })?;
    let not_after =
        chain
            .first()
            .and_then(|c| not_after(c))
            .ok_or_else(|| UplinkError::Identity {
                path: paths.cert_path.clone(),
                detail: "certificate does not parse".into(),
            })?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    tls.enable_early_data = false;
    Ok((quic_client(tls, transport)?, not_after))
}

/// The session client config, kept while the identity files stay the same: the rustls session
/// store inside it lets the next session resume (a cheaper handshake on the box and the hub).
/// Resumption weakens nothing: the resumed session carries the certificate of the first, fully
/// verified handshake, and the hub checks its expiry and the box's registration at every
/// session. A renewal changes the files, which drops the config with its resumption state, so
/// the next session makes a full handshake with the new certificate.
#[derive(Default)]
pub(crate) struct SessionConfigCache(Mutex<Option<([u8; 32], quinn::ClientConfig)>>);

impl SessionConfigCache {
    /// The config for the identity at `paths` (finishing an interrupted renewal first).
    ///
    /// # Errors
    /// As [`session_config`].
    pub(crate) fn config(
        &self,
        paths: &IdentityPaths,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<quinn::ClientConfig, UplinkError> {
        repair_identity(paths)?;
        let mut stamp = Sha256::new();
        for p in [&paths.ca_path, &paths.cert_path, &paths.key_path] {
            let bytes = std::fs::read(p).map_err(|e| UplinkError::Identity {
                path: p.clone(),
                detail: e.to_string(),
            })?;
            stamp.update((bytes.len() as u64).to_be_bytes());
            stamp.update(&bytes);
        }
        let stamp: [u8; 32] = stamp.finalize().into();
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((held, config)) = cached.as_ref()
            && *held == stamp
        {
            return Ok(config.clone());
        }
        let (config, _) = session_config(paths, transport)?;
        *cached = Some((stamp, config.clone()));
        Ok(config)
    }
}

/// A client config for enrollment: no client certificate, the hub CA pinned by fingerprint.
pub(crate) fn enrollment_config(
    ca_fingerprint: [u8; 32],
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, UplinkError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: ca_fingerprint,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    tls.enable_early_data = false;
    quic_client(tls, transport)
}

fn quic_client(
    tls: rustls::ClientConfig,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, UplinkError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| UplinkError::Identity {
        path: PathBuf::new(),
        detail: e.to_string(),
    })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport);
    Ok(config)
}

/// A fresh key (ECDSA P-256, made here; it never leaves the box) and a CSR for it, PEM.
pub(crate) fn new_key_and_csr() -> Result<(String, String), UplinkError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "gridsense box");
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// Checks a certificate the hub sent on renewal before it replaces the working one: it must
/// parse, certify the public key of `key_pem` (the key made for this renewal), name the box its
/// current certificate names (not what the hub says it is), outlive the current certificate,
/// and come with exactly the CA the box already trusts (the CA does not change on renewal, and
/// `ca_pem` is written over the CA file). Returns its expiry. A box that installed anything
/// else could lock itself out, or trust another CA.
///
/// # Errors
/// [`UplinkError::BadRenewal`] saying which check failed.
pub(crate) fn check_renewed(
    paths: &IdentityPaths,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<Timestamp, UplinkError> {
    let bad = |why: &str| UplinkError::BadRenewal(why.to_owned());
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| bad("the certificate is not PEM"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| bad("the certificate does not parse"))?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| bad("the new key does not parse"))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(bad("the certificate is not for the key this box made"));
    }
    let current = read_certs(&paths.cert_path)?;
    let named = current
        .first()
        .and_then(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .and_then(|(_, c)| common_name(&c));
    if named.is_none() || common_name(&cert) != named {
        return Err(bad("the certificate names another box"));
    }
    let not_after = not_after(&der).ok_or_else(|| bad("the certificate does not parse"))?;
    if validity(&paths.cert_path).is_some_and(|(_, current)| not_after <= current) {
        return Err(bad("the certificate does not outlive the current one"));
    }
    let trusted = read_certs(&paths.ca_path)?;
    let offered: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("the CA is not PEM"))?;
    if offered != trusted {
        return Err(bad("the hub sent another CA than the one this box trusts"));
    }
    // Signed by that CA, as the hub will verify it (at the certificate's own start: this box's
    // clock need not agree with the hub's that stamped it).
    let mut roots = RootCertStore::empty();
    for c in trusted {
        roots
            .add(c)
            .map_err(|_| bad("the trusted CA does not parse"))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|_| bad("the trusted CA cannot verify certificates"))?;
    let from = cert
        .validity()
        .not_before
        .timestamp()
        .max(0)
        .cast_unsigned();
    verifier
        .verify_client_cert(
            &der,
            &[],
            UnixTime::since_unix_epoch(Duration::from_secs(from)),
        )
        .map_err(|_| bad("the certificate is not signed by the CA this box trusts"))?;
    Ok(not_after)
}

/// The subject's common name (a box certificate's box id).
fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Installs a new identity crash-safely: `cert.new` and `key.new` are written durably, then
/// renamed over the certificate and the key in that order. `repair_identity` finishes an
/// interrupted install at the next start. `ca_pem` replaces the CA file first (it does not
/// change on renewal).
///
/// # Errors
/// [`UplinkError::Io`] naming the file.
pub fn install_identity(
    paths: &IdentityPaths,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(), UplinkError> {
    for p in [&paths.ca_path, &paths.cert_path, &paths.key_path] {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|source| UplinkError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
    }
    write_durably(&paths.ca_path, ca_pem.as_bytes(), false)?;
    let cert_new = with_suffix(&paths.cert_path, ".new");
    let key_new = with_suffix(&paths.key_path, ".new");
    write_durably(&cert_new, cert_pem.as_bytes(), false)?;
    write_durably(&key_new, key_pem.as_bytes(), true)?;
    rename(&cert_new, &paths.cert_path)?;
    rename(&key_new, &paths.key_path)?;
    Ok(())
}

/// Finishes or undoes an interrupted [`install_identity`]: both `.new` files → rename both;
/// only `key.new` → the certificate was renamed already, rename the key; only `cert.new` → the
/// key was never written, drop it.
fn repair_identity(paths: &IdentityPaths) -> Result<(), UplinkError> {
    let cert_new = with_suffix(&paths.cert_path, ".new");
    let key_new = with_suffix(&paths.key_path, ".new");
    match (cert_new.exists(), key_new.exists()) {
        (true, true) => {
            rename(&cert_new, &paths.cert_path)?;
            rename(&key_new, &paths.key_path)?;
        }
        (false, true) => rename(&key_new, &paths.key_path)?,
        (true, false) => {
            let _ = std::fs::remove_file(&cert_new);
        }
        (false, false) => {}
    }
    Ok(())
}

/// The expiry of a certificate.
pub(crate) fn not_after(cert: &CertificateDer<'_>) -> Option<Timestamp> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(Timestamp::from_unix_millis(
        parsed.validity().not_after.timestamp().saturating_mul(1000),
    ))
}

/// The validity span of the certificate in `path`, as (not_before, not_after).
pub(crate) fn validity(path: &Path) -> Option<(Timestamp, Timestamp)> {
    let cert = read_certs(path).ok()?.into_iter().next()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let v = parsed.validity();
    Some((
        Timestamp::from_unix_millis(v.not_before.timestamp().saturating_mul(1000)),
        Timestamp::from_unix_millis(v.not_after.timestamp().saturating_mul(1000)),
    ))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
    let bad = |detail: String| UplinkError::Identity {
        path: path.to_owned(),
        detail,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(certs)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn rename(from: &Path, to: &Path) -> Result<(), UplinkError> {
    std::fs::rename(from, to).map_err(|source| UplinkError::Io {
        path: to.to_owned(),
        source,
    })?;
    if let Some(dir) = to.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8], secret: bool) -> Result<(), UplinkError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| UplinkError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = with_suffix(path, ".tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Accepts the hub's certificate only if its chain holds the pinned CA and verifies against it.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the hub's CA does not match the fingerprint in the enrollment token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_renewal_is_finished_or_undone_consistently() {
        let dir = tempfile::tempdir().unwrap();
        let paths = IdentityPaths {
            ca_path: dir.path().join("ca.pem"),
            cert_path: dir.path().join("box.pem"),
            key_path: dir.path().join("box.key"),
        };
        std::fs::write(&paths.cert_path, "old cert").unwrap();
        std::fs::write(&paths.key_path, "old key").unwrap();
        // Only cert.new: the key was never written; keep the old pair.
        std::fs::write(with_suffix(&paths.cert_path, ".new"), "new cert").unwrap();
        repair_identity(&paths).unwrap();
        assert_eq!(
            std::fs::read_to_string(&paths.cert_path).unwrap(),
            "old cert"
        );
        // Only key.new: the certificate was renamed already; finish with the key.
        std::fs::write(&paths.cert_path, "new cert").unwrap();
        std::fs::write(with_suffix(&paths.key_path, ".new"), "new key").unwrap();
        repair_identity(&paths).unwrap();
        assert_eq!(std::fs::read_to_string(&paths.key_path).unwrap(), "new key");
        assert!(!with_suffix(&paths.key_path, ".new").exists());
    }

    fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        (params.self_signed(&key).unwrap(), key)
    }

    fn issue(
        issuer: &(rcgen::Certificate, rcgen::KeyPair),
        subject: &rcgen::KeyPair,
        cn: &str,
        until_year: i32,
    ) -> String {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(until_year, 1, 1);
        params
            .signed_by(subject, &issuer.0, &issuer.1)
            .unwrap()
            .pem()
    }

    #[test]
    fn a_renewed_certificate_is_taken_only_for_the_new_key_this_box_and_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let paths = IdentityPaths {
            ca_path: dir.path().join("ca.pem"),
            cert_path: dir.path().join("box.pem"),
            key_path: dir.path().join("box.key"),
        };
        let hub = ca();
        let old_key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&paths.ca_path, hub.0.pem()).unwrap();
        std::fs::write(&paths.cert_path, issue(&hub, &old_key, "box-1", 2030)).unwrap();
        let new_key = rcgen::KeyPair::generate().unwrap();
        let key_pem = new_key.serialize_pem();
        let check = |cert: &str, ca: &str| check_renewed(&paths, cert, &key_pem, ca);

        let good = check(&issue(&hub, &new_key, "box-1", 2031), &hub.0.pem());
        assert!(good.is_ok(), "{good:?}");
        for (why, cert, ca_pem) in [
            (
                "the old key",
                issue(&hub, &old_key, "box-1", 2031),
                hub.0.pem(),
            ),
            (
                "another box",
                issue(&hub, &new_key, "box-2", 2031),
                hub.0.pem(),
            ),
            (
                "expires first",
                issue(&hub, &new_key, "box-1", 2029),
                hub.0.pem(),
            ),
            (
                "another CA",
                issue(&ca(), &new_key, "box-1", 2031),
                ca().0.pem(),
            ),
            (
                "another issuer, sent with the trusted CA",
                issue(&ca(), &new_key, "box-1", 2031),
                hub.0.pem(),
            ),
            (
                "the trusted CA and another",
                issue(&hub, &new_key, "box-1", 2031),
                format!("{}{}", hub.0.pem(), ca().0.pem()),
            ),
            (
                "the trusted CA and a broken block",
                issue(&hub, &new_key, "box-1", 2031),
                format!(
                    "{}-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                    hub.0.pem()
                ),
            ),
            ("not a certificate", "junk".to_owned(), hub.0.pem()),
        ] {
            assert!(
                matches!(check(&cert, &ca_pem), Err(UplinkError::BadRenewal(_))),
                "{why}"
            );
        }
    }
}
