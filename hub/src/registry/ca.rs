//! The hub's certificate authority: made once by `hub init`, then used to sign box certificates
//! (from CSRs, so box keys never reach the hub) and the hub's own short-lived server certificate.

use std::path::Path;

use protocol::{BoxId, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};

use super::RegistryError;

/// File name of the CA certificate (PEM) in the data folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (PEM, mode 0600) in the data folder.
pub const CA_KEY_FILE: &str = "ca.key";

/// The URI SAN prefix that binds a certificate to a box id (`urn:gridsense:box:<id>`).
pub const BOX_URN_PREFIX: &str = "urn:gridsense:box:";

/// The hub's CA: its certificate as distributed, and the key that signs.
pub struct HubCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    /// The CA certificate re-made from `cert_pem` with the same name and key, for rcgen's signer
    /// (only its subject and key identifier matter when signing).
    signer: rcgen::Certificate,
    key: KeyPair,
}

impl HubCa {
    /// Makes a new CA (ECDSA P-256, valid 20 years from `now`) and writes `ca.pem` and `ca.key`
    /// into `dir`. Refuses to overwrite an existing CA.
    ///
    /// # Errors
    /// [`RegistryError::Exists`], [`RegistryError::Io`], [`RegistryError::Certificate`].
    pub fn create(dir: &Path, name: &str, now: Timestamp) -> Result<HubCa, RegistryError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Err(RegistryError::Exists { path: cert_path });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} CA"));
        dn.push(DnType::OrganizationName, "Gridsense");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = offset_time(now.as_unix_millis() / 1000 - 3600)?;
        params.not_after = offset_time(now.as_unix_millis() / 1000 + 20 * 365 * 86_400)?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
        write_file(&cert_path, cert_pem.as_bytes(), false)?;
        HubCa::from_pem(&cert_pem, &key.serialize_pem())
    }

    /// Loads the CA from `dir`.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when a file is missing, [`RegistryError::Certificate`] when it does
    /// not parse.
    pub fn load(dir: &Path) -> Result<HubCa, RegistryError> {
        let cert_pem = read_file(&dir.join(CA_CERT_FILE))?;
        let key_pem = read_file(&dir.join(CA_KEY_FILE))?;
        HubCa::from_pem(&cert_pem, &key_pem)
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<HubCa, RegistryError> {
        let key = KeyPair::from_pem(key_pem)?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)?;
        let signer = params.self_signed(&key)?;
        let cert_der = first_cert_der(cert_pem)?;
        Ok(HubCa {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            signer,
            key,
        })
    }

    /// The CA certificate, PEM, exactly as distributed.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate's DER: what an enrollment token pins.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.cert_der.as_ref()).into()
    }

    /// Signs a box's CSR: the certificate names `box_id` (CN and a `urn:` SAN) whatever the CSR
    /// asked for, is good for client authentication only, and expires `lifetime_secs` after
    /// `now`. Returns the PEM and the expiry.
    ///
    /// # Errors
    /// [`RegistryError::BadCsr`] when the CSR does not parse or its signature is wrong.
    pub fn sign_box(
        &self,
        csr_pem: &str,
        box_id: &BoxId,
        now: Timestamp,
        lifetime_secs: u64,
    ) -> Result<(String, Timestamp), RegistryError> {
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(RegistryError::BadCsr)?;
        let now_secs = now.as_unix_millis() / 1000;
        let not_after_secs = now_secs.saturating_add(i64::try_from(lifetime_secs).unwrap_or(0));
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, box_id.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(
            format!("{BOX_URN_PREFIX}{box_id}")
                .try_into()
                .map_err(RegistryError::Certificate)?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        // Tolerate a box clock a little behind the hub's.
        params.not_before = offset_time(now_secs - 300)?;
        params.not_after = offset_time(not_after_secs)?;
        params.serial_number = Some(rcgen::SerialNumber::from(random_serial()?));
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.signer, &self.key)?;
        Ok((
            signed.pem(),
            Timestamp::from_unix_millis(not_after_secs * 1000),
        ))
    }

    /// A fresh server certificate for the QUIC endpoint, naming `names` (DNS names or IP
    /// addresses), valid for `lifetime_secs` after `now`. Returns the chain (leaf, CA) and key.
    ///
    /// # Errors
    /// [`RegistryError::Certificate`] for a name rcgen refuses.
    pub fn server_cert(
        &self,
        names: &[String],
        now: Timestamp,
        lifetime_secs: u64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RegistryError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("gridsense-hub", String::as_str),
        );
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now_secs = now.as_unix_millis() / 1000;
        params.not_before = offset_time(now_secs - 300)?;
        params.not_after =
            offset_time(now_secs.saturating_add(i64::try_from(lifetime_secs).unwrap_or(86_400)))?;
        params.serial_number = Some(rcgen::SerialNumber::from(random_serial()?));
        let cert = params.signed_by(&key, &self.signer, &self.key)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone(), self.cert_der.clone()], key_der))
    }
}

impl std::fmt::Debug for HubCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubCa")
            .field("fingerprint", &hex(&self.fingerprint()))
            .finish_non_exhaustive()
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER of the first certificate in a PEM text.
///
/// # Errors
/// [`RegistryError::Certificate`] when there is none.
pub fn first_cert_der(pem_text: &str) -> Result<CertificateDer<'static>, RegistryError> {
    let parsed = pem_block(pem_text, "CERTIFICATE").ok_or(RegistryError::Certificate(
        rcgen::Error::CouldNotParseCertificate,
    ))?;
    Ok(CertificateDer::from(parsed))
}

/// Decodes the first PEM block with `label`.
fn pem_block(text: &str, label: &str) -> Option<Vec<u8>> {
    let mut rest = text.as_bytes();
    while let Ok((next, pem)) = x509_parser::pem::parse_x509_pem(rest) {
        if pem.label == label {
            return Some(pem.contents);
        }
        rest = next;
    }
    None
}

/// Positive, non-zero, 63 bits from the OS random source: two certificates of this CA never
/// share one, and nobody can predict the next.
fn random_serial() -> Result<u64, RegistryError> {
    let bytes = crate::random::bytes::<8>().map_err(RegistryError::Random)?;
    Ok((u64::from_be_bytes(bytes) >> 1).max(1))
}

fn offset_time(unix_secs: i64) -> Result<time::OffsetDateTime, RegistryError> {
    time::OffsetDateTime::from_unix_timestamp(unix_secs).map_err(|_| {
        RegistryError::Certificate(rcgen::Error::InvalidAsn1String(
            rcgen::InvalidAsn1String::PrintableString("time out of range".into()),
        ))
    })
}

fn read_file(path: &Path) -> Result<String, RegistryError> {
    std::fs::read_to_string(path).map_err(|source| RegistryError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a file durably (temp file, fsync, rename), readable by the owner only when `secret`.
pub(super) fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), RegistryError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_box_certificate_names_the_box_whatever_the_csr_asked() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_unix_millis(1_790_000_000_000);
        let ca = HubCa::create(dir.path(), "test", now).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["other-box".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "other-box");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let id = BoxId::parse("box-7").unwrap();
        let (pem, not_after) = ca.sign_box(&csr, &id, now, 3600).unwrap();
        assert_eq!(not_after.as_unix_millis(), now.as_unix_millis() + 3_600_000);
        let der = first_cert_der(&pem).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = x509.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "box-7");
        assert!(
            HubCa::create(dir.path(), "test", now).is_err(),
            "no overwrite"
        );
        let again = HubCa::load(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
    }
}
