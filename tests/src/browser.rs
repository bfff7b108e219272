//! A real headless Chromium for browser tests, driven over W3C WebDriver by the system
//! `chromedriver` (Debian packages `chromium` and `chromium-driver`, installed by
//! `scripts/setup`).
//!
//! [`Browser::launch`] starts chromedriver on a free port (it picks one: `--port=0`) and opens a
//! session with a fresh profile. The WebDriver client is a few JSON requests over HTTP/1.1 on
//! loopback, so it needs no crate beyond tokio and serde_json.
//!
//! What a test gets:
//! - navigation, element look-up by CSS selector, real clicks and typing ([`Browser::click`],
//!   [`Browser::type_into`]), scripts ([`Browser::eval`]);
//! - [`Browser::wait_for`]: polls a JavaScript condition with a deadline (no sleeps);
//! - [`Browser::screenshot`]: PNGs written as test artifacts under
//!   `target/test-artifacts/browser/<name>/`, to be looked at;
//! - [`Browser::requested_urls`] and [`Browser::assert_offline`]: every URL the pages asked for
//!   (from Chromium's performance log), to prove that no request left 127.0.0.1. The browser is
//!   also started with every host name except 127.0.0.1 unresolvable, so a page that tries
//!   anyway fails in the test and leaks nothing;
//! - [`Browser::console_errors`]: JavaScript errors the pages logged.
//!
//! The browser and chromedriver are killed when the [`Browser`] is dropped.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    /// chromedriver; dropping it ends the browser.
    _driver: ChildGuard,
    port: u16,
    session: String,
    artifacts: PathBuf,
    /// The browser profile; removed when the browser goes.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a 1440×900 window. Screenshots go to
    /// `target/test-artifacts/browser/<artifacts>/`.
    ///
    /// # Errors
    /// When chromedriver or Chromium is missing (run `scripts/setup`) or does not start.
    pub async fn launch(artifacts: &str) -> anyhow::Result<Browser> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| Path::new("/usr/bin").join(name))
            .find(|p| p.exists())
            .context("no Chromium in /usr/bin (scripts/setup installs the `chromium` package)")?;
        let (driver, port) = start_chromedriver().await?;
        let profile = tempfile::tempdir().context("browser profile folder")?;
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1440,900".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--lang=zh-CN".to_owned(),
            // Nothing but loopback resolves: a page that reaches out fails here, never leaks.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium, "args": args},
                "goog:loggingPrefs": {"performance": "ALL", "browser": "ALL"},
                "pageLoadStrategy": "normal",
                "timeouts": {"script": 30_000, "pageLoad": 30_000, "implicit": 0},
            }}
        });
        let reply = request(port, "POST", "/session", Some(&caps))
            .await
            .context("chromedriver refused to open a session")?;
        let session = reply["sessionId"]
            .as_str()
            .context("no session id in chromedriver's answer")?
            .to_owned();
        let artifacts = artifacts_root().join(artifacts);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("create `{}`", artifacts.display()))?;
        Ok(Browser {
            _driver: driver,
            port,
            session,
            artifacts,
            _profile: profile,
        })
    }

    /// The folder screenshots are written to.
    pub fn artifacts(&self) -> &Path {
        &self.artifacts
    }

    /// Opens `url` and waits for the page to load.
    ///
    /// # Errors
    /// When the browser cannot load it.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "url", json!({ "url": url })).await?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) and returns what it returns.
    /// A returned promise is awaited.
    ///
    /// # Errors
    /// When the script throws.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.command(
            "POST",
            "execute/async",
            json!({
                "script": format!(
                    "const done = arguments[arguments.length - 1];\
                     Promise.resolve((function() {{ {script} }}).apply(null, \
                       Array.prototype.slice.call(arguments, 0, -1)))\
                       .then(v => done({{ok: v === undefined ? null : v}}), \
                             e => done({{err: String(e && e.stack || e)}}));"
                ),
                "args": args,
            }),
        )
        .await
        .and_then(|v| match v.get("err") {
            Some(e) => Err(anyhow!("script failed: {e}")),
            None => Ok(v["ok"].clone()),
        })
    }

    /// Polls `condition` (a JavaScript expression) every 50 ms until it is truthy, returning
    /// its value, or fails after `timeout` naming `what` and saving a screenshot.
    ///
    /// # Errors
    /// When the condition does not hold in time or the page's script throws.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: &str,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let v = self.eval(&format!("return ({condition});"), vec![]).await?;
            if is_truthy(&v) {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.screenshot(&format!("timeout-{}", slug(what))).await;
                bail!(
                    "timed out after {timeout:?} waiting for {what} (screenshot: {})",
                    shot.map_or_else(|e| e.to_string(), |p| p.display().to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for an element matching `css` and clicks it (a real click: the
    /// element must be visible and not covered).
    ///
    /// # Errors
    /// When no such element appears or the click is refused.
    pub async fn click(&self, css: &str, timeout: Duration) -> anyhow::Result<()> {
        let el = self.find(css, timeout).await?;
        self.command("POST", &format!("element/{el}/click"), json!({}))
            .await
            .with_context(|| format!("click `{css}`"))?;
        Ok(())
    }

    /// Waits for an element matching `css`, clears it and types `text` into it.
    ///
    /// # Errors
    /// When no such element appears or it takes no input.
    pub async fn type_into(&self, css: &str, text: &str, timeout: Duration) -> anyhow::Result<()> {
        let el = self.find(css, timeout).await?;
        self.command("POST", &format!("element/{el}/clear"), json!({}))
            .await?;
        self.command(
            "POST",
            &format!("element/{el}/value"),
            json!({ "text": text }),
        )
        .await
        .with_context(|| format!("type into `{css}`"))?;
        Ok(())
    }

    /// The visible text of the first element matching `css`, waiting up to `timeout` for it.
    ///
    /// # Errors
    /// When no such element appears.
    pub async fn text(&self, css: &str, timeout: Duration) -> anyhow::Result<String> {
        let el = self.find(css, timeout).await?;
        let v = self
            .command("GET", &format!("element/{el}/text"), Value::Null)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the viewport as `<artifacts>/<name>.png` and returns its path.
    ///
    /// # Errors
    /// When the browser cannot take it or the file cannot be written.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let v = self.command("GET", "screenshot", Value::Null).await?;
        let png = base64_decode(v.as_str().context("screenshot is not a string")?)?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("write `{}`", path.display()))?;
        Ok(path)
    }

    /// Every URL the pages asked for since the last call (Chromium's performance log:
    /// `Network.requestWillBeSent` and WebSocket opens), in order.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn requested_urls(&self) -> anyhow::Result<Vec<String>> {
        let entries = self
            .command("POST", "se/log", json!({ "type": "performance" }))
            .await?;
        let mut urls = Vec::new();
        for entry in entries.as_array().into_iter().flatten() {
            let Some(text) = entry["message"].as_str() else {
                continue;
            };
            let Ok(msg) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let m = &msg["message"];
            let url = match m["method"].as_str() {
                Some("Network.requestWillBeSent") => m["params"]["request"]["url"].as_str(),
                Some("Network.webSocketCreated") => m["params"]["url"].as_str(),
                _ => None,
            };
            if let Some(u) = url {
                urls.push(u.to_owned());
            }
        }
        Ok(urls)
    }

    /// Fails unless every URL requested since the last look stayed on 127.0.0.1 (or was a
    /// `data:`/`blob:` URL made in the page). Returns how many were checked.
    ///
    /// # Errors
    /// Names the URLs that would have left the machine.
    pub async fn assert_offline(&self) -> anyhow::Result<usize> {
        let urls = self.requested_urls().await?;
        let outside: Vec<&String> = urls.iter().filter(|u| !is_loopback_url(u)).collect();
        if !outside.is_empty() {
            bail!("pages requested URLs off 127.0.0.1: {outside:?}");
        }
        Ok(urls.len())
    }

    /// JavaScript errors (log level SEVERE) the pages logged since the last call; failed loads
    /// (a 404, a refused 403) are the test's business and are left out.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let entries = self
            .command("POST", "se/log", json!({ "type": "browser" }))
            .await?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect())
    }

    /// Closes the session (Chromium exits) and stops chromedriver.
    pub async fn quit(self) {
        let path = format!("/session/{}", self.session);
        let _ = request(self.port, "DELETE", &path, None).await;
        // Drop stops chromedriver.
    }

    async fn find(&self, css: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self
                .command(
                    "POST",
                    "elements",
                    json!({ "using": "css selector", "value": css }),
                )
                .await?;
            if let Some(id) = found
                .as_array()
                .and_then(|a| a.first())
                .and_then(|e| e[ELEMENT_KEY].as_str())
            {
                return Ok(id.to_owned());
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.screenshot(&format!("missing-{}", slug(css))).await;
                bail!(
                    "no element `{css}` after {timeout:?} (screenshot: {})",
                    shot.map_or_else(|e| e.to_string(), |p| p.display().to_string())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let path = format!("/session/{}/{path}", self.session);
        let body = (!body.is_null()).then_some(body);
        request(self.port, method, &path, body.as_ref()).await
    }
}

/// chromedriver, killed when dropped (it takes its Chromium down with it).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts chromedriver on a free loopback port and waits until it answers `/status`. (Its
/// "started on port" line cannot be relied on: stdout to a pipe is block-buffered.) Another
/// process may take the port between the probe and the start; then chromedriver exits and a
/// new port is tried.
async fn start_chromedriver() -> anyhow::Result<(ChildGuard, u16)> {
    for _ in 0..3 {
        let port = crate::free_port()?;
        let mut child = ChildGuard(
            Command::new("chromedriver")
                .args([format!("--port={port}"), "--log-level=SEVERE".to_owned()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context(
                    "failed to start chromedriver (scripts/setup installs `chromium-driver`)",
                )?,
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = request(port, "GET", "/status", None).await
                && v["ready"] == true
            {
                return Ok((child, port));
            }
            if child.0.try_wait()?.is_some() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    bail!("chromedriver did not start (three tries)")
}

/// One WebDriver request; returns the `value` of the answer. Loopback and short, so it runs
/// on the blocking pool with plain `std::net`.
async fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // chromedriver keeps the connection open whatever the request says: read the head, then
    // exactly Content-Length bytes (or chunks).
    let (head, payload) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(String, Vec<u8>)> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(120)))?;
            stream.write_all(head.as_bytes())?;
            stream.write_all(body.as_bytes())?;
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 {
                    bail!("chromedriver closed the connection mid-answer");
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let lower = head.to_ascii_lowercase();
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let mut payload = Vec::new();
            match length {
                Some(n) => {
                    payload.resize(n, 0);
                    reader.read_exact(&mut payload)?;
                }
                None if lower.contains("transfer-encoding: chunked") => loop {
                    let mut size = String::new();
                    reader.read_line(&mut size)?;
                    let n = usize::from_str_radix(size.trim(), 16).context("bad chunk size")?;
                    let mut chunk = vec![0; n + 2];
                    reader.read_exact(&mut chunk)?;
                    if n == 0 {
                        break;
                    }
                    payload.extend_from_slice(&chunk[..n]);
                },
                None => {
                    reader.read_to_end(&mut payload)?;
                }
            }
            Ok((head, payload))
        })
        .await
        .context("join a webdriver request")?
        .context("webdriver request to chromedriver failed")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("chromedriver sent a bad status line")?;
    let v: Value = serde_json::from_slice(&payload)
        .with_context(|| format!("chromedriver answered {method} {path} with malformed JSON"))?;
    if status >= 400 {
        bail!(
            "webdriver {method} {path}: {} ({})",
            v["value"]["error"],
            v["value"]["message"]
        );
    }
    Ok(v["value"].clone())
}

/// `target/test-artifacts/browser` of this workspace (or of `CARGO_TARGET_DIR`).
fn artifacts_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("test-artifacts")
        .join("browser")
}

/// True for URLs that stay on this machine: network URLs (`http`, `https`, `ws`, `wss`, `ftp`)
/// to 127.0.0.1, and URLs served inside the browser (`data:`, `blob:`, `about:`, `chrome:` —
/// Chromium's own start page loads those).
pub fn is_loopback_url(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    if !["http", "https", "ws", "wss", "ftp"].contains(&scheme.to_ascii_lowercase().as_str()) {
        return true;
    }
    let Some(rest) = rest.strip_prefix("//") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    host == "127.0.0.1" || host.starts_with("127.0.0.1:")
}

fn is_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect()
}

fn base64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        let mut len = 0;
        for &c in chunk {
            if c == b'=' {
                break;
            }
            n = (n << 6) | val(c).context("bad base64 in a screenshot")?;
            len += 1;
        }
        n <<= 6 * (4 - len);
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..len.max(1)]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_and_page_made_urls_count_as_offline() {
        assert!(is_loopback_url("http://127.0.0.1:8080/api/v1/cases"));
        assert!(is_loopback_url("ws://127.0.0.1:9/x"));
        assert!(is_loopback_url("data:image/png;base64,AAAA"));
        assert!(is_loopback_url("blob:http://127.0.0.1:1/abc"));
        assert!(is_loopback_url("chrome://resources/js/util.js"));
        assert!(!is_loopback_url("https://tile.openstreetmap.org/1/1/1.png"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example/"));
        assert!(!is_loopback_url("http://localhost:8080/"));
        assert!(!is_loopback_url("http://u@example.org/"));
    }

    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    }
}
