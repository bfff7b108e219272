//! A real mosquitto broker for tests: started on a free loopback port in a temporary folder,
//! killed when dropped, and restartable on the same port (to test reconnects).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

/// A running mosquitto.
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto on a free port of 127.0.0.1 and waits until it accepts connections.
    ///
    /// # Errors
    /// When mosquitto is not installed (run `scripts/setup`) or does not come up.
    pub fn start() -> anyhow::Result<Mosquitto> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)?;
        let mut m = Mosquitto {
            port,
            dir,
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port.
    ///
    /// # Errors
    /// As [`Mosquitto::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("failed to start mosquitto (is it installed? run scripts/setup)")?;
        self.child = Some(child);
        let port = self.port;
        let mut child = self.child.as_mut();
        let up = crate::wait_blocking(Duration::from_secs(10), "mosquitto accepting", || {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Ok(()));
            }
            match child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => Some(Err(status)),
                _ => None,
            }
        });
        match up {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => bail!("mosquitto exited at start-up with {status}"),
            Err(_) => bail!("mosquitto did not accept connections on port {port} within 10 s"),
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}
