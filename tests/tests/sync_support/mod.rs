//! Shared set-up for the sync tests: an in-process hub ingest and an enrolled edge store.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
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

pub(crate) fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    Timestamp::from_unix_millis(ms)
}

pub(crate) fn identity(dir: &Path) -> IdentityPaths {
    IdentityPaths {
        ca_path: dir.join("ca.pem"),
        cert_path: dir.join("box.pem"),
        key_path: dir.join("box.key"),
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn wait_for_mode(
    status: &mut watch::Receiver<UplinkStatus>,
    mode: UplinkMode,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, status.wait_for(|s| s.mode == mode))
        .await
        .is_ok_and(|r| r.is_ok())
}

pub(crate) struct TestHub {
    dir: tempfile::TempDir,
    pub(crate) handle: IngestHandle,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestHub {
    pub(crate) async fn start() -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        hub::registry::admin::init(
            dir.path(),
            "test hub",
            "127.0.0.1:0".parse().unwrap(),
            now(),
        )
        .unwrap();
        let mut settings = IngestSettings::for_tests(dir.path());
        settings.revocation_check_interval = Duration::from_secs(1);
        settings.idle_timeout = Duration::from_millis(1500);
        let server = IngestServer::bind(settings, None).unwrap();
        let handle = server.handle().unwrap();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move { server.run(c).await.unwrap() });
        TestHub {
            dir,
            handle,
            cancel,
            task,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn clone_handle(&self) -> IngestHandle {
        self.handle.clone()
    }

    pub(crate) fn add_box(&self, id: &str) -> String {
        hub::registry::admin::box_add(
            self.dir(),
            &protocol::BoxId::parse(id).unwrap(),
            None,
            None,
            3600,
            now(),
        )
        .unwrap()
        .trim()
        .to_owned()
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("hub ingest stops")
            .unwrap();
    }
}

pub(crate) async fn enroll_into(hub: &TestHub, id: &str, dir: &Path) -> IdentityPaths {
    let token = hub.add_box(id);
    let paths = identity(dir);
    edge_agent::enroll::enroll(&hub.addr().to_string(), "gridsense-hub", &token, &paths)
        .await
        .unwrap();
    paths
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
    /// Enrolls `id` directly with the hub, then points the uplink at `hub_addr` (the hub or a
    /// proxy in front of it), with timers short enough for tests.
    pub(crate) async fn enroll(hub: &TestHub, id: &str, hub_addr: &str) -> TestEdge {
        let tls = tempfile::tempdir().unwrap();
        enroll_into(hub, id, tls.path()).await;
        let data = tempfile::tempdir().unwrap();
        let store = Store::open(StoreOptions::new(data.path(), location())).unwrap();
        let mut config = UplinkConfig::new(hub_addr, tls.path());
        config.idle_timeout_ms = 1500;
        config.keep_alive_interval_ms = 300;
        config.backoff_initial_ms = 50;
        config.backoff_max_ms = 500;
        config.poll_interval_ms = 20;
        config.health_interval_secs = 1;
        TestEdge {
            tls,
            data,
            store,
            config,
        }
    }

    pub(crate) fn start_uplink(&self) -> RunningUplink {
        let uplink = Uplink::from_config(&self.config, self.store.clone());
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
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let store = store.clone();
                    scope.spawn(move || {
                        let mut i = t;
                        while i < n {
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

/// A client config presenting a box identity (mutual TLS), as the uplink builds it.
pub(crate) fn session_client_config(id: &IdentityPaths) -> quinn::ClientConfig {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&id.ca_path).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(&id.cert_path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&id.key_path).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
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
