//! A small pcap writer for tests: classic libpcap format (microsecond timestamps, Ethernet link
//! type) with hand-built Ethernet / IPv6 / TCP and UDP headers around payload bytes, so that an
//! independent decoder (tshark) can read what our code put on the wire.
//!
//! Everything is built in memory; [`Pcap::write_to`] saves the file. Lengths and checksums are
//! computed for real (IPv6 pseudo-header sums for TCP and UDP), so a capture passes tshark's
//! checksum validation when it is switched on.
//!
//! A TCP conversation is a [`TcpFlow`]: it keeps the next sequence number of each side, so a
//! test only says who sends which bytes ([`TcpFlow::send`]) and how they are cut into segments;
//! the handshake and the close are optional. Tests that capture a live Active Leasequery stream
//! can feed each `read`/`write` chunk to `send` as it happens.
//!
//! Included by each test that needs it with `#[path = "common/pcap.rs"] mod pcap;`; each test
//! uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io;
use std::net::Ipv6Addr;
use std::path::Path;

/// Classic pcap magic number (microsecond timestamps), written in little-endian order.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u32 = 1;
/// The largest packet a reader must accept; our packets are far smaller.
const SNAPLEN: u32 = 262_144;
/// EtherType of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv6 next-header values.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Header sizes.
const ETHERNET_HEADER_LEN: usize = 14;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// TCP flag bits.
pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// One side of a conversation: link-layer address, IPv6 address and transport port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) mac: [u8; 6],
    pub(crate) ip: Ipv6Addr,
    pub(crate) port: u16,
}

impl Endpoint {
    /// An endpoint with a locally administered MAC address derived from `host` (02:00:00:00:00:host).
    pub(crate) fn new(host: u8, ip: Ipv6Addr, port: u16) -> Self {
        Self {
            mac: [0x02, 0, 0, 0, 0, host],
            ip,
            port,
        }
    }
}

/// A capture being built in memory.
#[derive(Debug, Clone)]
pub(crate) struct Pcap {
    buf: Vec<u8>,
    packets: usize,
    /// Timestamp of the next packet, microseconds since the Unix epoch.
    next_usec: u64,
}

impl Default for Pcap {
    fn default() -> Self {
        Self::new()
    }
}

impl Pcap {
    /// Microseconds between two packets: each packet gets a distinct, increasing timestamp.
    const TICK_USEC: u64 = 1_000;

    /// An empty capture whose first packet is stamped 2025-01-01T00:00:00Z.
    pub(crate) fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&PCAP_MAGIC.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes()); // version major
        buf.extend_from_slice(&4u16.to_le_bytes()); // version minor
        buf.extend_from_slice(&0i32.to_le_bytes()); // thiszone: UTC
        buf.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        buf.extend_from_slice(&SNAPLEN.to_le_bytes());
        buf.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        Self {
            buf,
            packets: 0,
            next_usec: 1_735_689_600 * 1_000_000,
        }
    }

    /// Appends one whole link-layer frame.
    pub(crate) fn packet(&mut self, frame: &[u8]) {
        let len = u32::try_from(frame.len()).expect("packet larger than 4 GiB");
        assert!(len <= SNAPLEN, "packet larger than the snap length");
        let sec = u32::try_from(self.next_usec / 1_000_000).expect("timestamp past 2106");
        let usec = u32::try_from(self.next_usec % 1_000_000).expect("sub-second part");
        self.buf.extend_from_slice(&sec.to_le_bytes());
        self.buf.extend_from_slice(&usec.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes()); // captured length
        self.buf.extend_from_slice(&len.to_le_bytes()); // original length
        self.buf.extend_from_slice(frame);
        self.packets += 1;
        self.next_usec += Self::TICK_USEC;
    }

    /// Appends an Ethernet / IPv6 / UDP packet carrying `payload` from `src` to `dst`.
    pub(crate) fn udp(&mut self, src: &Endpoint, dst: &Endpoint, payload: &[u8]) {
        let frame = udp_packet(src, dst, payload);
        self.packet(&frame);
    }

    /// How many packets have been written.
    pub(crate) fn packet_count(&self) -> usize {
        self.packets
    }

    /// The capture file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Saves the capture.
    pub(crate) fn write_to(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, &self.buf)
    }
}

/// Which way a TCP segment goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From the side that opened the connection (the requestor) to the server.
    ToServer,
    /// From the server back to the requestor.
    ToClient,
}

/// One TCP connection between a client (requestor) and a server, with sequence numbers kept
/// for both directions. Every segment after the handshake acknowledges all the peer has sent.
#[derive(Debug, Clone)]
pub(crate) struct TcpFlow {
    client: Endpoint,
    server: Endpoint,
    /// Sequence number of the next octet the client sends.
    client_seq: u32,
    /// Sequence number of the next octet the server sends.
    server_seq: u32,
    /// Payload octets sent so far each way (a test can check them against what it meant).
    sent_to_server: usize,
    sent_to_client: usize,
}

impl TcpFlow {
    /// A connection whose initial sequence numbers are `client_isn` and `server_isn`. Without
    /// [`handshake`](Self::handshake) the capture starts mid-stream (tshark copes with that).
    pub(crate) fn new(
        client: Endpoint,
        server: Endpoint,
        client_isn: u32,
        server_isn: u32,
    ) -> Self {
        Self {
            client,
            server,
            client_seq: client_isn,
            server_seq: server_isn,
            sent_to_server: 0,
            sent_to_client: 0,
        }
    }

    /// SYN, SYN-ACK, ACK. Each SYN takes one sequence number.
    pub(crate) fn handshake(&mut self, pcap: &mut Pcap) {
        pcap.packet(&tcp_packet(
            &self.client,
            &self.server,
            self.client_seq,
            0,
            SYN,
            &[],
        ));
        self.client_seq = self.client_seq.wrapping_add(1);
        pcap.packet(&tcp_packet(
            &self.server,
            &self.client,
            self.server_seq,
            self.client_seq,
            SYN | ACK,
            &[],
        ));
        self.server_seq = self.server_seq.wrapping_add(1);
        pcap.packet(&tcp_packet(
            &self.client,
            &self.server,
            self.client_seq,
            self.server_seq,
            ACK,
            &[],
        ));
    }

    /// One PSH-ACK segment carrying `payload` in direction `dir`.
    pub(crate) fn send(&mut self, pcap: &mut Pcap, dir: Dir, payload: &[u8]) {
        assert!(
            IPV6_HEADER_LEN + TCP_HEADER_LEN + payload.len() <= usize::from(u16::MAX),
            "segment too large for one IPv6 packet without a jumbogram"
        );
        let len = u32::try_from(payload.len()).expect("segment length");
        let (src, dst, seq, ack) = match dir {
            Dir::ToServer => (&self.client, &self.server, self.client_seq, self.server_seq),
            Dir::ToClient => (&self.server, &self.client, self.server_seq, self.client_seq),
        };
        pcap.packet(&tcp_packet(src, dst, seq, ack, PSH | ACK, payload));
        match dir {
            Dir::ToServer => {
                self.client_seq = self.client_seq.wrapping_add(len);
                self.sent_to_server += payload.len();
            }
            Dir::ToClient => {
                self.server_seq = self.server_seq.wrapping_add(len);
                self.sent_to_client += payload.len();
            }
        }
    }

    /// Sends `stream` in direction `dir` cut at the given offsets (strictly increasing, inside
    /// the stream): `cuts = [10, 25]` sends octets 0..10, 10..25 and 25.. as three segments.
    pub(crate) fn send_cut(&mut self, pcap: &mut Pcap, dir: Dir, stream: &[u8], cuts: &[usize]) {
        let mut start = 0;
        for &cut in cuts {
            assert!(
                start < cut && cut < stream.len(),
                "cut {cut} out of order or outside 0..{}",
                stream.len()
            );
            self.send(pcap, dir, &stream[start..cut]);
            start = cut;
        }
        self.send(pcap, dir, &stream[start..]);
    }

    /// An orderly close: FIN from the client, FIN-ACK from the server, last ACK.
    pub(crate) fn close(&mut self, pcap: &mut Pcap) {
        pcap.packet(&tcp_packet(
            &self.client,
            &self.server,
            self.client_seq,
            self.server_seq,
            FIN | ACK,
            &[],
        ));
        self.client_seq = self.client_seq.wrapping_add(1);
        pcap.packet(&tcp_packet(
            &self.server,
            &self.client,
            self.server_seq,
            self.client_seq,
            FIN | ACK,
            &[],
        ));
        self.server_seq = self.server_seq.wrapping_add(1);
        pcap.packet(&tcp_packet(
            &self.client,
            &self.server,
            self.client_seq,
            self.server_seq,
            ACK,
            &[],
        ));
    }

    /// Payload octets sent from the client to the server so far.
    pub(crate) fn sent_to_server(&self) -> usize {
        self.sent_to_server
    }

    /// Payload octets sent from the server to the client so far.
    pub(crate) fn sent_to_client(&self) -> usize {
        self.sent_to_client
    }
}

/// Ethernet header then IPv6 header for `payload_len` octets of upper-layer `next_header`.
fn eth_ipv6_headers(
    src: &Endpoint,
    dst: &Endpoint,
    next_header: u8,
    payload_len: usize,
) -> Vec<u8> {
    let payload_len = u16::try_from(payload_len).expect("IPv6 payload over 65535 octets");
    let mut out =
        Vec::with_capacity(ETHERNET_HEADER_LEN + IPV6_HEADER_LEN + usize::from(payload_len));
    out.extend_from_slice(&dst.mac);
    out.extend_from_slice(&src.mac);
    out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    // Version 6, traffic class 0, flow label 0.
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&payload_len.to_be_bytes());
    out.push(next_header);
    out.push(64); // hop limit
    out.extend_from_slice(&src.ip.octets());
    out.extend_from_slice(&dst.ip.octets());
    out
}

/// The Internet checksum (RFC 1071) of the IPv6 pseudo-header (RFC 8200 §8.1) followed by
/// `segment`, the whole upper-layer packet with its checksum field zeroed.
fn upper_layer_checksum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    let len = u32::try_from(segment.len()).expect("upper-layer length");
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, next_header]);
    let mut sum: u32 = 0;
    for chunk in pseudo.chunks(2).chain(segment.chunks(2)) {
        let word = match *chunk {
            [hi, lo] => u16::from_be_bytes([hi, lo]),
            [hi] => u16::from_be_bytes([hi, 0]),
            _ => unreachable!("chunks(2) yields one or two octets"),
        };
        sum += u32::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // After folding the sum fits in 16 bits.
    !(u16::try_from(sum).expect("folded sum"))
}

/// A whole Ethernet / IPv6 / TCP packet with a 20-octet TCP header (no options).
pub(crate) fn tcp_packet(
    src: &Endpoint,
    dst: &Endpoint,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(TCP_HEADER_LEN + payload.len());
    tcp.extend_from_slice(&src.port.to_be_bytes());
    tcp.extend_from_slice(&dst.port.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    let ack = if flags & ACK != 0 { ack } else { 0 };
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 5 words, no options
    tcp.push(flags);
    tcp.extend_from_slice(&65_535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0]); // checksum, filled in below
    tcp.extend_from_slice(&[0, 0]); // urgent pointer
    tcp.extend_from_slice(payload);
    let sum = upper_layer_checksum(src.ip, dst.ip, IPPROTO_TCP, &tcp);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut out = eth_ipv6_headers(src, dst, IPPROTO_TCP, tcp.len());
    out.extend_from_slice(&tcp);
    out
}

/// A whole Ethernet / IPv6 / UDP packet.
pub(crate) fn udp_packet(src: &Endpoint, dst: &Endpoint, payload: &[u8]) -> Vec<u8> {
    let len = UDP_HEADER_LEN + payload.len();
    let len16 = u16::try_from(len).expect("UDP datagram over 65535 octets");
    let mut udp = Vec::with_capacity(len);
    udp.extend_from_slice(&src.port.to_be_bytes());
    udp.extend_from_slice(&dst.port.to_be_bytes());
    udp.extend_from_slice(&len16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]); // checksum, filled in below
    udp.extend_from_slice(payload);
    let sum = match upper_layer_checksum(src.ip, dst.ip, IPPROTO_UDP, &udp) {
        // Over IPv6 a zero UDP checksum means "none" and is not allowed: send all ones.
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut out = eth_ipv6_headers(src, dst, IPPROTO_UDP, udp.len());
    out.extend_from_slice(&udp);
    out
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_udp_datagram() {
        // Recomputing over a packet that already holds its checksum must give zero.
        let a = Endpoint::new(1, "2001:db8::1".parse().unwrap(), 546);
        let b = Endpoint::new(2, "2001:db8::2".parse().unwrap(), 547);
        let pkt = udp_packet(&a, &b, b"hello, odd length");
        let udp = &pkt[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..];
        let verify = upper_layer_checksum(a.ip, b.ip, IPPROTO_UDP, udp);
        assert_eq!(verify, 0);
        let pkt = tcp_packet(&a, &b, 7, 9, PSH | ACK, b"abc");
        let tcp = &pkt[ETHERNET_HEADER_LEN + IPV6_HEADER_LEN..];
        assert_eq!(upper_layer_checksum(a.ip, b.ip, IPPROTO_TCP, tcp), 0);
    }
}
