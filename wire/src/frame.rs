//! Reading and writing protocol frames on QUIC streams.

use protocol::{Codec, DecodeError, FRAME_HEADER_BYTES, Message};
use quinn::{ReadExactError, RecvStream, SendStream};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream or connection failed.
    #[error("stream read failed")]
    Read(#[from] quinn::ReadExactError),
    /// The bytes are not a valid frame.
    #[error("peer sent an invalid frame")]
    Decode(#[from] DecodeError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
}

/// Reads one frame; `Ok(None)` when the stream ended cleanly between frames.
///
/// # Cancel safety
/// Not cancel safe: a cancelled read loses the bytes it consumed. Call it from a task of its own.
pub async fn read_frame(
    recv: &mut RecvStream,
    codec: &Codec,
) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(e) => return Err(e.into()),
    }
    let len = codec.frame_len(header)?;
    let mut payload = vec![0u8; len];
    match recv.read_exact(&mut payload).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(_)) => return Err(FrameError::Truncated),
        Err(e) => return Err(e.into()),
    }
    Ok(Some(codec.decode_payload(&payload)?))
}

/// Encodes and writes one frame.
///
/// # Errors
/// A description of what failed (encoding or the stream), for the log.
pub async fn write_frame(
    send: &mut SendStream,
    codec: &Codec,
    msg: &Message,
) -> Result<(), WriteError> {
    let buf = codec.encode_to_vec(msg)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Why a frame could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The message does not encode (too large, ...).
    #[error("message does not encode")]
    Encode(#[from] protocol::EncodeError),
    /// The stream failed.
    #[error("stream write failed")]
    Write(#[from] quinn::WriteError),
}
