//! The MQTT client around [`SensorCore`]: connects to the box's broker with a persistent session,
//! (re)subscribes on every connection, announces the agent's availability (retained `online`,
//! last will `offline`), publishes due polls, ticks the rules' timers once a second and sends
//! observations downstream.
//!
//! Liveness: rumqttc pings every keep-alive interval whatever the traffic, and on its own drops a
//! connection whose previous ping is still unanswered. A broker answers a ping behind everything
//! it already has in flight to us, and mosquitto can have a whole backlog in flight: the
//! messages it queued for the persistent session while the agent was away (2.0.11 wrote all of
//! them at once on resume in our tests, even to an MQTT 5 client asking for at most 1,000), or
//! a burst faster than the agent reads when its `max_inflight_messages` is 0. Draining such a
//! backlog took longer than one interval, the connection was dropped, and the broker sent the
//! unacknowledged part again: duplicates, and a benchmark that never settled. So any packet
//! from the broker counts as its answer, as in the broker's own client library: the connection
//! is given up only when nothing at all arrived for a whole interval after a ping.
//!
//! Backpressure: when the observation channel is full, the stage waits, and so stops reading from
//! the broker; mosquitto queues for the persistent session meanwhile (raise its
//! `max_queued_messages`, see PITFALLS). Nothing is dropped here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{GridCode, Location};
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::core::{CoreError, LinkStats, SensorCore, SensorStats};
use super::{MqttConfig, SensorsConfig};
use crate::clock::now;
use crate::events::Observation;
use crate::telemetry::chain;

/// The running sensors stage.
#[derive(Debug)]
pub struct SensorStage {
    core: SensorCore,
    mqtt: MqttConfig,
    options: MqttOptions,
    stats: Arc<Mutex<SensorStats>>,
}

/// Why the sensors stage could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SensorsError {
    /// The rules do not fit the catalog.
    #[error("invalid sensor rules")]
    Rules(#[from] CoreError),
    /// A TLS or password file could not be read.
    #[error("failed to read `{path}` for the MQTT connection")]
    ReadFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS material is unusable.
    #[error("invalid TLS material for the MQTT connection: {0}")]
    Tls(String),
}

impl SensorStage {
    /// Reads the TLS and password files and builds the core; does not connect yet (the broker
    /// may come up after the agent).
    ///
    /// # Errors
    /// [`SensorsError`] naming the unreadable file or the bad rule.
    pub fn from_config(
        cfg: &SensorsConfig,
        site: Location,
        site_grid: Option<&GridCode>,
    ) -> Result<Self, SensorsError> {
        let core = SensorCore::new(cfg, site, site_grid, now())?;
        let m = &cfg.mqtt;
        let mut options = MqttOptions::new(&m.client_id, &m.host, m.port);
        options.set_keep_alive(m.keep_alive);
        // A persistent session: the broker keeps our subscriptions and queues QoS 1 messages
        // while we reconnect.
        options.set_clean_session(false);
        // Oversized payloads must reach the core to be counted; rumqttc drops the connection
        // on a packet over its limit, so its limit is well above ours.
        let limit = (m.max_payload_bytes.saturating_mul(4)).max(1 << 20);
        options.set_max_packet_size(limit, limit);
        options.set_last_will(LastWill::new(
            m.availability_topic(),
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &m.username {
            let password = match &m.password_path {
                Some(path) => read(path)?.trim_ascii_end().to_vec(),
                None => Vec::new(),
            };
            options.set_credentials(user, String::from_utf8_lossy(&password));
        }
        if let Some(tls) = &m.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls_config(tls)?),
            )));
        }
        let stats = Arc::new(Mutex::new(core.stats().clone()));
        Ok(SensorStage {
            core,
            mqtt: m.clone(),
            options,
            stats,
        })
    }

    /// A handle on the counters, refreshed once a second while the stage runs.
    pub fn stats(&self) -> Arc<Mutex<SensorStats>> {
        Arc::clone(&self.stats)
    }

    /// Runs until `cancel` fires or the observation channel closes. Connection failures are not
    /// errors: the stage reconnects with backoff for as long as it runs.
    pub async fn run(mut self, observations: mpsc::Sender<Observation>, cancel: CancellationToken) {
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 64);
        let qos = if self.mqtt.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let availability = self.mqtt.availability_topic();
        let mut backoff = self.mqtt.reconnect_min;
        let mut connected = false;
        let mut link = LinkStats::default();
        let mut pending_subacks = 0usize;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                event = eventloop.poll() => {
                    if let Ok(Event::Incoming(_)) = &event {
                        // The broker is alive: it sent something since our last ping (see the
                        // module doc; rumqttc clears this flag only on the ping's own answer).
                        eventloop.state.await_pingresp = false;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                            backoff = self.mqtt.reconnect_min;
                            if !connected {
                                info!(host = %self.mqtt.host, port = self.mqtt.port, session_present = ack.session_present, "connected to mqtt broker");
                            }
                            connected = true;
                            link.connected = true;
                            link.connections += 1;
                            pending_subacks = 0;
                            // Subscribing again is cheap and covers a broker that lost our session.
                            // The client queues these requests; the event loop sends them.
                            for topic in self.core.subscriptions() {
                                match client.try_subscribe(topic, qos) {
                                    Ok(()) => pending_subacks += 1,
                                    Err(e) => warn!(topic, error = %e, "mqtt subscribe request not queued"),
                                }
                            }
                            if let Err(e) = client.try_publish(&availability, QoS::AtLeastOnce, true, "online") {
                                warn!(error = %e, "mqtt availability publish not queued");
                            }
                            self.publish_stats(&link);
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            pending_subacks = pending_subacks.saturating_sub(1);
                            if pending_subacks == 0 {
                                link.subscribed += 1;
                                debug!("mqtt subscriptions acknowledged");
                                self.publish_stats(&link);
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let obs = self.core.on_message(&p.topic, &p.payload, now());
                            if !send_all(&observations, obs, &cancel).await {
                                break;
                            }
                        }
                        Ok(other) => debug!(event = ?other, "mqtt event"),
                        Err(e) => {
                            link.failures += 1;
                            link.connected = false;
                            self.publish_stats(&link);
                            if connected {
                                warn!(error = %chain(&e), "mqtt connection lost; reconnecting");
                                connected = false;
                            } else {
                                debug!(error = %chain(&e), "mqtt connection attempt failed");
                            }
                            if let ConnectionError::ConnectionRefused(code) = e {
                                warn!(code = ?code, "mqtt broker refused the connection");
                            }
                            let delay = jitter(backoff);
                            backoff = (backoff * 2).min(self.mqtt.reconnect_max);
                            tokio::select! {
                                () = cancel.cancelled() => break,
                                () = tokio::time::sleep(delay) => {}
                            }
                        }
                    }
                }
                _ = ticker.tick() => {
                    let (obs, polls) = self.core.on_tick(now());
                    for poll in polls {
                        if let Err(e) = client.try_publish(poll.topic, QoS::AtMostOnce, false, poll.payload) {
                            debug!(error = %e, "mqtt poll not queued");
                        }
                    }
                    self.publish_stats(&link);
                    if !send_all(&observations, obs, &cancel).await {
                        break;
                    }
                }
            }
        }
        link.connected = false;
        self.publish_stats(&link);
        // Say goodbye properly when we can; the last will covers the case where we cannot.
        if connected {
            let _ = client.try_publish(&availability, QoS::AtLeastOnce, true, "offline");
            let _ = client.try_disconnect();
            let drain = async { while eventloop.poll().await.is_ok() {} };
            let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
        }
        info!("sensors stage stopped");
    }
}

impl SensorStage {
    fn publish_stats(&self, link: &LinkStats) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.clone_from(self.core.stats());
            stats.link = link.clone();
        }
    }
}

/// Sends observations downstream, waiting when the channel is full. False when the stage should
/// stop (cancelled, or nobody listens any more).
async fn send_all(
    tx: &mpsc::Sender<Observation>,
    obs: Vec<Observation>,
    cancel: &CancellationToken,
) -> bool {
    for o in obs {
        tokio::select! {
            () = cancel.cancelled() => return false,
            sent = tx.send(o) => if sent.is_err() { return false },
        }
    }
    true
}

fn tls_config(tls: &super::MqttTlsConfig) -> Result<rustls::ClientConfig, SensorsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        SensorsError::Tls(format!("{what} `{}`: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read(&tls.ca_path)?) {
        let cert = cert.map_err(|e| bad("CA file", &tls.ca_path, &e))?;
        roots
            .add(cert)
            .map_err(|e| bad("CA file", &tls.ca_path, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SensorsError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert_path, &tls.key_path) {
        (Some(cert_path), Some(key_path)) => {
            let certs = CertificateDer::pem_slice_iter(&read(cert_path)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("certificate file", cert_path, &e))?;
            let key = PrivateKeyDer::from_pem_slice(&read(key_path)?)
                .map_err(|e| bad("key file", key_path, &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| SensorsError::Tls(e.to_string()))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, SensorsError> {
    std::fs::read(path).map_err(|source| SensorsError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// ±25 % jitter so that boxes do not reconnect in lockstep after a broker restart.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}
