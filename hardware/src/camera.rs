//! Camera source specs rendered to GStreamer pipeline descriptions.
//!
//! Main types: [`CameraSource`] (RTSP, file, V4L2 or a test pattern), [`FrameSpec`] (the frames
//! the agent wants: size, rate, appsink name) and [`render`], which joins them with a
//! [`BoardProfile`] into one `gst-launch` style description:
//!
//! ```text
//! source ! depay/parse ! decoder ! videorate (drop only, max detect fps) ! videoscale ! caps(size)
//!        ! videoconvert ! caps(RGB) ! appsink (live: newest frame only, no clock sync;
//!                                              file: played at its rate, waits for its reader)
//! ```
//!
//! Scaling runs before the colour conversion (about 1.7x less CPU than the reverse) and the rate
//! limit runs right after the decoder, so only frames that will be looked at are scaled and
//! converted. When an element of the board's decoder chain is missing, [`render`] uses the
//! software decoder instead and reports the substitution, so the caller can warn once.
//!
//! This module is pure: it must not load GStreamer; whether an element exists is asked through
//! the `has_element` function the caller passes.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::board::{BoardProfile, Codec, SOFTWARE_H264, SOFTWARE_H265};

/// Where a camera's video comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CameraSource {
    /// An RTSP camera or NVR channel.
    Rtsp {
        /// `rtsp://host:port/path` (credentials in the URL are passed through, never logged by
        /// this crate).
        url: String,
        /// Interleave RTP over the RTSP TCP connection (default true: works through NAT and
        /// firewalls, and a dead server shows as end-of-stream at once).
        #[serde(default = "default_true")]
        tcp: bool,
        /// Jitter-buffer latency in milliseconds. Default 200.
        #[serde(default = "default_latency_ms")]
        latency_ms: u32,
        /// Give up on a silent TCP connection after this many milliseconds. Default 5000 (the
        /// element's own default is 20 s).
        #[serde(default = "default_tcp_timeout_ms")]
        tcp_timeout_ms: u32,
        /// A file holding the camera's `user:password` (its first line), so that the config
        /// file holds no secret; the URL then carries none. Default none.
        #[serde(default)]
        credentials_path: Option<PathBuf>,
    },
    /// A video file (MP4 or Matroska), played at its own rate.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A local V4L2 device (USB camera, capture card).
    V4l2 {
        /// Device node, e.g. `/dev/video0`.
        device: PathBuf,
    },
    /// A synthetic live pattern (`videotestsrc`), for bench tests and site checks.
    TestPattern {
        /// `videotestsrc` pattern name. Default `ball`.
        #[serde(default = "default_pattern")]
        pattern: String,
        /// Width in pixels. Default 1280.
        #[serde(default = "default_pattern_width")]
        width_px: u32,
        /// Height in pixels. Default 720.
        #[serde(default = "default_pattern_height")]
        height_px: u32,
        /// Frames per second. Default 30.
        #[serde(default = "default_pattern_fps")]
        fps: u32,
    },
}

/// The frames the agent wants out of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Width of the delivered RGB frames.
    pub width: NonZeroU32,
    /// Height of the delivered RGB frames.
    pub height: NonZeroU32,
    /// Most frames per second delivered (the detection rate); extra frames are dropped right
    /// after the decoder.
    pub max_fps: NonZeroU32,
    /// Name of the appsink element.
    pub sink_name: String,
}

/// A rendered pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The `gst-launch` style description.
    pub description: String,
    /// Decoder substitutions made because an element was missing.
    pub fallbacks: Vec<Fallback>,
}

/// A decoder chain replaced by the software decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The board's chain.
    pub wanted: &'static str,
    /// The element that was missing.
    pub missing: String,
    /// What is used instead.
    pub used: &'static str,
}

/// Why a pipeline description could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A URL or path contains characters that cannot be quoted safely (control characters).
    #[error("{what} contains a control character")]
    Unquotable {
        /// `url`, `path` or `device`.
        what: &'static str,
    },
    /// The RTSP URL does not start with `rtsp://` or `rtsps://`.
    #[error("`{url}` is not an rtsp:// or rtsps:// URL")]
    NotRtsp {
        /// The URL with any password removed.
        url: String,
    },
    /// An element the pipeline needs is not installed and has no fallback.
    #[error("GStreamer element `{element}` is not installed")]
    MissingElement {
        /// The element's factory name.
        element: String,
    },
    /// The test pattern's size or rate is zero.
    #[error("test pattern size and rate must be positive")]
    BadPattern,
}

impl CameraSource {
    /// Whether the source is live (a camera) rather than a file played at its own pace.
    pub fn is_live(&self) -> bool {
        !matches!(self, CameraSource::File { .. })
    }

    /// A description safe to log: RTSP credentials removed.
    pub fn redacted(&self) -> String {
        match self {
            CameraSource::Rtsp { url, .. } => redact_url(url),
            CameraSource::File { path } => path.display().to_string(),
            CameraSource::V4l2 { device } => device.display().to_string(),
            CameraSource::TestPattern { pattern, .. } => format!("test pattern `{pattern}`"),
        }
    }
}

/// Renders the pipeline for `source` on `profile`. `has_element` answers whether a GStreamer
/// element factory is installed; a missing board decoder falls back to software decode.
///
/// # Errors
/// [`RenderError`] for unquotable text, a non-RTSP URL, a missing element without fallback, or
/// a zero-sized test pattern.
pub fn render(
    source: &CameraSource,
    codec: Codec,
    profile: &BoardProfile,
    frames: &FrameSpec,
    has_element: &dyn Fn(&str) -> bool,
) -> Result<Rendered, RenderError> {
    let mut fallbacks = Vec::new();
    let mut required: Vec<&str> = vec!["videorate", "videoscale", "videoconvert", "appsink"];
    let (depay, parse) = match codec {
        Codec::H264 => ("rtph264depay", "h264parse"),
        Codec::H265 => ("rtph265depay", "h265parse"),
    };
    let mut decoder = || -> &'static str {
        let wanted = profile.decoder(codec);
        let software = match codec {
            Codec::H264 => SOFTWARE_H264,
            Codec::H265 => SOFTWARE_H265,
        };
        match elements_of(wanted).find(|e| !has_element(e)) {
            Some(missing) if wanted != software => {
                fallbacks.push(Fallback {
                    wanted,
                    missing: missing.to_owned(),
                    used: software,
                });
                software
            }
            _ => wanted,
        }
    };
    let head = match source {
        CameraSource::Rtsp {
            url,
            tcp,
            latency_ms,
            tcp_timeout_ms,
            ..
        } => {
            if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
                return Err(RenderError::NotRtsp {
                    url: redact_url(url),
                });
            }
            required.extend(["rtspsrc", depay, parse]);
            let protocols = if *tcp { "tcp" } else { "udp" };
            let tcp_timeout_us = u64::from(*tcp_timeout_ms) * 1000;
            format!(
                "rtspsrc location={} protocols={protocols} latency={latency_ms} tcp-timeout={tcp_timeout_us} ! {depay} ! {parse} ! {}",
                quote(url, "url")?,
                decoder()
            )
        }
        CameraSource::File { path } => {
            let demux = if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("mkv"))
            {
                "matroskademux"
            } else {
                "qtdemux"
            };
            required.extend(["filesrc", demux, parse]);
            format!(
                "filesrc location={} ! {demux} ! {parse} ! {}",
                quote(&path.to_string_lossy(), "path")?,
                decoder()
            )
        }
        CameraSource::V4l2 { device } => {
            required.extend(["v4l2src", "decodebin"]);
            format!(
                "v4l2src device={} ! decodebin",
                quote(&device.to_string_lossy(), "device")?
            )
        }
        CameraSource::TestPattern {
            pattern,
            width_px,
            height_px,
            fps,
        } => {
            if *width_px == 0 || *height_px == 0 || *fps == 0 {
                return Err(RenderError::BadPattern);
            }
            required.push("videotestsrc");
            format!(
                "videotestsrc is-live=true pattern={} ! video/x-raw,width={width_px},height={height_px},framerate={fps}/1",
                quote(pattern, "pattern")?
            )
        }
    };
    if let Some(missing) = required.into_iter().find(|e| !has_element(e)) {
        return Err(RenderError::MissingElement {
            element: missing.to_owned(),
        });
    }
    for fallback in &fallbacks {
        if !has_element(fallback.used) {
            return Err(RenderError::MissingElement {
                element: fallback.used.to_owned(),
            });
        }
    }
    // A live source must not be throttled to the pipeline clock: a late frame is still the
    // newest one, and the older one is dropped. A file is played at its own rate, so it syncs,
    // and nothing is gained by dropping its frames: a slow reader makes it wait instead, so
    // every frame the rate limit keeps reaches the agent.
    let live = source.is_live();
    let (sync, drop) = (!live, live);
    let description = format!(
        "{head} ! videorate drop-only=true max-rate={fps} ! videoscale ! video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! videoconvert ! video/x-raw,format=RGB ! appsink name={sink} max-buffers=1 drop={drop} sync={sync} emit-signals=false",
        fps = frames.max_fps,
        w = frames.width,
        h = frames.height,
        sink = frames.sink_name,
    );
    Ok(Rendered {
        description,
        fallbacks,
    })
}

/// The element factory names in a chain like `nvv4l2decoder ! nvvidconv ! video/x-raw`.
fn elements_of(chain: &str) -> impl Iterator<Item = &str> {
    chain
        .split('!')
        .filter_map(|part| part.split_whitespace().next())
        .filter(|name| !name.contains('/'))
}

/// Double-quotes a property value for a launch description.
pub(crate) fn quote(value: &str, what: &'static str) -> Result<String, RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError::Unquotable { what });
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// `url` with `user` and `password` as its user information (percent-encoded, as RFC 3986
/// has it, so that `@`, `:` or `/` in a password cannot change the address). `None` when the
/// URL has no scheme or carries credentials already.
pub fn url_with_credentials(url: &str, user: &str, password: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    if rest[..authority_end].contains('@') {
        return None;
    }
    Some(format!(
        "{scheme}://{}:{}@{rest}",
        userinfo_escape(user),
        userinfo_escape(password)
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn userinfo_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `rtsp://user:secret@host/x` → `rtsp://user:***@host/x`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

fn default_true() -> bool {
    true
}

fn default_latency_ms() -> u32 {
    200
}

fn default_tcp_timeout_ms() -> u32 {
    5000
}

fn default_pattern() -> String {
    "ball".to_owned()
}

fn default_pattern_width() -> u32 {
    1280
}

fn default_pattern_height() -> u32 {
    720
}

fn default_pattern_fps() -> u32 {
    30
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Board;

    fn frames() -> FrameSpec {
        FrameSpec {
            width: NonZeroU32::new(640).unwrap(),
            height: NonZeroU32::new(360).unwrap(),
            max_fps: NonZeroU32::new(5).unwrap(),
            sink_name: "frames".into(),
        }
    }

    fn rtsp() -> CameraSource {
        CameraSource::Rtsp {
            url: "rtsp://admin:pw@10.0.0.5:554/Streaming/Channels/101".into(),
            tcp: true,
            latency_ms: 200,
            tcp_timeout_ms: 5000,
            credentials_path: None,
        }
    }

    fn everything(_: &str) -> bool {
        true
    }

    const TAIL: &str = " ! videorate drop-only=true max-rate=5 ! videoscale ! video/x-raw,width=640,height=360,pixel-aspect-ratio=1/1 ! videoconvert ! video/x-raw,format=RGB ! appsink name=frames max-buffers=1 drop=true sync=false emit-signals=false";

    #[test]
    fn generic_x86_rtsp_h264_renders_software_decode_with_scale_before_convert() {
        let r = render(
            &rtsp(),
            Codec::H264,
            &Board::GenericX86.profile(),
            &frames(),
            &everything,
        )
        .unwrap();
        assert_eq!(
            r.description,
            format!(
                "rtspsrc location=\"rtsp://admin:pw@10.0.0.5:554/Streaming/Channels/101\" protocols=tcp latency=200 tcp-timeout=5000000 ! rtph264depay ! h264parse ! avdec_h264{TAIL}"
            )
        );
        assert!(r.fallbacks.is_empty());
        let scale = r.description.find("videoscale").unwrap();
        let convert = r.description.find("videoconvert").unwrap();
        assert!(scale < convert);
    }

    #[test]
    fn each_board_renders_its_own_hardware_decoder() {
        let expected = [
            (
                Board::IntelVaapi,
                Codec::H264,
                "h264parse ! vaapih264dec ! videorate",
            ),
            (
                Board::IntelVaapi,
                Codec::H265,
                "h265parse ! vaapih265dec ! videorate",
            ),
            (
                Board::Jetson,
                Codec::H264,
                "h264parse ! nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420 ! videorate",
            ),
            (
                Board::Rk3588,
                Codec::H265,
                "rtph265depay ! h265parse ! mppvideodec ! videorate",
            ),
        ];
        for (board, codec, fragment) in expected {
            let r = render(&rtsp(), codec, &board.profile(), &frames(), &everything).unwrap();
            assert!(
                r.description.contains(fragment),
                "{board}: {}",
                r.description
            );
            assert!(r.description.ends_with(TAIL));
        }
    }

    #[test]
    fn a_missing_hardware_decoder_falls_back_to_software_and_says_so() {
        let no_nv = |e: &str| !e.starts_with("nv");
        let r = render(
            &rtsp(),
            Codec::H264,
            &Board::Jetson.profile(),
            &frames(),
            &no_nv,
        )
        .unwrap();
        assert!(r.description.contains("h264parse ! avdec_h264 ! videorate"));
        assert_eq!(
            r.fallbacks,
            [Fallback {
                wanted: "nvv4l2decoder ! nvvidconv ! video/x-raw,format=I420",
                missing: "nvv4l2decoder".into(),
                used: "avdec_h264",
            }]
        );
    }

    #[test]
    fn a_missing_element_without_fallback_is_an_error() {
        let no_rtsp = |e: &str| e != "rtspsrc";
        assert_eq!(
            render(
                &rtsp(),
                Codec::H264,
                &Board::GenericX86.profile(),
                &frames(),
                &no_rtsp
            ),
            Err(RenderError::MissingElement {
                element: "rtspsrc".into()
            })
        );
        let no_libav = |e: &str| !e.starts_with("avdec");
        assert!(matches!(
            render(
                &rtsp(),
                Codec::H264,
                &Board::Jetson.profile(),
                &frames(),
                &|e| no_libav(e) && !e.starts_with("nv")
            ),
            Err(RenderError::MissingElement { .. })
        ));
    }

    #[test]
    fn file_v4l2_and_pattern_sources_render() {
        let file = CameraSource::File {
            path: "/media/clip \"a\".mp4".into(),
        };
        let r = render(
            &file,
            Codec::H264,
            &Board::GenericX86.profile(),
            &frames(),
            &everything,
        )
        .unwrap();
        assert!(r.description.starts_with(
            "filesrc location=\"/media/clip \\\"a\\\".mp4\" ! qtdemux ! h264parse ! avdec_h264 ! videorate"
        ));
        assert!(
            r.description
                .ends_with("max-buffers=1 drop=false sync=true emit-signals=false"),
            "a file waits for its reader instead of dropping frames"
        );
        let v4l2 = CameraSource::V4l2 {
            device: "/dev/video0".into(),
        };
        let r = render(
            &v4l2,
            Codec::H264,
            &Board::Rk3588.profile(),
            &frames(),
            &everything,
        )
        .unwrap();
        assert!(
            r.description
                .starts_with("v4l2src device=\"/dev/video0\" ! decodebin ! videorate")
        );
        let pattern = CameraSource::TestPattern {
            pattern: "ball".into(),
            width_px: 1280,
            height_px: 720,
            fps: 30,
        };
        let r = render(
            &pattern,
            Codec::H264,
            &Board::GenericX86.profile(),
            &frames(),
            &everything,
        )
        .unwrap();
        assert_eq!(
            r.description,
            format!(
                "videotestsrc is-live=true pattern=\"ball\" ! video/x-raw,width=1280,height=720,framerate=30/1{TAIL}"
            )
        );
    }

    #[test]
    fn control_characters_and_non_rtsp_urls_are_refused() {
        let bad = CameraSource::Rtsp {
            url: "rtsp://x/\n! filesink location=/etc/passwd".into(),
            tcp: true,
            latency_ms: 0,
            tcp_timeout_ms: 0,
            credentials_path: None,
        };
        assert_eq!(
            render(
                &bad,
                Codec::H264,
                &Board::GenericX86.profile(),
                &frames(),
                &everything
            ),
            Err(RenderError::Unquotable { what: "url" })
        );
        let http = CameraSource::Rtsp {
            url: "http://user:pw@cam/x".into(),
            tcp: true,
            latency_ms: 0,
            tcp_timeout_ms: 0,
            credentials_path: None,
        };
        assert_eq!(
            render(
                &http,
                Codec::H264,
                &Board::GenericX86.profile(),
                &frames(),
                &everything
            ),
            Err(RenderError::NotRtsp {
                url: "http://user:***@cam/x".into()
            })
        );
    }

    #[test]
    fn redaction_hides_rtsp_passwords() {
        assert_eq!(redact_url("rtsp://a:b@h:554/p"), "rtsp://a:***@h:554/p");
        assert_eq!(redact_url("rtsp://h/p"), "rtsp://h/p");
    }

    #[test]
    fn credentials_from_a_file_are_escaped_into_the_url_and_never_doubled() {
        assert_eq!(
            url_with_credentials(
                "rtsp://10.0.0.5:554/Streaming/Channels/102",
                "admin",
                "p@ss:w/rd"
            )
            .as_deref(),
            Some("rtsp://admin:p%40ss%3Aw%2Frd@10.0.0.5:554/Streaming/Channels/102")
        );
        assert_eq!(
            url_with_credentials("rtsp://u:p@cam/x", "admin", "pw"),
            None
        );
        assert_eq!(url_with_credentials("cam/x", "admin", "pw"), None);
        let with = url_with_credentials("rtsp://cam/x", "admin", "s3cret").unwrap();
        assert_eq!(redact_url(&with), "rtsp://admin:***@cam/x");
    }
}
