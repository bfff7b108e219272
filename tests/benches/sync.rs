//! Sync benchmark on loopback: durable edge → hub events/s (both sides committed) against the
//! same bytes through a bare quinn stream, the time to drain a backlog, and mutual-TLS
//! handshakes per second on the hub (Hello/Welcome included).
//!
//! `cargo bench -p e2e --bench sync` drains 100,000 events; `SYNC_BENCH_EVENTS=1000000` drains
//! the million-event backlog of the goal.

#![allow(clippy::unwrap_used)]

#[path = "../tests/sync_support/mod.rs"]
mod sync_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Codec, EventBatch, Message, Seq};
use sync_support::*;

fn main() {
    let n: u64 = std::env::var("SYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let hub = TestHub::start().await;
        let edge = TestEdge::enroll(&hub, "bench-box", &hub.addr().to_string()).await;
        let fill = Instant::now();
        edge.produce(n, 32).await.unwrap();
        println!(
            "prefill: {n} events committed on the box in {:.1} s",
            fill.elapsed().as_secs_f64()
        );

        // The bytes the uplink will send, for the bare-stream comparison.
        let events = edge.store.events_from(Seq(1), n as usize).unwrap();
        let codec = Codec::default();
        let mut frames = Vec::new();
        for chunk in events.chunks(500) {
            codec
                .encode(
                    &Message::EventBatch(EventBatch {
                        events: chunk.to_vec(),
                    }),
                    &mut frames,
                )
                .unwrap();
        }
        drop(events);

        let start = Instant::now();
        let uplink = edge.start_uplink();
        let store = edge.store.clone();
        let done = wait_until(Duration::from_secs(600), || {
            let s = store.clone();
            async move { s.stats().unwrap().acked_seq >= n }
        })
        .await;
        let secs = start.elapsed().as_secs_f64();
        assert!(done, "backlog did not drain");
        let rate = n as f64 / secs;
        println!(
            "durable sync: {n} events in {secs:.2} s = {rate:.0} events/s (hub and box committed; goal >= 20000)"
        );
        uplink.stop().await;

        let bare = bare_quinn_seconds(&frames).await;
        println!(
            "bare quinn stream, same {} bytes: {bare:.2} s = {:.0} events/s; durable/bare time ratio {:.1}",
            frames.len(),
            n as f64 / bare,
            secs / bare
        );

        let (count, hs_secs) = handshakes(&hub, &edge, Duration::from_secs(5)).await;
        println!(
            "mutual-TLS sessions (handshake + hello/welcome), sequential: {count} in {hs_secs:.2} s = {:.0}/s",
            count as f64 / hs_secs
        );
        hub.stop().await;
    });
}

/// Seconds to push `bytes` through one quinn stream on loopback (TLS, no mutual auth, no disk).
async fn bare_quinn_seconds(bytes: &[u8]) -> f64 {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let dir = tempfile::tempdir().unwrap();
    let ca = hub::registry::HubCa::create(dir.path(), "bench", now()).unwrap();
    let (chain, key) = ca
        .server_cert(&["localhost".to_owned()], now(), 3600)
        .unwrap();
    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    server_tls.alpn_protocols = vec![b"bench".to_vec()];
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    transport.receive_window(quinn::VarInt::from_u32(16 * 1024 * 1024));
    transport.send_window(16 * 1024 * 1024);
    let transport = Arc::new(transport);
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).unwrap(),
    ));
    server_config.transport_config(transport.clone());
    let server = quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.local_addr().unwrap();
    let total = bytes.len();
    let receiver = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut got = 0;
        while let Some(chunk) = recv.read_chunk(1 << 20, true).await.unwrap() {
            got += chunk.bytes.len();
        }
        assert_eq!(got, total);
        send.write_all(b"k").await.unwrap();
        send.finish().unwrap();
        let _ = conn.closed().await;
    });
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![b"bench".to_vec()];
    let mut client_config = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap(),
    ));
    client_config.transport_config(transport);
    let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let start = Instant::now();
    let conn = client
        .connect_with(client_config, addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    let mut ack = [0u8; 1];
    recv.read_exact(&mut ack).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    conn.close(0u32.into(), b"");
    receiver.await.unwrap();
    secs
}

/// Opens sessions one after another for `for_how_long`: QUIC handshake with mutual TLS (the
/// hub verifies the box certificate and checks the registry), then Hello/Welcome, then close.
/// Returns (count, seconds).
async fn handshakes(hub: &TestHub, edge: &TestEdge, for_how_long: Duration) -> (u64, f64) {
    let config = session_client_config(&edge.config.identity());
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let codec = Codec::default();
    let hello = codec
        .encode_to_vec(&Message::Hello(protocol::Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            min_protocol_version: protocol::MIN_PROTOCOL_VERSION,
            agent_version: "bench".into(),
            last_acked_seq: None,
            last_committed_seq: None,
        }))
        .unwrap();
    let start = Instant::now();
    let mut count = 0;
    while start.elapsed() < for_how_long {
        let conn = endpoint
            .connect_with(config.clone(), hub.addr(), "gridsense-hub")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&hello).await.unwrap();
        let mut header = [0u8; 4];
        recv.read_exact(&mut header).await.unwrap();
        let mut payload = vec![0u8; codec.frame_len(header).unwrap()];
        recv.read_exact(&mut payload).await.unwrap();
        assert!(matches!(
            codec.decode_payload(&payload).unwrap(),
            Message::Welcome(_)
        ));
        conn.close(0u32.into(), b"");
        count += 1;
    }
    (count, start.elapsed().as_secs_f64())
}
