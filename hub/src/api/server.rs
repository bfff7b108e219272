//! Serving the API over HTTP/1.1, plain or with TLS (rustls), with the limits a public-facing
//! server needs: a connection limit (connections over it are closed at once and counted), a
//! deadline for a request's head (slow-loris) and for the TLS handshake, a deadline for a
//! handler's answer (streams such as the server-sent events excepted), and the security
//! headers every answer carries (a strict Content-Security-Policy with `frame-ancestors
//! 'none'`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`).
//!
//! This module must not know the routes beyond which ones stream.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this.
    pub header_read_timeout: Duration,
    /// A handler must answer within this (streams excepted).
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What the server refused or cut short.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections closed on arrival because `max_connections` were open.
    pub connections_refused_total: AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failures_total: AtomicU64,
    /// Requests whose handler did not answer within `request_timeout`.
    pub timeouts_total: AtomicU64,
}

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A certificate or key file could not be read or holds no PEM item of its kind.
    #[error("`{}` holds no usable {what}", path.display())]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// Certificate or key.
        what: &'static str,
    },
    /// rustls refused them (a key that does not match the certificate, say).
    #[error("the API certificate and key are not usable together")]
    Rustls(#[source] rustls::Error),
}

/// A TLS acceptor for a PEM certificate chain and key (HTTP/1.1 by ALPN).
///
/// # Errors
/// [`TlsConfigError`].
pub fn tls_acceptor(
    cert_path: &Path,
    key_path: &Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsConfigError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .ok()
        .map(|i| i.filter_map(Result::ok).collect())
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(TlsConfigError::Pem {
            path: cert_path.to_owned(),
            what: "certificate",
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|_| TlsConfigError::Pem {
        path: key_path.to_owned(),
        what: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsConfigError::Rustls)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(TlsConfigError::Rustls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `cancel` fires, then lets open requests finish (for at
/// most `drain`).
///
/// # Errors
/// Only when the listener itself fails for good.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stats: Arc<HttpStats>,
    cancel: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // out of descriptors, say: wait a moment instead of spinning
                tracing::warn!(error = %e, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            stats
                .connections_refused_total
                .fetch_add(1, Ordering::Relaxed);
            drop(tcp);
            continue;
        };
        let Ok(service) = make.call(peer).await;
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let (tls, stats) = (tls.clone(), Arc::clone(&stats));
        tokio::spawn(async move {
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout);
                b
            };
            let served = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        limits.header_read_timeout,
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        _ => {
                            stats.tls_failures_total.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the drain time; closing them");
    }
    Ok(())
}

/// The deadline of a handler's answer (see [`HttpLimits::request_timeout`]); streams (the
/// server-sent events of `/api/v1/changes`) are left alone.
pub async fn answer_in_time(
    State((limit, stats)): State<(Duration, Arc<HttpStats>)>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/api/v1/changes" {
        return next.run(request).await;
    }
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            stats.timeouts_total.fetch_add(1, Ordering::Relaxed);
            super::ApiError::Unavailable("the request took too long".into()).into_response()
        }
    }
}

/// Adds the security headers to every answer (the policy from [`content_security_policy`]).
pub async fn security_headers(
    State(csp): State<Arc<HeaderValue>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, (*csp).clone());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The Content-Security-Policy of the hub: its own scripts only, images from itself (and
/// `tile_origin`), never framed.
pub fn content_security_policy(tile_origin: Option<&str>) -> HeaderValue {
    let tiles = tile_origin.map(|o| format!(" {o}")).unwrap_or_default();
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data: blob:{tiles}; media-src 'self' blob:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"))
}

/// The origin (`scheme://host[:port]`) of a tile URL template, if it has one.
pub fn origin_of(url_template: &str) -> Option<String> {
    let (scheme, rest) = url_template.split_once("://")?;
    let host = rest.split('/').next()?;
    let ok = matches!(scheme, "http" | "https")
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| format!("{scheme}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_origin_is_taken_from_its_template_and_nothing_odd_gets_into_the_policy() {
        assert_eq!(
            origin_of("https://tiles.example.cn:8443/{z}/{x}/{y}.png").as_deref(),
            Some("https://tiles.example.cn:8443")
        );
        assert_eq!(origin_of("javascript:alert(1)"), None);
        assert_eq!(origin_of("http://a b/{z}"), None);
        assert_eq!(origin_of("http://x;script-src */"), None);
        let csp = content_security_policy(Some("https://tiles.example.cn"));
        let csp = csp.to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("img-src 'self' data: blob: https://tiles.example.cn;"));
        assert!(csp.contains("script-src 'self';"));
    }
}
