//! A UDP fault proxy for QUIC tests: sits between one client and a server on 127.0.0.1 and
//! drops, black-holes, reorders or duplicates datagrams in both directions as told, with a
//! seeded RNG so a failing run can be replayed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// What the proxy does to datagrams now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every datagram (a link outage).
    pub blackhole: bool,
    /// Drop this share of datagrams, in percent.
    pub drop_percent: u8,
    /// Hold this share back and send it after the next one, in percent.
    pub reorder_percent: u8,
    /// Send this share twice, in percent.
    pub duplicate_percent: u8,
}

/// Counters of what the proxy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Datagrams forwarded.
    pub forwarded: u64,
    /// Datagrams dropped (black hole or drop share).
    pub dropped: u64,
    /// Datagrams reordered.
    pub reordered: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
}

struct State {
    faults: Faults,
    upstream: SocketAddr,
    client: Option<SocketAddr>,
    stats: ProxyStats,
    rng: fastrand::Rng,
    held_up: Option<Vec<u8>>,
    held_down: Option<Vec<u8>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream`.
    ///
    /// # Errors
    /// When a socket cannot be bound.
    pub async fn start(upstream: SocketAddr, seed: u64) -> std::io::Result<FaultProxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            faults: Faults::default(),
            upstream,
            client: None,
            stats: ProxyStats::default(),
            rng: fastrand::Rng::with_seed(seed),
            held_up: None,
            held_down: None,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut up_buf = vec![0u8; 65_536];
            let mut down_buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    r = front.recv_from(&mut up_buf) => {
                        let Ok((n, from)) = r else { continue };
                        let (out, to) = {
                            let mut s = lock(&st);
                            s.client = Some(from);
                            let to = s.upstream;
                            (decide(&mut s, &up_buf[..n], true), to)
                        };
                        for d in out { let _ = back.send_to(&d, to).await; }
                    }
                    r = back.recv_from(&mut down_buf) => {
                        let Ok((n, _)) = r else { continue };
                        let (out, to) = {
                            let mut s = lock(&st);
                            (decide(&mut s, &down_buf[..n], false), s.client)
                        };
                        if let Some(to) = to {
                            for d in out { let _ = front.send_to(&d, to).await; }
                        }
                    }
                }
            }
        });
        Ok(FaultProxy { addr, state, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the faults from now on.
    pub fn set(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// Points the proxy at a new server (a restarted one on another port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        lock(&self.state).upstream = upstream;
    }

    /// What it did so far.
    pub fn stats(&self) -> ProxyStats {
        lock(&self.state).stats
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decide(s: &mut State, datagram: &[u8], up: bool) -> Vec<Vec<u8>> {
    let f = s.faults;
    if f.blackhole || s.rng.u8(0..100) < f.drop_percent {
        s.stats.dropped += 1;
        return Vec::new();
    }
    let mut out = Vec::with_capacity(3);
    out.push(datagram.to_vec());
    if s.rng.u8(0..100) < f.duplicate_percent {
        s.stats.duplicated += 1;
        out.push(datagram.to_vec());
    }
    let held = if up { &mut s.held_up } else { &mut s.held_down };
    if let Some(earlier) = held.take() {
        // The held datagram goes after this one.
        out.push(earlier);
    } else if s.rng.u8(0..100) < f.reorder_percent {
        s.stats.reordered += 1;
        *held = out.pop();
    }
    s.stats.forwarded += out.len() as u64;
    out
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
