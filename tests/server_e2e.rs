//! A real `lqd` process on loopback, fed by its demo source: Bulk and UDP Leasequery answered,
//! pipelined queries, a malformed frame closing only its own connection, the per-requestor
//! limit, access control (D23), a clean stop on SIGTERM, a slow requestor, BULK_LQ_DATA_TIMEOUT
//! and running out of descriptors.

#[path = "common/lqd.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Lqd, REQUESTOR, by_link, client_data_addresses, link, read_answers, read_whole_answer, rss_kib,
    wait_settled,
};
use lqd::codec::{
    BuildOptions, DhcpOption, MessageBuilder, MessageRepr, MessageType, OptionCode, QueryType,
    Status, Xid,
};

#[test]
fn serves_bulk_and_udp_from_the_demo_source() {
    let lqd = Lqd::start("serve", "");
    let mut s = lqd.connect();
    let mut total = 0;
    let mut sample = None;
    for k in 1..=4u16 {
        s.write_all(&by_link(k as u32, link(k))).unwrap();
        let msgs = read_answers(&mut s, &[k as u32]);
        let first = MessageRepr::parse(&msgs[0]).unwrap();
        assert_eq!(first.msg_type(), MessageType::LeasequeryReply);
        assert!(first.options.get(OptionCode::ServerId).is_some());
        let found = client_data_addresses(&msgs);
        total += found.len();
        sample = sample.or(found.first().cloned());
    }
    assert!(
        total >= 100,
        "the demo's 300 clients hold addresses: {total}"
    );

    // UDP: the address learned over TCP, asked by address.
    let (client, address) = sample.unwrap();
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = MessageBuilder::leasequery(0x55)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(address, 0, 0)
        })
        .build()
        .unwrap();
    udp.send_to(&q, lqd.addr).unwrap();
    let mut buf = [0u8; 65536];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let r = MessageRepr::parse(&buf[..n]).unwrap();
    assert_eq!(
        (r.msg_type(), r.xid()),
        (MessageType::LeasequeryReply, Some(Xid::new(0x55)))
    );
    let Some(DhcpOption::ClientData(cd)) = r.options.get(OptionCode::ClientData) else {
        panic!("{r:?}")
    };
    assert_eq!(cd.client_id().unwrap().as_bytes(), &client[..]);

    // Bulk-only types over UDP: NotAllowed (D11).
    udp.send_to(&by_link(0x56, link(1))[2..], lqd.addr).unwrap();
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    let r = MessageRepr::parse(&buf[..n]).unwrap();
    assert_eq!(
        r.options.status().map(|s| s.status),
        Some(Status::NotAllowed)
    );
    assert!(lqd.log().contains("connection opened"));
}

#[test]
fn pipelined_queries_and_a_bad_neighbour() {
    let lqd = Lqd::start("pipeline", "");
    // Three queries in one write: all answered.
    let mut a = lqd.connect();
    let mut burst = Vec::new();
    for k in 1..=3u16 {
        burst.extend_from_slice(&by_link(100 + k as u32, link(k)));
    }
    a.write_all(&burst).unwrap();
    let msgs = read_answers(&mut a, &[101, 102, 103]);
    for xid in [101u32, 102, 103] {
        assert!(
            msgs.iter()
                .any(|m| MessageRepr::parse(m).unwrap().xid() == Some(Xid::new(xid)))
        );
    }
    // A malformed frame closes that connection only.
    let mut bad = lqd.connect();
    bad.write_all(&[0, 2, 14, 0]).unwrap();
    let mut one = [0u8; 1];
    assert_eq!(
        bad.read(&mut one).unwrap_or(0),
        0,
        "the bad connection is closed"
    );
    a.write_all(&by_link(104, link(4))).unwrap();
    assert!(
        !read_answers(&mut a, &[104]).is_empty(),
        "the other connection still works"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lqd.log().contains("bad frame") {
        assert!(
            Instant::now() < deadline,
            "no log line for the bad frame:\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_per_requestor_limit_and_access_control() {
    let lqd = Lqd::start("limits", "max_connections_per_requestor = 2");
    let mut a = lqd.connect();
    let mut b = lqd.connect();
    let mut c = lqd.connect();
    let mut one = [0u8; 1];
    assert_eq!(
        c.read(&mut one).unwrap_or(0),
        0,
        "a third connection from one requestor is closed"
    );
    for (s, xid) in [(&mut a, 1u32), (&mut b, 2)] {
        s.write_all(&by_link(xid, link(1))).unwrap();
        assert!(!read_answers(s, &[xid]).is_empty());
    }
    drop(lqd);

    // Only 2001:db8::/32 may ask: loopback is refused at once, over TCP and UDP.
    let lqd = Lqd::start("acl", "[[requestor]]\nprefix = \"2001:db8::/32\"");
    let mut s = lqd.connect();
    assert_eq!(s.read(&mut one).unwrap_or(0), 0);
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    udp.send_to(&by_link(1, link(1))[2..], lqd.addr).unwrap();
    let mut buf = [0u8; 1024];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "no answer to a refused requestor"
    );
}

#[test]
fn sigterm_stops_cleanly() {
    let mut lqd = Lqd::start("sigterm", "");
    let _s = lqd.connect();
    std::thread::sleep(Duration::from_millis(200));
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(lqd.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(exit) = lqd.child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}\n{}", lqd.log());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lqd did not stop:\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(lqd.log().contains("shutting down"));
}

/// read_budget 8: the loop must come back at once for datagrams left after its budget, since
/// edge-triggered readiness will not report them again (and sleeping until the next poll
/// timeout, 250 ms a turn, would take over ten seconds for this burst).
#[test]
fn a_udp_burst_beyond_the_read_budget_is_all_answered_at_once() {
    let lqd = Lqd::start("udpburst", "read_budget = 8");
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 2048];
    let mut seen = std::collections::BTreeSet::new();
    // Bursts of 100, each read back before the next so the test's own socket buffer never
    // overflows.
    for burst in 0..4u32 {
        for xid in burst * 100..(burst + 1) * 100 {
            let q = MessageBuilder::leasequery(xid)
                .client_id(&REQUESTOR)
                .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
                    q.iaaddr(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1), 0, 0)
                })
                .build()
                .unwrap();
            udp.send_to(&q, lqd.addr).unwrap();
        }
        while seen.len() < ((burst + 1) * 100) as usize {
            let (n, _) = udp.recv_from(&mut buf).expect("every query answered");
            seen.insert(
                MessageRepr::parse(&buf[..n])
                    .unwrap()
                    .xid()
                    .unwrap()
                    .value(),
            );
        }
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "400 queries answered in {took:?}"
    );
}

#[test]
fn a_million_binding_answer_streams_in_bounded_memory() {
    let lqd = Lqd::start_with_demo(
        "million",
        "",
        "clients = 1000000\nlinks = 1\nchanges_per_sec = 1\nseed = 9\n",
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while !lqd.log().contains("initial population sent") {
        assert!(
            Instant::now() < deadline,
            "the demo did not load:\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = lqd.child.id();
    wait_settled(pid, Duration::from_secs(120));
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut s = lqd.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&by_link(1, link(1))).unwrap();
    let (bindings, peak) = read_whole_answer(&mut s, pid);
    let took = started.elapsed();
    // The demo churns one change a second: a client or two may have left meanwhile.
    assert!(
        (999_900..=1_000_000).contains(&bindings),
        "{bindings} bindings"
    );
    assert!(
        peak < before + 8 * 1024,
        "RSS {before} KiB before, {peak} KiB peak while streaming"
    );
    eprintln!("{bindings} bindings streamed in {took:?}; RSS {before} KiB before, {peak} KiB peak");
    assert_eq!(
        lqd.log().matches("initial population sent").count(),
        1,
        "announced once"
    );
}

#[test]
fn a_slow_requestor_holds_up_nobody_and_a_large_answer_streams_in_bounded_memory() {
    // 150,000 clients on one link: a by-link answer of 150,000 bindings (about 9 MB).
    let lqd = Lqd::start_with_demo(
        "large",
        "",
        "clients = 150000\nlinks = 1\nchanges_per_sec = 1\nseed = 3\n",
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while !lqd.log().contains("initial population sent") {
        assert!(
            Instant::now() < deadline,
            "the demo did not load:\n{}",
            lqd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = lqd.child.id();

    // One full answer first, so the allocator's one-time growth is not counted below.
    let mut fast = lqd.connect();
    fast.write_all(&by_link(1, link(1))).unwrap();
    let (bindings, _) = read_whole_answer(&mut fast, pid);
    assert_eq!(bindings, 150_000, "REPLY + DATA carry every binding");
    let warm = rss_kib(pid);

    // A requestor asks for everything and then stops reading.
    let mut slow = lqd.connect();
    slow.write_all(&by_link(2, link(1))).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let blocked = rss_kib(pid);

    // Others are served meanwhile: UDP, and another full Bulk answer read to the end.
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(&by_link(9, link(1))[2..], lqd.addr).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        udp.recv_from(&mut buf).is_ok(),
        "UDP answered while a requestor is blocked"
    );
    let started = Instant::now();
    fast.write_all(&by_link(3, link(1))).unwrap();
    let (bindings, peak) = read_whole_answer(&mut fast, pid);
    let took = started.elapsed();
    assert_eq!(bindings, 150_000);
    // Neither the blocked requestor nor the streamed answer is held in lqd's memory: each is
    // produced up to a 64 KiB high-water mark per connection.
    assert!(
        blocked < warm + 4 * 1024 && peak < warm + 4 * 1024,
        "RSS {warm} KiB, then {blocked} KiB with a requestor blocked, {peak} KiB peak while streaming"
    );
    eprintln!(
        "150,000 bindings streamed in {took:?}; RSS {warm} KiB, {blocked} KiB with a requestor blocked, {peak} KiB peak"
    );
    drop(slow);
}

#[test]
fn a_requestor_stuck_half_way_through_a_query_is_closed_after_the_data_timeout() {
    let lqd = Lqd::start("timeout", "bulk_data_timeout = 1");
    let mut stuck = lqd.connect();
    let query = by_link(1, link(1));
    stuck.write_all(&query[..5]).unwrap();
    let started = Instant::now();
    let mut one = [0u8; 1];
    let n = stuck.read(&mut one).unwrap_or(0);
    assert_eq!(n, 0, "closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // A requestor that keeps talking is answered; an idle one is closed the same way.
    let mut busy = lqd.connect();
    busy.write_all(&by_link(2, link(1))).unwrap();
    assert!(!read_answers(&mut busy, &[2]).is_empty());
    let started = Instant::now();
    assert_eq!(
        busy.read(&mut one).unwrap_or(0),
        0,
        "idle connection closed"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(lqd.log().contains("BULK_LQ_DATA_TIMEOUT"));
}

/// With too few descriptors for its connections, lqd says so at start, leaves the surplus
/// connections in the listen backlog, and accepts them as soon as others close: none is lost.
#[test]
fn out_of_descriptors_the_backlog_waits_and_is_served_when_others_close() {
    let lqd = Lqd::start_limited(
        "fds",
        "max_connections = 1000\nmax_connections_per_requestor = 1000\n",
        "clients = 50\nlinks = 2\nchanges_per_sec = 1\nseed = 3\n",
        // lqd holds about 16 descriptors of its own (standard streams, the poll and its waker,
        // the loop's and the reload thread's signal pipes, the sockets, the journal): some of
        // the 30 connections below are accepted, the others wait.
        Some(28),
    );
    assert!(
        lqd.log()
            .contains("the open-file hard limit is below max_connections"),
        "{}",
        lqd.log()
    );
    let mut conns: Vec<TcpStream> = (0..30).map(|_| lqd.connect()).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(&by_link(i as u32 + 1, link(1))).unwrap();
    }
    // Those lqd could accept answer; the others wait.
    let mut answered = Vec::new();
    let mut waiting = Vec::new();
    for (i, mut s) in conns.drain(..).enumerate() {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(1) => answered.push(s),
            _ => waiting.push((i, s)),
        }
    }
    assert!(
        !answered.is_empty() && !waiting.is_empty(),
        "answered {}, waiting {}",
        answered.len(),
        waiting.len()
    );
    assert!(lqd.log().contains("accept failed"), "{}", lqd.log());
    drop(answered);
    // Each waiting connection is served once a descriptor is free, and closed once served, so
    // every one gets its turn however many descriptors lqd keeps for itself.
    for (i, mut s) in waiting {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let got = read_answers(&mut s, &[i as u32 + 1]);
        assert!(got.len() >= 2, "connection {i}: {} messages", got.len());
    }
    // At the limit Linux refuses accept with EMFILE even when nobody waits: lqd retries
    // quietly, and says it is accepting again once descriptors are free.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lqd.log().contains("accepting connections again") {
        assert!(Instant::now() < deadline, "{}", lqd.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        lqd.log().matches("accept failed").count(),
        1,
        "one warning per stall:\n{}",
        lqd.log()
    );
}

/// A reconnect storm (thousands of requestors after a restart) must not overflow the listen
/// queue into SYN retransmissions: lqd listens with a backlog of 4096 (mio's default is 128),
/// or what `net.core.somaxconn` allows. `ss` shows a listener's backlog as its Send-Q.
#[test]
fn the_listen_backlog_takes_a_reconnect_storm() {
    let lqd = Lqd::start("backlog", "");
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", lqd.addr.port())])
        .output()
        .expect("ss (iproute2) is needed");
    let text = String::from_utf8_lossy(&out.stdout);
    let send_q: Vec<u32> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(send_q, vec![4096.min(somaxconn)], "ss: {text}");
    assert!(send_q[0] > 128, "somaxconn is {somaxconn}");
}
