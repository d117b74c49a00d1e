//! The DHCPv6 leasequery wire format: zero-copy, allocation-free parsing and panic-free
//! emission for every message and option of RFC 5007, RFC 5460 and RFC 7653 (plus the RFC 8415
//! parts they reuse), and the 2-octet TCP framing of Bulk and Active Leasequery.
//!
//! Two levels, as in smoltcp's `wire`:
//!
//! - views over bytes ([`Message`], [`RelayMessage`], [`RawOptions`]): the only doors for
//!   untrusted input, checked once by `new_checked`;
//! - typed reprs ([`MessageRepr`], [`DhcpOption`]) that borrow from the input. [`MessageRepr::parse`]
//!   validates the whole message, every option's length and everything nested, without
//!   allocating; [`MessageRepr::emit`] writes into a caller-owned buffer of exactly
//!   [`MessageRepr::buffer_len`] octets.
//!
//! ```
//! use lqd::codec::{BuildOptions, MessageBuilder, MessageRepr, OptionCode, QueryType, ServerTime};
//! use std::net::Ipv6Addr;
//!
//! // A Bulk LEASEQUERY by relay-id, asking for base-time and relay data, within a time window.
//! let bytes = MessageBuilder::leasequery(0xabcdef)
//!     .client_id(&[0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55])
//!     .oro(&[OptionCode::LqBaseTime])
//!     .lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
//!         q.relay_id(&[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5]).oro(&[OptionCode::LqRelayData])
//!     })
//!     .start_time(ServerTime(789_004_800))
//!     .end_time(ServerTime(789_005_400))
//!     .build()?;
//! let msg = MessageRepr::parse(&bytes)?;
//! assert_eq!(msg.options.lq_query().map(|q| q.query_type), Some(QueryType::ByRelayId));
//! assert_eq!(bytes.len(), 82);
//! # Ok::<(), lqd::codec::Error>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod builder;
mod code;
mod duid;
mod error;
mod frame;
mod list;
mod message;
mod option;
mod wire;

pub use builder::{BuildOptions, MessageBuilder, OptionsBuilder};
pub use code::{DuidType, MessageType, OptionCode, QueryType, ServerTime, Status, Xid};
pub use duid::{Duid, DuidKind};
pub use error::{Error, ErrorKind, Result};
pub use frame::{Decoded, FRAME_HEADER_LEN, FrameDecoder, encode_frame, frame_header};
pub use list::{AddrList, CodeList, Item, Iter, List, Options};
pub use message::{Embedded, Header, MessageRepr};
pub use option::{DhcpOption, Ia, IaAddr, IaPrefix, LqQuery, LqRelayData, RemoteId, StatusCode};
pub use wire::{
    CLIENT_SERVER_HEADER_LEN, Message, OPTION_HEADER_LEN, RELAY_HEADER_LEN, RawOption, RawOptions,
    RelayMessage,
};

/// The deepest nesting of option lists and embedded messages that parsing accepts. A relay
/// chain has at most 32 hops (HOP_COUNT_LIMIT), each adding a message and an OPTION_RELAY_MSG;
/// this bound also keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: u8 = 80;

/// Validation context: how deep the current list or message is nested.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    depth: u8,
}

impl Ctx {
    /// A message or list at the top.
    pub(crate) const TOP: Self = Self { depth: 0 };

    /// One level deeper, or `TooDeep`.
    #[inline]
    pub(crate) fn deeper(self) -> Result<Self> {
        match self.depth.checked_add(1) {
            Some(depth) if depth <= MAX_DEPTH => Ok(Self { depth }),
            _ => Err(Error::new(ErrorKind::TooDeep)),
        }
    }
}

/// A bounds-checked cursor over a caller's output buffer.
#[doc(hidden)]
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> Writer<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Octets written so far.
    pub(crate) const fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Writes a fixed-size array (a single store, where `put` would copy a slice).
    #[inline]
    pub(crate) fn put_array<const N: usize>(&mut self, bytes: [u8; N]) -> Result<()> {
        let end = self
            .pos
            .checked_add(N)
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        let dst: &mut [u8; N] = self
            .buf
            .get_mut(self.pos..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        *dst = bytes;
        self.pos = end;
        Ok(())
    }

    /// Reserves the next `N` octets for the caller to fill (one bounds check for a whole
    /// fixed-size part).
    #[inline]
    pub(crate) fn take<const N: usize>(&mut self) -> Result<&mut [u8; N]> {
        let start = self.pos;
        let end = start
            .checked_add(N)
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        let dst: &mut [u8; N] = self
            .buf
            .get_mut(start..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        self.pos = end;
        Ok(dst)
    }

    #[inline]
    pub(crate) fn put_u16(&mut self, v: u16) -> Result<()> {
        self.put_array(v.to_be_bytes())
    }

    #[inline]
    pub(crate) fn put_u32(&mut self, v: u32) -> Result<()> {
        self.put_array(v.to_be_bytes())
    }

    /// Writes an option header whose body length is known.
    #[inline]
    pub(crate) fn option_header(&mut self, code: u16, len: usize) -> Result<()> {
        let len = u16::try_from(len).map_err(|_| Error::in_option(ErrorKind::TooLong, code))?;
        let [c0, c1] = code.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        self.put_array([c0, c1, l0, l1])
    }

    /// Writes a whole option whose body is `data` (one bounds check for header and body).
    #[inline]
    pub(crate) fn option_with(&mut self, code: u16, data: &[u8]) -> Result<()> {
        let len =
            u16::try_from(data.len()).map_err(|_| Error::in_option(ErrorKind::TooLong, code))?;
        let end = self
            .pos
            .checked_add(OPTION_HEADER_LEN)
            .and_then(|n| n.checked_add(data.len()))
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        let (head, body) = dst.split_at_mut(OPTION_HEADER_LEN);
        let [c0, c1] = code.to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        head.copy_from_slice(&[c0, c1, l0, l1]);
        body.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }

    /// Writes a whole option whose body is one `u32` (CLT_TIME, the LQ time options).
    #[inline]
    pub(crate) fn option_u32(&mut self, code: u16, v: u32) -> Result<()> {
        let [c0, c1] = code.to_be_bytes();
        let [v0, v1, v2, v3] = v.to_be_bytes();
        self.put_array([c0, c1, 0, 4, v0, v1, v2, v3])
    }

    /// Patches the length of the option begun at `at` to cover everything written since.
    #[inline]
    pub(crate) fn end_option(&mut self, at: usize, code: u16) -> Result<()> {
        // `at` is where `begin_option` wrote 4 octets, so `pos >= at + 4`; should that ever not
        // hold, the wrapped value fails the u16 conversion below.
        let body = self.pos.wrapping_sub(at).wrapping_sub(OPTION_HEADER_LEN);
        let len = u16::try_from(body).map_err(|_| Error::in_option(ErrorKind::TooLong, code))?;
        let header = self
            .buf
            .get_mut(at..)
            .and_then(<[u8]>::first_chunk_mut::<OPTION_HEADER_LEN>)
            .ok_or(Error::new(ErrorKind::BufferTooSmall))?;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
