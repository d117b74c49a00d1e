//! Raw views over wire bytes: the message headers and the option TLV iterator.
//!
//! These are the only doors for untrusted input. `new_checked` verifies the fixed header
//! length, after which no accessor can panic. Option lists are walked with [`RawOptions`], which
//! yields a `Result` per option and stops after the first error.

use core::net::Ipv6Addr;

use super::code::{MessageType, Xid};
use super::error::{Error, ErrorKind, Result};

/// Named offsets of the fixed headers and the option header.
pub(crate) mod field {
    use core::ops::Range;

    /// `msg-type`, first octet of every DHCPv6 message.
    pub(crate) const MSG_TYPE: usize = 0;
    /// `transaction-id` of a client/server message.
    pub(crate) const XID: Range<usize> = 1..4;
    /// Options of a client/server message.
    pub(crate) const CS_OPTIONS: usize = 4;

    /// `hop-count` of a relay message.
    pub(crate) const HOP_COUNT: usize = 1;
    /// `link-address` of a relay message.
    pub(crate) const LINK_ADDRESS: Range<usize> = 2..18;
    /// `peer-address` of a relay message.
    pub(crate) const PEER_ADDRESS: Range<usize> = 18..34;
    /// Options of a relay message.
    pub(crate) const RELAY_OPTIONS: usize = 34;

    /// Start of `option-data`, after `option-code` (2 octets) and `option-len` (2 octets).
    pub(crate) const OPT_DATA: usize = 4;
}

/// Length of the client/server header (`msg-type` + `transaction-id`).
pub const CLIENT_SERVER_HEADER_LEN: usize = field::CS_OPTIONS;
/// Length of the relay header (`msg-type`, `hop-count`, `link-address`, `peer-address`).
pub const RELAY_HEADER_LEN: usize = field::RELAY_OPTIONS;
/// Length of an option header (`option-code` + `option-len`).
pub const OPTION_HEADER_LEN: usize = field::OPT_DATA;

/// Reads a big-endian `u16` at `at`, or `Truncated`.
#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> Result<u16> {
    read_array(buf, at).map(u16::from_be_bytes)
}

/// Reads a big-endian `u32` at `at`, or `Truncated`.
#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> Result<u32> {
    read_array(buf, at).map(u32::from_be_bytes)
}

/// Reads an IPv6 address at `at`, or `Truncated`.
#[inline]
pub(crate) fn read_addr(buf: &[u8], at: usize) -> Result<Ipv6Addr> {
    read_array::<16>(buf, at).map(Ipv6Addr::from)
}

/// Reads `N` octets at `at`, or `Truncated`.
#[inline]
pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N]> {
    let end = at.checked_add(N).ok_or(Error::new(ErrorKind::Truncated))?;
    buf.get(at..end)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(Error::new(ErrorKind::Truncated))
}

/// A view of a client/server-format message (every leasequery message) over a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps a buffer, checking that it holds at least the 4-octet header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < CLIENT_SERVER_HEADER_LEN {
            return Err(Error::new(ErrorKind::TooShort));
        }
        Ok(Self { buffer })
    }

    /// `msg-type`.
    pub fn msg_type(&self) -> MessageType {
        MessageType::from(
            self.buffer
                .as_ref()
                .get(field::MSG_TYPE)
                .copied()
                .unwrap_or(0),
        )
    }

    /// `transaction-id`.
    pub fn xid(&self) -> Xid {
        read_array(self.buffer.as_ref(), field::XID.start)
            .map(Xid::from_bytes)
            .unwrap_or_default()
    }

    /// The raw option bytes after the header.
    pub fn options_bytes(&self) -> &[u8] {
        self.buffer.as_ref().get(field::CS_OPTIONS..).unwrap_or(&[])
    }

    /// Iterates the top-level options without interpreting them.
    pub fn options(&self) -> RawOptions<'_> {
        RawOptions::new(self.options_bytes())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// Overwrites `msg-type`.
    pub fn set_msg_type(&mut self, msg_type: MessageType) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::MSG_TYPE) {
            *b = msg_type.value();
        }
    }

    /// Overwrites `transaction-id`: how one encoded message is reused for many sessions.
    pub fn set_xid(&mut self, xid: Xid) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::XID) {
            b.copy_from_slice(&xid.to_bytes());
        }
    }
}

/// A view of a relay-format message (RELAY-FORW, RELAY-REPL) over a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RelayMessage<T> {
    /// Wraps a buffer, checking that it holds at least the 34-octet relay header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < RELAY_HEADER_LEN {
            return Err(Error::new(ErrorKind::TooShort));
        }
        Ok(Self { buffer })
    }

    /// `msg-type`.
    pub fn msg_type(&self) -> MessageType {
        MessageType::from(
            self.buffer
                .as_ref()
                .get(field::MSG_TYPE)
                .copied()
                .unwrap_or(0),
        )
    }

    /// `hop-count`.
    pub fn hop_count(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::HOP_COUNT)
            .copied()
            .unwrap_or(0)
    }

    /// `link-address`.
    pub fn link_address(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), field::LINK_ADDRESS.start).unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// `peer-address`.
    pub fn peer_address(&self) -> Ipv6Addr {
        read_addr(self.buffer.as_ref(), field::PEER_ADDRESS.start).unwrap_or(Ipv6Addr::UNSPECIFIED)
    }

    /// The raw option bytes after the header.
    pub fn options_bytes(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(field::RELAY_OPTIONS..)
            .unwrap_or(&[])
    }

    /// Iterates the top-level options without interpreting them.
    pub fn options(&self) -> RawOptions<'_> {
        RawOptions::new(self.options_bytes())
    }
}

/// One option as it is on the wire: its code and exactly `option-len` octets of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RawOption<'a> {
    /// `option-data`, exactly `option-len` octets.
    pub data: &'a [u8],
    /// `option-code`.
    pub code: u16,
}

/// Iterator over an option list. Yields `Err` once for a truncated option, then stops.
#[derive(Debug, Clone)]
pub struct RawOptions<'a> {
    rest: &'a [u8],
}

impl<'a> RawOptions<'a> {
    /// Iterates the options in `buf`.
    #[must_use]
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// The bytes not yet consumed.
    #[must_use]
    pub const fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for RawOptions<'a> {
    type Item = Result<RawOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match split_option(self.rest) {
            Ok((code, data, rest)) => {
                self.rest = rest;
                Some(Ok(RawOption { code, data }))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// Splits the option at the start of `buf` into its code, its data (exactly `option-len`
/// octets) and the bytes after it. A header cut short, or data running past the end of `buf`,
/// is `Truncated` (naming the option when its code is complete).
#[inline]
pub(crate) fn split_option(buf: &[u8]) -> Result<(u16, &[u8], &[u8])> {
    let Some((&[c0, c1, l0, l1], rest)) = buf.split_first_chunk::<OPTION_HEADER_LEN>() else {
        return Err(match read_u16(buf, 0) {
            Ok(code) => Error::in_option(ErrorKind::Truncated, code),
            Err(e) => e,
        });
    };
    let code = u16::from_be_bytes([c0, c1]);
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    rest.split_at_checked(len)
        .map(|(data, rest)| (code, data, rest))
        .ok_or(Error::in_option(ErrorKind::Truncated, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_read_headers() {
        let bytes = [0x0e, 0x12, 0x34, 0x56, 0x00, 0x2e, 0x00, 0x04, 0, 0, 0, 60];
        let msg = Message::new_checked(&bytes[..]).unwrap();
        assert_eq!(msg.msg_type(), MessageType::Leasequery);
        assert_eq!(msg.xid(), Xid::new(0x123456));
        let opts: Vec<_> = msg.options().collect();
        assert_eq!(
            opts,
            vec![Ok(RawOption {
                code: 46,
                data: &[0, 0, 0, 60]
            })]
        );
        assert_eq!(
            Message::new_checked(&bytes[..3]).unwrap_err().kind(),
            ErrorKind::TooShort
        );
    }

    #[test]
    fn set_xid_patches_three_octets_only() {
        let mut bytes = [0x11, 0, 0, 1, 0xaa];
        let mut msg = Message::new_checked(&mut bytes[..]).unwrap();
        msg.set_xid(Xid::new(0xabcdef));
        assert_eq!(bytes, [0x11, 0xab, 0xcd, 0xef, 0xaa]);
    }

    #[test]
    fn raw_iterator_stops_after_first_error() {
        // One good option, then one that declares 8 octets but has 2.
        let bytes = [0, 46, 0, 1, 9, 0, 47, 0, 8, 1, 2];
        let mut it = RawOptions::new(&bytes);
        assert_eq!(
            it.next(),
            Some(Ok(RawOption {
                code: 46,
                data: &[9]
            }))
        );
        let err = it.next().unwrap().unwrap_err();
        assert_eq!((err.kind(), err.option()), (ErrorKind::Truncated, Some(47)));
        assert_eq!(it.next(), None);
        // A lone octet is a truncated header.
        assert!(RawOptions::new(&[0]).next().unwrap().is_err());
    }

    #[test]
    fn relay_view_reads_addresses() {
        let mut bytes = vec![12, 3];
        bytes.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        bytes.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        let relay = RelayMessage::new_checked(&bytes[..]).unwrap();
        assert_eq!(relay.msg_type(), MessageType::RelayForw);
        assert_eq!(relay.hop_count(), 3);
        assert_eq!(relay.link_address(), Ipv6Addr::LOCALHOST);
        assert_eq!(
            relay.peer_address(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap()
        );
        assert!(relay.options_bytes().is_empty());
        assert!(RelayMessage::new_checked(&bytes[..33]).is_err());
    }
}
