//! Frames: a big-endian u32 payload length, then a MessagePack payload with named fields.
//!
//! [`Codec::decode`] answers `Ok(None)` when the buffer does not yet hold a whole frame ("need
//! more bytes") and `Err` when the bytes can never become a message ("malformed"). A length over
//! the maximum is rejected from the 4-byte header alone, before anything is allocated, so a
//! hostile or broken peer cannot make the reader buffer gigabytes.
//!
//! This module owns no socket and no buffer: readers keep their bytes and call
//! [`Codec::frame_len`] on the header and [`Codec::decode`] on what they have.

use serde::Deserialize;

use crate::message::Message;

/// Bytes in a frame header (the payload length, u32 big-endian).
pub const FRAME_HEADER_BYTES: usize = 4;

/// The default maximum payload length: 4 MiB. Event batches and evidence chunks are sized by
/// their senders to stay well below it.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;

/// Encodes and decodes frames with a maximum payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    max_frame_bytes: u32,
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message is longer than the maximum frame: split the batch or chunk.
    #[error("encoded `{kind}` message is {len} bytes, over the maximum frame of {max} bytes")]
    FrameTooLarge {
        /// The message type.
        kind: &'static str,
        /// Its encoded length.
        len: usize,
        /// The maximum.
        max: u32,
    },
    /// Serialization failed (a map key that is not a string, ...).
    #[error("failed to encode `{kind}` message")]
    Serialize {
        /// The message type.
        kind: &'static str,
        /// The serializer's error.
        #[source]
        source: rmp_serde::encode::Error,
    },
}

/// Why bytes could not be decoded into a message. Every variant means the stream is unusable
/// from here on: close the connection with `Bye { reason: ProtocolError }`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header announces a payload longer than the maximum.
    #[error("frame of {len} bytes is over the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u32,
        /// The maximum.
        max: u32,
    },
    /// The header announces an empty payload.
    #[error("frame has an empty payload")]
    EmptyFrame,
    /// The payload is not a valid message.
    #[error("malformed frame payload")]
    Malformed {
        /// The deserializer's error.
        #[source]
        source: rmp_serde::decode::Error,
    },
    /// The payload holds a message followed by more bytes.
    #[error("frame payload has {extra} trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

impl Codec {
    /// A codec that refuses payloads over `max_frame_bytes`.
    pub const fn new(max_frame_bytes: u32) -> Self {
        Codec { max_frame_bytes }
    }

    /// The maximum payload length.
    pub const fn max_frame_bytes(&self) -> u32 {
        self.max_frame_bytes
    }

    /// Appends one frame holding `msg` to `out`. On error `out` is left as it was.
    ///
    /// # Errors
    /// [`EncodeError::FrameTooLarge`] when the payload exceeds the maximum;
    /// [`EncodeError::Serialize`] when serialization fails.
    pub fn encode(&self, msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        if let Err(source) = rmp_serde::encode::write_named(out, msg) {
            out.truncate(start);
            return Err(EncodeError::Serialize {
                kind: msg.kind(),
                source,
            });
        }
        let len = out.len() - start - FRAME_HEADER_BYTES;
        match u32::try_from(len) {
            Ok(len32) if len32 <= self.max_frame_bytes => {
                out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&len32.to_be_bytes());
                Ok(())
            }
            _ => {
                out.truncate(start);
                Err(EncodeError::FrameTooLarge {
                    kind: msg.kind(),
                    len,
                    max: self.max_frame_bytes,
                })
            }
        }
    }

    /// Encodes `msg` into a new buffer.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    pub fn encode_to_vec(&self, msg: &Message) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(msg, &mut out)?;
        Ok(out)
    }

    /// The payload length a frame header announces, checked against the maximum. A stream reader
    /// calls this on the first 4 bytes, then reads exactly that many more.
    ///
    /// # Errors
    /// [`DecodeError::FrameTooLarge`] or [`DecodeError::EmptyFrame`].
    pub fn frame_len(&self, header: [u8; FRAME_HEADER_BYTES]) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(header);
        if len > self.max_frame_bytes {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if len == 0 {
            return Err(DecodeError::EmptyFrame);
        }
        // invariant: u32 always fits usize on the 32- and 64-bit targets we build for.
        Ok(len as usize)
    }

    /// Decodes the first frame in `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a frame (read more and call again), or
    /// `Ok(Some((message, consumed)))` where `consumed` is the frame's total length.
    ///
    /// # Errors
    /// A [`DecodeError`] when the bytes are not a valid frame; they never will be.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
        let Some(header) = buf.first_chunk::<FRAME_HEADER_BYTES>() else {
            return Ok(None);
        };
        let len = self.frame_len(*header)?;
        let Some(payload) = buf[FRAME_HEADER_BYTES..].get(..len) else {
            return Ok(None);
        };
        let msg = self.decode_payload(payload)?;
        Ok(Some((msg, FRAME_HEADER_BYTES + len)))
    }

    /// Decodes a payload whose header was already checked with [`Codec::frame_len`].
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] or [`DecodeError::TrailingBytes`].
    pub fn decode_payload(&self, payload: &[u8]) -> Result<Message, DecodeError> {
        // A reader over a cursor grows its buffers only as bytes actually arrive, so a declared
        // length larger than the payload fails with end-of-input instead of allocating.
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(payload));
        let msg =
            Message::deserialize(&mut de).map_err(|source| DecodeError::Malformed { source })?;
        // invariant: the position never exceeds the payload length, which is a usize.
        let extra = payload.len() - de.position() as usize;
        if extra != 0 {
            return Err(DecodeError::TrailingBytes { extra });
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Seq;
    use crate::message::{Ack, Bye, ByeReason};

    fn ack(n: u64) -> Message {
        Message::Ack(Ack { up_to: Seq(n) })
    }

    #[test]
    fn partial_frames_ask_for_more_bytes() {
        let codec = Codec::default();
        let frame = codec.encode_to_vec(&ack(7)).unwrap();
        for cut in 0..frame.len() {
            assert!(
                codec.decode(&frame[..cut]).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let (msg, used) = codec.decode(&frame).unwrap().unwrap();
        assert_eq!(msg, ack(7));
        assert_eq!(used, frame.len());
    }

    #[test]
    fn two_frames_in_one_buffer_decode_one_at_a_time() {
        let codec = Codec::default();
        let mut buf = Vec::new();
        codec.encode(&ack(1), &mut buf).unwrap();
        codec.encode(&ack(2), &mut buf).unwrap();
        let (first, used) = codec.decode(&buf).unwrap().unwrap();
        let (second, used2) = codec.decode(&buf[used..]).unwrap().unwrap();
        assert_eq!((first, second), (ack(1), ack(2)));
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn oversized_header_is_rejected_without_the_payload() {
        let codec = Codec::new(1024);
        let header = 1025u32.to_be_bytes();
        assert!(matches!(
            codec.decode(&header),
            Err(DecodeError::FrameTooLarge {
                len: 1025,
                max: 1024
            })
        ));
        assert!(matches!(
            codec.decode(&[0, 0, 0, 0]),
            Err(DecodeError::EmptyFrame)
        ));
    }

    #[test]
    fn encoding_over_the_maximum_fails_and_leaves_the_buffer_alone() {
        let codec = Codec::new(16);
        let mut out = vec![1, 2, 3];
        let big = Message::Bye(Bye {
            reason: ByeReason::Shutdown,
            message: Some("x".repeat(64)),
        });
        assert!(matches!(
            codec.encode(&big, &mut out),
            Err(EncodeError::FrameTooLarge { .. })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_malformed() {
        let codec = Codec::default();
        let mut frame = codec.encode_to_vec(&ack(3)).unwrap();
        frame.push(0xc0); // msgpack nil
        let len = u32::try_from(frame.len() - FRAME_HEADER_BYTES).unwrap();
        frame[..4].copy_from_slice(&len.to_be_bytes());
        assert!(matches!(
            codec.decode(&frame),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
    }

    #[test]
    fn unknown_message_types_and_fields_are_tolerated() {
        #[derive(serde::Serialize)]
        struct FromTheFuture {
            r#type: &'static str,
            shiny: u32,
        }
        #[derive(serde::Serialize)]
        struct AckWithExtra {
            r#type: &'static str,
            up_to: u64,
            window: u32,
        }
        let codec = Codec::default();
        let decode = |v: Vec<u8>| codec.decode_payload(&v).unwrap();
        let future = rmp_serde::to_vec_named(&FromTheFuture {
            r#type: "teleport",
            shiny: 1,
        })
        .unwrap();
        assert_eq!(decode(future), Message::Unknown);
        let extra = rmp_serde::to_vec_named(&AckWithExtra {
            r#type: "ack",
            up_to: 9,
            window: 4,
        })
        .unwrap();
        assert_eq!(decode(extra), ack(9));
    }
}
