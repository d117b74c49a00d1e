//! 5,000 simultaneous Active requestors on one real `lqd`: every one of them ends with exactly
//! the bindings lqd holds after a stretch of churn, having caught up from the journal and then
//! followed the live stream; and what an idle Active session costs lqd in memory.

#[path = "common/lqd.rs"]
mod common;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use common::{Lqd, REQUESTOR, link, read_answers, rss_anon_kib, rss_kib, wait_for_log};
use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, ServerTime, Status,
};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

const REQUESTORS: usize = 5_000;
const LINKS: u16 = 2;

/// Client DUIDs, numbered in the order first seen.
#[derive(Default)]
struct Clients(HashMap<Vec<u8>, usize>);

impl Clients {
    fn id(&mut self, duid: &[u8]) -> usize {
        let next = self.0.len();
        *self.0.entry(duid.to_vec()).or_insert(next)
    }
}

/// A digest of a client's live addresses and prefixes; 0 for none.
fn digest(addrs: &mut [Ipv6Addr]) -> u64 {
    if addrs.is_empty() {
        return 0;
    }
    addrs.sort();
    let mut h = DefaultHasher::new();
    addrs.hash(&mut h);
    h.finish() | 1
}

/// The client data of a message: DUID and the digest of what is live.
fn client_of(m: &MessageRepr<'_>) -> Option<(Vec<u8>, u64)> {
    let Some(DhcpOption::ClientData(cd)) = m.options.get(OptionCode::ClientData) else {
        return None;
    };
    let mut live: Vec<Ipv6Addr> = cd
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IaAddr(x) if x.valid_lifetime > 0 => Some(x.address),
            DhcpOption::IaPrefix(p) if p.valid_lifetime > 0 => Some(p.prefix),
            _ => None,
        })
        .collect();
    Some((cd.client_id()?.as_bytes().to_vec(), digest(&mut live)))
}

/// One requestor's connection and replica (client id → digest).
struct Conn {
    stream: TcpStream,
    dec: FrameDecoder,
    buf: Vec<u8>,
    replica: Vec<u64>,
    caught_up: bool,
    messages: usize,
}

#[test]
fn five_thousand_active_requestors_each_follow_every_change() {
    let lqd = Lqd::start_with_demo(
        "fanout",
        "max_connections = 6000\nmax_connections_per_requestor = 6000",
        "clients = 1000\nlinks = 2\nchanges_per_sec = 100\nseed = 12\nchurn_limit = 1500\n",
    );
    let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let want = (REQUESTORS as u64 + 500).max(soft);
    rlimit::Resource::NOFILE.set(want, hard.max(want)).unwrap();
    let pid = lqd.child.id();
    wait_for_log(&lqd, "initial population sent", 60);
    let (rss_before, anon_before) = (rss_kib(pid), rss_anon_kib(pid));

    let request = MessageBuilder::active_leasequery(7)
        .client_id(&REQUESTOR)
        .oro(&[OptionCode::LqBaseTime])
        .start_time(ServerTime(1))
        .build_frame()
        .unwrap();
    let mut poll = Poll::new().unwrap();
    let mut conns = Vec::with_capacity(REQUESTORS);
    let connect_started = Instant::now();
    for i in 0..REQUESTORS {
        let mut s = loop {
            match std::net::TcpStream::connect(lqd.addr) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(connect_started.elapsed() < Duration::from_secs(60), "{e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        s.write_all(&request).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        conns.push(Conn {
            stream,
            dec: FrameDecoder::default(),
            buf: Vec::new(),
            replica: Vec::new(),
            caught_up: false,
            messages: 0,
        });
    }

    let mut clients = Clients::default();
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 1 << 16];
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(Instant::now() < deadline, "no end in sight:\n{}", lqd.log());
        poll.poll(&mut events, Some(Duration::from_millis(200)))
            .unwrap();
        if events.is_empty() {
            let done = lqd.log().contains("demo: churn limit reached")
                && conns.iter().all(|c| c.caught_up);
            if done && quiet_since.elapsed() > Duration::from_secs(2) {
                break;
            }
            continue;
        }
        quiet_since = Instant::now();
        for event in &events {
            let c = &mut conns[event.token().0];
            loop {
                match c.stream.read(&mut chunk) {
                    Ok(0) => panic!("lqd closed requestor {}", event.token().0),
                    Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            let mut pos = 0;
            while let Decoded::Frame { message, consumed } = c.dec.decode(&c.buf[pos..]).unwrap() {
                pos += consumed;
                c.messages += 1;
                let m = MessageRepr::parse(message).unwrap();
                if m.msg_type() == MessageType::LeasequeryData
                    && m.options.status().map(|s| s.status) == Some(Status::CatchUpComplete)
                {
                    c.caught_up = true;
                }
                // START_TIME 1 is before the journal began: the reply says DataMissing and
                // the whole journal follows (D19); no stream may be overrun after that.
                if m.msg_type() == MessageType::LeasequeryData {
                    assert_ne!(
                        m.options.status().map(|s| s.status),
                        Some(Status::DataMissing)
                    );
                }
                if let Some((duid, d)) = client_of(&m) {
                    let id = clients.id(&duid);
                    if c.replica.len() <= id {
                        c.replica.resize(id + 1, 0);
                    }
                    c.replica[id] = d;
                }
            }
            c.buf.drain(..pos);
        }
    }
    let (rss_after, anon_after) = (rss_kib(pid), rss_anon_kib(pid));

    // The truth: every binding lqd holds now, by Bulk by-link-address.
    let mut truth = vec![0u64; clients.0.len()];
    let mut s = lqd.connect();
    for k in 1..=LINKS {
        let q = MessageBuilder::leasequery(u32::from(k))
            .client_id(&REQUESTOR)
            .lq_query(QueryType::ByLinkAddress, link(k), |q| q)
            .build_frame()
            .unwrap();
        s.write_all(&q).unwrap();
        for m in read_answers(&mut s, &[u32::from(k)]) {
            if let Some((duid, d)) = client_of(&MessageRepr::parse(&m).unwrap()) {
                let id = clients.id(&duid);
                if truth.len() <= id {
                    truth.resize(id + 1, 0);
                }
                truth[id] = d;
            }
        }
    }
    assert!(
        truth.iter().filter(|d| **d != 0).count() > 500,
        "the demo's clients hold leases"
    );
    for (i, c) in conns.iter_mut().enumerate() {
        c.replica.resize(truth.len(), 0);
        assert!(c.caught_up, "requestor {i} never got CatchUpComplete");
        assert_eq!(c.replica, truth, "requestor {i}");
    }
    let messages: usize = conns.iter().map(|c| c.messages).sum();
    eprintln!(
        "{REQUESTORS} requestors, {messages} messages; lqd RSS {rss_before} -> {rss_after} KiB \
         (heap {anon_before} -> {anon_after} KiB): {:.1} KiB of heap per idle Active session",
        (anon_after.saturating_sub(anon_before)) as f64 / REQUESTORS as f64
    );
    assert!(
        anon_after.saturating_sub(anon_before) < (REQUESTORS as u64) * 8,
        "an idle Active session costs under 8 KiB of lqd's heap"
    );
}
