//! The endpoint's TLS: TLS 1.3 on ring only (no process-wide provider is installed), a fresh
//! server certificate from the hub CA, client certificates verified against the CA but optional
//! (a box without one may only enroll), 0-RTT off, resumption by stateless tickets. Certificate
//! validity is judged by the ingest's clock, so the verifier and the session expiry checks
//! agree.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::RootCertStore;
use rustls::pki_types::UnixTime;
use rustls::server::WebPkiClientVerifier;
use rustls::time_provider::TimeProvider;

use super::{IngestError, IngestSettings};
use crate::clock::Clock;
use crate::registry::HubCa;

/// Lifetime of the server certificate made at each start.
const SERVER_CERT_LIFETIME_SECS: u64 = 397 * 86_400;

pub(super) fn server_config(
    ca: &HubCa,
    settings: &IngestSettings,
    clock: Clock,
) -> Result<quinn::ServerConfig, IngestError> {
    let now = clock();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = ca.server_cert(&settings.server_names, now, SERVER_CERT_LIFETIME_SECS)?;
    let time = Arc::new(ClockTime(clock));
    let mut tls = rustls::ServerConfig::builder_with_details(provider, time)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    // 0-RTT stays off: early data could be replayed.
    tls.max_early_data_size = 0;
    // Resumption with stateless tickets (keys in memory, rotated every 6 h; a restart drops
    // them). A resumed session carries the client certificate of its first, fully verified
    // handshake; each session checks that certificate's expiry and the box's registration
    // again (see `conn::session`), so resumption saves the signatures and nothing else.
    tls.ticketer = rustls::crypto::ring::Ticketer::new()?;
    tls.send_tls13_tickets = 1;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| IngestError::Io {
        op: "configure QUIC crypto",
        source: std::io::Error::other(e),
    })?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(
        quinn::IdleTimeout::try_from(settings.idle_timeout)
            .ok()
            .or_else(|| quinn::IdleTimeout::try_from(Duration::from_secs(30)).ok()),
    );
    transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(16));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(2));
    transport.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    // No MTU probes from the hub: what it sends a box is small (acknowledgements, commands),
    // while its probes cost every session two padded datagrams and their acknowledgements
    // (17 datagrams and 11.7 kB a short session against 13.9 and 9.0 kB without, in the sync
    // bench) — bytes on a box's metered mobile link at each reconnect. A box still probes its
    // own path for the uploads that gain from large datagrams.
    transport.mtu_discovery_config(None);
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The ingest clock as rustls's time source.
struct ClockTime(Clock);

impl std::fmt::Debug for ClockTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockTime")
    }
}

impl TimeProvider for ClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        let millis = (self.0)().as_unix_millis();
        u64::try_from(millis)
            .ok()
            .map(|ms| UnixTime::since_unix_epoch(Duration::from_millis(ms)))
    }
}
