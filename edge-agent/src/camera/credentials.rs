//! A camera's RTSP credentials from a file of their own (`source.credentials_path`), so that the
//! agent's config holds no secret: the file's first line is `user:password`, read when the
//! camera's pipeline is built and put into its URL (never logged: logs show the URL redacted).
//!
//! This module only reads the file and makes the URL; it must not log either.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use hardware::camera::{CameraSource, url_with_credentials};

/// Why a camera's credentials could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("failed to read the camera credentials file `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its first line is not `user:password`.
    #[error("camera credentials file `{}` must hold `user:password` on its first line", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The URL carries credentials too: one place only.
    #[error(
        "the camera URL carries credentials and credentials_path is set: keep them in the file only"
    )]
    Twice,
}

/// The source as the pipeline needs it: an RTSP source with a credentials file gets them in
/// its URL; any other source is returned as it is.
///
/// # Errors
/// [`CredentialsError`].
pub fn resolve(source: &CameraSource) -> Result<Cow<'_, CameraSource>, CredentialsError> {
    let CameraSource::Rtsp {
        url,
        tcp,
        latency_ms,
        tcp_timeout_ms,
        credentials_path: Some(path),
    } = source
    else {
        return Ok(Cow::Borrowed(source));
    };
    let (user, password) = read(path)?;
    let url = url_with_credentials(url, &user, &password).ok_or(CredentialsError::Twice)?;
    Ok(Cow::Owned(CameraSource::Rtsp {
        url,
        tcp: *tcp,
        latency_ms: *latency_ms,
        tcp_timeout_ms: *tcp_timeout_ms,
        credentials_path: None,
    }))
}

/// `user:password` from the first line of `path` (the password may hold `:`).
fn read(path: &Path) -> Result<(String, String), CredentialsError> {
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err(CredentialsError::Malformed {
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtsp(url: &str, credentials_path: Option<PathBuf>) -> CameraSource {
        CameraSource::Rtsp {
            url: url.into(),
            tcp: true,
            latency_ms: 200,
            tcp_timeout_ms: 5000,
            credentials_path,
        }
    }

    #[test]
    fn credentials_come_from_their_file_into_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cam.secret");
        std::fs::write(&file, "admin:pa:ss@1\n").unwrap();
        let source = rtsp("rtsp://10.0.0.5/101", Some(file.clone()));
        let resolved = resolve(&source).unwrap();
        let CameraSource::Rtsp {
            url,
            credentials_path,
            ..
        } = resolved.as_ref()
        else {
            panic!("{resolved:?}");
        };
        assert_eq!(url, "rtsp://admin:pa%3Ass%401@10.0.0.5/101");
        assert_eq!(credentials_path, &None);
        assert!(matches!(
            resolve(&rtsp("rtsp://u:p@10.0.0.5/101", Some(file))),
            Err(CredentialsError::Twice)
        ));
        std::fs::write(dir.path().join("bad"), "no colon here\n").unwrap();
        assert!(matches!(
            resolve(&rtsp("rtsp://10.0.0.5/101", Some(dir.path().join("bad")))),
            Err(CredentialsError::Malformed { .. })
        ));
        assert!(matches!(
            resolve(&rtsp(
                "rtsp://10.0.0.5/101",
                Some(dir.path().join("missing"))
            )),
            Err(CredentialsError::Read { .. })
        ));
        let plain = rtsp("rtsp://10.0.0.5/101", None);
        assert!(matches!(resolve(&plain).unwrap(), Cow::Borrowed(_)));
    }
}
