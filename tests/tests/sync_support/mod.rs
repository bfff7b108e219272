//! Shared set-up for the sync tests: an in-process hub ingest and an enrolled edge store.

#![allow(dead_code)]

#[path = "../boxes_support/mod.rs"]
pub(crate) mod boxes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use edge_agent::store::{Store, StoreOptions};
use edge_agent::uplink::{IdentityPaths, Uplink, UplinkConfig, UplinkMode, UplinkStatus};
use hub::ingest::{IngestHandle, IngestServer, IngestSettings};
use protocol::{
    CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
    Timestamp,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub(crate) use e2e::now;

/// A wall clock that tests move forward: the system time plus an offset.
#[derive(Clone, Default)]
pub(crate) struct TestClock {
    offset_ms: Arc<AtomicI64>,
}

impl TestClock {
    /// Sets how far ahead of the system time the clock reads.
    pub(crate) fn set_ahead(&self, by: Duration) {
        self.offset_ms
            .store(by.as_millis() as i64, Ordering::SeqCst);
    }

    pub(crate) fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(now().as_unix_millis() + self.offset_ms.load(Ordering::SeqCst))
    }

    /// The clock as the hub and the uplink take it.
    pub(crate) fn clock(&self) -> Arc<dyn Fn() -> Timestamp + Send + Sync> {
        let c = self.clone();
        Arc::new(move || c.now())
    }
}

pub(crate) fn identity(dir: &Path) -> IdentityPaths {
    IdentityPaths::in_dir(dir)
}

/// Whether `check` comes to hold within `timeout` ([`e2e::wait_for`], for callers that say
/// themselves what did not happen).
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    e2e::wait_for(timeout, "", || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
    .is_ok()
}

/// Waits up to `timeout` for the uplink to report `mode`; fails the test with its status.
pub(crate) async fn wait_for_mode(
    status: &mut watch::Receiver<UplinkStatus>,
    mode: UplinkMode,
    timeout: Duration,
) {
    let reached = tokio::time::timeout(timeout, status.wait_for(|s| s.mode == mode))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "uplink not {mode:?} within {timeout:?}: {:?}",
        status.borrow()
    );
}

pub(crate) struct TestHub {
    /// The data folder, owned by the first hub process on it.
    dir: Option<tempfile::TempDir>,
    path: std::path::PathBuf,
    pub(crate) handle: IngestHandle,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestHub {
    pub(crate) async fn start() -> TestHub {
        TestHub::start_with(&TestClock::default(), |_| {}).await
    }

    /// A hub reading `clock`, its settings adjusted by `tweak`.
    pub(crate) async fn start_with(
        clock: &TestClock,
        tweak: impl FnOnce(&mut IngestSettings),
    ) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        hub::registry::admin::init(
            dir.path(),
            "test hub",
            "127.0.0.1:0".parse().unwrap(),
            now(),
        )
        .unwrap();
        let mut hub = TestHub::serve(dir.path(), clock, tweak);
        hub.dir = Some(dir);
        hub
    }

    /// A second hub process on `other`'s data folder (its CA, registry and ingest log), on a
    /// port of its own: what a box with several hub addresses fails over between.
    pub(crate) async fn start_beside(other: &TestHub) -> TestHub {
        TestHub::serve(other.dir(), &TestClock::default(), |_| {})
    }

    fn serve(path: &Path, clock: &TestClock, tweak: impl FnOnce(&mut IngestSettings)) -> TestHub {
        let mut settings = IngestSettings::for_tests(path);
        settings.revocation_check_interval = Duration::from_secs(1);
        settings.idle_timeout = Duration::from_millis(1500);
        tweak(&mut settings);
        let server = IngestServer::bind_with_clock(settings, None, clock.clock()).unwrap();
        let handle = server.handle().unwrap();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move { server.run(c).await.unwrap() });
        TestHub {
            dir: None,
            path: path.to_owned(),
            handle,
            cancel,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.path
    }

    pub(crate) fn clone_handle(&self) -> IngestHandle {
        self.handle.clone()
    }

    pub(crate) fn add_box(&self, id: &str) -> String {
        boxes::add_box(self.dir(), id, None, now()).unwrap()
    }

    /// Stops this hub process; gives back the data folder it owns (if it is the first on it),
    /// for a test whose other hub process still uses it.
    pub(crate) async fn stop(self) -> Option<tempfile::TempDir> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("hub ingest stops")
            .unwrap();
        self.dir
    }
}

pub(crate) async fn enroll_into(hub: &TestHub, id: &str, dir: &Path) -> IdentityPaths {
    boxes::add_and_enroll(hub.dir(), &hub.addr().to_string(), id, dir, now())
        .await
        .unwrap()
}

pub(crate) struct TestEdge {
    tls: tempfile::TempDir,
    data: tempfile::TempDir,
    pub(crate) store: Store,
    pub(crate) config: UplinkConfig,
}

pub(crate) struct RunningUplink {
    pub(crate) status: watch::Receiver<UplinkStatus>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningUplink {
    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("uplink stops on cancel")
            .unwrap();
    }
}

impl TestEdge {
    /// Waits (at most `within`) until the hub has acknowledged every event up to `up_to`, and
    /// fails the test with the store's counters and the uplink's status otherwise.
    pub(crate) async fn assert_acked(&self, up_to: u64, within: Duration, uplink: &RunningUplink) {
        let synced = wait_until(within, || {
            let store = self.store.clone();
            async move { store.stats().unwrap().acked_seq == up_to }
        })
        .await;
        assert!(
            synced,
            "events up to {up_to} not acked: {:?} {:?}",
            self.store.stats(),
            uplink.status.borrow()
        );
    }

    /// Enrolls `id` directly with the hub, then points the uplink at `hub_addr` (the hub or a
    /// proxy in front of it), with timers short enough for tests.
    pub(crate) async fn enroll(hub: &TestHub, id: &str, hub_addr: &str) -> TestEdge {
        let tls = tempfile::tempdir().unwrap();
        enroll_into(hub, id, tls.path()).await;
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(data.path(), location())).unwrap();
        let mut config = boxes::quick_uplink(hub_addr, tls.path());
        config.health_interval_secs = 1;
        TestEdge {
            tls,
            data,
            store,
            config,
        }
    }

    pub(crate) fn start_uplink(&self) -> RunningUplink {
        self.start_uplink_with(Uplink::from_config(&self.config, self.store.clone()))
    }

    /// Runs the uplink of this box reading `clock`.
    pub(crate) fn start_uplink_at(&self, clock: &TestClock) -> RunningUplink {
        self.start_uplink_with(
            Uplink::from_config(&self.config, self.store.clone()).with_clock(clock.clock()),
        )
    }

    fn start_uplink_with(&self, uplink: Uplink) -> RunningUplink {
        let status = uplink.status();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move { uplink.run(c).await.unwrap() });
        RunningUplink {
            status,
            cancel,
            task,
        }
    }

    /// Submits `n` events from `threads` threads (so commits group) on blocking threads.
    pub(crate) fn produce(&self, n: u64, threads: u64) -> tokio::task::JoinHandle<()> {
        self.produce_range(0..n, threads)
    }

    /// Events `range` (their index goes into the event id), committed by `threads` submitters.
    pub(crate) fn produce_range(
        &self,
        range: std::ops::Range<u64>,
        threads: u64,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let store = store.clone();
                    let range = range.clone();
                    scope.spawn(move || {
                        let mut i = range.start + t;
                        while i < range.end {
                            store.submit(event(i), vec![]).unwrap();
                            i += threads;
                        }
                    });
                }
            });
        })
    }

    pub(crate) fn produce_with(
        &self,
        n: u64,
        f: impl Fn(&mut Event) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..n {
                let mut e = event(i);
                f(&mut e);
                store.submit(e, vec![]).unwrap();
            }
        })
    }
}

pub(crate) fn location() -> Location {
    Location {
        lat: 31.3,
        lon: 120.6,
        crs: Crs::Wgs84,
    }
}

pub(crate) fn event(i: u64) -> Event {
    let at = now();
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&i.to_be_bytes());
    random[8] = fastrand::u8(..);
    random[9] = fastrand::u8(..);
    Event {
        id: EventId::v7(at.as_unix_millis() as u64, random),
        seq: Seq(0),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse("cam-1").unwrap(),
        },
        category: CategoryCode::parse("0102").unwrap(),
        severity: Severity::Medium,
        observed_at: at,
        location: location(),
        grid: None,
        attributes: Default::default(),
        evidence: vec![],
    }
}

/// A client config presenting a box identity (mutual TLS), as the uplink builds it (a fresh
/// config per session: no TLS resumption across them).
pub(crate) fn session_client_config(id: &IdentityPaths) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<_> = CertificateDer::pem_file_iter(&id.cert_path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&id.key_path).unwrap();
    let tls = client_tls(&id.ca_path)
        .with_client_auth_cert(chain, key)
        .unwrap();
    quic_client(tls)
}

/// A client config with no certificate (only enrollment is open to it), trusting the CA at
/// `ca_path`.
pub(crate) fn anonymous_client_config(ca_path: &Path) -> quinn::ClientConfig {
    quic_client(client_tls(ca_path).with_no_client_auth())
}

fn client_tls(
    ca_path: &Path,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_path).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
}

fn quic_client(mut tls: rustls::ClientConfig) -> quinn::ClientConfig {
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A session opened by [`hello_session`]; the control stream stays open while it is held.
pub(crate) struct OpenSession {
    pub(crate) conn: quinn::Connection,
    _control: (quinn::SendStream, quinn::RecvStream),
}

/// Opens a box session the way the uplink does (handshake, `Hello`, `Welcome`) on `endpoint`.
/// Returns the session once welcomed, or why not: the handshake or the first stream
/// operation failed (a refused certificate shows there), or the hub answered other than with
/// `Welcome`.
pub(crate) async fn hello_session(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
) -> Result<OpenSession, String> {
    let codec = protocol::Codec::default();
    let hello = codec
        .encode_to_vec(&protocol::Message::Hello(protocol::Hello {
            protocol_version: protocol::PROTOCOL_VERSION,
            min_protocol_version: protocol::MIN_PROTOCOL_VERSION,
            agent_version: "test".into(),
            last_acked_seq: None,
            last_committed_seq: None,
            store_epoch: None,
        }))
        .map_err(|e| e.to_string())?;
    let conn = endpoint
        .connect_with(config, addr, "gridsense-hub")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let answer = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut header = [0u8; 4];
        recv.read_exact(&mut header)
            .await
            .map_err(|e| e.to_string())?;
        let len = codec.frame_len(header).map_err(|e| e.to_string())?;
        let mut payload = vec![0u8; len];
        recv.read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        let msg = codec.decode_payload(&payload).map_err(|e| e.to_string())?;
        Ok::<_, String>((msg, send, recv))
    };
    match tokio::time::timeout(Duration::from_secs(10), answer).await {
        Ok(Ok((protocol::Message::Welcome(_), send, recv))) => Ok(OpenSession {
            conn,
            _control: (send, recv),
        }),
        Ok(Ok((other, _, _))) => Err(format!("answered {}", other.kind())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("no answer".into()),
    }
}

/// Opens a session with a box identity and writes `bytes` raw on the control stream; true when
/// the hub then closes the connection.
pub(crate) async fn raw_session_send(addr: SocketAddr, id: &IdentityPaths, bytes: &[u8]) -> bool {
    let config = session_client_config(id);
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(config, addr, "gridsense-hub")
        .unwrap()
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .is_ok();
    endpoint.close(0u32.into(), b"");
    closed
}
