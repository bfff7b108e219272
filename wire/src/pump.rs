//! The control stream's pump: a reader task that decodes frames into a bounded inbox and a
//! writer task that encodes what the session queues. A stream half's `read_exact` and
//! `write_all` are not cancel safe, so neither may sit in a `select!`; each lives in a task of
//! its own, and the session selects on the channels.
//!
//! This module must not interpret messages: it moves frames, nothing else.

use std::time::Duration;

use protocol::{Codec, Message};
use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::frame::{FrameError, read_frame, write_frame};
use crate::telemetry::chain;

/// What the writer puts on the stream.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to encode.
    Message(Message),
    /// A frame encoded already (event batches, encoded off the executor where they are read).
    Frame(Vec<u8>),
}

impl From<Message> for Outgoing {
    fn from(msg: Message) -> Outgoing {
        Outgoing::Message(msg)
    }
}

/// The reader task; aborted when dropped.
#[derive(Debug)]
pub struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads frames from `recv` into a channel of `capacity` (a full channel stops the reading, so
/// the peer is slowed by QUIC flow control). The channel yields `Err` with a one-line reason
/// for a frame that does not decode (and ends after it); it closes when the stream ends or the
/// connection fails (logged at debug level: the connection's close says why).
pub fn spawn_reader(
    mut recv: RecvStream,
    codec: Codec,
    capacity: usize,
) -> (mpsc::Receiver<Result<Message, String>>, Reader) {
    let (tx, rx) = mpsc::channel(capacity);
    let task = tokio::spawn(
        async move {
            loop {
                let item = match read_frame(&mut recv, &codec).await {
                    Ok(Some(m)) => Ok(m),
                    Ok(None) => break,
                    Err(FrameError::Read(e)) => {
                        tracing::debug!(error = %e, "control stream ended");
                        break;
                    }
                    Err(e) => Err(chain(&e)),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    (rx, Reader(task))
}

/// The writer task.
#[derive(Debug)]
pub struct Writer(tokio::task::JoinHandle<()>);

impl Writer {
    /// Once every sender is dropped: waits up to `linger` for what is queued to be written and
    /// the stream finished.
    pub async fn finish(self, linger: Duration) {
        let _ = tokio::time::timeout(linger, self.0).await;
    }
}

/// Writes what is queued on the returned sender (of `capacity`) to `send`, in order, and
/// finishes the stream when every sender is dropped. A failed write ends the task (logged at
/// debug level); the session sees the connection close.
pub fn spawn_writer<T>(send: SendStream, codec: Codec, capacity: usize) -> (mpsc::Sender<T>, Writer)
where
    T: Into<Outgoing> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<T>(capacity);
    let task = tokio::spawn(
        async move {
            let mut send = send;
            while let Some(out) = rx.recv().await {
                let written = match out.into() {
                    Outgoing::Message(msg) => write_frame(&mut send, &codec, &msg).await,
                    Outgoing::Frame(bytes) => send.write_all(&bytes).await.map_err(Into::into),
                };
                if let Err(e) = written {
                    tracing::debug!(error = %chain(&e), "control stream write failed");
                    return;
                }
            }
            let _ = send.finish();
        }
        .in_current_span(),
    );
    (tx, Writer(task))
}
