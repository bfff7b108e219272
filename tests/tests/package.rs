//! `make package`: the .deb files of edge-agent and hub, built by `scripts/package` from the debug
//! binaries cargo already built, are unpacked into a temporary root (`dpkg-deb -x`), and the
//! installed binaries are started from the installed configuration as their systemd units start
//! them. Only the paths change: /etc and /var/lib point into the temporary root, and the fixed
//! ports of the shipped configuration become free ones. Each binary speaks systemd's notify
//! protocol to a socket the test holds, as under `Type=notify` with a watchdog (ready, pets,
//! stopping); each unit's sandbox exposure (`systemd-analyze security --offline`) is printed and
//! held to at most 3.0; the maintainer scripts are there and parse.
//!
//! Why not `dpkg -i` here: it would install system users and files into this machine's /etc and
//! /var/lib on every test run, and the shipped hub configuration binds fixed ports (8080, 4433)
//! that another test may hold. Installing with `dpkg -i` was verified by hand (README,
//! "Installing the packages").
#![allow(clippy::unwrap_used)] // test code

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A process killed (SIGKILL) if the test ends before it stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `ExecStart=` command line of a unit file, split on spaces.
fn exec_start(unit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(unit).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in {}", unit.display()));
    line.split_whitespace().map(str::to_owned).collect()
}

/// `systemd-analyze verify` on a copy of `unit` whose ExecStart points into `root` (the tool
/// checks that the command exists). Skipped where the tool is missing.
/// The `Environment=NAME=VALUE` settings of a unit, as systemd gives them to the service.
fn environment(unit: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(unit)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn verify_unit(root: &Path, unit: &Path) {
    let Ok(tool) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: unit check skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit)
        .unwrap()
        .replace("ExecStart=/", &format!("ExecStart={}/", root.display()));
    let copy = dir.path().join(unit.file_name().unwrap());
    std::fs::write(&copy, text).unwrap();
    let out = Command::new(tool)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {}: {}",
        unit.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `systemd-analyze security --offline=true` of `unit`: its overall exposure (0 = locked down,
/// 10 = exposed), with the report printed. `None` where the tool is missing.
fn exposure(unit: &Path) -> Option<f64> {
    let Ok(tool) = which("systemd-analyze") else {
        eprintln!("systemd-analyze not installed: exposure not measured");
        return None;
    };
    let out = Command::new(tool)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{report}");
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure in the report of {}", unit.display()));
    let level = line
        .split_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable exposure line `{line}`"));
    println!("{}: systemd exposure {level}", unit.display());
    Some(level)
}

/// The maintainer scripts of `deb`, each checked by `sh -n`: their names.
fn maintainer_scripts(deb: &Path) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(dir.path()));
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if ["preinst", "postinst", "prerm", "postrm"].contains(&name.as_str()) {
            run(Command::new("sh").arg("-n").arg(entry.path()));
            names.push(name);
        }
    }
    names.sort();
    names
}

/// A service manager's notification socket (sd_notify(3)): what the service sent, message by
/// message.
struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            socket,
            _dir: dir,
        }
    }

    /// The environment systemd gives a `Type=notify` service with `WatchdogSec=` (here 200 ms,
    /// so that pets come quickly).
    fn env(&self, cmd: &mut Command) {
        cmd.env("NOTIFY_SOCKET", &self.path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID");
    }

    /// Reads messages until one holds `line` (as a whole line); the messages read.
    fn wait_for(&self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no `{line}` within {WAIT:?}; got {seen:?}");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = message.lines().any(|l| l == line);
            seen.push(message);
            if found {
                return seen;
            }
        }
    }

    /// Waits for readiness, then for two watchdog pets after it.
    fn ready_and_alive(&self, what: &str) {
        let before = self.wait_for("READY=1");
        assert!(
            !before[..before.len() - 1]
                .iter()
                .any(|m| m.contains("WATCHDOG=1")),
            "{what} pets the watchdog before it is ready: {before:?}"
        );
        self.wait_for("WATCHDOG=1");
        self.wait_for("WATCHDOG=1");
    }
}

/// Whether `GET /metrics` on the loopback `port` answers 200 with metrics named `prefix`.
fn metrics_up(port: u16, prefix: &str) -> bool {
    e2e::http::request(([127, 0, 0, 1], port).into(), "GET", "/metrics", &[], b"")
        .is_ok_and(|a| a.status == 200 && a.text().contains(prefix))
}

/// Waits until `ready` holds, failing at once when the process exits meanwhile.
fn wait_until(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) {
    e2e::wait_blocking(WAIT, what, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what}: the process exited"
        );
        ready().then_some(())
    })
    .unwrap();
}

/// SIGTERM (what systemd sends), then the exit status and the log.
fn terminate(mut child: Running, log: &Path) -> (std::process::ExitStatus, String) {
    run(Command::new("kill").args(["-TERM", &child.0.id().to_string()]));
    let status = child.0.wait().unwrap();
    (status, std::fs::read_to_string(log).unwrap())
}

#[test]
fn the_packages_unpack_and_their_binaries_start_from_the_installed_configuration() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let agent_bin = e2e::binary("edge-agent");
    let hub_bin = e2e::binary("hub");
    assert_eq!(agent_bin.parent(), hub_bin.parent());
    let work = tempfile::tempdir().unwrap();
    let debs = work.path().join("debs");
    run(Command::new(repo.join("scripts/package"))
        .args(["--profile", "debug", "--fast", "--out"])
        .arg(&debs)
        .env("PACKAGE_BIN_DIR", agent_bin.parent().unwrap()));

    // Unpack both into one root, as dpkg would place them.
    let root = work.path().join("root");
    for name in ["edge-agent", "hub"] {
        let deb = std::fs::read_dir(&debs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.starts_with(&format!("{name}_")) && f.ends_with(".deb")
            })
            .unwrap_or_else(|| panic!("no {name} .deb in {}", debs.display()));
        let control = run(Command::new("dpkg-deb").arg("--field").arg(&deb));
        let control = String::from_utf8_lossy(&control.stdout).into_owned();
        assert!(control.contains(&format!("Package: {name}\n")), "{control}");
        assert!(control.contains("libc6"), "library dependencies: {control}");
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
        assert_eq!(
            maintainer_scripts(&deb),
            ["postinst", "postrm", "prerm"],
            "{name}: stopped before removal, restarted on upgrade, cleaned on purge"
        );
    }
    for path in [
        "usr/lib/edge-agent/edge-agent",
        "usr/lib/edge-agent/libonnxruntime.so.1.32.0",
        "usr/lib/edge-agent/zoo/coco-ssd/model.onnx",
        "usr/lib/edge-agent/zoo/coco-ssd/manifest.toml",
        "etc/edge-agent/edge-agent.toml",
        "usr/bin/hub",
        "etc/hub/hub.toml",
        "etc/hub/grid.geojson",
        "etc/hub/duties.csv",
        "etc/hub/calendar.toml",
    ] {
        assert!(
            root.join(path).is_file(),
            "{path} missing from the packages"
        );
    }
    assert_eq!(
        std::fs::read_link(root.join("usr/bin/edge-agent")).unwrap(),
        Path::new("../lib/edge-agent/edge-agent")
    );
    let units = root.join("lib/systemd/system");
    verify_unit(&root, &units.join("hub.service"));
    verify_unit(&root, &units.join("edge-agent.service"));
    if let Some(hub) = exposure(&units.join("hub.service")) {
        assert!(hub <= 3.0, "hub.service exposure {hub} > 3.0");
    }
    if let Some(agent) = exposure(&units.join("edge-agent.service")) {
        assert!(agent <= 3.0, "edge-agent.service exposure {agent} > 3.0");
    }
    for unit in ["hub.service", "edge-agent.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        for line in [
            "Type=notify",
            "WatchdogSec=",
            "UMask=0027",
            "NotifyAccess=main",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
    }

    // --- the hub, as hub.service starts it, after what its postinst does (`hub init`)
    let hub_cmd = exec_start(&units.join("hub.service"));
    assert_eq!(hub_cmd[..3], ["/usr/bin/hub", "serve", "--config"]);
    let api_port = e2e::free_port().unwrap();
    let ingest_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let installed = std::fs::read_to_string(root.join(hub_cmd[3].trim_start_matches('/'))).unwrap();
    assert!(installed.contains("api_listen_addr = \"127.0.0.1:8080\""));
    assert!(installed.contains("listen_addr = \"0.0.0.0:4433\""));
    let hub_config = work.path().join("hub.toml");
    std::fs::write(
        &hub_config,
        installed
            .replace("\"/etc/hub/", &format!("\"{}/etc/hub/", root.display()))
            .replace(
                "\"/var/lib/hub",
                &format!("\"{}/var/lib/hub", root.display()),
            )
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"))
            .replace("0.0.0.0:4433", &format!("127.0.0.1:{ingest_port}")),
    )
    .unwrap();
    let hub = root.join("usr/bin/hub");
    run(Command::new(&hub)
        .args(["init", "--data"])
        .arg(root.join("var/lib/hub")));
    let hub_log = work.path().join("hub.log");
    let notify = NotifySocket::new();
    let mut cmd = Command::new(&hub);
    cmd.args(&hub_cmd[1..3])
        .arg(&hub_config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&hub_log).unwrap());
    notify.env(&mut cmd);
    let mut hub_proc = Running(cmd.spawn().unwrap());
    notify.ready_and_alive("the hub");
    wait_until("the installed hub's /metrics", &mut hub_proc.0, || {
        metrics_up(api_port, "hub_")
    });
    let (status, log) = terminate(hub_proc, &hub_log);
    assert!(status.success(), "hub exit {status}: {log}");
    notify.wait_for("STOPPING=1");

    // --- the agent, as edge-agent.service starts it (no ORT_DYLIB_PATH: the library and the
    // model are found beside the binary)
    let agent_cmd = exec_start(&units.join("edge-agent.service"));
    assert_eq!(agent_cmd[..3], ["/usr/bin/edge-agent", "run", "--config"]);
    // Two malloc arenas: a camera pipeline rebuilt every minute otherwise leaves ~5 MiB of its
    // threads' arenas behind each time (measured; see the unit's comment).
    let agent_env = environment(&units.join("edge-agent.service"));
    assert!(
        agent_env.contains(&("MALLOC_ARENA_MAX".to_owned(), "2".to_owned())),
        "{agent_env:?}"
    );
    let installed =
        std::fs::read_to_string(root.join(agent_cmd[3].trim_start_matches('/'))).unwrap();
    let agent_config = work.path().join("edge-agent.toml");
    let metrics_port = e2e::free_port().unwrap();
    std::fs::write(
        &agent_config,
        installed
            .replace(
                "\"/var/lib/edge-agent",
                &format!("\"{}/var/lib/edge-agent", root.display()),
            )
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics_port}")),
    )
    .unwrap();
    let agent = root.join("usr/bin/edge-agent");
    let agent_log = work.path().join("agent.log");
    let notify = NotifySocket::new();
    let mut cmd = Command::new(&agent);
    cmd.args(&agent_cmd[1..3])
        .arg(&agent_config)
        .env_remove("ORT_DYLIB_PATH")
        .envs(agent_env)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&agent_log).unwrap());
    notify.env(&mut cmd);
    let mut agent_proc = Running(cmd.spawn().unwrap());
    notify.ready_and_alive("the agent");
    wait_until("the installed agent", &mut agent_proc.0, || {
        std::fs::read_to_string(&agent_log).is_ok_and(|l| l.contains("agent running"))
    });
    wait_until("the installed agent's /metrics", &mut agent_proc.0, || {
        metrics_up(metrics_port, "edge_agent_")
    });
    let detect = run(Command::new(&agent)
        .args(["detect", "--model", "coco-ssd"])
        .arg(e2e::media::media("motorcycle_left.png").unwrap())
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info"));
    assert!(String::from_utf8_lossy(&detect.stdout).contains("motorcycle"));
    let detect_log = String::from_utf8_lossy(&detect.stderr);
    let beside = root.join("usr/lib/edge-agent/libonnxruntime.so.1.32.0");
    assert!(
        detect_log.contains(&beside.display().to_string()),
        "ONNX Runtime not loaded from beside the binary: {detect_log}"
    );
    assert!(
        agent_proc.0.try_wait().unwrap().is_none(),
        "an agent with nothing configured yet keeps running until stopped"
    );
    let (status, log) = terminate(agent_proc, &agent_log);
    assert!(status.success(), "agent exit {status}: {log}");
    assert!(log.contains("shutdown requested"), "{log}");
    notify.wait_for("STOPPING=1");
    assert!(root.join("var/lib/edge-agent/events.db").is_file());
}
