//! Publishes simulated messages to a real MQTT broker (feature `sim`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::{Scenario, SimMessage};

/// A blocking MQTT publisher for simulations: each publish returns once the broker acknowledged
/// it (QoS 1).
pub struct Publisher {
    client: Client,
    acks: std::sync::mpsc::Receiver<()>,
    stopping: Arc<AtomicBool>,
    driver: Option<std::thread::JoinHandle<()>>,
}

/// Why a simulation could not publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The request could not be queued.
    #[error("failed to queue a publish to `{topic}`")]
    Queue {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: rumqttc::ClientError,
    },
    /// The broker did not acknowledge in time.
    #[error("broker did not acknowledge a publish to `{topic}` within {timeout:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// How long we waited.
        timeout: Duration,
    },
}

impl Publisher {
    /// Connects to `host:port` as `client_id` (the connection is driven by a background thread).
    pub fn connect(client_id: &str, host: &str, port: u16) -> Publisher {
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(5));
        // Tests publish oversized payloads on purpose; rumqttc's default limit is 10 KiB.
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = Client::new(options, 64);
        let (acks_tx, acks) = std::sync::mpsc::channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let driver = std::thread::spawn(move || {
            for event in connection.iter() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match event {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if acks_tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // The broker may be restarting in a test; keep trying until the client is
                    // dropped (then the iterator ends with a request-channel error).
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Publisher {
            client,
            acks,
            stopping,
            driver: Some(driver),
        }
    }

    /// Publishes one message with QoS 1 and waits for the broker's acknowledgement.
    ///
    /// # Errors
    /// [`PublishError`] when it cannot be queued or is not acknowledged within `timeout`.
    pub fn publish(&self, msg: &SimMessage, timeout: Duration) -> Result<(), PublishError> {
        self.client
            .publish(
                &msg.topic,
                QoS::AtLeastOnce,
                msg.retain,
                msg.payload.clone(),
            )
            .map_err(|source| PublishError::Queue {
                topic: msg.topic.clone(),
                source,
            })?;
        self.acks
            .recv_timeout(timeout)
            .map_err(|_| PublishError::Timeout {
                topic: msg.topic.clone(),
                timeout,
            })
    }

    /// Plays a scenario in real time: each step at its offset from now.
    ///
    /// # Errors
    /// The first [`PublishError`].
    pub fn play(&self, scenario: &Scenario) -> Result<(), PublishError> {
        let start = Instant::now();
        for (offset, msg) in &scenario.steps {
            if let Some(wait) = (start + *offset).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            self.publish(msg, Duration::from_secs(10))?;
        }
        Ok(())
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // The driver retries failed connections until told to stop; the disconnect request
        // wakes it up to see the flag.
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
        if let Some(driver) = self.driver.take() {
            let _ = driver.join();
        }
    }
}
