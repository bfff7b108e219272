//! `edge-agent enroll --hub HOST:PORT --token TOKEN`: the box's one-time enrollment.
//!
//! The token (from `hub box add`) carries the hub CA's SHA-256 fingerprint and a one-time
//! secret. The box makes its private key here (it never leaves the box), connects without a
//! certificate, accepts the hub only if its chain holds the pinned CA, sends a CSR with the
//! secret, and installs the signed certificate, the CA and the key. This module must not keep
//! the secret anywhere: it is used once and dropped.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::{BoxId, Codec, EnrollRequest, EnrollResponse, Message, Timestamp};
use sha2::{Digest as _, Sha256};

use crate::uplink::tls::{self, IdentityPaths};
use crate::uplink::{UplinkError, install_identity};

/// How long the hub has to answer.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(15);

/// What an enrollment produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The id the hub bound into the certificate.
    pub box_id: BoxId,
    /// When the certificate expires (it renews before then).
    pub not_after: Timestamp,
}

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 of the hub CA certificate.
    pub ca_fingerprint: [u8; 32],
    /// The one-time secret.
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("ca_fingerprint", &protocol::Digest(self.ca_fingerprint))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// Parses `gs1-<64 hex>-<32 hex>` as `hub box add` prints it.
    ///
    /// # Errors
    /// [`UplinkError::BadToken`].
    pub fn parse(text: &str) -> Result<Token, UplinkError> {
        let mut parts = text.trim().splitn(3, '-');
        let (Some("gs1"), Some(fp), Some(secret)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(UplinkError::BadToken);
        };
        let fp = protocol::Digest::from_hex(fp).map_err(|_| UplinkError::BadToken)?;
        if secret.len() != 32 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UplinkError::BadToken);
        }
        Ok(Token {
            ca_fingerprint: fp.0,
            secret: secret.to_ascii_lowercase(),
        })
    }
}

/// Enrolls this box with the hub at `hub_addr` and installs its identity at `paths`.
///
/// # Errors
/// [`UplinkError::BadToken`], [`UplinkError::Refused`] (unknown, used or expired token,
/// revoked box), a TLS failure when the hub's CA does not match the token, or a connection
/// failure.
pub async fn enroll(
    hub_addr: &str,
    server_name: &str,
    token: &str,
    paths: &IdentityPaths,
) -> Result<Enrolled, UplinkError> {
    let token = Token::parse(token)?;
    let addr = crate::uplink::resolve(hub_addr).await?;
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(UplinkError::Socket)?;
    let result = tokio::time::timeout(
        ENROLL_TIMEOUT,
        exchange(&endpoint, addr, server_name, &token, paths),
    )
    .await
    .unwrap_or(Err(UplinkError::Timeout(ENROLL_TIMEOUT)));
    endpoint.close(0u32.into(), b"enrolled");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}

async fn exchange(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    server_name: &str,
    token: &Token,
    paths: &IdentityPaths,
) -> Result<Enrolled, UplinkError> {
    let conn = endpoint.connect_with(
        tls::enrollment_config(
            token.ca_fingerprint,
            crate::uplink::transport(Duration::from_secs(15), Duration::from_secs(5)),
        )?,
        addr,
        server_name,
    )?;
    let conn = conn.await?;
    let codec = Codec::default();
    let (mut send, mut recv) = conn.open_bi().await?;
    let (key_pem, csr_pem) = tls::new_key_and_csr()?;
    let request = Message::EnrollRequest(EnrollRequest {
        token: token.secret.clone(),
        csr_pem,
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    wire::frame::write_frame(&mut send, &codec, &request)
        .await
        .map_err(|e| UplinkError::Session(crate::uplink::chain(&e)))?;
    let _ = send.finish();
    let answer = wire::frame::read_frame(&mut recv, &codec)
        .await
        .map_err(|e| UplinkError::Session(crate::uplink::chain(&e)))?;
    let out = match answer {
        Some(Message::EnrollResponse(EnrollResponse::Accepted {
            box_id,
            certificate_pem,
            ca_pem,
            not_after,
        })) => {
            let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes())
                .map_err(|e| UplinkError::Session(format!("the hub sent an unusable CA: {e}")))?;
            if Sha256::digest(ca_der.as_ref()).as_slice() != token.ca_fingerprint {
                return Err(UplinkError::Session(
                    "the hub sent a CA that does not match the token's fingerprint".into(),
                ));
            }
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || {
                install_identity(&paths, &ca_pem, &certificate_pem, &key_pem)
            })
            .await
            .map_err(|e| UplinkError::Session(e.to_string()))??;
            Ok(Enrolled { box_id, not_after })
        }
        Some(Message::EnrollResponse(EnrollResponse::Refused { reason, message })) => {
            Err(UplinkError::Refused { reason, message })
        }
        Some(Message::Bye(bye)) => Err(UplinkError::Session(format!(
            "the hub refused: {:?} {}",
            bye.reason,
            bye.message.unwrap_or_default()
        ))),
        Some(other) => Err(UplinkError::Session(format!(
            "expected an enrollment response, got {}",
            other.kind()
        ))),
        None => Err(UplinkError::Session(
            "the hub closed the connection without answering".into(),
        )),
    };
    conn.close(0u32.into(), b"done");
    out
}

use rustls::pki_types::pem::PemObject as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_the_printed_form() {
        let fp = "ab".repeat(32);
        let t = Token::parse(&format!("gs1-{fp}-00112233445566778899AABBCCDDEEFF\n")).unwrap();
        assert_eq!(t.ca_fingerprint, [0xab; 32]);
        assert_eq!(t.secret, "00112233445566778899aabbccddeeff");
        assert!(!format!("{t:?}").contains("0011"));
        for bad in [
            "",
            "gs1",
            &format!("gs2-{fp}-00112233445566778899aabbccddeeff"),
            &format!("gs1-{fp}-0011"),
        ] {
            assert!(
                matches!(Token::parse(bad), Err(UplinkError::BadToken)),
                "{bad}"
            );
        }
    }
}
