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
use super::message::Embedded;
use super::wire::{OPTION_HEADER_LEN, RawOption, read_addr, read_u16, read_u32};
use super::{Ctx, Writer};

/// OPTION_IA_NA (3) and OPTION_IA_PD (25): an identity association.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ia<'a> {
    /// `IAID`.
    pub iaid: u32,
    /// `T1`.
    pub t1: u32,
    /// `T2`.
    pub t2: u32,
    /// `IA_NA-options` / `IA_PD-options`.
    pub options: Options<'a>,
}

/// OPTION_IAADDR (5): an address with its lifetimes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IaAddr<'a> {
    /// `IPv6-address`.
    pub address: Ipv6Addr,
    /// `preferred-lifetime`, seconds (0xFFFFFFFF is infinity).
    pub preferred_lifetime: u32,
    /// `valid-lifetime`, seconds (0xFFFFFFFF is infinity).
    pub valid_lifetime: u32,
    /// `IAaddr-options`.
    pub options: Options<'a>,
}

/// OPTION_IAPREFIX (26): a delegated prefix with its lifetimes. The lifetimes come first on
/// the wire, the reverse of IAADDR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IaPrefix<'a> {
    /// `preferred-lifetime`, seconds.
    pub preferred_lifetime: u32,
    /// `valid-lifetime`, seconds.
    pub valid_lifetime: u32,
    /// `prefix-length`, 0..=128.
    pub prefix_len: u8,
    /// `IPv6-prefix`.
    pub prefix: Ipv6Addr,
    /// `IAprefix-options`.
    pub options: Options<'a>,
}

/// OPTION_STATUS_CODE (13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusCode<'a> {
    /// `status-code`.
    pub status: Status,
    /// `status-message`: UTF-8 without a terminating NUL. Kept as bytes because peers are not
    /// always well behaved; see [`StatusCode::message_lossy`].
    pub message: &'a [u8],
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
pub struct RemoteId<'a> {
    /// `enterprise-number`.
    pub enterprise_number: u32,
    /// `remote-id`, opaque.
    pub remote_id: &'a [u8],
}

/// OPTION_LQ_QUERY (44, RFC 5007).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LqQuery<'a> {
    /// `query-type`.
    pub query_type: QueryType,
    /// `link-address`, `::` when unspecified.
    pub link_address: Ipv6Addr,
    /// `query-options`: the query's key (IAADDR, CLIENTID, RELAY_ID, REMOTE_ID) and an ORO for
    /// per-client options.
    pub options: Options<'a>,
}

/// OPTION_LQ_RELAY_DATA (47, RFC 5007): the last relayed message for a client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LqRelayData<'a> {
    /// `peer-address`: the relay agent the server received the relayed message from.
    pub peer_address: Ipv6Addr,
    /// `DHCP-relay-message`: a RELAY-FORW chain with the innermost OPTION_RELAY_MSG removed.
    pub relay_message: Embedded<'a>,
}

/// One DHCPv6 option, typed.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
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

/// Checks that a fixed-size body has exactly `len` octets.
fn exact(data: &[u8], len: usize) -> Result<()> {
    if data.len() == len {
        Ok(())
    } else {
        Err(Error::new(ErrorKind::BadLength))
    }
}

/// Checks that a body holds at least its fixed part, and returns the rest.
fn after(data: &[u8], fixed: usize) -> Result<&[u8]> {
    data.get(fixed..).ok_or(Error::new(ErrorKind::BadLength))
}

/// A `u32` body of exactly four octets.
fn u32_body(data: &[u8]) -> Result<u32> {
    exact(data, 4)?;
    read_u32(data, 0)
}

impl<'a> DhcpOption<'a> {
    /// The option's code.
    #[must_use]
    pub fn code(&self) -> OptionCode {
        match self {
            Self::ClientId(_) => OptionCode::ClientId,
            Self::ServerId(_) => OptionCode::ServerId,
            Self::IaNa(_) => OptionCode::IaNa,
            Self::IaAddr(_) => OptionCode::IaAddr,
            Self::Oro(_) => OptionCode::Oro,
            Self::RelayMsg(_) => OptionCode::RelayMsg,
            Self::StatusCode(_) => OptionCode::StatusCode,
            Self::InterfaceId(_) => OptionCode::InterfaceId,
            Self::IaPd(_) => OptionCode::IaPd,
            Self::IaPrefix(_) => OptionCode::IaPrefix,
            Self::RemoteId(_) => OptionCode::RemoteId,
            Self::LqQuery(_) => OptionCode::LqQuery,
            Self::ClientData(_) => OptionCode::ClientData,
            Self::CltTime(_) => OptionCode::CltTime,
            Self::LqRelayData(_) => OptionCode::LqRelayData,
            Self::LqClientLink(_) => OptionCode::LqClientLink,
            Self::RelayId(_) => OptionCode::RelayId,
            Self::LqBaseTime(_) => OptionCode::LqBaseTime,
            Self::LqStartTime(_) => OptionCode::LqStartTime,
            Self::LqEndTime(_) => OptionCode::LqEndTime,
            Self::Unknown(raw) => OptionCode::from(raw.code),
        }
    }

    /// Types a raw option, validating its body and everything nested in it.
    pub fn from_raw(raw: RawOption<'a>) -> Result<Self> {
        Self::from_raw_ctx(raw, Ctx::VALIDATE)
    }

    pub(crate) fn from_raw_ctx(raw: RawOption<'a>, ctx: Ctx) -> Result<Self> {
        let d = raw.data;
        let opt = match OptionCode::from(raw.code) {
            OptionCode::ClientId => Self::ClientId(Duid(d)),
            OptionCode::ServerId => Self::ServerId(Duid(d)),
            OptionCode::RelayId => Self::RelayId(Duid(d)),
            OptionCode::IaNa => Self::IaNa(Ia::parse(d, ctx)?),
            OptionCode::IaPd => Self::IaPd(Ia::parse(d, ctx)?),
            OptionCode::IaAddr => {
                let rest = after(d, 24)?;
                Self::IaAddr(IaAddr {
                    address: read_addr(d, 0)?,
                    preferred_lifetime: read_u32(d, 16)?,
                    valid_lifetime: read_u32(d, 20)?,
                    options: Options::parse_ctx(rest, ctx.deeper()?)?,
                })
            }
            OptionCode::IaPrefix => {
                let rest = after(d, 25)?;
                let prefix_len = d.get(8).copied().unwrap_or(0);
                if prefix_len > 128 {
                    return Err(Error::in_option(ErrorKind::BadValue, raw.code));
                }
                Self::IaPrefix(IaPrefix {
                    preferred_lifetime: read_u32(d, 0)?,
                    valid_lifetime: read_u32(d, 4)?,
                    prefix_len,
                    prefix: read_addr(d, 9)?,
                    options: Options::parse_ctx(rest, ctx.deeper()?)?,
                })
            }
            OptionCode::Oro => Self::Oro(CodeList::parse_ctx(d, ctx)?),
            OptionCode::RelayMsg => Self::RelayMsg(Embedded::parse_ctx(d, ctx.deeper()?)?),
            OptionCode::StatusCode => {
                let message = after(d, 2)?;
                Self::StatusCode(StatusCode {
                    status: Status::from(read_u16(d, 0)?),
                    message,
                })
            }
            OptionCode::InterfaceId => Self::InterfaceId(d),
            OptionCode::RemoteId => {
                let remote_id = after(d, 4)?;
                Self::RemoteId(RemoteId {
                    enterprise_number: read_u32(d, 0)?,
                    remote_id,
                })
            }
            OptionCode::LqQuery => {
                let rest = after(d, 17)?;
                Self::LqQuery(LqQuery {
                    query_type: QueryType::from(d.first().copied().unwrap_or(0)),
                    link_address: read_addr(d, 1)?,
                    options: Options::parse_ctx(rest, ctx.deeper()?)?,
                })
            }
            OptionCode::ClientData => Self::ClientData(Options::parse_ctx(d, ctx.deeper()?)?),
            OptionCode::CltTime => Self::CltTime(u32_body(d)?),
            OptionCode::LqRelayData => {
                let rest = after(d, 16)?;
                Self::LqRelayData(LqRelayData {
                    peer_address: read_addr(d, 0)?,
                    relay_message: Embedded::parse_ctx(rest, ctx.deeper()?)?,
                })
            }
            OptionCode::LqClientLink => Self::LqClientLink(AddrList::parse_ctx(d, ctx)?),
            OptionCode::LqBaseTime => Self::LqBaseTime(ServerTime(u32_body(d)?)),
            OptionCode::LqStartTime => Self::LqStartTime(ServerTime(u32_body(d)?)),
            OptionCode::LqEndTime => Self::LqEndTime(ServerTime(u32_body(d)?)),
            OptionCode::Unknown(_) => Self::Unknown(raw),
        };
        Ok(opt)
    }

    /// The length of `option-data` when emitted.
    #[must_use]
    pub fn body_len(&self) -> usize {
        match self {
            Self::ClientId(d) | Self::ServerId(d) | Self::RelayId(d) => d.0.len(),
            Self::IaNa(ia) | Self::IaPd(ia) => ia.options.buffer_len().saturating_add(12),
            Self::IaAddr(a) => a.options.buffer_len().saturating_add(24),
            Self::IaPrefix(p) => p.options.buffer_len().saturating_add(25),
            Self::Oro(l) => l.buffer_len(),
            Self::RelayMsg(m) => m.buffer_len(),
            Self::StatusCode(s) => s.message.len().saturating_add(2),
            Self::InterfaceId(b) => b.len(),
            Self::RemoteId(r) => r.remote_id.len().saturating_add(4),
            Self::LqQuery(q) => q.options.buffer_len().saturating_add(17),
            Self::ClientData(l) => l.buffer_len(),
            Self::CltTime(_) | Self::LqBaseTime(_) | Self::LqStartTime(_) | Self::LqEndTime(_) => 4,
            Self::LqRelayData(r) => r.relay_message.buffer_len().saturating_add(16),
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

    fn emit_body(&self, w: &mut Writer<'_>) -> Result<()> {
        match self {
            Self::ClientId(d) | Self::ServerId(d) | Self::RelayId(d) => w.put(d.0),
            Self::IaNa(ia) | Self::IaPd(ia) => {
                w.put_u32(ia.iaid)?;
                w.put_u32(ia.t1)?;
                w.put_u32(ia.t2)?;
                ia.options.emit(w)
            }
            Self::IaAddr(a) => {
                w.put(&a.address.octets())?;
                w.put_u32(a.preferred_lifetime)?;
                w.put_u32(a.valid_lifetime)?;
                a.options.emit(w)
            }
            Self::IaPrefix(p) => {
                if p.prefix_len > 128 {
                    return Err(Error::new(ErrorKind::BadValue));
                }
                w.put_u32(p.preferred_lifetime)?;
                w.put_u32(p.valid_lifetime)?;
                w.put(&[p.prefix_len])?;
                w.put(&p.prefix.octets())?;
                p.options.emit(w)
            }
            Self::Oro(l) => l.emit(w),
            Self::RelayMsg(m) => m.emit(w),
            Self::StatusCode(s) => {
                w.put_u16(s.status.value())?;
                w.put(s.message)
            }
            Self::InterfaceId(b) => w.put(b),
            Self::RemoteId(r) => {
                w.put_u32(r.enterprise_number)?;
                w.put(r.remote_id)
            }
            Self::LqQuery(q) => {
                w.put(&[q.query_type.value()])?;
                w.put(&q.link_address.octets())?;
                q.options.emit(w)
            }
            Self::ClientData(l) => l.emit(w),
            Self::CltTime(v) => w.put_u32(*v),
            Self::LqBaseTime(t) | Self::LqStartTime(t) | Self::LqEndTime(t) => w.put_u32(t.0),
            Self::LqRelayData(r) => {
                w.put(&r.peer_address.octets())?;
                r.relay_message.emit(w)
            }
            Self::LqClientLink(l) => l.emit(w),
            Self::Unknown(raw) => w.put(raw.data),
        }
    }
}

impl<'a> Ia<'a> {
    fn parse(d: &'a [u8], ctx: Ctx) -> Result<Self> {
        let rest = after(d, 12)?;
        Ok(Self {
            iaid: read_u32(d, 0)?,
            t1: read_u32(d, 4)?,
            t2: read_u32(d, 8)?,
            options: Options::parse_ctx(rest, ctx.deeper()?)?,
        })
    }
}

impl<'a> Item<'a> for DhcpOption<'a> {
    fn parse_item(buf: &'a [u8], ctx: Ctx) -> Result<(Self, usize)> {
        let code = read_u16(buf, 0)?;
        let len = read_u16(buf, 2).map_err(|e| e.within(code))?;
        let end = OPTION_HEADER_LEN
            .checked_add(usize::from(len))
            .ok_or(Error::in_option(ErrorKind::Truncated, code))?;
        let data = buf
            .get(OPTION_HEADER_LEN..end)
            .ok_or(Error::in_option(ErrorKind::Truncated, code))?;
        let opt = Self::from_raw_ctx(RawOption { code, data }, ctx).map_err(|e| e.within(code))?;
        Ok((opt, end))
    }

    fn item_len(&self) -> usize {
        self.buffer_len()
    }

    fn emit_item(&self, w: &mut Writer<'_>) -> Result<()> {
        let code = self.code().value();
        let at = w.begin_option(code)?;
        self.emit_body(w).map_err(|e| e.within(code))?;
        w.end_option(at, code)
    }
}

/// Helpers to find the usual options in a list.
impl<'a> Options<'a> {
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
