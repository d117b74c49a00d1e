//! Transaction ids (digest §8.2, §9.3 step 2, §10.3): a UDP retransmission keeps its
//! transaction's xid on the RFC 8415 schedule and a reply is matched by xid and Client-ID; a
//! new transaction gets a fresh xid; every query on one TCP connection has an xid of its own,
//! so a late answer to an abandoned query is never taken for the next one's (against lqd,
//! which also drops a query whose xid is still running on the connection, D21).

#[path = "common/lqd.rs"]
mod common;
#[path = "common/fake.rs"]
mod fake;

use std::collections::HashSet;
use std::net::{Ipv6Addr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Lqd, link};
use fake::{FakeServer, SERVER_DUID, bulk_answer};
use lqd::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageRepr, Status};
use lqd::requestor::{Connection, Error, Query, Retransmission, TimeWindow, UdpRequestor};

const ME: [u8; 6] = [0, 3, 0, 1, 0xbe, 0xef];

fn by_address(a: &str) -> Query {
    Query::Address {
        address: a.parse().unwrap(),
        link: Ipv6Addr::UNSPECIFIED,
    }
}

/// A fake UDP server: drops the first 3 datagrams asking for ::1 (then answers, after two
/// decoys with a wrong xid and a wrong Client-ID), answers ::2 at once, never answers ::dead.
/// Reports each datagram's arrival, xid and address.
fn udp_server() -> (
    std::net::SocketAddr,
    mpsc::Receiver<(Instant, u32, Ipv6Addr)>,
) {
    let sock = UdpSocket::bind("[::1]:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut seen_one = 0;
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let at = Instant::now();
            let m = MessageRepr::parse(&buf[..n]).unwrap();
            let xid = m.xid().unwrap().value();
            let q = m.options.lq_query().unwrap();
            let address = q
                .options
                .iter()
                .find_map(|o| match o {
                    DhcpOption::IaAddr(a) => Some(a.address),
                    _ => None,
                })
                .unwrap();
            let requestor = m.options.client_id().unwrap().as_bytes().to_vec();
            if tx.send((at, xid, address)).is_err() {
                return;
            }
            let answer = |x: u32, to: &[u8]| {
                MessageBuilder::reply(x)
                    .server_id(&SERVER_DUID)
                    .client_id(to)
                    .client_data(|c| {
                        c.client_id(&[0, 3, 0, 1, 7, 7, 7, 7, 7, 7])
                            .iaaddr(address, 100, 200)
                            .clt_time(3)
                    })
                    .build()
                    .unwrap()
            };
            match address.segments()[7] {
                1 => {
                    seen_one += 1;
                    if seen_one == 4 {
                        sock.send_to(&answer(xid ^ 1, &requestor), from).unwrap();
                        sock.send_to(&answer(xid, &[0, 3, 0, 1, 1, 1]), from)
                            .unwrap();
                        sock.send_to(&answer(xid, &requestor), from).unwrap();
                    }
                }
                2 => {
                    sock.send_to(&answer(xid, &requestor), from).unwrap();
                }
                _ => {}
            }
        }
    });
    (addr, rx)
}

/// Checks that the gaps between transmissions follow IRT 200 ms, doubling, capped at MRT
/// 500 ms, each ±10 % (RFC 8415 §15). The times are the server's arrival times, so a gap may
/// look up to 30 ms shorter (the previous datagram read late) or 300 ms longer (a loaded
/// machine).
fn assert_schedule(times: &[Instant]) {
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .collect();
    let mut rt_low = 180.0_f64;
    let mut rt_high = 220.0_f64;
    for (i, g) in gaps.iter().enumerate() {
        assert!(
            *g >= rt_low - 30.0 && *g <= rt_high + 300.0,
            "gap {i} of {gaps:?}: expected {rt_low}..{rt_high} ms"
        );
        // The next RT is 2·RT ± 10 %, or MRT ± 10 % once over MRT.
        let (low, high) = (rt_low * 1.9, rt_high * 2.1);
        (rt_low, rt_high) = if low > 500.0 {
            (450.0, 550.0)
        } else {
            (low, high.min(550.0))
        };
    }
}

#[test]
fn udp_retransmissions_keep_their_xid_and_new_transactions_get_fresh_ones() {
    let (server, rx) = udp_server();
    let mut r = UdpRequestor::new(server, &ME).unwrap();
    r.set_retransmission(Retransmission {
        irt: Duration::from_millis(200),
        mrt: Duration::from_millis(500),
        mrc: 5,
    });

    // Three datagrams lost, the fourth answered (after two decoys).
    let answer = r.query(&by_address("2001:db8::1")).unwrap();
    assert_eq!(answer.transmissions, 4);
    assert_eq!(answer.xids.len(), 1);
    assert_eq!(answer.clients.len(), 1);
    assert_eq!(answer.clients[0].client_id, [0, 3, 0, 1, 7, 7, 7, 7, 7, 7]);
    assert_eq!(answer.server_id, SERVER_DUID);
    let sent: Vec<_> = rx.try_iter().collect();
    assert_eq!(sent.len(), 4);
    assert!(
        sent.iter().all(|(_, x, _)| *x == answer.xids[0].value()),
        "a retransmission keeps its xid: {sent:?}"
    );
    assert_schedule(&sent.iter().map(|s| s.0).collect::<Vec<_>>());

    // A new transaction: a fresh xid.
    let second = r.query(&by_address("2001:db8::2")).unwrap();
    assert_eq!(second.transmissions, 1);
    assert_ne!(second.xids[0], answer.xids[0]);

    // No answer: MRC transmissions in all, one xid, then NoAnswer.
    let e = r.query(&by_address("2001:db8::dead")).unwrap_err();
    assert!(matches!(e, Error::NoAnswer { transmissions: 5 }), "{e}");
    let sent: Vec<_> = rx.try_iter().skip(1).collect();
    assert_eq!(sent.len(), 5, "{sent:?}");
    let xids: HashSet<u32> = sent.iter().map(|s| s.1).collect();
    assert_eq!(xids.len(), 1);
    assert!(!xids.contains(&answer.xids[0].value()));
    assert_schedule(&sent.iter().map(|s| s.0).collect::<Vec<_>>());
}

#[test]
fn every_query_on_one_connection_has_its_own_xid() {
    let (tx, rx) = mpsc::channel();
    let server = FakeServer::start(move |mut c| {
        while let Some(q) = c.read(Duration::from_secs(10)) {
            let _ = tx.send(q.xid);
            c.send(&bulk_answer(q.xid, 1, &q.requestor, &[], Status::Success));
        }
    });
    let mut conn = Connection::connect(server.addr, &ME).unwrap();
    let mut ours = Vec::new();
    for _ in 0..2000 {
        let mut bulk = conn
            .bulk(&Query::LinkAddress(link(1)), TimeWindow::ALL)
            .unwrap();
        assert!(bulk.next().is_none(), "an empty answer");
        ours.push(bulk.xid().value());
    }
    drop(conn);
    // Each xid was reported before its answer was sent.
    let seen: Vec<u32> = rx.try_iter().collect();
    assert_eq!(seen, ours, "the xids on the wire");
    let distinct: HashSet<u32> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 2000, "no xid twice on one connection");
    assert!(!distinct.contains(&0));
}

#[test]
fn a_late_answer_to_an_abandoned_bulk_query_is_not_taken_for_the_next_d21() {
    let lqd = Lqd::start_with_demo(
        "lq-xid",
        "",
        "clients = 3000\nlinks = 1\nchanges_per_sec = 1\nseed = 25\n",
    );
    let mut conn = Connection::connect(lqd.addr, &ME).unwrap();
    let q = Query::LinkAddress(link(1));
    let all: Vec<Vec<u8>> = conn
        .bulk(&q, TimeWindow::ALL)
        .unwrap()
        .map(|d| d.unwrap().client_id)
        .collect();
    assert!(all.len() > 2500, "{}", all.len());
    let mut xids = HashSet::new();
    for _ in 0..5 {
        // Abandon a query after one binding: the rest of its answer is still coming.
        let mut abandoned = conn.bulk(&q, TimeWindow::ALL).unwrap();
        assert!(abandoned.next().unwrap().is_ok());
        assert!(xids.insert(abandoned.xid()));
        drop(abandoned);
        let mut next = conn.bulk(&q, TimeWindow::ALL).unwrap();
        assert!(xids.insert(next.xid()));
        let ids: Vec<Vec<u8>> = next.by_ref().map(|d| d.unwrap().client_id).collect();
        // Nothing of the abandoned answer, and nothing lost: lqd (D21) would drop a query
        // reusing the running query's xid.
        assert_eq!(ids.len(), all.len());
        let set: HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len(), "each binding once");
    }
}
