//! Every error path against a real `lqd` process on loopback: each refusal status over TCP and
//! UDP with the connection kept (D8), the framing violations that close only their own
//! connection with a log line naming the peer (D24), STARTTLS without TLS (D25), a duplicate
//! xid (D21), ACTIVELEASEQUERY with END_TIME (D7) or where Active or its catch-up is switched
//! off (D10), the silent UDP drops (digest
//! §8.1) and per-requestor query types (D23) over both transports.

#[path = "common/lqd.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpStream, UdpSocket};
use std::time::Duration;

use common::{Lqd, REQUESTOR, by_link, link, read_answers, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, MessageType, OptionCode,
    QueryType, ServerTime, Status, Xid,
};

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Reads exactly one message from `s`.
fn read_one(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Decoded::Frame { message, .. }) = FrameDecoder::default().decode(&buf) {
            return message.to_vec();
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed before a message arrived");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The status of a LEASEQUERY-REPLY with this xid and no client data.
fn refusal(message: &[u8], xid: u32) -> Status {
    let m = MessageRepr::parse(message).unwrap();
    assert_eq!(m.msg_type(), MessageType::LeasequeryReply, "{m:?}");
    assert_eq!(m.xid(), Some(Xid::new(xid)));
    assert!(m.options.get(OptionCode::ClientData).is_none());
    assert!(m.options.get(OptionCode::ServerId).is_some());
    assert_eq!(
        m.options.client_id().map(|d| d.as_bytes().to_vec()),
        Some(REQUESTOR.to_vec()),
        "the requestor's DUID is echoed"
    );
    m.options.status().expect("a status").status
}

/// True once the peer has closed `s` (EOF or reset), within five seconds.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A LEASEQUERY with an empty query of type `qt` (so missing its key option).
fn query(xid: u32, qt: QueryType, link: Ipv6Addr) -> Vec<u8> {
    MessageBuilder::leasequery(xid)
        .client_id(&REQUESTOR)
        .lq_query(qt, link, |q| q)
        .build()
        .unwrap()
}

/// Each refusal a query can get over TCP, on one connection that stays open (D8), then a good
/// query answered on it.
#[test]
fn refusals_over_tcp_keep_the_connection_d8() {
    let lqd = Lqd::start("refusals", "");
    let mut s = lqd.connect();
    let frame = |m: Vec<u8>| {
        let mut f = (m.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        f
    };
    let cases: Vec<(u32, Vec<u8>, Status)> = vec![
        (
            1,
            query(1, QueryType::Unknown(9), link(1)),
            Status::UnknownQueryType,
        ),
        (
            2,
            MessageBuilder::leasequery(2)
                .client_id(&REQUESTOR)
                .build()
                .unwrap(),
            Status::MalformedQuery,
        ),
        (
            3,
            query(3, QueryType::ByAddress, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        // D15: by link-address with `::`.
        (
            4,
            query(4, QueryType::ByLinkAddress, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        (
            5,
            query(5, QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        (
            6,
            query(6, QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        (
            7,
            query(7, QueryType::ByClientId, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        // D20: END_TIME before START_TIME.
        (
            8,
            MessageBuilder::leasequery(8)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
                .start_time(ServerTime(2000))
                .end_time(ServerTime(1000))
                .build()
                .unwrap(),
            Status::MalformedQuery,
        ),
        (
            9,
            MessageBuilder::leasequery(9)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByLinkAddress, link(1), |q| q)
                .lq_query(QueryType::ByLinkAddress, link(2), |q| q)
                .build()
                .unwrap(),
            Status::MalformedQuery,
        ),
        // D16: a link outside the demo's links, and a link inside one's prefix is fine.
        (
            10,
            query(10, QueryType::ByLinkAddress, a("2001:db8:0:99::1")),
            Status::NotConfigured,
        ),
        (
            11,
            MessageBuilder::leasequery(11)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByRelayId, a("2001:db9::1"), |q| {
                    q.relay_id(&[0, 3])
                })
                .build()
                .unwrap(),
            Status::NotConfigured,
        ),
    ];
    for (xid, message, want) in &cases {
        s.write_all(&frame(message.clone())).unwrap();
        assert_eq!(refusal(&read_one(&mut s), *xid), *want, "xid {xid}");
    }
    // The connection is still served, and a link named by another address on it works.
    s.write_all(&by_link(50, a("2001:db8:0:1::abcd"))).unwrap();
    let answer = read_answers(&mut s, &[50]);
    assert!(
        answer.len() >= 3,
        "REPLY, DATA…, DONE: {} messages",
        answer.len()
    );
    let done = MessageRepr::parse(answer.last().unwrap()).unwrap();
    assert_eq!(done.msg_type(), MessageType::LeasequeryDone);
    assert_eq!(
        done.options.status().map(|s| s.status),
        Some(Status::Success)
    );
    // A log line per refused query, naming the peer and the status.
    let log = lqd.log();
    let refused: Vec<_> = log
        .lines()
        .filter(|l| l.contains("query refused"))
        .collect();
    assert_eq!(refused.len(), cases.len(), "{log}");
    assert!(refused.iter().all(|l| l.contains("peer=[::1]:")), "{log}");
    assert!(refused.iter().any(|l| l.contains("NotConfigured")), "{log}");
}

/// D21: a query whose xid is running is dropped and logged; the running one is untouched.
/// D25: STARTTLS first gets TLSConnectionRefused and the connection stays in plain mode.
#[test]
fn starttls_and_a_duplicate_xid_d21_d25() {
    let lqd = Lqd::start("dupxid", "");
    let mut s = lqd.connect();
    let starttls = MessageBuilder::new(MessageType::StartTls, 0x77)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap();
    s.write_all(&starttls).unwrap();
    assert_eq!(
        refusal(&read_one(&mut s), 0x77),
        Status::TlsConnectionRefused
    );
    let mut burst = by_link(5, link(1));
    burst.extend_from_slice(&by_link(5, link(2)));
    burst.extend_from_slice(&by_link(6, link(3)));
    s.write_all(&burst).unwrap();
    let answer = read_answers(&mut s, &[5, 6]);
    let replies = answer
        .iter()
        .filter(|m| {
            let m = MessageRepr::parse(m).unwrap();
            m.msg_type() == MessageType::LeasequeryReply && m.xid() == Some(Xid::new(5))
        })
        .count();
    assert_eq!(replies, 1, "one answer for xid 5");
    let done5 = answer
        .iter()
        .filter(|m| {
            let m = MessageRepr::parse(m).unwrap();
            m.msg_type() == MessageType::LeasequeryDone && m.xid() == Some(Xid::new(5))
        })
        .count();
    assert_eq!(done5, 1);
    wait_for_log(&lqd, "query dropped: its xid is already running", 5);
    wait_for_log(&lqd, "STARTTLS refused", 5);
}

/// D24: framing violations and messages a requestor may not send close that connection only,
/// with a log line naming the peer and the reason. D10: ACTIVELEASEQUERY, not served, gets
/// NotSupported and the connection closes.
#[test]
fn bad_frames_close_only_their_own_connection_d24() {
    let lqd = Lqd::start("badframes", "");
    let mut good = lqd.connect();
    let reply_from_requestor = MessageBuilder::reply(3)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap();
    let mut unparsable = MessageBuilder::leasequery(4)
        .client_id(&REQUESTOR)
        .build_frame()
        .unwrap();
    // The client-id option claims more octets than the message holds.
    unparsable[8] = 0x40;
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", vec![0, 3, 14, 0, 0], "bad frame"),
        ("unparsable", unparsable, "unparsable message"),
        (
            "server message",
            reply_from_requestor,
            "LEASEQUERY-REPLY is not a requestor's message",
        ),
        (
            "relay message",
            MessageBuilder::relay(MessageType::RelayForw, 0, link(1), a("fe80::1"))
                .build_frame()
                .unwrap(),
            "RELAY-FORW is not a requestor's message",
        ),
    ];
    for (what, bytes, reason) in &bad {
        let mut s = lqd.connect();
        let port = s.local_addr().unwrap().port();
        s.write_all(bytes).unwrap();
        assert!(closed(&mut s), "{what}: still open");
        wait_for_log(&lqd, reason, 5);
        let log = lqd.log();
        assert!(
            log.lines().any(|l| l.contains("connection closed")
                && l.contains(reason)
                && l.contains(&format!("[::1]:{port}"))),
            "{what}: no close line naming the peer:\n{log}"
        );
    }
    // D7: an ACTIVELEASEQUERY with END_TIME gets MalformedQuery, then the connection closes.
    let mut s = lqd.connect();
    let active = MessageBuilder::active_leasequery(9)
        .client_id(&REQUESTOR)
        .end_time(ServerTime(1))
        .build_frame()
        .unwrap();
    s.write_all(&active).unwrap();
    assert_eq!(refusal(&read_one(&mut s), 9), Status::MalformedQuery);
    assert!(closed(&mut s));
    wait_for_log(&lqd, "ACTIVELEASEQUERY refused with MalformedQuery", 5);
    // The first connection never noticed.
    good.write_all(&by_link(1, link(1))).unwrap();
    assert!(read_answers(&mut good, &[1]).len() >= 3);
}

fn udp_ask(u: &UdpSocket, lqd: &Lqd, message: &[u8]) -> Option<Vec<u8>> {
    u.send_to(message, lqd.addr).unwrap();
    let mut buf = [0u8; 65536];
    u.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

/// D10: where configuration switches Active Leasequery or its catch-up off, NotSupported and
/// close.
#[test]
fn switched_off_active_and_catch_up_get_not_supported_d10() {
    for (name, config, request) in [
        (
            "noactive",
            "active = false",
            MessageBuilder::active_leasequery(1).client_id(&REQUESTOR),
        ),
        (
            "nocatchup",
            "catch_up = false",
            MessageBuilder::active_leasequery(1)
                .client_id(&REQUESTOR)
                .start_time(ServerTime(1000)),
        ),
    ] {
        let lqd = Lqd::start(name, config);
        let mut s = lqd.connect();
        s.write_all(&request.build_frame().unwrap()).unwrap();
        assert_eq!(
            refusal(&read_one(&mut s), 1),
            Status::NotSupported,
            "{name}"
        );
        assert!(closed(&mut s), "{name}");
    }
}

/// Digest §8.1: what is dropped in silence, and each refusal over UDP, logged.
#[test]
fn udp_drops_and_refusals() {
    let lqd = Lqd::start("udperrors", "");
    let u = UdpSocket::bind("[::1]:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(400)))
        .unwrap();
    let by_addr = |xid, addr: Ipv6Addr| {
        MessageBuilder::leasequery(xid)
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                q.iaaddr(addr, 0, 0)
            })
    };
    let silent: Vec<(&str, Vec<u8>)> = vec![
        (
            "no client id",
            MessageBuilder::leasequery(1)
                .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                    q.iaaddr(a("2001:db8:0:1::5"), 0, 0)
                })
                .build()
                .unwrap(),
        ),
        (
            "another server",
            by_addr(2, a("2001:db8:0:1::5"))
                .server_id(&[0, 2, 0, 0, 0, 9, 9])
                .build()
                .unwrap(),
        ),
        (
            "no query",
            MessageBuilder::leasequery(3)
                .client_id(&REQUESTOR)
                .build()
                .unwrap(),
        ),
        (
            "not a leasequery",
            MessageBuilder::new(MessageType::Unknown(1), 4)
                .client_id(&REQUESTOR)
                .build()
                .unwrap(),
        ),
        ("unparsable", vec![14, 0, 0, 5, 0, 1, 0, 9, 1]),
        ("short", vec![14, 0]),
    ];
    for (what, m) in &silent {
        assert_eq!(udp_ask(&u, &lqd, m), None, "{what}: answered");
    }
    let refused: Vec<(u32, Vec<u8>, Status)> = vec![
        (
            10,
            query(10, QueryType::Unknown(7), Ipv6Addr::UNSPECIFIED),
            Status::UnknownQueryType,
        ),
        (
            11,
            query(11, QueryType::ByAddress, Ipv6Addr::UNSPECIFIED),
            Status::MalformedQuery,
        ),
        (
            12,
            query(12, QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED),
            Status::NotAllowed,
        ),
        (
            13,
            query(13, QueryType::ByLinkAddress, link(1)),
            Status::NotAllowed,
        ),
        (
            14,
            query(14, QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED),
            Status::NotAllowed,
        ),
        (
            15,
            by_addr(15, a("2001:db9::1")).build().unwrap(),
            Status::NotConfigured,
        ),
    ];
    for (xid, m, want) in &refused {
        let r = udp_ask(&u, &lqd, m).unwrap_or_else(|| panic!("xid {xid}: no answer"));
        assert_eq!(refusal(&r, *xid), *want, "xid {xid}");
    }
    // Managed space without a binding: answered, no status, no data.
    let r = udp_ask(&u, &lqd, &by_addr(16, a("2001:db8:0:1::")).build().unwrap()).unwrap();
    let m = MessageRepr::parse(&r).unwrap();
    assert_eq!(
        (m.options.status(), m.options.get(OptionCode::ClientData)),
        (None, None)
    );
    let log = lqd.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("UDP query dropped"))
            .count(),
        silent.len(),
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("UDP query refused"))
            .count(),
        refused.len(),
        "{log}"
    );
}

/// D23: a requestor allowed only some query types gets NotAllowed for the others, over TCP
/// (connection kept) and UDP.
#[test]
fn per_requestor_query_types_d23() {
    let lqd = Lqd::start(
        "querytypes",
        "[[requestor]]\nprefix = \"::1\"\nquery_types = [\"address\", \"client-id\"]\n",
    );
    let mut s = lqd.connect();
    s.write_all(&by_link(1, link(1))).unwrap();
    assert_eq!(refusal(&read_one(&mut s), 1), Status::NotAllowed);
    let q = MessageBuilder::leasequery(2)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&[0, 3, 0, 1, 9, 9, 9, 9, 9, 9])
        })
        .build_frame()
        .unwrap();
    s.write_all(&q).unwrap();
    let m = read_one(&mut s);
    let m = MessageRepr::parse(&m).unwrap();
    assert_eq!(m.xid(), Some(Xid::new(2)));
    assert_eq!(
        m.options.status().map(|s| s.status),
        None,
        "allowed: answered"
    );

    let u = UdpSocket::bind("[::1]:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let by_client_udp = MessageBuilder::leasequery(3)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
            q.client_id(&[0, 3, 0, 1, 9, 9, 9, 9, 9, 9])
        })
        .build()
        .unwrap();
    let r = udp_ask(&u, &lqd, &by_client_udp).unwrap();
    assert_eq!(MessageRepr::parse(&r).unwrap().options.status(), None);
    drop(lqd);

    let lqd = Lqd::start(
        "querytypes-udp",
        "[[requestor]]\nprefix = \"::1\"\nquery_types = [\"link-address\"]\n",
    );
    let u = UdpSocket::bind("[::1]:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = udp_ask(&u, &lqd, &by_client_udp).unwrap();
    assert_eq!(refusal(&r, 3), Status::NotAllowed);
}

/// A by-address LEASEQUERY framed for TCP: answered with one LEASEQUERY-REPLY.
fn by_address(xid: u32, address: Ipv6Addr) -> Vec<u8> {
    MessageBuilder::leasequery(xid)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(address, 0, 0)
        })
        .build_frame()
        .unwrap()
}

/// 10,000 queries pipelined on one connection, far beyond `max_concurrent_queries`: every one
/// is answered (issue 13: lqd answered 112, then closed the connection as idle).
#[test]
fn pipelined_queries_are_all_answered() {
    let lqd = Lqd::start("pipelined", "bulk_data_timeout = 3");
    let mut s = lqd.connect();
    let mut all = Vec::new();
    for xid in 1..=10_000u32 {
        all.extend_from_slice(&by_address(xid, a("2001:db8:0:1::9999")));
    }
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(&all).unwrap())
    };
    let xids: Vec<u32> = (1..=10_000).collect();
    let answers = read_answers(&mut s, &xids);
    writer.join().unwrap();
    assert_eq!(answers.len(), 10_000);
}

/// A frame header, then a byte every half second (slowloris): closed after
/// `bulk_data_timeout` counted from the connection's last whole query, not its last byte.
#[test]
fn a_slowloris_is_closed_after_the_data_timeout() {
    let lqd = Lqd::start("slowloris", "bulk_data_timeout = 2");
    let mut s = lqd.connect();
    s.write_all(&[0x00, 0x40, 15]).unwrap();
    let opened = std::time::Instant::now();
    let mut gone = false;
    while opened.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(500));
        if s.write_all(&[0]).is_err() {
            gone = true;
            break;
        }
        if lqd
            .log()
            .contains("blocked longer than BULK_LQ_DATA_TIMEOUT")
        {
            gone = true;
            break;
        }
    }
    assert!(gone, "still open after 8 s:\n{}", lqd.log());
    assert!(
        opened.elapsed() < Duration::from_secs(5),
        "{:?}",
        opened.elapsed()
    );
}

/// A requestor that closes half-way through a frame is freed at once, not after
/// `bulk_data_timeout`.
#[test]
fn a_requestor_that_closes_mid_frame_is_freed_at_once() {
    let lqd = Lqd::start("midframe", "");
    let mut s = lqd.connect();
    let q = by_address(7, a("2001:db8:0:1::9999"));
    s.write_all(&q[..q.len() / 2]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed(&mut s), "lqd closes it");
    wait_for_log(&lqd, "requestor closed the connection", 2);
}

/// A requestor that sends megabytes of queries and reads nothing: lqd stops reading it (D22)
/// instead of buffering them, so its memory stays where it was.
#[test]
fn queries_a_requestor_does_not_wait_for_stay_in_its_socket() {
    let lqd = Lqd::start("flooded", "");
    let pid = lqd.child.id();
    let rss = || common::rss_kib(pid);
    let before = rss();
    let s = lqd.connect();
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut batch = Vec::new();
    for xid in 0..1000u32 {
        batch.extend_from_slice(&by_address(xid, a("2001:db8:0:1::9999")));
    }
    // Up to 50 MB, until lqd and the kernel stop taking them.
    let mut sent = 0usize;
    while sent < 50 << 20 && w.write_all(&batch).is_ok() {
        sent += batch.len();
    }
    std::thread::sleep(Duration::from_millis(300));
    let grew = rss().saturating_sub(before);
    assert!(
        grew < 8 * 1024,
        "lqd grew by {grew} KiB after {sent} octets sent"
    );
    drop(s);
}
