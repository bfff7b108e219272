//! `hub serve`: loads the grid, duties and calendar named by the config, opens the database,
//! and runs the HTTP API, the deadline checker and webhook delivery until `cancel` fires.
//!
//! With an `[ingest]` section it also runs the QUIC ingest for boxes, which hands committed events
//! to [`crate::cases::CaseService::ingest`] and serves the console's fleet page, evidence and
//! re-checks. The web console is served beside the API. This module wires components; it holds no domain
//! logic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, Boxes, webhooks};
use crate::cases::db::{Db, DbError};
use crate::cases::{CaseService, CaseSettings};
use crate::config::HubConfig;
use crate::duties::{CalendarError, DutyError, DutyList, WorkCalendar};
use crate::grid::{Grid, GridError, ImportOptions};

/// Why the hub could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A file named by the config could not be read.
    #[error("failed to read `{}`", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The grid file is invalid.
    #[error("grid file is invalid")]
    Grid(#[from] GridError),
    /// The responsibility list is invalid.
    #[error("responsibility list is invalid")]
    Duties(#[from] DutyError),
    /// The calendar is invalid.
    #[error("work calendar is invalid")]
    Calendar(#[from] CalendarError),
    /// The database could not be opened.
    #[error("failed to open the database")]
    Db(#[from] DbError),
    /// The QUIC ingest could not start.
    #[error("ingest failed to start")]
    Ingest(#[from] crate::ingest::IngestError),
    /// The API could not bind or serve.
    #[error("api server failed")]
    Io(#[source] std::io::Error),
    /// The API's TLS certificate or key is unusable.
    #[error("the API cannot serve HTTPS")]
    ApiTls(#[from] api::server::TlsConfigError),
    /// The webhook client could not be made (its CA file).
    #[error("webhooks cannot be delivered")]
    Webhooks(#[from] webhooks::WebhookError),
    /// A webhook setting is unusable.
    #[error("department `{department}`: {problem}")]
    Webhook {
        /// The department.
        department: String,
        /// What is wrong.
        problem: String,
    },
}

/// Where a started hub listens (the bound addresses, so `:0` in the config can be used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The HTTP API and the web console.
    pub api: SocketAddr,
    /// The QUIC ingest, when the config has an `[ingest]` section.
    pub ingest: Option<SocketAddr>,
}

/// Runs the hub until `cancel` fires. `on_listening` receives the bound addresses.
///
/// # Errors
/// [`ServeError`] for a start-up problem or a failing listener.
pub async fn run(
    config: HubConfig,
    cancel: CancellationToken,
    on_listening: impl FnOnce(Listening),
) -> Result<(), ServeError> {
    run_with_clock(config, cancel, on_listening, api::system_clock()).await
}

/// [`run`] with the clock of deadlines, case times and retention given (tests move it on).
///
/// # Errors
/// As [`run`].
pub async fn run_with_clock(
    config: HubConfig,
    cancel: CancellationToken,
    on_listening: impl FnOnce(Listening),
    clock: api::Clock,
) -> Result<(), ServeError> {
    // reads files and connects the database (the PostgreSQL client blocks on a runtime of its
    // own): off the async threads
    let svc = {
        let (config, now) = (config.clone(), clock());
        let built = tokio::task::spawn_blocking(move || case_service(&config, now)).await;
        Arc::new(built.map_err(|e| ServeError::Io(std::io::Error::other(e)))??)
    };
    let (targets, client, policy) = webhook_parts(&config)?;
    let webhook_stats = Arc::new(webhooks::WebhookStats::default());
    let state = AppState::new(svc.clone(), &config.tokens, clock.clone())
        .with_departments(
            config
                .departments
                .iter()
                .map(|d| (d.id.clone(), d.name.clone()))
                .collect(),
        )
        .with_console(config.console.clone())
        .with_open311(&config.open311);
    let (state, ingest) = bind_ingest(&config, &svc, state).await?;
    let tls = match (&config.api_tls_cert_path, &config.api_tls_key_path) {
        (Some(cert), Some(key)) => Some(api::server::tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.api_listen_addr)
        .await
        .map_err(ServeError::Io)?;
    let addr = listener.local_addr().map_err(ServeError::Io)?;
    tracing::info!(%addr, "api listening");

    // Everything above may fail and spawns nothing; from here on nothing fails to start.
    let tracker = TaskTracker::new();
    tracker.spawn(webhooks::run(
        svc.clone(),
        client,
        targets,
        policy,
        Arc::clone(&webhook_stats),
        cancel.clone(),
    ));
    spawn_deadline_checks(&tracker, &config, &svc, &clock, &cancel);
    let ingest_addr = ingest.as_ref().map(|i| i.addr);
    let ingest_handle = ingest.as_ref().map(|i| i.metrics.clone());
    if let Some(ingest) = ingest {
        tracker.spawn(crate::retention::run(
            svc.clone(),
            ingest.retention,
            config.retention.clone(),
            clock.clone(),
            cancel.clone(),
        ));
        if svc.shared_database() {
            tracker.spawn(relay_commands(
                svc.clone(),
                ingest.relay,
                clock.clone(),
                tracker.clone(),
                cancel.clone(),
            ));
        }
        let cancel = cancel.clone();
        tracker.spawn(async move {
            if let Err(e) = ingest.server.run(cancel).await {
                tracing::error!(error = %crate::telemetry::chain(&e), "ingest stopped");
            }
        });
    }
    on_listening(Listening {
        api: addr,
        ingest: ingest_addr,
    });
    crate::systemd::ready();
    tracker.spawn(crate::systemd::watchdog(svc.clone(), cancel.clone()));
    {
        let cancel = cancel.clone();
        tracker.spawn(async move {
            cancel.cancelled().await;
            crate::systemd::stopping();
        });
    }
    let http_stats = Arc::new(api::server::HttpStats::default());
    let metrics = api::metrics::HubMetrics::new(
        svc.clone(),
        ingest_handle,
        webhook_stats,
        Arc::clone(&http_stats),
        clock.clone(),
    );
    let limits = api::server::HttpLimits {
        max_connections: config.http.max_connections,
        header_read_timeout: Duration::from_millis(config.http.header_read_timeout_ms.max(1)),
        request_timeout: Duration::from_millis(config.http.request_timeout_ms.max(1)),
    };
    let app = http_app(&config, state, metrics, &limits, &http_stats);
    let served = api::server::serve(
        listener,
        app,
        limits,
        tls,
        http_stats,
        cancel.clone(),
        Duration::from_secs(10),
    )
    .await
    .map_err(ServeError::Io);
    cancel.cancel();
    tracker.close();
    tracker.wait().await;
    served
}

/// The case service over the configured grid, duty list, work calendar and database (and the
/// registered areas of the boxes, with an ingest).
fn case_service(config: &HubConfig, now: protocol::Timestamp) -> Result<CaseService, ServeError> {
    let options = ImportOptions {
        mapping: config.grid.properties.clone(),
        crs: config.grid.crs,
        edge_distance_m: config.grid.edge_distance_m,
    };
    let (grid_text, duties_text, calendar_text) = (
        read(&config.grid_path)?,
        read(&config.duties_path)?,
        read(&config.calendar_path)?,
    );
    let (grid, warnings) = Grid::from_geojson(&grid_text, &options, &mut |_, _| {})?;
    for w in &warnings {
        tracing::warn!(warning = %w, "grid");
    }
    let departments = config.department_ids();
    let duties = DutyList::from_csv_str(&duties_text, protocol::Catalog::embedded(), &departments)?;
    let calendar = WorkCalendar::from_toml_str(&calendar_text)?;
    let url = config.database_url();
    let db = Db::connect(&url, config.pool_settings())?;
    tracing::info!(database = %url, schema = db.schema_version()?, "case database open");
    // which texts this process routes by, for `hub doctor` to compare across processes
    db.serving(
        process_name(),
        &[
            ("grid", &grid_text),
            ("duties", &duties_text),
            ("calendar", &calendar_text),
        ],
        now,
    )?;
    let settings = CaseSettings {
        merge_radius_m: config.cases.merge_radius_m,
        merge_window_ms: config.cases.merge_window_secs as i64 * 1000,
        warn_before_ms: config.cases.warn_before_secs as i64 * 1000,
        verify_by_recheck: config.cases.verify_by_recheck,
        recheck_on_feedback: config.cases.recheck_on_feedback,
        max_future_ms: secs_to_ms(config.cases.max_future_secs),
        max_past_ms: secs_to_ms(config.cases.max_past_secs),
        box_area_margin_m: config.cases.box_area_margin_m,
    };
    let mut svc = CaseService::new(
        db,
        Arc::new(grid),
        duties,
        calendar,
        departments,
        settings,
        config.cases.change_buffer_len,
    );
    if let Some(hub) = config.hub_data() {
        svc = svc.with_box_areas(box_areas(&hub)?);
    }
    Ok(svc)
}

/// Webhook targets by department, the HTTP client, the retry policy.
type WebhookParts = (
    HashMap<crate::duties::DepartmentId, webhooks::WebhookTarget>,
    reqwest::Client,
    webhooks::WebhookPolicy,
);

/// The departments' webhook targets, the HTTP client (with the configured CA) and the retry
/// policy.
fn webhook_parts(config: &HubConfig) -> Result<WebhookParts, ServeError> {
    let targets = webhook_targets(config)?;
    let ca = match &config.webhooks.ca_path {
        Some(path) => Some(read(path)?.into_bytes()),
        None => None,
    };
    let client = webhooks::client(ca.as_deref())?;
    let policy = webhooks::WebhookPolicy {
        max_attempts: config.webhooks.max_attempts,
        first_retry: Duration::from_millis(config.webhooks.first_retry_ms),
        max_retry: Duration::from_millis(config.webhooks.max_retry_ms.max(1)),
        timeout: Duration::from_millis(config.webhooks.timeout_ms),
        poll_interval: Duration::from_millis(config.webhooks.poll_interval_ms.max(10)),
    };
    Ok((targets, client, policy))
}

/// The bound QUIC ingest and the handles the other tasks take of it.
struct BoundIngest {
    server: crate::ingest::IngestServer,
    addr: SocketAddr,
    retention: crate::ingest::IngestHandle,
    metrics: crate::ingest::IngestHandle,
    relay: crate::ingest::IngestHandle,
}

/// Binds the QUIC ingest when `[ingest]` is configured, handing its events to the cases, and
/// gives the API its handle.
async fn bind_ingest(
    config: &HubConfig,
    svc: &Arc<CaseService>,
    state: AppState,
) -> Result<(AppState, Option<BoundIngest>), ServeError> {
    let Some(section) = &config.ingest else {
        return Ok((state, None));
    };
    let sink: Arc<dyn crate::ingest::EventSink> = svc.clone();
    let mut settings = crate::ingest::IngestSettings::from_config(section);
    settings.database = config.hub_data().and_then(|h| h.database);
    // opens the registry (on PostgreSQL, a blocking connect): off the async threads
    let server = tokio::task::spawn_blocking(move || {
        crate::ingest::IngestServer::bind(settings, Some(sink))
    })
    .await
    .map_err(|e| ServeError::Io(std::io::Error::other(e)))??;
    let addr = server.local_addr()?;
    tracing::info!(%addr, "ingest listening");
    let state = state.with_boxes(Boxes {
        ingest: server.handle()?,
        data_dir: section.data_dir.clone(),
    });
    let bound = BoundIngest {
        addr,
        retention: server.handle()?,
        metrics: server.handle()?,
        relay: server.handle()?,
        server,
    };
    Ok((state, Some(bound)))
}

/// Every `deadline_check_interval_secs`: prunes the change outbox past its retention and
/// checks the deadlines (warnings, escalations).
fn spawn_deadline_checks(
    tracker: &TaskTracker,
    config: &HubConfig,
    svc: &Arc<CaseService>,
    clock: &api::Clock,
    cancel: &CancellationToken,
) {
    let (svc, cancel, clock) = (svc.clone(), cancel.clone(), clock.clone());
    let every = Duration::from_secs(config.cases.deadline_check_interval_secs.max(1));
    let changes_retention_ms = secs_to_ms(config.webhooks.changes_retention_secs);
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let (svc, now) = (svc.clone(), clock());
            match tokio::task::spawn_blocking(move || {
                if let Err(e) = svc.db().still_serving(process_name(), now) {
                    tracing::debug!(error = %crate::telemetry::chain(&e), "could not record this process as serving");
                }
                // one hub process on a shared database checks; the others stand by
                if !svc.leads() {
                    return Ok(Vec::new());
                }
                // changes every webhook is done with, past their retention
                let before = protocol::Timestamp::from_unix_millis(
                    now.as_unix_millis().saturating_sub(changes_retention_ms),
                );
                if let Err(e) = svc.prune_changes(before) {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "pruning the change outbox failed");
                }
                svc.check_deadlines(now)
            })
            .await
            {
                Ok(Ok(escalated)) if !escalated.is_empty() => {
                    tracing::info!(count = escalated.len(), "cases escalated");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %crate::telemetry::chain(&e), "deadline check failed"),
                Err(e) => tracing::warn!(error = %e, "deadline check task failed"),
            }
        }
    });
}

/// This process as `hub doctor` names it among the processes serving one database: read once
/// (its host name is a file read), then the same on every deadline check.
fn process_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "an unnamed host".to_owned());
        format!("gridsense-hub pid {} on {host}", std::process::id())
    })
}

/// Sends the commands other hub processes on the shared database left for boxes connected
/// here (a re-check asked through another process), and records each answer for the asker.
async fn relay_commands(
    svc: Arc<CaseService>,
    ingest: crate::ingest::IngestHandle,
    clock: api::Clock,
    tracker: TaskTracker,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RELAY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let connected = ingest.connected();
        if connected.is_empty() {
            continue;
        }
        let (s, now) = (svc.clone(), clock());
        let taken = match tokio::task::spawn_blocking(move || s.take_relayed(&connected, now)).await
        {
            Ok(Ok(taken)) => taken,
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::telemetry::chain(&e), "relayed commands unreadable");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "relayed commands task failed");
                continue;
            }
        };
        for (id, box_id, action) in taken {
            let (svc, ingest, clock) = (svc.clone(), ingest.clone(), clock.clone());
            // tracked: a shutdown waits for the answer to be recorded (the box has at most
            // RELAYED_TIMEOUT to give it)
            tracker.spawn(async move {
                tracing::info!(%box_id, command = %id, "sending a command relayed by another hub process");
                let result = ingest.command(&box_id, action, RELAYED_TIMEOUT).await;
                let now = clock();
                let answered = tokio::task::spawn_blocking(move || {
                    let failure;
                    let outcome = match &result {
                        Ok(result) => Ok(result),
                        Err(e) => {
                            failure = e.to_string();
                            Err(failure.as_str())
                        }
                    };
                    svc.answer_relayed(&id, outcome, now)
                })
                .await;
                if !matches!(answered, Ok(Ok(()))) {
                    tracing::warn!(%box_id, "the answer to a relayed command was not recorded");
                }
            });
        }
    }
}

/// How often the commands relayed for this process's boxes are looked for.
const RELAY_EVERY: Duration = Duration::from_millis(100);

/// How long a relayed command waits for its box's answer (the asker waits as long).
const RELAYED_TIMEOUT: Duration = Duration::from_secs(30);

/// The API's router with the metrics endpoint and the layers every answer passes: the
/// request time limit, the request counters and the security headers.
fn http_app(
    config: &HubConfig,
    state: AppState,
    metrics: api::metrics::HubMetrics,
    limits: &api::server::HttpLimits,
    http_stats: &Arc<api::server::HttpStats>,
) -> axum::Router {
    let tiles = config
        .console
        .tile_url
        .as_deref()
        .and_then(api::server::origin_of);
    let csp = Arc::new(api::server::content_security_policy(tiles.as_deref()));
    api::router(state)
        .merge(metrics.router())
        .layer(axum::middleware::from_fn_with_state(
            (limits.request_timeout, Arc::clone(http_stats)),
            api::server::answer_in_time,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            api::metrics::count_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            csp,
            api::server::security_headers,
        ))
}

fn read(path: &Path) -> Result<String, ServeError> {
    std::fs::read_to_string(path).map_err(|source| ServeError::Read {
        path: path.to_owned(),
        source,
    })
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs).map_or(i64::MAX, |s| s.saturating_mul(1000))
}

/// The departments' webhook targets: URL and key (from the secret file).
fn webhook_targets(
    config: &HubConfig,
) -> Result<HashMap<crate::duties::DepartmentId, webhooks::WebhookTarget>, ServeError> {
    let mut targets = HashMap::new();
    for d in &config.departments {
        let (Some(url), Some(secret)) = (&d.webhook_url, &d.webhook_secret_path) else {
            continue;
        };
        let problem = |problem: String| ServeError::Webhook {
            department: d.id.to_string(),
            problem,
        };
        let url = reqwest::Url::parse(url)
            .map_err(|e| problem(format!("webhook_url `{url}` is not a URL: {e}")))?;
        let secret = std::fs::read(secret).map_err(|source| ServeError::Read {
            path: secret.clone(),
            source,
        })?;
        let key = webhooks::WebhookTarget::key_from_secret(&secret)
            .map_err(|e| problem(format!("webhook secret `whsec_…` is not base64: {e}")))?;
        targets.insert(d.id.clone(), webhooks::WebhookTarget { url, key });
    }
    Ok(targets)
}

/// Where each box was registered, read from the registry (its own connection) as events come.
fn box_areas(hub: &crate::registry::HubData) -> Result<crate::cases::BoxAreas, ServeError> {
    let registry = std::sync::Mutex::new(hub.registry().map_err(crate::ingest::IngestError::from)?);
    Ok(Arc::new(move |id| {
        let registry = registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        registry.grid_of(id).unwrap_or_else(|e| {
            tracing::warn!(error = %crate::telemetry::chain(&e), "box area unreadable");
            None
        })
    }))
}
