//! TCP framing for Bulk and Active Leasequery: a 2-octet big-endian `message-size` that counts
//! the DHCPv6 message after it (not itself), then the message.

use super::Writer;
use super::error::{Error, ErrorKind, Result};
use super::message::MessageRepr;
use super::wire::CLIENT_SERVER_HEADER_LEN;

/// Length of the `message-size` prefix.
pub const FRAME_HEADER_LEN: usize = 2;

/// What [`FrameDecoder::decode`] found at the start of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'b> {
    /// A complete frame: the DHCPv6 message, and the octets (prefix included) to consume.
    Frame {
        /// The DHCPv6 message, without the prefix.
        message: &'b [u8],
        /// Octets the frame took in the input, prefix included.
        consumed: usize,
    },
    /// Not yet a complete frame: at least `needed` octets in all must be buffered first.
    Incomplete {
        /// The total octets (prefix included) the next frame needs.
        needed: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(usize),
}

/// An incremental frame decoder that tells "need more bytes" (a normal state) from
/// "malformed" (an error that should close the connection, decision D24).
///
/// The caller keeps unconsumed input and calls [`decode`](Self::decode) with the buffered bytes
/// starting at a frame boundary. Once the prefix has been read, its length is kept, so a frame
/// whose body arrives in pieces is checked once and reports exactly how much it still needs.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: State,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(usize::from(u16::MAX))
    }
}

impl FrameDecoder {
    /// A decoder that rejects messages longer than `max_len` octets (65535 at most by the
    /// framing itself) before anything is buffered for them.
    #[must_use]
    pub fn new(max_len: usize) -> Self {
        Self {
            state: State::Head,
            max_len,
        }
    }

    /// Looks for one frame at the start of `src`.
    ///
    /// Errors: `TooShort` for a declared length under 4 (no DHCPv6 message is that short),
    /// `FrameTooLong` above the limit. After an error the connection should be closed.
    pub fn decode<'b>(&mut self, src: &'b [u8]) -> Result<Decoded<'b>> {
        let len = match self.state {
            State::Body(len) => len,
            State::Head => {
                let Some(head) = src.get(..FRAME_HEADER_LEN) else {
                    return Ok(Decoded::Incomplete {
                        needed: FRAME_HEADER_LEN,
                    });
                };
                let len = usize::from(u16::from_be_bytes([
                    head.first().copied().unwrap_or(0),
                    head.get(1).copied().unwrap_or(0),
                ]));
                if len < CLIENT_SERVER_HEADER_LEN {
                    return Err(Error::new(ErrorKind::TooShort));
                }
                if len > self.max_len {
                    return Err(Error::new(ErrorKind::FrameTooLong));
                }
                self.state = State::Body(len);
                len
            }
        };
        let total = len.saturating_add(FRAME_HEADER_LEN);
        match src.get(FRAME_HEADER_LEN..total) {
            Some(message) => {
                self.state = State::Head;
                Ok(Decoded::Frame {
                    message,
                    consumed: total,
                })
            }
            None => Ok(Decoded::Incomplete { needed: total }),
        }
    }

    /// Splits the next complete frame off the front of `buf`, without copying. `Ok(None)` means
    /// more bytes are needed.
    pub fn decode_buf(&mut self, buf: &mut bytes::BytesMut) -> Result<Option<bytes::Bytes>> {
        match self.decode(buf)? {
            Decoded::Incomplete { needed } => {
                buf.reserve(needed.saturating_sub(buf.len()));
                Ok(None)
            }
            Decoded::Frame { consumed, .. } => {
                let mut frame = buf.split_to(consumed);
                let _prefix = frame.split_to(FRAME_HEADER_LEN);
                Ok(Some(frame.freeze()))
            }
        }
    }
}

/// The `message-size` prefix for a message of `len` octets, or `TooLong` above 65535.
pub fn frame_header(len: usize) -> Result<[u8; FRAME_HEADER_LEN]> {
    u16::try_from(len)
        .map(u16::to_be_bytes)
        .map_err(|_| Error::new(ErrorKind::TooLong))
}

/// Writes `msg` as one TCP frame (prefix and message) at the start of `buf`, which must hold
/// `msg.buffer_len() + 2` octets; returns the octets written.
pub fn encode_frame(msg: &MessageRepr<'_>, buf: &mut [u8]) -> Result<usize> {
    let mut w = Writer::new(buf);
    w.put(&frame_header(msg.buffer_len())?)?;
    msg.emit_to(&mut w)?;
    Ok(w.position())
}
