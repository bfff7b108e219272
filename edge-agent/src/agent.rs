//! The agent's run loop: opens the store, starts the stages, and stops them in the order the
//! data flows.
//!
//! ```text
//! sensors (MQTT) ─┐
//! cameras ────────┼─▶ observations (bounded; sources wait when full) ─▶ events stage
//!                 ┘      (cooldown, evidence, privacy blur) ─▶ store (durable commit)
//! ```
//!
//! Shutdown: `cancel` stops the sources; when the last of them has dropped its sender the events
//! stage drains what is queued, commits it and returns; then the store's writer stops. Nothing
//! accepted by a source before the cancel is lost.
//!
//! This module holds no domain logic: each stage lives in its own module and is tested there.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use protocol::{ComponentHealth, ComponentState, Source, SourceKind};

use crate::camera::{CameraError, CameraStage, CameraState, CameraStats};
use crate::clock::now;
use crate::config::Config;
use crate::events::{Built, EventBuilder, EventsStats, Observation};
use crate::probes::Probes;
use crate::sensors::{SensorStage, SensorStats, SensorsError};
use crate::status::{LocalApi, LocalApiError};
use crate::store::{Store, StoreError, StoreOptions};
use crate::telemetry::chain;

/// Observations that may wait for the events stage before sources wait.
const OBSERVATION_QUEUE: usize = 256;

/// How often synced events past their retention time are swept.
const RETENTION_SWEEP: Duration = Duration::from_secs(600);

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    store: Store,
    tracker: TaskTracker,
    cancel: CancellationToken,
    sensor_stats: Option<Arc<Mutex<SensorStats>>>,
    camera_stats: Option<CameraStats>,
    events: Arc<EventsStats>,
    local_api_addr: Option<SocketAddr>,
    metrics_addr: Option<std::net::SocketAddr>,
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The store could not be opened (corrupt, unreadable, foreign database).
    #[error("failed to open the event store")]
    Store(#[from] StoreError),
    /// The sensors stage could not be set up.
    #[error("failed to set up the sensors")]
    Sensors(#[from] SensorsError),
    /// The cameras could not be set up (GStreamer, ONNX Runtime or the model).
    #[error("failed to set up the cameras")]
    Cameras(#[from] CameraError),
    /// The box page could not start (its port is taken, its password file unusable).
    #[error("failed to start the box page")]
    LocalApi(#[from] LocalApiError),
    /// The metrics listener could not start.
    #[error("failed to start the metrics listener")]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A start-up task panicked or was cancelled.
    #[error("start-up task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl Agent {
    /// Opens the store and starts every configured stage. `config` must be validated.
    ///
    /// # Errors
    /// [`AgentError`] when the store or a stage cannot start; nothing keeps running then.
    pub async fn start(config: Config, cancel: CancellationToken) -> Result<Agent, AgentError> {
        let options = StoreOptions::from_section(
            &config.store,
            config.site.location(),
            config.site.grid.clone(),
        );
        let store = tokio::task::spawn_blocking(move || Store::open(options)).await??;
        let report = store.open_report();
        info!(data_dir = %config.store.data_dir.display(), report = ?report, "event store open");

        match Self::build(&config, &store).await {
            Ok(stages) => Ok(stages.run(&config, store, cancel)),
            Err(e) => {
                // Nothing was spawned: closing the store is all there is to undo.
                let _ = tokio::task::spawn_blocking(move || store.close()).await;
                Err(e)
            }
        }
    }

    /// Builds every configured stage (binds the listeners, loads the model, renders the
    /// pipelines) without spawning anything, so that a stage that cannot be built leaves nothing
    /// running.
    async fn build(config: &Config, store: &Store) -> Result<Stages, AgentError> {
        let metrics_listener = match &config.metrics {
            Some(m) => Some(crate::metrics::AgentMetrics::bind(m.listen_addr).await?),
            None => None,
        };
        let sensors = if config.sensors.is_empty() {
            None
        } else {
            Some(SensorStage::from_config(
                &config.sensors_config(),
                config.site.location(),
                config.site.grid.as_ref(),
            )?)
        };
        let cameras = if config.cameras.is_empty() {
            None
        } else {
            // Loading the model and probing GStreamer elements block.
            let (cameras, detector) = (config.cameras.clone(), config.detector.clone());
            let (board, site) = (config.board, config.site.location());
            Some(
                tokio::task::spawn_blocking(move || {
                    CameraStage::build(&cameras, &detector, board, site)
                })
                .await??,
            )
        };
        let sensor_stats = sensors.as_ref().map(SensorStage::stats);
        let camera_stats = cameras.as_ref().map(CameraStage::stats);
        let looker = cameras.as_ref().map(CameraStage::looker);
        let events = Arc::new(EventsStats::default());
        let mut rechecks = None;
        let uplink = config.uplink.as_ref().map(|section| {
            let (cams, sens) = (camera_stats.clone(), sensor_stats.clone());
            let uplink = crate::uplink::Uplink::from_config(section, store.clone())
                .with_components(Arc::new(move || components(cams.as_ref(), sens.as_ref())));
            // The hub's re-check commands go to the cameras; without cameras the uplink answers
            // them as failed itself.
            match looker.clone() {
                Some(looker) => {
                    let (commands_tx, commands_rx) = mpsc::channel(8);
                    rechecks = Some((commands_rx, looker));
                    uplink.with_commands(commands_tx)
                }
                None => uplink,
            }
        });
        // Fusion runs when a sensor names a confirming camera and the cameras run.
        let fusion = (looker.is_some() && config.sensors.iter().any(|s| s.camera.is_some()))
            .then(|| Arc::new(crate::fusion::FusionStats::default()));
        let probes = Probes {
            store: store.clone(),
            events: Arc::clone(&events),
            sensors: sensor_stats.clone(),
            cameras: camera_stats.clone(),
            fusion,
            uplink: uplink.as_ref().map(crate::uplink::Uplink::status),
        };
        let local_api = match &config.local_api {
            Some(local_api) => Some(
                LocalApi::bind(
                    crate::status::PageSettings {
                        local_api: local_api.clone(),
                        cameras: config.cameras.clone(),
                        sensors: config.sensors.clone(),
                        store: config.store.clone(),
                        evidence: config.events.evidence.clone(),
                    },
                    probes.clone(),
                )
                .await?,
            ),
            None => None,
        };
        Ok(Stages {
            metrics_listener,
            sensors,
            cameras,
            looker,
            probes,
            uplink,
            rechecks,
            local_api,
        })
    }
}

/// Every stage, built and not yet running.
struct Stages {
    metrics_listener: Option<tokio::net::TcpListener>,
    sensors: Option<SensorStage>,
    cameras: Option<CameraStage>,
    looker: Option<crate::camera::Looker>,
    /// What the box page and the metrics read, built once.
    probes: Probes,
    uplink: Option<crate::uplink::Uplink>,
    rechecks: Option<(
        mpsc::Receiver<crate::uplink::CommandRequest>,
        crate::camera::Looker,
    )>,
    local_api: Option<LocalApi>,
}

impl Stages {
    /// Spawns every stage; this cannot fail.
    fn run(self, config: &Config, store: Store, cancel: CancellationToken) -> Agent {
        let tracker = TaskTracker::new();
        let Stages {
            metrics_listener,
            sensors,
            cameras,
            looker,
            probes,
            uplink,
            rechecks,
            local_api,
        } = self;
        let events = Arc::clone(&probes.events);
        let observations_rx = spawn_sources(
            &tracker,
            config,
            (sensors, cameras, looker),
            probes.fusion.clone(),
            &cancel,
        );
        tracker.spawn(
            events_stage(
                EventBuilder::from_section(&config.events, config.site.grid.clone()),
                store.clone(),
                observations_rx,
                Arc::clone(&events),
                config.store.max_batch.get() as usize,
            )
            .instrument(info_span!("events")),
        );
        if let Some((commands_rx, looker)) = rechecks {
            let rechecks = crate::recheck::Rechecks {
                cameras: config.cameras.clone(),
                site: config.site.location(),
                builder: EventBuilder::from_section(&config.events, config.site.grid.clone()),
            };
            tracker.spawn(
                crate::recheck::serve(commands_rx, looker, rechecks, store.clone())
                    .instrument(info_span!("recheck")),
            );
        }
        if let Some(uplink) = uplink {
            let cancel = cancel.clone();
            tracker.spawn(
                async move {
                    if let Err(e) = uplink.run(cancel).await {
                        tracing::error!(error = %chain(&e), "uplink stopped");
                    }
                }
                .instrument(info_span!("uplink")),
            );
        }
        let local_api_addr = local_api.as_ref().map(LocalApi::local_addr);
        if let Some(api) = local_api {
            tracker.spawn(api.run(cancel.clone()).instrument(info_span!("local_api")));
        }
        let (sensor_stats, camera_stats) = (probes.sensors.clone(), probes.cameras.clone());
        let metrics_addr = metrics_listener.and_then(|listener| {
            let metrics = crate::metrics::AgentMetrics::new(probes, config.store.quota_bytes);
            let addr = listener.local_addr().ok();
            info!(addr = ?addr, "metrics listening");
            tracker.spawn(
                metrics
                    .serve(listener, cancel.clone())
                    .instrument(info_span!("metrics")),
            );
            addr
        });
        tracker.close();
        info!(
            sensors = config.sensors.len(),
            cameras = config.cameras.len(),
            "agent running"
        );
        Agent {
            store,
            tracker,
            cancel,
            sensor_stats,
            camera_stats,
            events,
            local_api_addr,
            metrics_addr,
        }
    }
}

/// The observation sources, built: sensors, cameras, and the cameras' looker for fusion.
type Sources = (
    Option<SensorStage>,
    Option<CameraStage>,
    Option<crate::camera::Looker>,
);

/// Spawns the observation sources (sensors, cameras, and fusion counted in `fusion` for sensors
/// that name a confirming camera); returns where their observations arrive, which closes once
/// every source has stopped.
fn spawn_sources(
    tracker: &TaskTracker,
    config: &Config,
    (sensors, cameras, looker): Sources,
    fusion: Option<Arc<crate::fusion::FusionStats>>,
    cancel: &CancellationToken,
) -> mpsc::Receiver<crate::events::Observation> {
    let (observations_tx, observations_rx) = mpsc::channel(OBSERVATION_QUEUE);
    // Sensors with a confirming camera send through fusion, which attaches the camera's look
    // (validation guarantees the camera exists).
    let fused: std::collections::HashMap<protocol::SourceId, protocol::CameraId> = config
        .sensors
        .iter()
        .filter_map(|s| Some((s.id.clone().into(), s.camera.clone()?)))
        .collect();
    let (sensors_tx, fusion_rx) = if fused.is_empty() {
        (observations_tx.clone(), None)
    } else {
        let (tx, rx) = mpsc::channel(OBSERVATION_QUEUE);
        (tx, Some(rx))
    };
    if let Some(stage) = sensors {
        tracker.spawn(
            stage
                .run(sensors_tx, cancel.clone())
                .instrument(info_span!("sensors")),
        );
    }
    if let Some(stage) = cameras {
        let (tx, cancel) = (observations_tx.clone(), cancel.clone());
        tracker.spawn(
            async move {
                if let Err(e) = stage.run(tx, cancel).await {
                    tracing::error!(error = %chain(&e), "camera stage failed");
                }
            }
            .instrument(info_span!("cameras")),
        );
    }
    if let (Some(rx), Some(looker), Some(stats)) = (fusion_rx, looker, fusion) {
        tracker.spawn(
            crate::fusion::run(rx, observations_tx, fused, looker, stats)
                .instrument(info_span!("fusion")),
        );
    }
    // Only the sources hold senders now: the events stage ends when they all have stopped.
    observations_rx
}

impl Agent {
    /// Where the box page listens (none without `[local_api]`).
    pub fn local_api_addr(&self) -> Option<SocketAddr> {
        self.local_api_addr
    }

    /// The store (for status and tests; readers never block the writer).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The sensors' counters, when sensors are configured.
    pub fn sensor_stats(&self) -> Option<Arc<Mutex<SensorStats>>> {
        self.sensor_stats.clone()
    }

    /// The cameras' states and counters, when cameras are configured.
    pub fn camera_stats(&self) -> Option<CameraStats> {
        self.camera_stats.clone()
    }

    /// Where `/metrics` listens, when `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// The events stage's counters.
    pub fn events_stats(&self) -> Arc<EventsStats> {
        Arc::clone(&self.events)
    }

    /// Stops the agent: cancels the sources, lets the events stage drain and commit, closes the
    /// store.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.wait().await;
    }

    /// Waits until the agent has stopped (after its cancellation token fires).
    pub async fn wait(self) {
        self.tracker.wait().await;
        let store = self.store;
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        info!("agent stopped");
    }
}

/// Runs the agent until `cancel` fires, then shuts it down in order. A box with no camera and no
/// sensor configured yet (as installed) keeps running too: a service that exits at once would
/// only be restarted over and over by its service manager.
///
/// # Errors
/// [`AgentError`] when it cannot start.
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), AgentError> {
    let agent = Agent::start(config, cancel.clone()).await?;
    crate::systemd::ready();
    let watchdog = tokio::spawn(crate::systemd::watchdog(
        agent.store().clone(),
        cancel.clone(),
    ));
    cancel.cancelled().await;
    crate::systemd::stopping();
    // its store handle goes before the agent closes the store (the last handle stops the writer)
    let _ = watchdog.await;
    agent.wait().await;
    Ok(())
}

/// Turns observations into events and commits them, until every source has stopped; sweeps
/// expired synced events now and then. Building (image encoding) and committing (fsync) block, so
/// they run on the blocking pool, one observation at a time, in arrival order.
async fn events_stage(
    mut builder: EventBuilder,
    store: Store,
    mut rx: mpsc::Receiver<Observation>,
    stats: Arc<EventsStats>,
    max_batch: usize,
) {
    let mut sweep = tokio::time::interval(RETENTION_SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            obs = rx.recv() => {
                let Some(obs) = obs else { break };
                // Whatever else is already queued (a burst) is built and committed with it, in
                // one transaction: one sync for the burst instead of one per event.
                let mut batch = vec![obs];
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                stats.observations.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let st = store.clone();
                let s = Arc::clone(&stats);
                match tokio::task::spawn_blocking(move || {
                    process(&mut builder, &st, batch, &s);
                    builder
                })
                .await
                {
                    Ok(b) => builder = b,
                    Err(e) => {
                        warn!(error = %e, "events stage task failed; stopping");
                        return;
                    }
                }
            }
            _ = sweep.tick() => {
                let st = store.clone();
                match tokio::task::spawn_blocking(move || st.sweep_retention(now())).await {
                    Ok(Ok(n)) if n > 0 => info!(count = n, "swept synced events past retention"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %chain(&e), "retention sweep failed"),
                    Err(e) => warn!(error = %e, "retention sweep task failed"),
                }
            }
        }
    }
    debug!("events stage drained");
}

/// Builds events from `batch` in order (cooldowns see them in arrival order) and commits the
/// new ones together.
fn process(
    builder: &mut EventBuilder,
    store: &Store,
    batch: Vec<Observation>,
    stats: &EventsStats,
) {
    let mut built = Vec::with_capacity(batch.len());
    let mut origins = Vec::with_capacity(batch.len());
    for obs in batch {
        let source = obs.source.id.clone();
        let rule = obs.rule.clone();
        let observed_at = obs.observed_at;
        match builder.build(obs) {
            Ok(Built::Event { event, evidence }) => {
                origins.push((source, rule, event.category.to_string(), observed_at));
                built.push((*event, evidence));
            }
            Ok(Built::Suppressed { repeats }) => {
                stats.suppressed.fetch_add(1, Ordering::Relaxed);
                debug!(source = %source, rule, count = repeats, "repeat inside cooldown");
            }
            Err(e) => {
                stats.build_errors.fetch_add(1, Ordering::Relaxed);
                warn!(source = %source, rule, error = %chain(&e), "observation not turned into an event");
            }
        }
    }
    if built.is_empty() {
        return;
    }
    let results = store.submit_many(built);
    let committed_at = now().as_unix_millis();
    {
        // observation (a camera frame's capture) to durable commit, recorded before the
        // committed counter moves (one lock for the batch)
        let mut latencies = stats
            .commit_latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (_, (_, _, _, observed_at)) in results.iter().zip(&origins).filter(|(r, _)| r.is_ok()) {
            let ms = committed_at.saturating_sub(observed_at.as_unix_millis());
            crate::camera::push_bounded(
                &mut latencies,
                Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
            );
        }
    }
    for (result, (source, rule, category, _)) in results.into_iter().zip(origins) {
        match result {
            Ok(committed) => {
                stats.committed.fetch_add(1, Ordering::Relaxed);
                *stats
                    .committed_by_category
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(category)
                    .or_default() += 1;
                debug!(seq = %committed.seq, source = %source, rule, "event committed");
            }
            Err(e) => {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                warn!(source = %source, rule, error = %chain(&e), "event not stored");
            }
        }
    }
}

/// The cameras' and sensors' coarse health, for the hub's fleet view.
fn components(
    cameras: Option<&CameraStats>,
    sensors: Option<&Arc<Mutex<SensorStats>>>,
) -> Vec<ComponentHealth> {
    let mut out = Vec::new();
    for cam in cameras.map(CameraStats::snapshot).unwrap_or_default() {
        out.push(ComponentHealth {
            source: Source {
                kind: SourceKind::Camera,
                id: cam.id.clone().into(),
            },
            state: match cam.state {
                CameraState::Streaming => ComponentState::Ok,
                CameraState::Connecting | CameraState::Stalled => ComponentState::Degraded,
                CameraState::Offline => ComponentState::Offline,
            },
            last_seen: None,
            detail: cam.last_error,
        });
    }
    if let Some(sensors) = sensors {
        let stats = sensors.lock().unwrap_or_else(|p| p.into_inner());
        for (id, s) in &stats.sensors {
            let bad: u64 = s.bad_input.values().sum();
            out.push(ComponentHealth {
                source: Source {
                    kind: SourceKind::Sensor,
                    id: id.clone().into(),
                },
                state: match (s.online, s.last_seen) {
                    (Some(false), _) => ComponentState::Offline,
                    (_, None) => ComponentState::Degraded,
                    _ => ComponentState::Ok,
                },
                last_seen: s.last_seen,
                detail: (bad > 0).then(|| format!("{bad} bad payloads")),
            });
        }
    }
    out
}
