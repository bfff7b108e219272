//! A reachability check of the hub for `doctor`: one QUIC connection with the box's identity
//! (the mutual-TLS handshake), its round-trip time, then an immediate close. It sends no
//! message, so the hub opens no session and a running agent's session is not disturbed. A
//! revoked box may still complete the handshake: revocation shows on the first session message.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::Timestamp;

use super::{IdentityPaths, UplinkConfig, UplinkError, resolve, tls, transport};

/// What the check found.
#[derive(Debug, Clone)]
pub struct HubProbe {
    /// The hub's resolved address.
    pub addr: SocketAddr,
    /// Round-trip time measured by QUIC after the handshake.
    pub rtt: Duration,
    /// Time the handshake took.
    pub handshake: Duration,
    /// The box certificate's expiry.
    pub cert_not_after: Timestamp,
}

/// Connects to the hub once within `timeout`.
///
/// # Errors
/// [`UplinkError`]: identity files unusable, address unresolved, handshake refused or timed out.
pub async fn probe_hub(
    config: &UplinkConfig,
    hub_addr: &str,
    timeout: Duration,
) -> Result<HubProbe, UplinkError> {
    let identity = IdentityPaths {
        ca_path: config.ca_path.clone(),
        cert_path: config.cert_path.clone(),
        key_path: config.key_path.clone(),
    };
    let (client, cert_not_after) = tls::session_config(&identity, transport(timeout, timeout / 2))?;
    let addr = resolve(hub_addr).await?;
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(UplinkError::Socket)?;
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(timeout, async {
        endpoint
            .connect_with(client, addr, &config.server_name)?
            .await
            .map_err(UplinkError::from)
    })
    .await
    .unwrap_or(Err(UplinkError::Timeout(timeout)));
    let result = connected.map(|conn| {
        let probe = HubProbe {
            addr,
            rtt: conn.rtt(),
            handshake: started.elapsed(),
            cert_not_after,
        };
        conn.close(0u32.into(), b"doctor");
        probe
    });
    endpoint.close(0u32.into(), b"doctor");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}
