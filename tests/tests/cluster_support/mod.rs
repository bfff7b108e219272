//! Hub processes on one database and boxes for them, for the cluster tests and the fleet
//! bench: `hub serve` as a real process with its own API and QUIC ports, a data folder made by
//! `hub init`, and boxes with stores of their own enrolled the way an installer does.
//!
//! Used by several binaries, each of which uses only part of it.

#![allow(dead_code)]

#[path = "../boxes_support/mod.rs"]
pub(crate) mod boxes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::binaries::binary;
use e2e::process::{Proc, free_udp_port};
use e2e::{WAIT, metric_value, now, wait_for};
use edge_agent::store::{Store, StoreOptions};
use edge_agent::uplink::{Uplink, UplinkConfig, UplinkStatus};
use hub::registry::HubData;
use protocol::{
    BoxId, CategoryCode, Crs, Event, EventId, Location, Seq, Severity, Source, SourceId, SourceKind,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The operators' API token (admin).
pub(crate) const TOKEN: &str = "t-operator";

/// One `hub serve` process and its addresses.
pub(crate) struct HubProcess {
    pub(crate) proc: Proc,
    pub(crate) api: SocketAddr,
    pub(crate) ingest: SocketAddr,
    pub(crate) config: PathBuf,
}

impl HubProcess {
    /// Starts `hub serve` on the shared data folder and database, on ports of its own; waits
    /// until its API answers.
    pub(crate) async fn start(data: &Path, database: &str, name: &str) -> HubProcess {
        HubProcess::start_on(data, data, database, name).await
    }

    /// [`HubProcess::start`] with its data folder (CA, registry, ingest log) in `data` and the
    /// grid, duty list and calendar in `files`.
    pub(crate) async fn start_on(
        data: &Path,
        files: &Path,
        database: &str,
        name: &str,
    ) -> HubProcess {
        let api: SocketAddr = format!("127.0.0.1:{}", e2e::mosquitto::free_port().unwrap())
            .parse()
            .unwrap();
        let ingest: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        let p = |f: &str| files.join(f);
        let config = format!(
            "api_listen_addr = \"{api}\"\ngrid_path = {:?}\nduties_path = {:?}\ncalendar_path = {:?}\n\n\
             [database]\nurl = \"{database}\"\npool_size = 4\n\n\
             [cases]\ndeadline_check_interval_secs = 1\n\n\
             [ingest]\nlisten_addr = \"{ingest}\"\ndata_dir = {data:?}\nrevocation_check_interval_secs = 1\n\n\
             [[departments]]\nid = \"sanitation-pj\"\nname = \"sanitation (street)\"\n\n\
             [[departments]]\nid = \"sanitation-gusu\"\nname = \"sanitation (district)\"\n\n\
             [[departments]]\nid = \"city-management\"\nname = \"city management\"\n\n\
             [[departments]]\nid = \"traffic-pj\"\nname = \"traffic (street)\"\n\n\
             [[departments]]\nid = \"traffic-gusu\"\nname = \"traffic (district)\"\n\n\
             [[tokens]]\nname = \"operator\"\ntoken_sha256 = \"{}\"\nrole = \"admin\"\nsubject = \"ops\"\n",
            p("grid.geojson"),
            p("duties.csv"),
            p("calendar.toml"),
            hub::api::hash_token(TOKEN),
        );
        let path = files.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let proc = Proc::spawn(
            Command::new(binary("hub"))
                .arg("serve")
                .arg("--config")
                .arg(&path),
        )
        .unwrap();
        let hub = HubProcess {
            proc,
            api,
            ingest,
            config: path,
        };
        wait_for(WAIT, &format!("{name}'s API"), || hub.metrics())
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{name}'s log:\n{}", hub.proc.log()));
        hub
    }

    /// Its `/metrics` exposition, or `None` while it does not answer.
    pub(crate) async fn metrics(&self) -> Option<String> {
        let answer = e2e::http::send(self.api, "GET", "/metrics", &[], &[])
            .await
            .ok()?;
        (answer.status == 200).then(|| answer.text())
    }

    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics().await.expect("metrics answer");
        metric_value(&text, name).unwrap_or(0.0)
    }
}

/// A box with its own store, enrolled through `hub`, sending to that process only.
pub(crate) struct TestBox {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub(crate) store: Store,
    pub(crate) config: UplinkConfig,
}

impl TestBox {
    /// Registers `id` in `registry` (a hub's data folder and shared database) and enrolls it
    /// through the process `hub`.
    pub(crate) async fn enroll(registry: &HubData, hub: &HubProcess, id: &str) -> TestBox {
        TestBox::enroll_into(registry, hub, id, &std::env::temp_dir()).await
    }

    /// [`TestBox::enroll`] with the box's store and identity in a new folder under `parent`
    /// (the fleet bench puts hundreds of boxes in memory, `/dev/shm`, so that their stores'
    /// syncs do not measure the disk instead of the hub).
    pub(crate) async fn enroll_into(
        registry: &HubData,
        hub: &HubProcess,
        id: &str,
        parent: &Path,
    ) -> TestBox {
        let tls = tempfile::tempdir_in(parent).unwrap();
        // the PostgreSQL client blocks: not on the test's async threads
        let (registry, box_id) = (registry.clone(), BoxId::parse(id).unwrap());
        let token = tokio::task::spawn_blocking(move || {
            hub::registry::admin::box_add(registry, &box_id, None, None, 3600, now())
        })
        .await
        .unwrap()
        .unwrap();
        boxes::enroll(&hub.ingest.to_string(), token.trim(), tls.path())
            .await
            .unwrap();
        let dir = tempfile::tempdir_in(parent).unwrap();
        // where the box stands: in the sample city
        let at = Location {
            lat: 31.2815,
            lon: 120.5815,
            crs: Crs::Wgs84,
        };
        let store = Store::open(StoreOptions::new(dir.path(), at)).unwrap();
        let config = boxes::quick_uplink(&hub.ingest.to_string(), tls.path());
        TestBox {
            _dirs: (tls, dir),
            store,
            config,
        }
    }

    pub(crate) fn start_uplink(&self, cancel: &CancellationToken) -> tokio::task::JoinHandle<()> {
        self.start_watched(cancel).0
    }

    /// [`TestBox::start_uplink`], with the uplink's status.
    pub(crate) fn start_watched(
        &self,
        cancel: &CancellationToken,
    ) -> (tokio::task::JoinHandle<()>, watch::Receiver<UplinkStatus>) {
        let uplink = Uplink::from_config(&self.config, self.store.clone());
        let status = uplink.status();
        let cancel = cancel.clone();
        (
            tokio::spawn(async move { uplink.run(cancel).await.unwrap() }),
            status,
        )
    }
}

/// Exposed garbage seen by `camera` at `location`, now.
pub(crate) fn garbage(location: Location, camera: &str) -> Event {
    let at = now();
    Event {
        id: EventId::v7(at.as_unix_millis() as u64, fastrand_bytes()),
        seq: Seq(0),
        source: Source {
            kind: SourceKind::Camera,
            id: SourceId::parse(camera).unwrap(),
        },
        category: CategoryCode::parse("0102").unwrap(),
        severity: Severity::Medium,
        observed_at: at,
        location,
        grid: None,
        attributes: Default::default(),
        evidence: vec![],
    }
}

pub(crate) fn fastrand_bytes() -> [u8; 10] {
    std::array::from_fn(|_| fastrand::u8(..))
}

pub(crate) fn hub_data() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    hub::registry::admin::init(&data, "cluster hub", "127.0.0.1:0".parse().unwrap(), now())
        .unwrap();
    (dir, data)
}
