//! Interop test: tshark (Wireshark 4.0), an independent decoder, reads what our encoder writes.
//!
//! The test describes a realistic set of leasequery messages in a small test-side model
//! ([`Msg`], [`Opt`]). From that one description it gets
//!
//! - the bytes, from OUR encoder (`MessageBuilder`, then `MessageRepr::parse` and
//!   `encode_frame`, the server's own path for TCP frames), and
//! - what tshark must show for each message: message type, transaction id, every option code
//!   and length in tree order, and the decoded values (DUIDs, query type and link-address,
//!   IAADDR and IAPREFIX fields, CLT_TIME, status codes and texts, LQ_CLIENT_LINK, remote-id).
//!   These expectations come from the model's literals and lengths computed here, never from
//!   our parser, so a codec bug (a wrong length, swapped IAPREFIX fields) shows as a mismatch.
//!
//! The messages go into a pcap file with Ethernet / IPv6 / TCP or UDP headers (see
//! `common/pcap.rs`): four TCP/547 conversations (one Bulk session with five queries, three
//! Active sessions, one of them after a refused STARTTLS), cut so that segments carry several
//! frames and frames (and one 2-octet length prefix) are split across segments, plus UDP/547
//! query / reply pairs. tshark decodes it with TCP and UDP checksum validation on, and the
//! test compares, packet by packet, the occurrences of each field (`-T fields -E
//! occurrence=a`). Two things tshark 4.0 does not decode are checked from `-T pdml` raw bytes
//! instead: the values of options 100–102, and the relayed message inside
//! OPTION_LQ_RELAY_DATA, which tshark shows as a string. The relayed message tshark found
//! there is then put in a second capture as a UDP datagram and decoded as a RELAY-FORW.
//!
//! Known tshark 4.0 quirks (Debian 12's tshark) the test expects:
//! - over TCP the 24-bit xid is shown as `reserved` (high octet) + `trans_id` (low 16 bits);
//! - message types 22 and 23 raise a "Message Type N not allowed by DHCPv6 Bulk Leasequery"
//!   warning;
//! - the relay message in OPTION_LQ_RELAY_DATA is read as ASCII text, which raises a "Trailing
//!   stray characters" warning (its first NUL octet ends the "string");
//! - a message with no options at all (4 octets) makes the Bulk dissector throw "Malformed
//!   Packet", so every message here carries at least one option (decision D14 does the same
//!   for LEASEQUERY-DONE).
//!
//! Any other warning or error, including a malformed packet, a bad checksum or a TCP
//! sequence problem, fails the test.

#[path = "common/pcap.rs"]
mod pcap;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use lqd::codec::{
    BuildOptions, DhcpOption, MessageBuilder, MessageRepr, MessageType, OptionCode, QueryType,
    ServerTime, Status, encode_frame,
};
use pcap::{Dir, Endpoint, Pcap, TcpFlow};

// ----------------------------------------------------------------------------------------------
// Identities and addresses used throughout.

/// The requestor: DUID-LL, Ethernet 00:11:22:33:44:55.
const REQUESTOR_DUID: &[u8] = &[0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
/// A client: DUID-LL, Ethernet 66:77:88:99:aa:bb.
const CLIENT_DUID: &[u8] = &[0, 3, 0, 1, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb];
/// A second client: DUID-UUID.
const CLIENT2_DUID: &[u8] = &[
    0, 4, 0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
    0xc8,
];
/// The server: DUID-LLT.
const SERVER_DUID: &[u8] = &[0, 1, 0, 1, 0x2f, 0x07, 0x7a, 0, 0, 0, 0, 0, 0xca, 0xfe];
/// The relay agent's Relay-ID: DUID-EN, enterprise 9, identifier 0102030405.
const RELAY_DUID: &[u8] = &[0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5];
/// The relay agent's Remote-ID: enterprise 3561 (Broadband Forum) and an access-loop id.
const REMOTE_ENTERPRISE: u32 = 3561;
const REMOTE_ID: &[u8] = b"olt-3/port-7/1";
/// The relay agent's Interface-ID.
const INTERFACE_ID: &[u8] = b"eth0.100";

/// 2025-01-01T00:00:00Z and later, in server time (seconds since 2000).
const T0: u32 = 789_004_800;

fn a(s: &str) -> Ipv6Addr {
    s.parse().expect("address literal")
}

// ----------------------------------------------------------------------------------------------
// The test-side model: what we send, and what tshark must show for it.

/// One option as the test means it.
#[derive(Debug, Clone)]
enum Opt {
    ClientId(&'static [u8]),
    ServerId(&'static [u8]),
    RelayId(&'static [u8]),
    Oro(Vec<OptionCode>),
    Status(Status, &'static str),
    IaAddr(Ipv6Addr, u32, u32),
    /// Prefix, prefix length, preferred lifetime, valid lifetime.
    IaPrefix(Ipv6Addr, u8, u32, u32),
    CltTime(u32),
    BaseTime(u32),
    StartTime(u32),
    EndTime(u32),
    ClientLink(Vec<Ipv6Addr>),
    RemoteId(u32, &'static [u8]),
    InterfaceId(&'static [u8]),
    Query(QueryType, Ipv6Addr, Vec<Self>),
    ClientData(Vec<Self>),
    /// Peer address and the relayed RELAY-FORW (without its RELAY_MSG, as RFC 5007 says).
    RelayData(Ipv6Addr, Relay),
}

/// A RELAY-FORW as a relay agent sent it.
#[derive(Debug, Clone)]
struct Relay {
    hop_count: u8,
    link: Ipv6Addr,
    peer: Ipv6Addr,
    opts: Vec<Opt>,
}

/// A client/server message.
#[derive(Debug, Clone)]
struct Msg {
    msg_type: MessageType,
    xid: u32,
    opts: Vec<Opt>,
}

/// What tshark must show: `(field, value)` pairs in tree order. Only the order among pairs of
/// the same field matters, since tshark lists each field's occurrences separately.
type Expect = Vec<(&'static str, String)>;

/// Pseudo-field: the whole TLV (hex) of each option 100–102, taken from PDML raw bytes
/// because tshark 4.0 names these options but does not decode their value.
const RAW_TIME_OPTION: &str = "pdml:time-option-tlv";
/// Pseudo-field: the raw bytes (hex) tshark attributes to the relayed message of
/// OPTION_LQ_RELAY_DATA, from PDML.
const RAW_RELAY_MSG: &str = "pdml:dhcpv6.lq_relay_data_msg";
/// Pseudo-field: the expert infos of severity warning or above, as "message".
const EXPERT: &str = "expert:warn+";

/// The tshark 4.0 warning for OPTION_LQ_RELAY_DATA (its message is decoded as a string).
const STRAY_CHARACTERS: &str = "Trailing stray characters";

fn bulk_type_warning(msg_type: MessageType) -> String {
    format!(
        "Message Type {} not allowed by DHCPv6 Bulk Leasequery",
        msg_type.value()
    )
}

impl Opt {
    /// Adds this option with our builder.
    fn build<B: BuildOptions>(&self, b: B) -> B {
        match self {
            Self::ClientId(d) => b.client_id(d),
            Self::ServerId(d) => b.server_id(d),
            Self::RelayId(d) => b.relay_id(d),
            Self::Oro(codes) => b.oro(codes),
            Self::Status(s, text) => b.status(*s, text),
            Self::IaAddr(addr, pref, valid) => b.iaaddr(*addr, *pref, *valid),
            Self::IaPrefix(prefix, len, pref, valid) => b.iaprefix(*prefix, *len, *pref, *valid),
            Self::CltTime(t) => b.clt_time(*t),
            Self::BaseTime(t) => b.base_time(ServerTime(*t)),
            Self::StartTime(t) => b.start_time(ServerTime(*t)),
            Self::EndTime(t) => b.end_time(ServerTime(*t)),
            Self::ClientLink(links) => b.client_link(links),
            Self::RemoteId(ent, id) => b.remote_id(*ent, id),
            Self::InterfaceId(id) => b.option(DhcpOption::InterfaceId(id)),
            Self::Query(qt, link, opts) => {
                b.lq_query(*qt, *link, |q| opts.iter().fold(q, |q, o| o.build(q)))
            }
            Self::ClientData(opts) => b.client_data(|c| opts.iter().fold(c, |c, o| o.build(c))),
            Self::RelayData(peer, relay) => b.relay_data(*peer, &relay.bytes()),
        }
    }

    /// The option code, as the RFCs number it.
    fn code(&self) -> u16 {
        match self {
            Self::ClientId(_) => 1,
            Self::ServerId(_) => 2,
            Self::IaAddr(..) => 5,
            Self::Oro(_) => 6,
            Self::Status(..) => 13,
            Self::InterfaceId(_) => 18,
            Self::IaPrefix(..) => 26,
            Self::RemoteId(..) => 37,
            Self::Query(..) => 44,
            Self::ClientData(_) => 45,
            Self::CltTime(_) => 46,
            Self::RelayData(..) => 47,
            Self::ClientLink(_) => 48,
            Self::RelayId(_) => 53,
            Self::BaseTime(_) => 100,
            Self::StartTime(_) => 101,
            Self::EndTime(_) => 102,
        }
    }

    /// `option-len`, computed from the layouts in digest §4 (not by the codec).
    fn data_len(&self) -> usize {
        match self {
            Self::ClientId(d) | Self::ServerId(d) | Self::RelayId(d) => d.len(),
            Self::Oro(codes) => 2 * codes.len(),
            Self::Status(_, text) => 2 + text.len(),
            Self::IaAddr(..) => 16 + 4 + 4,
            Self::IaPrefix(..) => 4 + 4 + 1 + 16,
            Self::CltTime(_) | Self::BaseTime(_) | Self::StartTime(_) | Self::EndTime(_) => 4,
            Self::ClientLink(links) => 16 * links.len(),
            Self::RemoteId(_, id) => 4 + id.len(),
            Self::InterfaceId(id) => id.len(),
            Self::Query(_, _, opts) => 1 + 16 + total_len(opts),
            Self::ClientData(opts) => total_len(opts),
            Self::RelayData(_, relay) => 16 + relay.len(),
        }
    }

    /// What tshark must show for this option (and everything inside it).
    fn expect(&self, out: &mut Expect) {
        out.push(("dhcpv6.option.type", self.code().to_string()));
        out.push(("dhcpv6.option.length", self.data_len().to_string()));
        match self {
            Self::ClientId(d) | Self::ServerId(d) | Self::RelayId(d) => {
                out.push(("dhcpv6.duid.bytes", hex::encode(d)));
            }
            Self::Oro(codes) => {
                for c in codes {
                    out.push(("dhcpv6.requested_option_code", c.value().to_string()));
                }
            }
            Self::Status(s, text) => {
                assert!(
                    !text.contains(';'),
                    "';' separates occurrences in tshark output"
                );
                out.push(("dhcpv6.status_code", s.value().to_string()));
                // tshark adds no status-message field for an empty message.
                if !text.is_empty() {
                    out.push(("dhcpv6.status_msg", (*text).to_string()));
                }
            }
            Self::IaAddr(addr, pref, valid) => {
                out.push(("dhcpv6.iaaddr.ip", addr.to_string()));
                out.push(("dhcpv6.iaaddr.pref_lifetime", pref.to_string()));
                out.push(("dhcpv6.iaaddr.valid_lifetime", valid.to_string()));
            }
            Self::IaPrefix(prefix, len, pref, valid) => {
                out.push(("dhcpv6.iaprefix.pref_lifetime", pref.to_string()));
                out.push(("dhcpv6.iaprefix.valid_lifetime", valid.to_string()));
                out.push(("dhcpv6.iaprefix.pref_len", len.to_string()));
                out.push(("dhcpv6.iaprefix.pref_addr", prefix.to_string()));
            }
            Self::CltTime(t) => out.push(("dhcpv6.clt_time", t.to_string())),
            Self::BaseTime(t) | Self::StartTime(t) | Self::EndTime(t) => {
                let mut tlv = self.code().to_be_bytes().to_vec();
                tlv.extend_from_slice(&4u16.to_be_bytes());
                tlv.extend_from_slice(&t.to_be_bytes());
                out.push((RAW_TIME_OPTION, hex::encode(tlv)));
            }
            Self::ClientLink(links) => {
                for l in links {
                    out.push(("dhcpv6.lq_client_link", l.to_string()));
                }
            }
            Self::RemoteId(ent, id) => {
                out.push(("dhcpv6.remoteid.enterprise", ent.to_string()));
                out.push(("dhcpv6.remoteid_enterprise_id", hex::encode(id)));
            }
            Self::InterfaceId(id) => out.push(("dhcpv6.interface_id", hex::encode(id))),
            Self::Query(qt, link, opts) => {
                out.push(("dhcpv6.lq_query", qt.value().to_string()));
                out.push(("dhcpv6.lq_query_link_address", link.to_string()));
                expect_all(opts, out);
            }
            Self::ClientData(opts) => expect_all(opts, out),
            Self::RelayData(peer, relay) => {
                out.push(("dhcpv6.lq_relay_data_peer_addr", peer.to_string()));
                out.push((RAW_RELAY_MSG, hex::encode(relay.bytes())));
                out.push((EXPERT, STRAY_CHARACTERS.to_string()));
            }
        }
    }
}

/// Octets a list of options takes on the wire (headers included).
fn total_len(opts: &[Opt]) -> usize {
    opts.iter().map(|o| 4 + o.data_len()).sum()
}

fn expect_all(opts: &[Opt], out: &mut Expect) {
    for o in opts {
        o.expect(out);
    }
}

impl Relay {
    /// The message bytes, from our builder.
    fn bytes(&self) -> Vec<u8> {
        let b = MessageBuilder::relay(MessageType::RelayForw, self.hop_count, self.link, self.peer);
        let bytes = self
            .opts
            .iter()
            .fold(b, |b, o| o.build(b))
            .build()
            .expect("relay message builds");
        assert_eq!(bytes.len(), self.len(), "RELAY-FORW length");
        bytes
    }

    /// Length from the layout: 34-octet relay header, then the options.
    fn len(&self) -> usize {
        34 + total_len(&self.opts)
    }

    /// What tshark must show when this message is a UDP datagram of its own.
    fn expect(&self) -> Expect {
        let mut out = vec![
            ("dhcpv6.msgtype", "12".to_string()),
            ("dhcpv6.hopcount", self.hop_count.to_string()),
            ("dhcpv6.linkaddr", self.link.to_string()),
            ("dhcpv6.peeraddr", self.peer.to_string()),
        ];
        expect_all(&self.opts, &mut out);
        out
    }
}

impl Msg {
    fn new(msg_type: MessageType, xid: u32, opts: Vec<Opt>) -> Self {
        assert!(
            !opts.is_empty(),
            "tshark 4.0 flags a message without options as malformed"
        );
        Self {
            msg_type,
            xid,
            opts,
        }
    }

    /// The message bytes, from our builder.
    fn bytes(&self) -> Vec<u8> {
        let b = MessageBuilder::new(self.msg_type, self.xid);
        let bytes = self
            .opts
            .iter()
            .fold(b, |b, o| o.build(b))
            .build()
            .expect("message builds");
        assert_eq!(bytes.len(), self.len(), "{:?} length", self.msg_type);
        bytes
    }

    /// Length from the layout: 4-octet header, then the options.
    fn len(&self) -> usize {
        4 + total_len(&self.opts)
    }

    /// The TCP frame, the way the server writes one: the builder's bytes parsed into a repr,
    /// then `encode_frame`. It must equal the builder's own `build_frame`.
    fn frame(&self) -> Vec<u8> {
        let bytes = self.bytes();
        let repr = MessageRepr::parse(&bytes).expect("our own message parses");
        let mut frame = vec![0; repr.buffer_len() + 2];
        let n = encode_frame(&repr, &mut frame).expect("encode_frame");
        assert_eq!(n, frame.len());
        let built = self
            .opts
            .iter()
            .fold(MessageBuilder::new(self.msg_type, self.xid), |b, o| {
                o.build(b)
            })
            .build_frame()
            .expect("build_frame");
        assert_eq!(frame, built, "encode_frame and build_frame disagree");
        frame
    }

    /// What tshark must show for this message over UDP (the DHCPv6 dissector) or TCP (the
    /// Bulk Leasequery dissector, which splits the xid and has its own header fields).
    fn expect(&self, tcp: bool) -> Expect {
        let ty = self.msg_type.value().to_string();
        let mut out = if tcp {
            let mut out = vec![
                ("dhcpv6.bulk_leasequery.size", self.len().to_string()),
                ("dhcpv6.bulk_leasequery.msgtype", ty),
                (
                    "dhcpv6.bulk_leasequery.reserved",
                    (self.xid >> 16).to_string(),
                ),
                (
                    "dhcpv6.bulk_leasequery.trans_id",
                    (self.xid & 0xffff).to_string(),
                ),
            ];
            if matches!(
                self.msg_type,
                MessageType::ActiveLeasequery | MessageType::StartTls
            ) {
                out.push((EXPERT, bulk_type_warning(self.msg_type)));
            }
            out
        } else {
            vec![
                ("dhcpv6.msgtype", ty),
                ("dhcpv6.xid", format!("0x{:06x}", self.xid)),
            ]
        };
        expect_all(&self.opts, &mut out);
        out
    }
}

// ----------------------------------------------------------------------------------------------
// The capture: packets, and what tshark must show in each.

/// Every field compared, packet by packet. The pseudo-fields come from PDML and expert info.
const FIELDS: &[&str] = &[
    "dhcpv6.msgtype",
    "dhcpv6.xid",
    "dhcpv6.hopcount",
    "dhcpv6.linkaddr",
    "dhcpv6.peeraddr",
    "dhcpv6.bulk_leasequery.size",
    "dhcpv6.bulk_leasequery.msgtype",
    "dhcpv6.bulk_leasequery.reserved",
    "dhcpv6.bulk_leasequery.trans_id",
    "dhcpv6.option.type",
    "dhcpv6.option.length",
    "dhcpv6.duid.bytes",
    "dhcpv6.requested_option_code",
    "dhcpv6.status_code",
    "dhcpv6.status_msg",
    "dhcpv6.lq_query",
    "dhcpv6.lq_query_link_address",
    "dhcpv6.iaaddr.ip",
    "dhcpv6.iaaddr.pref_lifetime",
    "dhcpv6.iaaddr.valid_lifetime",
    "dhcpv6.iaprefix.pref_lifetime",
    "dhcpv6.iaprefix.valid_lifetime",
    "dhcpv6.iaprefix.pref_len",
    "dhcpv6.iaprefix.pref_addr",
    "dhcpv6.clt_time",
    "dhcpv6.lq_relay_data_peer_addr",
    "dhcpv6.lq_client_link",
    "dhcpv6.remoteid.enterprise",
    "dhcpv6.remoteid_enterprise_id",
    "dhcpv6.interface_id",
    RAW_TIME_OPTION,
    RAW_RELAY_MSG,
    EXPERT,
];

/// A capture under construction, with the expectation for each packet.
struct Capture {
    pcap: Pcap,
    expect: Vec<Expect>,
    /// DHCPv6 messages written on TCP.
    tcp_messages: usize,
    /// Every RELAY-FORW carried in an OPTION_LQ_RELAY_DATA, in capture order.
    relays: Vec<Relay>,
}

/// Where to cut a direction's byte stream into segments: `(frame, offset)` cuts `offset`
/// octets into that frame (its 2-octet prefix included); offset 0 cuts just before it.
type Cut = (usize, usize);

impl Capture {
    fn new() -> Self {
        Self {
            pcap: Pcap::new(),
            expect: Vec::new(),
            tcp_messages: 0,
            relays: Vec::new(),
        }
    }

    /// Expects nothing DHCPv6 in packets written directly to the pcap (handshakes, closes).
    fn sync(&mut self) {
        while self.expect.len() < self.pcap.packet_count() {
            self.expect.push(Expect::new());
        }
    }

    fn note_relays(&mut self, msg: &Msg) {
        fn walk(opts: &[Opt], out: &mut Vec<Relay>) {
            for o in opts {
                match o {
                    Opt::RelayData(_, relay) => out.push(relay.clone()),
                    Opt::Query(_, _, inner) | Opt::ClientData(inner) => walk(inner, out),
                    _ => {}
                }
            }
        }
        walk(&msg.opts, &mut self.relays);
    }

    /// Sends `msgs` as TCP frames in direction `dir`, as segments cut at `cuts`. tshark shows
    /// a message in the packet that completes its frame.
    fn tcp(&mut self, flow: &mut TcpFlow, dir: Dir, msgs: &[Msg], cuts: &[Cut]) {
        self.sync();
        let mut stream = Vec::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        for m in msgs {
            starts.push(stream.len());
            stream.extend_from_slice(&m.frame());
            ends.push(stream.len());
            self.note_relays(m);
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|&(f, off)| starts[f] + off).collect();
        bounds.push(stream.len());
        let mut from = 0;
        for to in bounds {
            assert!(from < to && to <= stream.len(), "bad cut list {cuts:?}");
            flow.send(&mut self.pcap, dir, &stream[from..to]);
            let mut exp = Expect::new();
            for (m, &end) in msgs.iter().zip(&ends) {
                if from < end && end <= to {
                    exp.extend(m.expect(true));
                }
            }
            self.expect.push(exp);
            from = to;
        }
        self.tcp_messages += msgs.len();
    }

    /// One UDP datagram carrying `msg`.
    fn udp(&mut self, src: &Endpoint, dst: &Endpoint, msg: &Msg) {
        self.sync();
        self.note_relays(msg);
        self.pcap.udp(src, dst, &msg.bytes());
        self.expect.push(msg.expect(false));
    }
}

// ----------------------------------------------------------------------------------------------
// The scenario.

fn requestor(port: u16) -> Endpoint {
    Endpoint::new(0x10, a("2001:db8::10"), port)
}

fn server() -> Endpoint {
    Endpoint::new(0x47, a("2001:db8::547"), 547)
}

/// The RELAY-FORW the server stored for a client (RELAY_MSG removed, RFC 5007 §4.1.2.4).
fn stored_relay(hop_count: u8, link: &str, peer: &str) -> Relay {
    Relay {
        hop_count,
        link: a(link),
        peer: a(peer),
        opts: vec![
            Opt::InterfaceId(INTERFACE_ID),
            Opt::RemoteId(REMOTE_ENTERPRISE, REMOTE_ID),
            Opt::RelayId(RELAY_DUID),
        ],
    }
}

/// Client data for CLIENT_DUID: an address, a delegated prefix, CLT_TIME, and relay data.
fn client_data_full() -> Opt {
    Opt::ClientData(vec![
        Opt::ClientId(CLIENT_DUID),
        Opt::IaAddr(a("2001:db8:1::100"), 3600, 7200),
        Opt::IaPrefix(a("2001:db8:ff00::"), 56, 1800, 5400),
        Opt::CltTime(60),
        Opt::RelayData(
            a("2001:db8:1::1"),
            stored_relay(0, "2001:db8:1::1", "fe80::6677:88ff:fe99:aabb"),
        ),
    ])
}

/// The options every reply starts with: who answers, and whom.
fn reply_head() -> Vec<Opt> {
    vec![Opt::ServerId(SERVER_DUID), Opt::ClientId(REQUESTOR_DUID)]
}

/// Bulk Leasequery: five pipelined queries, one of each type, and the server's answers.
fn bulk_session(cap: &mut Capture) {
    use MessageType::{Leasequery, LeasequeryData, LeasequeryDone, LeasequeryReply};
    let mut flow = TcpFlow::new(requestor(40001), server(), 0x1000_0000, 0xfedc_ba98);
    flow.handshake(&mut cap.pcap);

    let queries = vec![
        Msg::new(
            Leasequery,
            0xab_0001,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Query(
                    QueryType::ByAddress,
                    a("2001:db8:1::"),
                    vec![Opt::IaAddr(a("2001:db8:1::100"), 0, 0)],
                ),
            ],
        ),
        Msg::new(
            Leasequery,
            0xab_0002,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Query(
                    QueryType::ByClientId,
                    Ipv6Addr::UNSPECIFIED,
                    vec![Opt::ClientId(CLIENT_DUID)],
                ),
            ],
        ),
        Msg::new(
            Leasequery,
            0xab_0003,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Oro(vec![OptionCode::LqBaseTime]),
                Opt::Query(
                    QueryType::ByRelayId,
                    Ipv6Addr::UNSPECIFIED,
                    vec![
                        Opt::RelayId(RELAY_DUID),
                        Opt::Oro(vec![OptionCode::LqRelayData]),
                    ],
                ),
                Opt::StartTime(T0),
                Opt::EndTime(T0 + 600),
            ],
        ),
        Msg::new(
            Leasequery,
            0xab_0004,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Query(
                    QueryType::ByLinkAddress,
                    a("2001:db8:2::1"),
                    vec![Opt::Oro(vec![OptionCode::LqRelayData, OptionCode::CltTime])],
                ),
            ],
        ),
        Msg::new(
            Leasequery,
            0xab_0005,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Query(
                    QueryType::ByRemoteId,
                    Ipv6Addr::UNSPECIFIED,
                    vec![Opt::RemoteId(REMOTE_ENTERPRISE, REMOTE_ID)],
                ),
            ],
        ),
    ];
    // Two frames in the first segment; frame 2 split across two segments; frame 4's 2-octet
    // length prefix split across the last two.
    cap.tcp(
        &mut flow,
        Dir::ToServer,
        &queries,
        &[(2, 0), (2, 25), (4, 1)],
    );

    let mut r1 = reply_head();
    r1.push(Opt::ClientData(vec![
        Opt::ClientId(CLIENT_DUID),
        Opt::IaAddr(a("2001:db8:1::100"), 3600, 7200),
        Opt::CltTime(60),
    ]));
    let mut r2 = reply_head();
    r2.push(Opt::ClientData(vec![
        Opt::ClientId(CLIENT_DUID),
        Opt::IaAddr(a("2001:db8:1::100"), 3600, 7200),
        Opt::IaPrefix(a("2001:db8:ff00::"), 56, 1800, 5400),
        Opt::CltTime(60),
    ]));
    let mut r3 = reply_head();
    r3.push(Opt::BaseTime(T0 + 600));
    r3.push(client_data_full());
    let mut r4 = reply_head();
    r4.push(Opt::Status(Status::NotConfigured, "link not configured"));
    let mut r5 = reply_head();
    r5.push(Opt::Status(Status::Success, "no binding yet"));
    let answers = vec![
        Msg::new(LeasequeryReply, 0xab_0001, r1),
        Msg::new(
            LeasequeryDone,
            0xab_0001,
            vec![Opt::Status(Status::Success, "done")],
        ),
        Msg::new(LeasequeryReply, 0xab_0002, r2),
        // The same client on a second link.
        Msg::new(
            LeasequeryData,
            0xab_0002,
            vec![Opt::ClientData(vec![
                Opt::ClientId(CLIENT_DUID),
                Opt::IaAddr(a("2001:db8:2::200"), 0xffff_ffff, 0xffff_ffff),
                Opt::IaAddr(a("2001:db8:2::201"), 0, 300),
                Opt::CltTime(1),
            ])],
        ),
        Msg::new(
            LeasequeryDone,
            0xab_0002,
            vec![Opt::Status(Status::Success, "done")],
        ),
        Msg::new(LeasequeryReply, 0xab_0003, r3),
        Msg::new(
            LeasequeryData,
            0xab_0003,
            vec![
                Opt::BaseTime(T0 + 600),
                Opt::ClientData(vec![
                    Opt::ClientId(CLIENT2_DUID),
                    Opt::IaPrefix(a("2001:db8:ff40::"), 58, 0, 86_400),
                    Opt::CltTime(3_600),
                    Opt::RelayData(
                        a("2001:db8:3::1"),
                        stored_relay(1, "2001:db8:3::1", "2001:db8:3::2"),
                    ),
                ]),
            ],
        ),
        Msg::new(
            LeasequeryDone,
            0xab_0003,
            vec![Opt::Status(Status::Success, "done")],
        ),
        Msg::new(LeasequeryReply, 0xab_0004, r4),
        Msg::new(LeasequeryReply, 0xab_0005, r5),
        Msg::new(
            LeasequeryDone,
            0xab_0005,
            vec![Opt::Status(Status::QueryTerminated, "shutting down")],
        ),
    ];
    cap.tcp(
        &mut flow,
        Dir::ToClient,
        &answers,
        &[(3, 0), (5, 100), (7, 0)],
    );
    flow.close(&mut cap.pcap);
}

/// STARTTLS refused, then Active Leasequery on the same plain connection with a catch-up
/// (RFC 7653 flow (b)): Success REPLY, catch-up DATA, CatchUpComplete, a keepalive, DONE.
fn active_session_with_catch_up(cap: &mut Capture) {
    use MessageType::{
        ActiveLeasequery, LeasequeryData, LeasequeryDone, LeasequeryReply, StartTls,
    };
    let mut flow = TcpFlow::new(requestor(40002), server(), 77, 0x8000_0000);
    flow.handshake(&mut cap.pcap);
    // A bare STARTTLS would be 4 octets, which tshark 4.0 flags as malformed; a CLIENTID
    // identifies the requestor and is harmless.
    let starttls = Msg::new(StartTls, 0x00_0001, vec![Opt::ClientId(REQUESTOR_DUID)]);
    cap.tcp(&mut flow, Dir::ToServer, &[starttls], &[]);
    let refused = Msg::new(
        StartTls,
        0x00_0001,
        vec![
            Opt::ServerId(SERVER_DUID),
            Opt::Status(Status::TlsConnectionRefused, "TLS not configured"),
        ],
    );
    cap.tcp(&mut flow, Dir::ToClient, &[refused], &[]);
    let alq = Msg::new(
        ActiveLeasequery,
        0xc0_0002,
        vec![
            Opt::ClientId(REQUESTOR_DUID),
            Opt::Oro(vec![OptionCode::LqBaseTime]),
            Opt::StartTime(T0),
        ],
    );
    cap.tcp(&mut flow, Dir::ToServer, &[alq], &[(0, 7)]);
    let mut reply = reply_head();
    reply.push(Opt::BaseTime(T0 + 900));
    reply.push(client_data_full());
    let stream = vec![
        Msg::new(LeasequeryReply, 0xc0_0002, reply),
        Msg::new(
            LeasequeryData,
            0xc0_0002,
            vec![
                Opt::BaseTime(T0 + 900),
                Opt::ClientData(vec![
                    Opt::ClientId(CLIENT2_DUID),
                    Opt::IaAddr(a("2001:db8:3::77"), 0, 0),
                    Opt::CltTime(120),
                ]),
            ],
        ),
        Msg::new(
            LeasequeryData,
            0xc0_0002,
            vec![
                Opt::Status(Status::CatchUpComplete, ""),
                Opt::BaseTime(T0 + 901),
            ],
        ),
        Msg::new(LeasequeryData, 0xc0_0002, vec![Opt::BaseTime(T0 + 960)]),
        Msg::new(
            LeasequeryDone,
            0xc0_0002,
            vec![Opt::Status(Status::QueryTerminated, "shutting down")],
        ),
    ];
    cap.tcp(&mut flow, Dir::ToClient, &stream, &[(1, 0), (2, 3), (4, 0)]);
    flow.close(&mut cap.pcap);
}

/// Active Leasequery whose START_TIME is older than the server's history (DataMissing), and
/// one whose query the server does not support (NotSupported).
fn active_sessions_with_errors(cap: &mut Capture) {
    use MessageType::{ActiveLeasequery, LeasequeryData, LeasequeryReply};
    let mut flow = TcpFlow::new(requestor(40003), server(), 0xffff_fff0, 1);
    flow.handshake(&mut cap.pcap);
    let alq = Msg::new(
        ActiveLeasequery,
        0x00_0003,
        vec![
            Opt::ClientId(REQUESTOR_DUID),
            Opt::Oro(vec![OptionCode::LqBaseTime]),
            Opt::StartTime(T0 - 86_400),
        ],
    );
    cap.tcp(&mut flow, Dir::ToServer, &[alq], &[]);
    let mut missing = reply_head();
    missing.push(Opt::Status(Status::DataMissing, "history starts later"));
    missing.push(Opt::BaseTime(T0 + 1_000));
    let stream = vec![
        Msg::new(LeasequeryReply, 0x00_0003, missing),
        Msg::new(
            LeasequeryData,
            0x00_0003,
            vec![
                Opt::BaseTime(T0 + 1_001),
                Opt::ClientData(vec![
                    Opt::ClientId(CLIENT_DUID),
                    Opt::IaAddr(a("2001:db8:1::100"), 3599, 7199),
                    Opt::CltTime(0),
                ]),
            ],
        ),
    ];
    cap.tcp(&mut flow, Dir::ToClient, &stream, &[]);
    flow.close(&mut cap.pcap);

    let mut flow = TcpFlow::new(requestor(40004), server(), 5, 6);
    flow.handshake(&mut cap.pcap);
    let alq = Msg::new(
        ActiveLeasequery,
        0x7f_ffff,
        vec![
            Opt::ClientId(REQUESTOR_DUID),
            Opt::Oro(vec![OptionCode::LqBaseTime]),
            Opt::Query(
                QueryType::ByRemoteId,
                Ipv6Addr::UNSPECIFIED,
                vec![Opt::RemoteId(REMOTE_ENTERPRISE, REMOTE_ID)],
            ),
        ],
    );
    cap.tcp(&mut flow, Dir::ToServer, &[alq], &[]);
    let mut refused = reply_head();
    refused.push(Opt::Status(
        Status::NotSupported,
        "query type not supported",
    ));
    cap.tcp(
        &mut flow,
        Dir::ToClient,
        &[Msg::new(LeasequeryReply, 0x7f_ffff, refused)],
        &[],
    );
    flow.close(&mut cap.pcap);
}

/// UDP Leasequery (RFC 5007): by address with client data, by client-id answered with
/// LQ_CLIENT_LINK, and error replies carrying the remaining status codes.
fn udp_exchanges(cap: &mut Capture) {
    use MessageType::{Leasequery, LeasequeryReply};
    let req = requestor(546);
    let srv = server();
    let by_address = |xid: u32, addr: &str| {
        Msg::new(
            Leasequery,
            xid,
            vec![
                Opt::ClientId(REQUESTOR_DUID),
                Opt::Query(
                    QueryType::ByAddress,
                    Ipv6Addr::UNSPECIFIED,
                    vec![Opt::IaAddr(a(addr), 0, 0)],
                ),
            ],
        )
    };

    cap.udp(&req, &srv, &by_address(0x12_3456, "2001:db8:1::100"));
    let mut reply = reply_head();
    reply.push(Opt::ClientData(vec![
        Opt::ClientId(CLIENT_DUID),
        Opt::IaAddr(a("2001:db8:1::100"), 3600, 7200),
        Opt::IaPrefix(a("2001:db8:ff00::"), 56, 1800, 5400),
        Opt::CltTime(60),
    ]));
    cap.udp(&srv, &req, &Msg::new(LeasequeryReply, 0x12_3456, reply));

    let by_client = Msg::new(
        Leasequery,
        0x12_3457,
        vec![
            Opt::ClientId(REQUESTOR_DUID),
            Opt::Query(
                QueryType::ByClientId,
                Ipv6Addr::UNSPECIFIED,
                vec![Opt::ClientId(CLIENT_DUID)],
            ),
        ],
    );
    cap.udp(&req, &srv, &by_client);
    let mut links = reply_head();
    links.push(Opt::ClientLink(vec![a("2001:db8:1::"), a("2001:db8:2::")]));
    cap.udp(&srv, &req, &Msg::new(LeasequeryReply, 0x12_3457, links));

    // The status codes not used above: 1–8 and 10.
    let statuses = [
        (Status::UnspecFail, "internal error"),
        (Status::NoAddrsAvail, "no addresses"),
        (Status::NoBinding, "no binding"),
        (Status::NotOnLink, "not on link"),
        (Status::UseMulticast, "use multicast"),
        (Status::NoPrefixAvail, "no prefixes"),
        (Status::UnknownQueryType, "unknown query type"),
        (Status::MalformedQuery, "malformed query"),
        (Status::NotAllowed, "requestor not allowed"),
    ];
    for (i, (status, text)) in (0u32..).zip(statuses) {
        let xid = 0xee_0000 + i;
        cap.udp(&req, &srv, &by_address(xid, "2001:db8:9::1"));
        let mut reply = reply_head();
        reply.push(Opt::Status(status, text));
        cap.udp(&srv, &req, &Msg::new(LeasequeryReply, xid, reply));
    }
}

// ----------------------------------------------------------------------------------------------
// Running tshark and reading its output.

/// Per packet: each field's occurrences, in order.
type Decoded = Vec<BTreeMap<&'static str, Vec<String>>>;

fn tshark_version() -> String {
    match Command::new("tshark").arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("tshark (unknown version)")
            .trim_end_matches('.')
            .to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("tshark not found: run .ci/setup (it installs Debian's tshark 4.0)")
        }
        Err(e) => panic!("cannot run tshark: {e}"),
    }
}

/// Runs tshark on `file` with checksum validation and TCP reassembly on.
fn tshark(file: &Path, extra: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-n")
        .args(["-o", "tcp.check_checksum:TRUE"])
        .args(["-o", "udp.check_checksum:TRUE"])
        .args(["-o", "tcp.desegment_tcp_streams:TRUE"])
        .arg("-r")
        .arg(file)
        .args(extra)
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

/// Severity values of tshark's expert infos (epan/proto.h `PI_WARN`).
const PI_WARN: u32 = 0x0060_0000;

/// Decodes `file` with tshark and returns, per packet, every field of [`FIELDS`].
fn decode(file: &Path) -> Decoded {
    let real: Vec<&str> = FIELDS
        .iter()
        .copied()
        .filter(|f| !f.contains(':'))
        .collect();
    let mut args = vec![
        "-T",
        "fields",
        "-E",
        "header=n",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=;",
        "-E",
        "quote=n",
        "-e",
        "frame.number",
        "-e",
        "_ws.expert.message",
        "-e",
        "_ws.expert.severity",
    ];
    for f in &real {
        args.push("-e");
        args.push(f);
    }
    let text = tshark(file, &args);
    let split = |s: &str| -> Vec<String> {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split(';').map(str::to_string).collect()
        }
    };
    let mut packets: Decoded = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), real.len() + 3, "tshark line {line:?}");
        assert_eq!(cols[0], (i + 1).to_string(), "tshark packet numbering");
        let messages = split(cols[1]);
        let severities = split(cols[2]);
        assert_eq!(messages.len(), severities.len(), "expert info columns");
        let mut fields = BTreeMap::new();
        let serious = messages
            .into_iter()
            .zip(severities)
            .filter(|(_, sev)| sev.parse::<u32>().expect("severity") >= PI_WARN)
            .map(|(m, _)| m)
            .collect();
        fields.insert(EXPERT, serious);
        for (f, col) in real.iter().zip(&cols[3..]) {
            fields.insert(*f, split(col));
        }
        packets.push(fields);
    }

    // Raw bytes from PDML, for what tshark 4.0 does not decode.
    let pdml = tshark(file, &["-T", "pdml"]);
    let mut n = 0;
    for packet in pdml.split("<packet>").skip(1) {
        let entry = packets
            .get_mut(n)
            .expect("PDML has more packets than fields output");
        let mut times = Vec::new();
        let mut relays = Vec::new();
        for line in packet.lines() {
            match attr(line, "name") {
                Some("dhcpv6.option.type_str") => {
                    let tlv = attr(line, "value").expect("option value");
                    if ["0064", "0065", "0066"].iter().any(|c| tlv.starts_with(c)) {
                        times.push(tlv.to_string());
                    }
                }
                Some("dhcpv6.lq_relay_data_msg") => {
                    relays.push(attr(line, "value").expect("relay value").to_string());
                }
                _ => {}
            }
        }
        entry.insert(RAW_TIME_OPTION, times);
        entry.insert(RAW_RELAY_MSG, relays);
        n += 1;
    }
    assert_eq!(
        n,
        packets.len(),
        "PDML and fields output disagree on packet count"
    );
    packets
}

/// The value of attribute `name` in one PDML line (our values need no XML unescaping: they
/// are field names, hex strings and numbers).
fn attr<'l>(line: &'l str, name: &str) -> Option<&'l str> {
    let key = format!(" {name}=\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Compares tshark's view with the expectations, packet by packet and field by field, and
/// returns every difference.
fn compare(decoded: &Decoded, expect: &[Expect]) -> Vec<String> {
    let mut problems = Vec::new();
    if decoded.len() != expect.len() {
        problems.push(format!(
            "tshark saw {} packets, we wrote {}",
            decoded.len(),
            expect.len()
        ));
    }
    for (i, (got, want)) in decoded.iter().zip(expect).enumerate() {
        for (field, _) in want {
            assert!(FIELDS.contains(field), "field {field} is not in FIELDS");
        }
        for field in FIELDS {
            let want: Vec<&str> = want
                .iter()
                .filter(|(f, _)| f == field)
                .map(|(_, v)| v.as_str())
                .collect();
            let got: Vec<&str> = got[field].iter().map(String::as_str).collect();
            if got != want {
                problems.push(format!(
                    "packet {}: {field}\n    tshark:   {got:?}\n    expected: {want:?}",
                    i + 1
                ));
            }
        }
    }
    problems
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("interop_tshark");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(name)
}

fn check(file: &Path, decoded: &Decoded, expect: &[Expect], version: &str) {
    let problems = compare(decoded, expect);
    assert!(
        problems.is_empty(),
        "{version} disagrees with our encoder on {} ({} differences):\n{}",
        file.display(),
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn tshark_decodes_what_we_encode() {
    let version = tshark_version();

    let mut cap = Capture::new();
    bulk_session(&mut cap);
    active_session_with_catch_up(&mut cap);
    active_sessions_with_errors(&mut cap);
    udp_exchanges(&mut cap);
    cap.sync();

    // Every status code of digest §5 (0–15) is on the wire somewhere.
    let mut statuses: Vec<u16> = cap
        .expect
        .iter()
        .flatten()
        .filter(|(f, _)| *f == "dhcpv6.status_code")
        .map(|(_, v)| v.parse().expect("status"))
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    assert_eq!(statuses, (0..=15).collect::<Vec<u16>>());

    let file = scratch("leasequery.pcap");
    cap.pcap.write_to(&file).expect("write pcap");
    let decoded = decode(&file);

    // Reassembly: tshark found exactly the messages we framed on TCP, no more, no fewer.
    let found: usize = decoded
        .iter()
        .map(|p| p["dhcpv6.bulk_leasequery.msgtype"].len())
        .sum();
    assert_eq!(
        found,
        cap.tcp_messages,
        "{version}: DHCPv6 messages found on TCP in {}",
        file.display()
    );
    check(&file, &decoded, &cap.expect, &version);

    // The relayed messages tshark found inside OPTION_LQ_RELAY_DATA (the check above proved
    // they are byte-for-byte ours), decoded as RELAY-FORW datagrams from the relay agent.
    let mut relay_cap = Pcap::new();
    let mut relay_expect = Vec::new();
    let found: Vec<&String> = decoded.iter().flat_map(|p| &p[RAW_RELAY_MSG]).collect();
    assert_eq!(found.len(), cap.relays.len(), "relay data options found");
    assert!(!found.is_empty());
    for (raw, relay) in found.iter().zip(&cap.relays) {
        let bytes = hex::decode(raw).expect("PDML hex");
        let agent = Endpoint::new(0x01, relay.link, 547);
        relay_cap.udp(&agent, &server(), &bytes);
        relay_expect.push(relay.expect());
    }
    let relay_file = scratch("relay-data.pcap");
    relay_cap.write_to(&relay_file).expect("write pcap");
    let relay_decoded = decode(&relay_file);
    check(&relay_file, &relay_decoded, &relay_expect, &version);

    // No field was compared only as "absent on both sides".
    let all: Vec<&(&str, String)> = cap.expect.iter().chain(&relay_expect).flatten().collect();
    for field in FIELDS {
        assert!(
            all.iter().any(|(f, _)| f == field),
            "no message exercises {field}"
        );
    }
    println!(
        "{version}: {} packets and {} relay datagrams, {} TCP messages, {} values compared",
        cap.expect.len(),
        relay_expect.len(),
        cap.tcp_messages,
        all.len()
    );
}
