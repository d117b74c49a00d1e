//! Message reprs: the client/server and relay headers with their typed options.

use core::fmt;
use core::net::Ipv6Addr;

use super::code::{MessageType, Xid};
use super::error::{Error, ErrorKind, Result};
use super::list::Options;
use super::wire::{CLIENT_SERVER_HEADER_LEN, RELAY_HEADER_LEN, field, read_addr, read_array};
use super::{Ctx, Writer};

/// The fixed header of a DHCPv6 message. The message type decides the format: RELAY-FORW and
/// RELAY-REPL use the relay header, every other type the client/server header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `msg-type` + 24-bit `transaction-id` (every leasequery message).
    ClientServer {
        /// `msg-type`; must not be a relay type.
        msg_type: MessageType,
        /// `transaction-id`.
        xid: Xid,
    },
    /// The 34-octet relay header (RELAY-FORW, RELAY-REPL).
    Relay {
        /// `msg-type`; must be RELAY-FORW or RELAY-REPL.
        msg_type: MessageType,
        /// `hop-count`.
        hop_count: u8,
        /// `link-address`.
        link_address: Ipv6Addr,
        /// `peer-address`.
        peer_address: Ipv6Addr,
    },
}

impl Header {
    /// `msg-type`.
    #[must_use]
    pub const fn msg_type(&self) -> MessageType {
        match self {
            Self::ClientServer { msg_type, .. } | Self::Relay { msg_type, .. } => *msg_type,
        }
    }

    /// The header's length on the wire.
    #[must_use]
    pub const fn len(&self) -> usize {
        match self {
            Self::ClientServer { .. } => CLIENT_SERVER_HEADER_LEN,
            Self::Relay { .. } => RELAY_HEADER_LEN,
        }
    }

    /// Never true: a header always has a type octet. Present for API symmetry with `len`.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        false
    }
}

/// A complete DHCPv6 message: header and options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageRepr<'a> {
    /// The fixed header.
    pub header: Header,
    /// The top-level options.
    pub options: Options<'a>,
}

impl<'a> MessageRepr<'a> {
    /// A client/server message (every leasequery message).
    #[must_use]
    pub const fn new(msg_type: MessageType, xid: Xid, options: Options<'a>) -> Self {
        Self {
            header: Header::ClientServer { msg_type, xid },
            options,
        }
    }

    /// Parses and validates a whole message: header, every option and everything nested.
    /// The options must fill the message exactly. Allocates nothing.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        Self::check(buf, Ctx::TOP)?;
        Ok(Self::trusted(buf))
    }

    /// Validates a whole message without building it.
    #[inline]
    pub(crate) fn check(buf: &'a [u8], ctx: Ctx) -> Result<()> {
        Options::check(Self::options_part(buf)?, ctx)
    }

    /// The option bytes after the header, whose length the message type decides; `TooShort`
    /// when the header is incomplete.
    #[inline]
    pub(crate) fn options_part(buf: &[u8]) -> Result<&[u8]> {
        let msg_type = buf
            .get(field::MSG_TYPE)
            .copied()
            .ok_or(Error::new(ErrorKind::TooShort))?;
        let header_len = if MessageType::from(msg_type).is_relay() {
            RELAY_HEADER_LEN
        } else {
            CLIENT_SERVER_HEADER_LEN
        };
        buf.get(header_len..).ok_or(Error::new(ErrorKind::TooShort))
    }

    /// Builds the repr of a message that [`check`](Self::check) accepted.
    #[inline]
    pub(crate) fn trusted(buf: &'a [u8]) -> Self {
        let msg_type = MessageType::from(buf.get(field::MSG_TYPE).copied().unwrap_or(0));
        if msg_type.is_relay() {
            let addr = |at| read_addr(buf, at).unwrap_or(Ipv6Addr::UNSPECIFIED);
            Self {
                header: Header::Relay {
                    msg_type,
                    hop_count: buf.get(field::HOP_COUNT).copied().unwrap_or(0),
                    link_address: addr(field::LINK_ADDRESS.start),
                    peer_address: addr(field::PEER_ADDRESS.start),
                },
                options: Options::trusted(buf.get(RELAY_HEADER_LEN..).unwrap_or(&[])),
            }
        } else {
            let xid = read_array(buf, field::XID.start)
                .map(Xid::from_bytes)
                .unwrap_or_default();
            Self {
                header: Header::ClientServer { msg_type, xid },
                options: Options::trusted(buf.get(CLIENT_SERVER_HEADER_LEN..).unwrap_or(&[])),
            }
        }
    }

    /// `msg-type`.
    #[must_use]
    pub const fn msg_type(&self) -> MessageType {
        self.header.msg_type()
    }

    /// `transaction-id`, for a client/server message.
    #[must_use]
    pub const fn xid(&self) -> Option<Xid> {
        match self.header {
            Header::ClientServer { xid, .. } => Some(xid),
            Header::Relay { .. } => None,
        }
    }

    /// The exact number of octets [`emit`](Self::emit) writes.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        self.header.len().saturating_add(self.options.buffer_len())
    }

    /// Writes the message at the start of `buf`, which must hold at least
    /// [`buffer_len`](Self::buffer_len) octets; returns the octets written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf);
        self.emit_to(&mut w)?;
        Ok(w.position())
    }

    /// Appends the message to `out` and returns its range there.
    pub fn emit_to_vec(&self, out: &mut Vec<u8>) -> Result<core::ops::Range<usize>> {
        let start = out.len();
        out.resize(start.saturating_add(self.buffer_len()), 0);
        let n = self.emit(out.get_mut(start..).unwrap_or(&mut []))?;
        let end = start.saturating_add(n);
        out.truncate(end);
        Ok(start..end)
    }

    pub(crate) fn emit_to(&self, w: &mut Writer<'_>) -> Result<()> {
        match self.header {
            Header::ClientServer { msg_type, xid } => {
                if msg_type.is_relay() {
                    return Err(Error::new(ErrorKind::HeaderMismatch));
                }
                let [x0, x1, x2] = xid.to_bytes();
                w.put_array([msg_type.value(), x0, x1, x2])?;
            }
            Header::Relay {
                msg_type,
                hop_count,
                link_address,
                peer_address,
            } => {
                if !msg_type.is_relay() {
                    return Err(Error::new(ErrorKind::HeaderMismatch));
                }
                w.put_array([msg_type.value(), hop_count])?;
                w.put_array(link_address.octets())?;
                w.put_array(peer_address.octets())?;
            }
        }
        self.options.emit(w)
    }
}

#[derive(Clone, Copy)]
enum EmbeddedInner<'a> {
    Wire(&'a [u8]),
    Repr(&'a MessageRepr<'a>),
}

/// A complete message carried inside an option (OPTION_RELAY_MSG, OPTION_LQ_RELAY_DATA):
/// validated wire bytes after parsing, or a borrowed repr for emitting.
#[derive(Clone, Copy)]
pub struct Embedded<'a> {
    inner: EmbeddedInner<'a>,
}

impl<'a> Embedded<'a> {
    /// Parses and validates an embedded message.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        MessageRepr::check(buf, Ctx::TOP)?;
        Ok(Self::trusted(buf))
    }

    /// Wraps a message that [`MessageRepr::check`] accepted.
    #[inline]
    pub(crate) const fn trusted(buf: &'a [u8]) -> Self {
        Self {
            inner: EmbeddedInner::Wire(buf),
        }
    }

    /// An embedded message for emission.
    #[must_use]
    pub const fn from_repr(repr: &'a MessageRepr<'a>) -> Self {
        Self {
            inner: EmbeddedInner::Repr(repr),
        }
    }

    /// The message. Never fails for a parsed message, which was validated.
    pub fn message(&self) -> Result<MessageRepr<'a>> {
        match self.inner {
            EmbeddedInner::Wire(b) => Ok(MessageRepr::trusted(b)),
            EmbeddedInner::Repr(r) => Ok(*r),
        }
    }

    /// The wire bytes, when this came from parsing.
    #[must_use]
    pub const fn wire_bytes(&self) -> Option<&'a [u8]> {
        match self.inner {
            EmbeddedInner::Wire(b) => Some(b),
            EmbeddedInner::Repr(_) => None,
        }
    }

    /// The octets the message takes on the wire.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        match self.inner {
            EmbeddedInner::Wire(b) => b.len(),
            EmbeddedInner::Repr(r) => r.buffer_len(),
        }
    }

    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<()> {
        match self.inner {
            EmbeddedInner::Wire(b) => w.put(b),
            EmbeddedInner::Repr(r) => r.emit_to(w),
        }
    }
}

impl PartialEq for Embedded<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self.message(), other.message()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl fmt::Debug for Embedded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Ok(m) => m.fmt(f),
            Err(e) => write!(f, "Embedded(<{e}>)"),
        }
    }
}
