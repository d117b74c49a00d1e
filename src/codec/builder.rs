//! A convenient builder for requests and replies, for tests, tools and the requestor.
//!
//! The server's hot path emits [`MessageRepr`](super::MessageRepr)s into its own buffers; this
//! builder allocates a `Vec` per message and is meant for everything else.

use core::net::Ipv6Addr;

use super::Writer;
use super::code::{MessageType, OptionCode, QueryType, ServerTime, Status, Xid};
use super::duid::Duid;
use super::error::{Error, Result};
use super::frame::frame_header;
use super::list::{CodeList, Options};
use super::message::{Embedded, Header, MessageRepr};
use super::option::{DhcpOption, IaAddr, IaPrefix, LqQuery, LqRelayData, RemoteId, StatusCode};
use super::wire::RawOption;

/// Appends `opt` to `buf`, or records the first error.
fn push_option(buf: &mut Vec<u8>, err: &mut Option<Error>, opt: &DhcpOption<'_>) {
    if err.is_some() {
        return;
    }
    let start = buf.len();
    buf.resize(start.saturating_add(opt.buffer_len()), 0);
    let mut w = Writer::new(buf.get_mut(start..).unwrap_or(&mut []));
    if let Err(e) = super::list::Item::emit_item(opt, &mut w) {
        *err = Some(e);
    }
    let end = start.saturating_add(w.position());
    buf.truncate(end);
}

/// The option-adding methods shared by [`MessageBuilder`] and [`OptionsBuilder`].
pub trait BuildOptions: Sized {
    /// Appends any option.
    #[must_use]
    fn option(self, opt: DhcpOption<'_>) -> Self;

    /// Appends options built by `f` into a container option made by `wrap`.
    #[doc(hidden)]
    #[must_use]
    fn nested(
        self,
        f: impl FnOnce(OptionsBuilder) -> OptionsBuilder,
        wrap: impl FnOnce(Options<'_>) -> DhcpOption<'_>,
    ) -> Self {
        let inner = f(OptionsBuilder::default());
        match inner.finish() {
            Ok(bytes) => match Options::parse(&bytes) {
                Ok(opts) => self.option(wrap(opts)),
                Err(e) => self.fail(e),
            },
            Err(e) => self.fail(e),
        }
    }

    /// Records an error; `build` will return it.
    #[doc(hidden)]
    #[must_use]
    fn fail(self, e: Error) -> Self;

    /// OPTION_CLIENTID with this DUID.
    #[must_use]
    fn client_id(self, duid: &[u8]) -> Self {
        self.option(DhcpOption::ClientId(Duid(duid)))
    }

    /// OPTION_SERVERID with this DUID.
    #[must_use]
    fn server_id(self, duid: &[u8]) -> Self {
        self.option(DhcpOption::ServerId(Duid(duid)))
    }

    /// OPTION_RELAY_ID with this DUID.
    #[must_use]
    fn relay_id(self, duid: &[u8]) -> Self {
        self.option(DhcpOption::RelayId(Duid(duid)))
    }

    /// OPTION_REMOTE_ID.
    #[must_use]
    fn remote_id(self, enterprise_number: u32, remote_id: &[u8]) -> Self {
        self.option(DhcpOption::RemoteId(RemoteId {
            enterprise_number,
            remote_id,
        }))
    }

    /// OPTION_ORO requesting these codes.
    #[must_use]
    fn oro(self, codes: &[OptionCode]) -> Self {
        let codes: Vec<u16> = codes.iter().map(|c| c.value()).collect();
        self.option(DhcpOption::Oro(CodeList::from_items(&codes)))
    }

    /// OPTION_STATUS_CODE.
    #[must_use]
    fn status(self, status: Status, message: &str) -> Self {
        self.option(DhcpOption::StatusCode(StatusCode::new(status, message)))
    }

    /// OPTION_IAADDR without sub-options.
    #[must_use]
    fn iaaddr(self, address: Ipv6Addr, preferred_lifetime: u32, valid_lifetime: u32) -> Self {
        self.option(DhcpOption::IaAddr(IaAddr {
            address,
            preferred_lifetime,
            valid_lifetime,
            options: Options::EMPTY,
        }))
    }

    /// OPTION_IAPREFIX without sub-options.
    #[must_use]
    fn iaprefix(
        self,
        prefix: Ipv6Addr,
        prefix_len: u8,
        preferred_lifetime: u32,
        valid_lifetime: u32,
    ) -> Self {
        self.option(DhcpOption::IaPrefix(IaPrefix {
            preferred_lifetime,
            valid_lifetime,
            prefix_len,
            prefix,
            options: Options::EMPTY,
        }))
    }

    /// OPTION_CLT_TIME.
    #[must_use]
    fn clt_time(self, seconds: u32) -> Self {
        self.option(DhcpOption::CltTime(seconds))
    }

    /// OPTION_LQ_BASE_TIME.
    #[must_use]
    fn base_time(self, t: ServerTime) -> Self {
        self.option(DhcpOption::LqBaseTime(t))
    }

    /// OPTION_LQ_START_TIME.
    #[must_use]
    fn start_time(self, t: ServerTime) -> Self {
        self.option(DhcpOption::LqStartTime(t))
    }

    /// OPTION_LQ_END_TIME.
    #[must_use]
    fn end_time(self, t: ServerTime) -> Self {
        self.option(DhcpOption::LqEndTime(t))
    }

    /// OPTION_LQ_CLIENT_LINK.
    #[must_use]
    fn client_link(self, links: &[Ipv6Addr]) -> Self {
        self.option(DhcpOption::LqClientLink(super::list::AddrList::from_items(
            links,
        )))
    }

    /// OPTION_LQ_RELAY_DATA carrying `relay_message`, which must be a valid DHCPv6 message.
    #[must_use]
    fn relay_data(self, peer_address: Ipv6Addr, relay_message: &[u8]) -> Self {
        match Embedded::parse(relay_message) {
            Ok(m) => self.option(DhcpOption::LqRelayData(LqRelayData {
                peer_address,
                relay_message: m,
            })),
            Err(e) => self.fail(e),
        }
    }

    /// An option of any code with raw data (for codes this crate does not type).
    #[must_use]
    fn raw(self, code: u16, data: &[u8]) -> Self {
        self.option(DhcpOption::Unknown(RawOption { code, data }))
    }

    /// OPTION_LQ_QUERY, with query-options built by `f`.
    #[must_use]
    fn lq_query(
        self,
        query_type: QueryType,
        link_address: Ipv6Addr,
        f: impl FnOnce(OptionsBuilder) -> OptionsBuilder,
    ) -> Self {
        self.nested(f, |options| {
            DhcpOption::LqQuery(LqQuery {
                query_type,
                link_address,
                options,
            })
        })
    }

    /// OPTION_CLIENT_DATA, with client options built by `f`.
    #[must_use]
    fn client_data(self, f: impl FnOnce(OptionsBuilder) -> OptionsBuilder) -> Self {
        self.nested(f, |options| DhcpOption::ClientData(options))
    }
}

/// Builds an option list (the body of a container option).
#[derive(Debug, Default)]
pub struct OptionsBuilder {
    buf: Vec<u8>,
    err: Option<Error>,
}

impl OptionsBuilder {
    /// The encoded options, or the first error met.
    pub fn finish(self) -> Result<Vec<u8>> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }
}

impl BuildOptions for OptionsBuilder {
    fn option(mut self, opt: DhcpOption<'_>) -> Self {
        push_option(&mut self.buf, &mut self.err, &opt);
        self
    }

    fn fail(mut self, e: Error) -> Self {
        self.err.get_or_insert(e);
        self
    }
}

/// Builds a whole message. Errors (an option over 65535 octets, a bad prefix length) are kept
/// and returned by [`build`](Self::build).
#[derive(Debug)]
pub struct MessageBuilder {
    buf: Vec<u8>,
    err: Option<Error>,
}

impl MessageBuilder {
    /// Starts a message with `header`, written (and checked against its message type) the way
    /// `MessageRepr::emit` writes it.
    fn with_header(header: Header) -> Self {
        let mut buf = Vec::with_capacity(128);
        let err = MessageRepr {
            header,
            options: Options::EMPTY,
        }
        .emit_to_vec(&mut buf)
        .err();
        Self { buf, err }
    }

    /// A client/server message of any type.
    #[must_use]
    pub fn new(msg_type: MessageType, xid: u32) -> Self {
        Self::with_header(Header::ClientServer {
            msg_type,
            xid: Xid::new(xid),
        })
    }

    /// A relay message (RELAY-FORW or RELAY-REPL).
    #[must_use]
    pub fn relay(
        msg_type: MessageType,
        hop_count: u8,
        link_address: Ipv6Addr,
        peer_address: Ipv6Addr,
    ) -> Self {
        Self::with_header(Header::Relay {
            msg_type,
            hop_count,
            link_address,
            peer_address,
        })
    }

    /// LEASEQUERY (14).
    #[must_use]
    pub fn leasequery(xid: u32) -> Self {
        Self::new(MessageType::Leasequery, xid)
    }

    /// ACTIVELEASEQUERY (22).
    #[must_use]
    pub fn active_leasequery(xid: u32) -> Self {
        Self::new(MessageType::ActiveLeasequery, xid)
    }

    /// LEASEQUERY-REPLY (15).
    #[must_use]
    pub fn reply(xid: u32) -> Self {
        Self::new(MessageType::LeasequeryReply, xid)
    }

    /// LEASEQUERY-DATA (17).
    #[must_use]
    pub fn data(xid: u32) -> Self {
        Self::new(MessageType::LeasequeryData, xid)
    }

    /// LEASEQUERY-DONE (16).
    #[must_use]
    pub fn done(xid: u32) -> Self {
        Self::new(MessageType::LeasequeryDone, xid)
    }

    /// OPTION_RELAY_MSG carrying `message`, which must be a valid DHCPv6 message.
    #[must_use]
    pub fn relay_msg(self, message: &[u8]) -> Self {
        match Embedded::parse(message) {
            Ok(m) => self.option(DhcpOption::RelayMsg(m)),
            Err(e) => self.fail(e),
        }
    }

    /// The message bytes.
    pub fn build(self) -> Result<Vec<u8>> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(self.buf),
        }
    }

    /// The message as one TCP frame, with its 2-octet `message-size` prefix.
    pub fn build_frame(self) -> Result<Vec<u8>> {
        let msg = self.build()?;
        let mut out = Vec::with_capacity(msg.len().saturating_add(2));
        out.extend_from_slice(&frame_header(msg.len())?);
        out.extend_from_slice(&msg);
        Ok(out)
    }
}

impl BuildOptions for MessageBuilder {
    fn option(mut self, opt: DhcpOption<'_>) -> Self {
        push_option(&mut self.buf, &mut self.err, &opt);
        self
    }

    fn fail(mut self, e: Error) -> Self {
        self.err.get_or_insert(e);
        self
    }
}
