//! Typed option reprs: every option the leasequery family uses, with its nesting.
//!
//! [`DhcpOption`] borrows from the message it was parsed from, so parsing allocates nothing.
//! Fixed-size options must have their exact length, and a nested option list must fill its
//! container exactly (digest §17.2). Unknown options are kept byte-exact.

use core::net::Ipv6Addr;

use super::code::{OptionCode, QueryType, ServerTime, Status};
use super::duid::Duid;
use super::error::{Error, ErrorKind, Result};
use super::list::{AddrList, CodeList, Item, Options};
use super::message::{Embedded, MessageRepr};
use super::wire::{OPTION_HEADER_LEN, RawOption, read_addr, read_u16, read_u32, split_option};
use super::{Ctx, Writer};

/// OPTION_IA_NA (3) and OPTION_IA_PD (25): an identity association.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct Ia<'a> {
    /// `IA_NA-options` / `IA_PD-options`.
    pub options: Options<'a>,
    /// `IAID`.
    pub iaid: u32,
    /// `T1`.
    pub t1: u32,
    /// `T2`.
    pub t2: u32,
}

/// OPTION_IAADDR (5): an address with its lifetimes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct IaAddr<'a> {
    /// `IAaddr-options`.
    pub options: Options<'a>,
    /// `IPv6-address`.
    pub address: Ipv6Addr,
    /// `preferred-lifetime`, seconds (0xFFFFFFFF is infinity).
    pub preferred_lifetime: u32,
    /// `valid-lifetime`, seconds (0xFFFFFFFF is infinity).
    pub valid_lifetime: u32,
}

/// OPTION_IAPREFIX (26): a delegated prefix with its lifetimes. The lifetimes come first on
/// the wire, the reverse of IAADDR.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct IaPrefix<'a> {
    /// `IAprefix-options`.
    pub options: Options<'a>,
    /// `IPv6-prefix`.
    pub prefix: Ipv6Addr,
    /// `preferred-lifetime`, seconds.
    pub preferred_lifetime: u32,
    /// `valid-lifetime`, seconds.
    pub valid_lifetime: u32,
    /// `prefix-length`, 0..=128.
    pub prefix_len: u8,
}

/// OPTION_STATUS_CODE (13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct StatusCode<'a> {
    /// `status-message`: UTF-8 without a terminating NUL. Kept as bytes because peers are not
    /// always well behaved; see [`StatusCode::message_lossy`].
    pub message: &'a [u8],
    /// `status-code`.
    pub status: Status,
}

impl<'a> StatusCode<'a> {
    /// A status with a UTF-8 message.
    #[must_use]
    pub const fn new(status: Status, message: &'a str) -> Self {
        Self {
            status,
            message: message.as_bytes(),
        }
    }

    /// The message as text, replacing invalid UTF-8 (for logs).
    #[must_use]
    pub fn message_lossy(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.message)
    }
}

/// OPTION_REMOTE_ID (37, RFC 4649).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct RemoteId<'a> {
    /// `remote-id`, opaque.
    pub remote_id: &'a [u8],
    /// `enterprise-number`.
    pub enterprise_number: u32,
}

/// OPTION_LQ_QUERY (44, RFC 5007).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct LqQuery<'a> {
    /// `query-options`: the query's key (IAADDR, CLIENTID, RELAY_ID, REMOTE_ID) and an ORO for
    /// per-client options.
    pub options: Options<'a>,
    /// `link-address`, `::` when unspecified.
    pub link_address: Ipv6Addr,
    /// `query-type`.
    pub query_type: QueryType,
}

/// OPTION_LQ_RELAY_DATA (47, RFC 5007): the last relayed message for a client.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct LqRelayData<'a> {
    /// `DHCP-relay-message`: a RELAY-FORW chain with the innermost OPTION_RELAY_MSG removed.
    pub relay_message: Embedded<'a>,
    /// `peer-address`: the relay agent the server received the relayed message from.
    pub peer_address: Ipv6Addr,
}

/// One DHCPv6 option, typed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
// A tag of its own and payloads that all begin with their list or byte string (the `repr(C)`
// field orders above) keep the variants' fields at shared offsets, which makes building and
// moving an option cheap; see BENCHMARKS.md.
#[repr(u8)]
pub enum DhcpOption<'a> {
    /// OPTION_CLIENTID (1). At top level the requestor's DUID; inside OPTION_LQ_QUERY and
    /// OPTION_CLIENT_DATA the client's.
    ClientId(Duid<'a>),
    /// OPTION_SERVERID (2).
    ServerId(Duid<'a>),
    /// OPTION_IA_NA (3).
    IaNa(Ia<'a>),
    /// OPTION_IAADDR (5).
    IaAddr(IaAddr<'a>),
    /// OPTION_ORO (6).
    Oro(CodeList<'a>),
    /// OPTION_RELAY_MSG (9): a complete DHCPv6 message.
    RelayMsg(Embedded<'a>),
    /// OPTION_STATUS_CODE (13).
    StatusCode(StatusCode<'a>),
    /// OPTION_INTERFACE_ID (18).
    InterfaceId(&'a [u8]),
    /// OPTION_IA_PD (25).
    IaPd(Ia<'a>),
    /// OPTION_IAPREFIX (26).
    IaPrefix(IaPrefix<'a>),
    /// OPTION_REMOTE_ID (37).
    RemoteId(RemoteId<'a>),
    /// OPTION_LQ_QUERY (44).
    LqQuery(LqQuery<'a>),
    /// OPTION_CLIENT_DATA (45): one client on one link.
    ClientData(Options<'a>),
    /// OPTION_CLT_TIME (46): seconds since the client's last transaction.
    CltTime(u32),
    /// OPTION_LQ_RELAY_DATA (47).
    LqRelayData(LqRelayData<'a>),
    /// OPTION_LQ_CLIENT_LINK (48): the links a client has bindings on.
    LqClientLink(AddrList<'a>),
    /// OPTION_RELAY_ID (53): a relay agent's DUID.
    RelayId(Duid<'a>),
    /// OPTION_LQ_BASE_TIME (100).
    LqBaseTime(ServerTime),
    /// OPTION_LQ_START_TIME (101).
    LqStartTime(ServerTime),
    /// OPTION_LQ_END_TIME (102).
    LqEndTime(ServerTime),
    /// Any other option, byte-exact. Its code must not be one of the typed codes above.
    Unknown(RawOption<'a>),
}

/// The typed option codes, as `u16` for matching.
mod code {
    pub(super) const CLIENTID: u16 = 1;
    pub(super) const SERVERID: u16 = 2;
    pub(super) const IA_NA: u16 = 3;
    pub(super) const IAADDR: u16 = 5;
    pub(super) const ORO: u16 = 6;
    pub(super) const RELAY_MSG: u16 = 9;
    pub(super) const STATUS_CODE: u16 = 13;
    pub(super) const INTERFACE_ID: u16 = 18;
    pub(super) const IA_PD: u16 = 25;
    pub(super) const IAPREFIX: u16 = 26;
    pub(super) const REMOTE_ID: u16 = 37;
    pub(super) const LQ_QUERY: u16 = 44;
    pub(super) const CLIENT_DATA: u16 = 45;
    pub(super) const CLT_TIME: u16 = 46;
    pub(super) const LQ_RELAY_DATA: u16 = 47;
    pub(super) const LQ_CLIENT_LINK: u16 = 48;
    pub(super) const RELAY_ID: u16 = 53;
    pub(super) const LQ_BASE_TIME: u16 = 100;
    pub(super) const LQ_START_TIME: u16 = 101;
    pub(super) const LQ_END_TIME: u16 = 102;
}

/// Fixed parts of the container options (digest §4).
const IA_FIXED: usize = 12;
const IAADDR_FIXED: usize = 24;
const IAPREFIX_FIXED: usize = 25;
const LQ_QUERY_FIXED: usize = 17;
const LQ_RELAY_DATA_FIXED: usize = 16;

/// Checks that a body holds at least its fixed part, and returns the rest.
#[inline]
fn after(data: &[u8], fixed: usize) -> Result<&[u8]> {
    data.get(fixed..).ok_or(Error::new(ErrorKind::BadLength))
}

/// Checks that a fixed-size body has exactly `len` octets.
#[inline]
fn exact(data: &[u8], len: usize) -> Result<()> {
    if data.len() == len {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::BadLength))
    }
}

/// Checks that a body's length is a whole number of `size`-octet items.
#[inline]
fn multiple_of(data: &[u8], size: usize) -> Result<()> {
    if data.len().checked_rem(size) == Some(0) {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::BadLength))
    }
}

// Readers for bodies that `check_body` accepted: the offsets are in range by construction, and
// out-of-range reads (which cannot happen) give zero rather than a panic.
#[inline]
fn be32(d: &[u8], at: usize) -> u32 {
    read_u32(d, at).unwrap_or(0)
}

#[inline]
fn addr(d: &[u8], at: usize) -> Ipv6Addr {
    read_addr(d, at).unwrap_or(Ipv6Addr::UNSPECIFIED)
}

/// The 16 octets of a fixed-size array starting at `at` (an address inside a fixed part).
#[inline]
fn sub16<const N: usize>(f: &[u8; N], at: usize) -> [u8; 16] {
    let mut out = [0; 16];
    if let Some(src) = f.get(at..).and_then(|s| s.get(..16)) {
        out.copy_from_slice(src);
    }
    out
}

#[inline]
fn tail(d: &[u8], at: usize) -> &[u8] {
    d.get(at..).unwrap_or(&[])
}

/// Checks an option body's own fields for its code, without building it and without
/// descending: returns the option list nested in it (after the fixed part, or after the header
/// of an embedded message), if any, for the caller to check one level deeper.
// Always inlined, like `check_item`: validation is then one loop per list, a third faster than
// with a call per option (BENCHMARKS.md).
#[inline(always)]
fn check_fields(code: u16, d: &[u8]) -> Result<Option<&[u8]>> {
    match code {
        code::IA_NA | code::IA_PD => after(d, IA_FIXED).map(Some),
        code::IAADDR => after(d, IAADDR_FIXED).map(Some),
        code::IAPREFIX => {
            let rest = after(d, IAPREFIX_FIXED)?;
            if d.get(8).is_some_and(|&len| len > 128) {
                return Err(Error::new(ErrorKind::BadValue));
            }
            Ok(Some(rest))
        }
        code::LQ_QUERY => after(d, LQ_QUERY_FIXED).map(Some),
        code::CLIENT_DATA => Ok(Some(d)),
        code::RELAY_MSG => MessageRepr::options_part(d).map(Some),
        code::LQ_RELAY_DATA => MessageRepr::options_part(after(d, LQ_RELAY_DATA_FIXED)?).map(Some),
        code::ORO => multiple_of(d, 2).map(|()| None),
        code::LQ_CLIENT_LINK => multiple_of(d, 16).map(|()| None),
        code::STATUS_CODE => after(d, 2).map(|_| None),
        code::REMOTE_ID => after(d, 4).map(|_| None),
        code::CLT_TIME | code::LQ_BASE_TIME | code::LQ_START_TIME | code::LQ_END_TIME => {
            exact(d, 4).map(|()| None)
        }
        _ => Ok(None),
    }
}

impl<'a> DhcpOption<'a> {
    /// The option's code.
    #[must_use]
    #[inline]
    pub fn code(&self) -> OptionCode {
        OptionCode::from(self.code_value())
    }

    /// The option's code as a number.
    #[must_use]
    #[inline]
    pub const fn code_value(&self) -> u16 {
        match self {
            Self::ClientId(_) => code::CLIENTID,
            Self::ServerId(_) => code::SERVERID,
            Self::IaNa(_) => code::IA_NA,
            Self::IaAddr(_) => code::IAADDR,
            Self::Oro(_) => code::ORO,
            Self::RelayMsg(_) => code::RELAY_MSG,
            Self::StatusCode(_) => code::STATUS_CODE,
            Self::InterfaceId(_) => code::INTERFACE_ID,
            Self::IaPd(_) => code::IA_PD,
            Self::IaPrefix(_) => code::IAPREFIX,
            Self::RemoteId(_) => code::REMOTE_ID,
            Self::LqQuery(_) => code::LQ_QUERY,
            Self::ClientData(_) => code::CLIENT_DATA,
            Self::CltTime(_) => code::CLT_TIME,
            Self::LqRelayData(_) => code::LQ_RELAY_DATA,
            Self::LqClientLink(_) => code::LQ_CLIENT_LINK,
            Self::RelayId(_) => code::RELAY_ID,
            Self::LqBaseTime(_) => code::LQ_BASE_TIME,
            Self::LqStartTime(_) => code::LQ_START_TIME,
            Self::LqEndTime(_) => code::LQ_END_TIME,
            Self::Unknown(raw) => raw.code,
        }
    }

    /// Parses the option at the start of `buf`, validating its body and everything nested in
    /// it; returns the option and the octets it takes.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize)> {
        let rest = Self::check_item(buf, Ctx::TOP)?;
        let (code, data, _) = split_option(buf)?;
        Ok((
            Self::from_checked(code, data),
            buf.len().saturating_sub(rest.len()),
        ))
    }

    /// Types a raw option, validating its body and everything nested in it.
    pub fn from_raw(raw: RawOption<'a>) -> Result<Self> {
        if let Some(nested) = check_fields(raw.code, raw.data).map_err(|e| e.within(raw.code))? {
            Ctx::TOP
                .deeper()
                .and_then(|inner| Options::check(nested, inner))
                .map_err(|e| e.within(raw.code))?;
        }
        Ok(Self::from_checked(raw.code, raw.data))
    }

    /// Types a body that `check_body` accepted.
    #[inline]
    fn from_checked(code: u16, d: &'a [u8]) -> Self {
        match code {
            code::CLIENTID => Self::ClientId(Duid(d)),
            code::SERVERID => Self::ServerId(Duid(d)),
            code::RELAY_ID => Self::RelayId(Duid(d)),
            code::IA_NA => Self::IaNa(Ia::from_checked(d)),
            code::IA_PD => Self::IaPd(Ia::from_checked(d)),
            code::IAADDR => match d.split_first_chunk::<IAADDR_FIXED>() {
                Some((f, rest)) => Self::IaAddr(IaAddr {
                    address: Ipv6Addr::from(sub16(f, 0)),
                    preferred_lifetime: u32::from_be_bytes([f[16], f[17], f[18], f[19]]),
                    valid_lifetime: u32::from_be_bytes([f[20], f[21], f[22], f[23]]),
                    options: Options::trusted(rest),
                }),
                None => Self::Unknown(RawOption { code, data: d }),
            },
            code::IAPREFIX => match d.split_first_chunk::<IAPREFIX_FIXED>() {
                Some((f, rest)) => Self::IaPrefix(IaPrefix {
                    preferred_lifetime: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
                    valid_lifetime: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                    prefix_len: f[8],
                    prefix: Ipv6Addr::from(sub16(f, 9)),
                    options: Options::trusted(rest),
                }),
                None => Self::Unknown(RawOption { code, data: d }),
            },
            code::ORO => Self::Oro(CodeList::trusted(d)),
            code::RELAY_MSG => Self::RelayMsg(Embedded::trusted(d)),
            code::STATUS_CODE => Self::StatusCode(StatusCode {
                status: Status::from(read_u16(d, 0).unwrap_or(0)),
                message: tail(d, 2),
            }),
            code::INTERFACE_ID => Self::InterfaceId(d),
            code::REMOTE_ID => Self::RemoteId(RemoteId {
                enterprise_number: be32(d, 0),
                remote_id: tail(d, 4),
            }),
            code::LQ_QUERY => match d.split_first_chunk::<LQ_QUERY_FIXED>() {
                Some((f, rest)) => Self::LqQuery(LqQuery {
                    query_type: QueryType::from(f[0]),
                    link_address: Ipv6Addr::from(sub16(f, 1)),
                    options: Options::trusted(rest),
                }),
                None => Self::Unknown(RawOption { code, data: d }),
            },
            code::CLIENT_DATA => Self::ClientData(Options::trusted(d)),
            code::CLT_TIME => Self::CltTime(be32(d, 0)),
            code::LQ_RELAY_DATA => Self::LqRelayData(LqRelayData {
                peer_address: addr(d, 0),
                relay_message: Embedded::trusted(tail(d, LQ_RELAY_DATA_FIXED)),
            }),
            code::LQ_CLIENT_LINK => Self::LqClientLink(AddrList::trusted(d)),
            code::LQ_BASE_TIME => Self::LqBaseTime(ServerTime(be32(d, 0))),
            code::LQ_START_TIME => Self::LqStartTime(ServerTime(be32(d, 0))),
            code::LQ_END_TIME => Self::LqEndTime(ServerTime(be32(d, 0))),
            _ => Self::Unknown(RawOption { code, data: d }),
        }
    }

    /// The length of `option-data` when emitted.
    #[must_use]
    pub fn body_len(&self) -> usize {
        match self {
            Self::ClientId(d) | Self::ServerId(d) | Self::RelayId(d) => d.0.len(),
            Self::IaNa(ia) | Self::IaPd(ia) => ia.options.buffer_len().saturating_add(IA_FIXED),
            Self::IaAddr(a) => a.options.buffer_len().saturating_add(IAADDR_FIXED),
            Self::IaPrefix(p) => p.options.buffer_len().saturating_add(IAPREFIX_FIXED),
            Self::Oro(l) => l.buffer_len(),
            Self::RelayMsg(m) => m.buffer_len(),
            Self::StatusCode(s) => s.message.len().saturating_add(2),
            Self::InterfaceId(b) => b.len(),
            Self::RemoteId(r) => r.remote_id.len().saturating_add(4),
            Self::LqQuery(q) => q.options.buffer_len().saturating_add(LQ_QUERY_FIXED),
            Self::ClientData(l) => l.buffer_len(),
            Self::CltTime(_) | Self::LqBaseTime(_) | Self::LqStartTime(_) | Self::LqEndTime(_) => 4,
            Self::LqRelayData(r) => r
                .relay_message
                .buffer_len()
                .saturating_add(LQ_RELAY_DATA_FIXED),
            Self::LqClientLink(l) => l.buffer_len(),
            Self::Unknown(raw) => raw.data.len(),
        }
    }

    /// The octets the option takes on the wire, header included.
    #[must_use]
    pub fn buffer_len(&self) -> usize {
        self.body_len().saturating_add(OPTION_HEADER_LEN)
    }

    /// Writes the option (header and body) at the start of `buf`; returns the octets written.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut w = Writer::new(buf);
        self.emit_item(&mut w)?;
        Ok(w.position())
    }

    /// Writes header and body. Leaf options are written here, inline in the list loop;
    /// containers go to [`emit_container`](Self::emit_container).
    #[inline]
    fn emit_to(&self, w: &mut Writer<'_>) -> Result<()> {
        match self {
            Self::ClientId(d) => w.option_with(code::CLIENTID, d.0),
            Self::ServerId(d) => w.option_with(code::SERVERID, d.0),
            Self::RelayId(d) => w.option_with(code::RELAY_ID, d.0),
            Self::InterfaceId(b) => w.option_with(code::INTERFACE_ID, b),
            Self::Unknown(raw) => w.option_with(raw.code, raw.data),
            Self::CltTime(v) => w.option_u32(code::CLT_TIME, *v),
            Self::LqBaseTime(t) => w.option_u32(code::LQ_BASE_TIME, t.0),
            Self::LqStartTime(t) => w.option_u32(code::LQ_START_TIME, t.0),
            Self::LqEndTime(t) => w.option_u32(code::LQ_END_TIME, t.0),
            Self::Oro(l) => {
                w.option_header(code::ORO, l.buffer_len())?;
                l.emit(w)
            }
            // The usual addresses and prefixes of a reply carry no sub-options: write them in
            // one piece here.
            Self::IaAddr(a) if a.options.is_empty() => {
                let f = w.take::<{ OPTION_HEADER_LEN + IAADDR_FIXED }>()?;
                f[0..4].copy_from_slice(&header(code::IAADDR, Some(IAADDR_FIXED)));
                f[4..20].copy_from_slice(&a.address.octets());
                f[20..24].copy_from_slice(&a.preferred_lifetime.to_be_bytes());
                f[24..28].copy_from_slice(&a.valid_lifetime.to_be_bytes());
                Ok(())
            }
            Self::IaPrefix(p) if p.options.is_empty() && p.prefix_len <= 128 => {
                let f = w.take::<{ OPTION_HEADER_LEN + IAPREFIX_FIXED }>()?;
                f[0..4].copy_from_slice(&header(code::IAPREFIX, Some(IAPREFIX_FIXED)));
                f[4..8].copy_from_slice(&p.preferred_lifetime.to_be_bytes());
                f[8..12].copy_from_slice(&p.valid_lifetime.to_be_bytes());
                f[12] = p.prefix_len;
                f[13..29].copy_from_slice(&p.prefix.octets());
                Ok(())
            }
            _ => self.emit_container(w),
        }
    }

    /// Writes an option with a fixed part and nested content. The length goes in up front
    /// when the nested content's size is known without walking it (wire bytes, or no items),
    /// else it is patched once the body is written.
    #[inline(never)]
    fn emit_container(&self, w: &mut Writer<'_>) -> Result<()> {
        let c = self.code_value();
        let at = w.position();
        // A body too long for `option-len` counts as unknown, so `end_option` reports it.
        let known = |fixed: usize, nested: Option<usize>| {
            nested
                .map(|n| n.saturating_add(fixed))
                .filter(|&n| n <= usize::from(u16::MAX))
        };
        match self {
            Self::StatusCode(s) => {
                w.option_header(c, s.message.len().saturating_add(2))?;
                w.put_u16(s.status.value())?;
                return w.put(s.message);
            }
            Self::RemoteId(r) => {
                w.option_header(c, r.remote_id.len().saturating_add(4))?;
                w.put_u32(r.enterprise_number)?;
                return w.put(r.remote_id);
            }
            Self::LqClientLink(l) => {
                w.option_header(c, l.buffer_len())?;
                return l.emit(w);
            }
            Self::IaNa(ia) | Self::IaPd(ia) => {
                let body = known(IA_FIXED, ia.options.known_len());
                let f = w.take::<{ OPTION_HEADER_LEN + IA_FIXED }>()?;
                f[0..4].copy_from_slice(&header(c, body));
                f[4..8].copy_from_slice(&ia.iaid.to_be_bytes());
                f[8..12].copy_from_slice(&ia.t1.to_be_bytes());
                f[12..16].copy_from_slice(&ia.t2.to_be_bytes());
                ia.options.emit(w)?;
                if body.is_some() {
                    return Ok(());
                }
            }
            Self::IaAddr(a) => {
                let body = known(IAADDR_FIXED, a.options.known_len());
                let f = w.take::<{ OPTION_HEADER_LEN + IAADDR_FIXED }>()?;
                f[0..4].copy_from_slice(&header(c, body));
                f[4..20].copy_from_slice(&a.address.octets());
                f[20..24].copy_from_slice(&a.preferred_lifetime.to_be_bytes());
                f[24..28].copy_from_slice(&a.valid_lifetime.to_be_bytes());
                a.options.emit(w)?;
                if body.is_some() {
                    return Ok(());
                }
            }
            Self::IaPrefix(p) => {
                if p.prefix_len > 128 {
                    return Err(Error::new(ErrorKind::BadValue));
                }
                let body = known(IAPREFIX_FIXED, p.options.known_len());
                let f = w.take::<{ OPTION_HEADER_LEN + IAPREFIX_FIXED }>()?;
                f[0..4].copy_from_slice(&header(c, body));
                f[4..8].copy_from_slice(&p.preferred_lifetime.to_be_bytes());
                f[8..12].copy_from_slice(&p.valid_lifetime.to_be_bytes());
                f[12] = p.prefix_len;
                f[13..29].copy_from_slice(&p.prefix.octets());
                p.options.emit(w)?;
                if body.is_some() {
                    return Ok(());
                }
            }
            Self::LqQuery(q) => {
                let f = w.take::<{ OPTION_HEADER_LEN + LQ_QUERY_FIXED }>()?;
                f[0..4].copy_from_slice(&header(c, None));
                f[4] = q.query_type.value();
                f[5..21].copy_from_slice(&q.link_address.octets());
                q.options.emit(w)?;
            }
            Self::ClientData(l) => {
                w.option_header(c, 0)?;
                l.emit(w)?;
            }
            Self::RelayMsg(m) => {
                w.option_header(c, 0)?;
                m.emit(w)?;
            }
            Self::LqRelayData(r) => {
                w.option_header(c, 0)?;
                w.put_array(r.peer_address.octets())?;
                r.relay_message.emit(w)?;
            }
            Self::ClientId(_)
            | Self::ServerId(_)
            | Self::RelayId(_)
            | Self::InterfaceId(_)
            | Self::Unknown(_)
            | Self::CltTime(_)
            | Self::LqBaseTime(_)
            | Self::LqStartTime(_)
            | Self::LqEndTime(_)
            | Self::Oro(_) => return self.emit_to(w),
        }
        w.end_option(at, c)
    }
}

/// An option header; a body length that is not known yet (or over 65535, which
/// `end_option` then reports) is written as 0 and patched later.
#[inline]
fn header(code: u16, body: Option<usize>) -> [u8; OPTION_HEADER_LEN] {
    let len = body.and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
    let [c0, c1] = code.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    [c0, c1, l0, l1]
}

impl<'a> Ia<'a> {
    #[inline]
    fn from_checked(d: &'a [u8]) -> Self {
        let (f, rest) = d
            .split_first_chunk::<IA_FIXED>()
            .unwrap_or((&[0; IA_FIXED], &[]));
        Self {
            iaid: u32::from_be_bytes([f[0], f[1], f[2], f[3]]),
            t1: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
            t2: u32::from_be_bytes([f[8], f[9], f[10], f[11]]),
            options: Options::trusted(rest),
        }
    }
}

impl<'a> Item<'a> for DhcpOption<'a> {
    #[inline(always)]
    fn check_item(buf: &'a [u8], ctx: Ctx) -> Result<&'a [u8]> {
        let (code, data, rest) = split_option(buf)?;
        match check_fields(code, data) {
            Ok(Some(nested)) if !nested.is_empty() => ctx
                .deeper()
                .and_then(|inner| Options::check(nested, inner))
                .map_err(|e| e.within(code))?,
            Ok(_) => {}
            Err(e) => return Err(e.within(code)),
        }
        Ok(rest)
    }

    #[inline]
    fn decode_item(buf: &mut &'a [u8]) -> Option<Self> {
        let (code, data, rest) = split_option(buf).ok()?;
        *buf = rest;
        Some(Self::from_checked(code, data))
    }

    fn item_len(&self) -> usize {
        self.buffer_len()
    }

    #[inline]
    fn emit_item(&self, w: &mut Writer<'_>) -> Result<()> {
        self.emit_to(w).map_err(|e| e.within(self.code_value()))
    }
}

impl<'a> DhcpOption<'a> {
    /// The option list nested in this option: the sub-options of IA_NA, IA_PD, IAADDR and
    /// IAPREFIX, the query-options of LQ_QUERY, the client options of CLIENT_DATA, and the
    /// options of the message carried by RELAY_MSG or LQ_RELAY_DATA.
    #[must_use]
    pub fn nested(&self) -> Option<Options<'a>> {
        match self {
            Self::IaNa(ia) | Self::IaPd(ia) => Some(ia.options),
            Self::IaAddr(a) => Some(a.options),
            Self::IaPrefix(p) => Some(p.options),
            Self::LqQuery(q) => Some(q.options),
            Self::ClientData(l) => Some(*l),
            Self::RelayMsg(m) => m.message().ok().map(|m| m.options),
            Self::LqRelayData(r) => r.relay_message.message().ok().map(|m| m.options),
            _ => None,
        }
    }
}

/// Helpers to find the usual options in a list.
impl<'a> Options<'a> {
    /// Visits every option depth-first, each before what is nested in it (see
    /// [`DhcpOption::nested`]), with its depth (0 for the options of this list).
    pub fn walk(&self, f: &mut impl FnMut(usize, &DhcpOption<'a>)) {
        self.walk_at(0, f);
    }

    fn walk_at(&self, depth: usize, f: &mut impl FnMut(usize, &DhcpOption<'a>)) {
        for o in self.iter() {
            f(depth, &o);
            if let Some(nested) = o.nested() {
                nested.walk_at(depth.saturating_add(1), f);
            }
        }
    }

    /// The first option with this code.
    #[must_use]
    pub fn get(&self, code: OptionCode) -> Option<DhcpOption<'a>> {
        self.find(|o| o.code() == code)
    }

    /// The status, if an OPTION_STATUS_CODE is present (absent means Success).
    #[must_use]
    pub fn status(&self) -> Option<StatusCode<'a>> {
        self.iter().find_map(|o| match o {
            DhcpOption::StatusCode(s) => Some(s),
            _ => None,
        })
    }

    /// The DUID in the first OPTION_CLIENTID.
    #[must_use]
    pub fn client_id(&self) -> Option<Duid<'a>> {
        self.iter().find_map(|o| match o {
            DhcpOption::ClientId(d) => Some(d),
            _ => None,
        })
    }

    /// The first OPTION_LQ_QUERY.
    #[must_use]
    pub fn lq_query(&self) -> Option<LqQuery<'a>> {
        self.iter().find_map(|o| match o {
            DhcpOption::LqQuery(q) => Some(q),
            _ => None,
        })
    }

    /// True when an OPTION_ORO in this list requests `code`.
    #[must_use]
    pub fn requests(&self, code: OptionCode) -> bool {
        self.iter().any(|o| match o {
            DhcpOption::Oro(l) => l.iter().any(|c| c == code.value()),
            _ => false,
        })
    }

    /// The value of OPTION_LQ_BASE_TIME, if present.
    #[must_use]
    pub fn base_time(&self) -> Option<ServerTime> {
        self.iter().find_map(|o| match o {
            DhcpOption::LqBaseTime(t) => Some(t),
            _ => None,
        })
    }
}
