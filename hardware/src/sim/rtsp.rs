//! A test RTSP camera (feature `rtsp-sim`): serves a clip, a still image, a test pattern or a
//! stream of an unsupported codec at `rtsp://127.0.0.1:<free port>/cam` with gst-rtsp-server,
//! and can be stopped and restarted on the same port by a test.
//!
//! Main type: [`TestCamera`]. Its GLib main loop runs on one named thread (`rtsp-sim`); the
//! media pipelines run on GStreamer's own threads. For encoded media (a still, the pattern) the
//! factory is shared, so any number of clients cost one encoder (what a benchmark of many
//! streams wants from its source). A clip is only repacketised, which costs next to nothing,
//! and a file is seekable: shared, each client's PLAY (rtspsrc asks for `Range: npt=0-`) would
//! seek every other client's stream, and concurrent PLAYs deadlocked gst-rtsp-server 1.22 (a
//! seek waiting for its streams to block while the main loop waited for the media's lock). So
//! each client of a clip gets its own media, from the clip's start.
//!
//! This is a simulator for tests, benchmarks and demos: production code must not use it.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;
use rtsp::glib;

/// What the test camera serves.
#[derive(Debug, Clone, PartialEq)]
pub enum TestMedia {
    /// An H.264 MP4 file, repacketised without re-encoding, played once at its own rate (from
    /// its start for each client).
    Clip {
        /// The file.
        path: PathBuf,
    },
    /// A PNG still, frozen and encoded as H.264 at `fps`, scaled to `width_px` x `height_px`
    /// (even numbers: the encoder needs them).
    Still {
        /// The PNG file.
        path: PathBuf,
        /// Frames per second.
        fps: u32,
        /// Encoded width.
        width_px: u32,
        /// Encoded height.
        height_px: u32,
    },
    /// A moving `videotestsrc` ball encoded as H.264.
    Pattern {
        /// Width.
        width_px: u32,
        /// Height.
        height_px: u32,
        /// Frames per second.
        fps: u32,
    },
    /// Motion JPEG over RTP: a stream a camera configured for H.264 cannot decode.
    Mjpeg,
}

/// Why the test camera could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtspSimError {
    /// GStreamer could not be initialised.
    #[error("failed to initialise GStreamer")]
    Init(#[source] glib::Error),
    /// The server could not listen (port taken, ...).
    #[error("failed to start the RTSP server on port {port}")]
    Attach {
        /// The port asked for (0: any).
        port: u16,
        /// GStreamer's error.
        #[source]
        source: glib::BoolError,
    },
    /// The server has no mount points (a broken gst-rtsp-server install).
    #[error("the RTSP server has no mount points")]
    NoMountPoints,
    /// The main-loop thread could not be started or answered no more.
    #[error("the RTSP server thread failed")]
    Thread,
    /// A path cannot be put in a launch description.
    #[error("path `{}` contains a control character", path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
    },
}

/// A running (or stopped) test RTSP camera.
#[derive(Debug)]
pub struct TestCamera {
    launch: String,
    /// One media for all clients (encoded media), or one per client (a clip).
    shared: bool,
    port: u16,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    /// The server and its listening source while serving; `None` while stopped.
    serving: Option<(rtsp::RTSPServer, glib::SourceId)>,
    /// `(user, password)` a client must give (RTSP basic authentication); `None`: anyone.
    credentials: Option<(String, String)>,
}

impl TestCamera {
    /// Starts serving `media` on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// [`RtspSimError`] when GStreamer or the server cannot start.
    pub fn start(media: TestMedia) -> Result<TestCamera, RtspSimError> {
        TestCamera::start_with(media, None)
    }

    /// Starts serving `media` to clients that give `user` and `password` only, as a real
    /// camera does (RTSP basic authentication).
    ///
    /// # Errors
    /// As [`TestCamera::start`].
    pub fn start_with_credentials(
        media: TestMedia,
        user: &str,
        password: &str,
    ) -> Result<TestCamera, RtspSimError> {
        TestCamera::start_with(media, Some((user.to_owned(), password.to_owned())))
    }

    fn start_with(
        media: TestMedia,
        credentials: Option<(String, String)>,
    ) -> Result<TestCamera, RtspSimError> {
        gstreamer::init().map_err(RtspSimError::Init)?;
        let launch = launch_of(&media)?;
        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        let thread = {
            let (context, main_loop) = (context.clone(), main_loop.clone());
            std::thread::Builder::new()
                .name("rtsp-sim".into())
                .spawn(move || {
                    // invariant: the context is new and owned by no other thread, so acquiring
                    // it cannot fail; if it did, the loop would not run and `serve` would time
                    // out in the caller's test.
                    let _ = context.with_thread_default(|| main_loop.run());
                })
                .map_err(|_| RtspSimError::Thread)?
        };
        let mut camera = TestCamera {
            launch,
            shared: !matches!(media, TestMedia::Clip { .. }),
            port: 0,
            context,
            main_loop,
            thread: Some(thread),
            serving: None,
            credentials,
        };
        camera.serve()?;
        Ok(camera)
    }

    /// The URL clients use.
    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// The port (kept across stop and restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops listening and disconnects every client, as a camera losing power would. Idempotent.
    pub fn stop(&mut self) {
        let Some((server, source)) = self.serving.take() else {
            return;
        };
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let context = self.context.clone();
        self.context.invoke(move || {
            // Source ids are per context: look it up in ours (`SourceId::remove` searches the
            // default context).
            if let Some(source) = context.find_source_by_id(&source) {
                source.destroy();
            }
            server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            // The media pipelines stop with their last client.
            let _ = done_tx.send(());
        });
        let _ = done_rx.recv();
    }

    /// Serves again on the same port after [`TestCamera::stop`]. No-op while serving.
    ///
    /// # Errors
    /// [`RtspSimError::Attach`] when the port cannot be bound again.
    pub fn restart(&mut self) -> Result<(), RtspSimError> {
        if self.serving.is_some() {
            return Ok(());
        }
        self.serve()
    }

    fn serve(&mut self) -> Result<(), RtspSimError> {
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&self.port.to_string());
        let mounts = server.mount_points().ok_or(RtspSimError::NoMountPoints)?;
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&self.launch);
        factory.set_shared(self.shared);
        if let Some((user, password)) = &self.credentials {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), "viewer")
                .build();
            auth.add_basic(&rtsp::RTSPAuth::make_basic(user, password), &token);
            server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gstreamer::Structure::builder("viewer")
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS.as_str(), true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT.as_str(), true)
                    .build(),
            );
        }
        mounts.add_factory("/cam", factory);
        let source = server
            .attach(Some(&self.context))
            .map_err(|source| RtspSimError::Attach {
                port: self.port,
                source,
            })?;
        let port = u16::try_from(server.bound_port()).map_err(|_| RtspSimError::Thread)?;
        self.port = port;
        self.serving = Some((server, source));
        Ok(())
    }
}

impl Drop for TestCamera {
    fn drop(&mut self) {
        self.stop();
        self.main_loop.quit();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The media factory's launch line for `media`.
fn launch_of(media: &TestMedia) -> Result<String, RtspSimError> {
    const X264: &str = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 option-string=scenecut=0 ! video/x-h264,profile=constrained-baseline";
    const PAY: &str = "rtph264pay name=pay0 pt=96 config-interval=-1";
    Ok(match media {
        TestMedia::Clip { path } => format!(
            "( filesrc location={} ! qtdemux ! h264parse ! {PAY} )",
            quoted(path)?
        ),
        TestMedia::Still {
            path,
            fps,
            width_px,
            height_px,
        } => format!(
            "( filesrc location={} ! pngdec ! videoconvert ! videoscale ! video/x-raw,width={width_px},height={height_px} ! imagefreeze ! video/x-raw,framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! {X264} ! {PAY} )",
            quoted(path)?
        ),
        TestMedia::Pattern {
            width_px,
            height_px,
            fps,
        } => format!(
            "( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width_px},height={height_px},framerate={fps}/1 ! videoconvert ! video/x-raw,format=I420 ! {X264} ! {PAY} )"
        ),
        TestMedia::Mjpeg => "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=10/1 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )".to_owned(),
    })
}

/// `path` quoted for a launch description (see [`crate::camera::quote`]).
fn quoted(path: &Path) -> Result<String, RtspSimError> {
    crate::camera::quote(&path.to_string_lossy(), "path").map_err(|_| RtspSimError::BadPath {
        path: path.to_owned(),
    })
}
