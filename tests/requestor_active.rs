//! The Active requestor's state machine (digest §10.5, §10.6; decisions D3, D9, D19) against
//! scripted fake servers: a silent server triggers ACTIVE_LQ_RCV_TIMEOUT and a reconnect with
//! the last base-time; base-times seen during catch-up are never saved; DataMissing in a REPLY
//! or in a DATA is recovered by Bulk on a second connection (START/END for the window
//! recovery, a full resync otherwise); QueryTerminated reconnects; a refusal ends it.

#[path = "common/fake.rs"]
mod fake;

use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use fake::{FakeServer, Request, bulk_answer, channel, data, reply};
use lqd::codec::{MessageType, QueryType, ServerTime, Status};
use lqd::requestor::{
    ActiveSettings, Error, Event, Query, Recovery, Subscription, Watch, WatchEvent, WatchSettings,
};

const ME: [u8; 6] = [0, 3, 0, 1, 0xde, 0xad];
const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);

fn settings() -> ActiveSettings {
    let mut s = ActiveSettings::new(&ME);
    s.reconnect_min = Duration::from_millis(20);
    s.reconnect_max = Duration::from_millis(200);
    s
}

/// The next event that is not a Binding or Keepalive.
fn next_status(sub: &mut Subscription) -> Event {
    loop {
        match sub.next_event().unwrap().unwrap() {
            Event::Binding(_) | Event::Keepalive(_) => {}
            e => return e,
        }
    }
}

/// Checks that `sub` reconnected with START_TIME `t`, and that the server saw its first query
/// without START_TIME and the second with `t`.
fn reconnected_with(sub: &mut Subscription, rx: &Receiver<Request>, t: ServerTime) {
    assert!(matches!(
        next_status(sub),
        Event::Connected { start_time: Some(s), .. } if s == t
    ));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().start,
        None
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap().start,
        Some(t)
    );
}

/// D3, with the `lq` binary: a server that answers and then says nothing is dropped after
/// `--rcv-timeout`, and lq reconnects with START_TIME = the last base-time it sent.
#[test]
fn a_silent_server_triggers_the_receive_timeout_and_a_reconnect_d3() {
    let (tx, rx) = channel::<(usize, Request, Instant)>();
    let server = FakeServer::start(move |mut c| {
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send((c.index, q.clone(), Instant::now()));
        if c.index == 0 {
            c.send(&reply(
                q.xid,
                Some(Status::Success),
                Some(5000),
                &q.requestor,
            ));
            c.send(&data(q.xid, 5001, None, Some((1, "2001:db8:0:1::10"))));
            c.send(&data(q.xid, 5002, Some(Status::CatchUpComplete), None));
            c.send(&data(q.xid, 5007, None, None)); // a keepalive
        }
        // Then silence, with the connection open.
        c.until_closed(Duration::from_secs(30));
    });
    let mut lq = Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(["watch", "--json", "--rcv-timeout", "1", "--server"])
        .arg(server.addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (i, first, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!((i, first.msg_type), (0, MessageType::ActiveLeasequery));
    assert_eq!(first.start, Some(ServerTime(1)), "no links: START_TIME = 1");
    assert!(first.wants_base_time);
    let sent_at = Instant::now();
    let (i, second, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let _ = lq.kill();
    let _ = lq.wait();
    assert_eq!(i, 1);
    assert_eq!(second.msg_type, MessageType::ActiveLeasequery);
    // The last base-time the server sent: the keepalive's.
    assert_eq!(second.start, Some(ServerTime(5007)));
    let waited = at.duration_since(sent_at);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    let out = std::io::read_to_string(lq.stdout.take().unwrap()).unwrap();
    assert!(
        out.contains("nothing received for 1s (ACTIVE_LQ_RCV_TIMEOUT)"),
        "{out}"
    );
}

/// D3 with the library, in LIVE: the resume point is the base-time of the last message,
/// the keepalive included.
#[test]
fn a_reconnect_after_the_receive_timeout_sends_the_last_live_base_time_d3() {
    let (tx, rx) = channel::<Request>();
    let server = FakeServer::start(move |mut c| {
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send(q.clone());
        if c.index == 0 {
            c.send(&reply(q.xid, None, Some(100), &q.requestor));
            c.send(&data(q.xid, 105, None, Some((1, "2001:db8::1"))));
            c.send(&data(q.xid, 160, None, None));
        }
        c.until_closed(Duration::from_secs(30));
    });
    let mut s = settings();
    s.rcv_timeout = Duration::from_millis(500);
    let mut sub = Subscription::new(server.addr, s, None);
    assert!(matches!(
        next_status(&mut sub),
        Event::Connected {
            start_time: None,
            ..
        }
    ));
    let Event::Disconnected { reason, .. } = next_status(&mut sub) else {
        panic!()
    };
    assert!(
        reason.to_string().contains("ACTIVE_LQ_RCV_TIMEOUT"),
        "{reason}"
    );
    assert_eq!(sub.resume_point(), Some(ServerTime(160)), "the keepalive's");
    reconnected_with(&mut sub, &rx, ServerTime(160));
}

/// Digest §10.5 step 8: no base-time is saved while catching up; CatchUpComplete's is.
#[test]
fn base_times_received_during_catch_up_are_never_saved() {
    let (tx, rx) = channel::<Request>();
    let server = FakeServer::start(move |mut c| {
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send(q.clone());
        let to = q.requestor.clone();
        match c.index {
            // Catch-up messages come in no time order; then the connection drops.
            0 => {
                c.send(&reply(q.xid, None, Some(900), &to));
                c.send(&data(q.xid, 950, None, Some((1, "2001:db8::1"))));
                c.send(&data(q.xid, 920, None, Some((2, "2001:db8::2"))));
            }
            1 => {
                c.send(&reply(q.xid, None, Some(1000), &to));
                c.send(&data(q.xid, 1001, None, Some((3, "2001:db8::3"))));
                c.send(&data(q.xid, 1002, Some(Status::CatchUpComplete), None));
                c.send(&data(q.xid, 1010, None, Some((3, "2001:db8::33"))));
            }
            _ => {}
        }
        if c.index < 2 {
            return; // closes
        }
        c.until_closed(Duration::from_secs(30));
    });
    let mut sub = Subscription::new(server.addr, settings(), Some(ServerTime(500)));
    let mut connects = 0;
    let mut resume_when_lost = Vec::new();
    while connects < 3 {
        match sub.next_event().unwrap().unwrap() {
            Event::Connected { .. } => connects += 1,
            Event::Disconnected { .. } => resume_when_lost.push(sub.resume_point()),
            _ => {}
        }
    }
    assert_eq!(
        resume_when_lost,
        [Some(ServerTime(500)), Some(ServerTime(1010))],
        "nothing from a catch-up is kept; from CatchUpComplete on, every base-time is"
    );
    let starts: Vec<_> = (0..3)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap().start)
        .collect();
    assert_eq!(
        starts,
        [
            Some(ServerTime(500)),
            Some(ServerTime(500)),
            Some(ServerTime(1010))
        ]
    );
}

/// D9: LEASEQUERY-DONE QueryTerminated ends the connection; the subscription reconnects
/// from its resume point.
#[test]
fn query_terminated_reconnects_from_the_resume_point_d9() {
    let (tx, rx) = channel::<Request>();
    let server = FakeServer::start(move |mut c| {
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send(q.clone());
        if c.index == 0 {
            c.send(&reply(q.xid, None, Some(300), &q.requestor));
            c.send(
                &lqd::codec::MessageBuilder::done(q.xid)
                    .status(Status::QueryTerminated, "shutting down")
                    .build_frame()
                    .unwrap(),
            );
        }
        c.until_closed(Duration::from_secs(30));
    });
    use lqd::codec::BuildOptions;
    let mut sub = Subscription::new(server.addr, settings(), None);
    assert!(matches!(next_status(&mut sub), Event::Connected { .. }));
    let Event::Disconnected { reason, .. } = next_status(&mut sub) else {
        panic!()
    };
    assert_eq!(
        reason.to_string(),
        "the server ended the query: QueryTerminated (shutting down)"
    );
    reconnected_with(&mut sub, &rx, ServerTime(300));
}

/// Digest §10.5 step 6: an error status in the REPLY fails the subscription.
#[test]
fn a_refusal_ends_the_subscription() {
    let server = FakeServer::start(|mut c| {
        if let Some(q) = c.read(Duration::from_secs(10)) {
            c.send(&reply(q.xid, Some(Status::NotAllowed), None, &q.requestor));
        }
    });
    let mut sub = Subscription::new(server.addr, settings(), None);
    assert!(matches!(next_status(&mut sub), Event::Connected { .. }));
    let e = sub.next_event().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                status: Status::NotAllowed,
                ..
            }
        ),
        "{e}"
    );
}

/// A watch over a fake server with one link: the script for each connection, by what the
/// requestor asks. Returns the requests seen, in order.
fn watch_with(
    recovery: Recovery,
    missing_in_data: bool,
) -> (Vec<Request>, Vec<WatchEvent>, lqd::requestor::Replica) {
    let (tx, rx) = channel::<Request>();
    let server = FakeServer::start(move |mut c| {
        while let Some(q) = c.read(Duration::from_secs(10)) {
            let _ = tx.send(q.clone());
            let to = q.requestor.clone();
            match (q.msg_type, q.start, q.end) {
                // The initial sync: two clients.
                (MessageType::Leasequery, None, None) if c.index == 0 => c.send(&bulk_answer(
                    q.xid,
                    1000,
                    &to,
                    &[(1, "2001:db8:0:1::1"), (2, "2001:db8:0:1::2")],
                    Status::Success,
                )),
                // The Active query from the sync's base-time.
                (MessageType::ActiveLeasequery, Some(_), None) => {
                    if missing_in_data {
                        c.send(&reply(q.xid, None, Some(1001), &to));
                        c.send(&data(q.xid, 1002, Some(Status::CatchUpComplete), None));
                        c.send(&data(q.xid, 1600, None, Some((3, "2001:db8:0:1::3"))));
                        c.send(&data(q.xid, 2500, Some(Status::DataMissing), None));
                    } else {
                        // D19: DataMissing, then the end of the (empty) catch-up.
                        c.send(&reply(q.xid, Some(Status::DataMissing), Some(2000), &to));
                        c.send(&data(q.xid, 2000, Some(Status::CatchUpComplete), None));
                    }
                    c.send(&data(q.xid, 2600, None, Some((4, "2001:db8:0:1::4"))));
                }
                // A resync, asked after the live update at 2600: client 2 is gone, 5 is
                // new.
                (MessageType::Leasequery, None, None) => c.send(&bulk_answer(
                    q.xid,
                    2700,
                    &to,
                    &[
                        (1, "2001:db8:0:1::1"),
                        (4, "2001:db8:0:1::4"),
                        (5, "2001:db8:0:1::5"),
                    ],
                    Status::Success,
                )),
                // The window: only live bindings changed in it.
                (MessageType::Leasequery, Some(_), Some(_)) => c.send(&bulk_answer(
                    q.xid,
                    2700,
                    &to,
                    &[(5, "2001:db8:0:1::5")],
                    Status::Success,
                )),
                _ => {}
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut active = settings();
    active.stop = Some(Arc::clone(&stop));
    let mut ws = WatchSettings::new(server.addr, active);
    ws.links = vec![LINK];
    ws.recovery = recovery;
    let mut w = Watch::open(ws).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until the resync's answer and the live update after it have been applied.
    while !(w.replica().clients().contains_key(&fake::client_duid(4))
        && w.replica().base_time() == Some(ServerTime(2600))
        && events
            .iter()
            .any(|e| matches!(e, WatchEvent::Synced { recovery: true, .. })))
    {
        assert!(Instant::now() < deadline, "{events:#?}");
        events.push(w.next_event().unwrap().unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(w.next_event().unwrap().is_none(), "stopped");
    (rx.try_iter().collect(), events, w.replica().clone())
}

/// Digest §10.5 step 10 and §10.2 (c): DataMissing in the REPLY; the window recovery asks
/// Bulk with START = the START_TIME sent and END = the DataMissing base-time, on a second
/// connection.
#[test]
fn data_missing_in_the_reply_asks_bulk_start_end_on_a_second_connection() {
    let (requests, events, replica) = watch_with(Recovery::Window, false);
    let kinds: Vec<_> = requests
        .iter()
        .map(|r| (r.msg_type, r.query_type, r.link, r.start, r.end))
        .collect();
    let by_link = Some(QueryType::ByLinkAddress);
    assert_eq!(
        kinds,
        [
            (MessageType::Leasequery, by_link, Some(LINK), None, None),
            // Filtered to the link it synced (issue 12: it used to follow every change).
            (
                MessageType::ActiveLeasequery,
                by_link,
                Some(LINK),
                Some(ServerTime(1000)),
                None
            ),
            (
                MessageType::Leasequery,
                by_link,
                Some(LINK),
                Some(ServerTime(1000)),
                Some(ServerTime(2000))
            ),
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        WatchEvent::DataMissing {
            start: Some(ServerTime(1000)),
            end: Some(ServerTime(2000)),
            recovery: Some(Recovery::Window),
            ..
        }
    )));
    // The window recovery only adds: client 2 ended in the gap but is still held.
    let ids: Vec<u8> = replica.clients().keys().map(|k| k[9]).collect();
    assert_eq!(ids, [1, 2, 4, 5]);
}

/// D19: DataMissing in a DATA (the live stream overran) after the catch-up: the gap starts
/// at the last saved base-time; the resync replaces the replica's content.
#[test]
fn data_missing_in_a_data_message_is_resynced_from_the_last_saved_base_time_d19() {
    let (requests, events, replica) = watch_with(Recovery::Resync, true);
    assert!(
        events.iter().any(|e| matches!(
            e,
            WatchEvent::DataMissing {
                start: Some(ServerTime(1600)),
                end: Some(ServerTime(2500)),
                recovery: Some(Recovery::Resync),
                ..
            }
        )),
        "{events:#?}"
    );
    let last = requests.last().unwrap();
    assert_eq!(
        (last.msg_type, last.start, last.end),
        (MessageType::Leasequery, None, None)
    );
    // Exact: 2 and 3 are gone, 5 is new, and the live update (4) after the DataMissing
    // is kept (applied before the resync's answer or after it, which holds it too).
    let ids: Vec<u8> = replica.clients().keys().map(|k| k[9]).collect();
    assert_eq!(ids, [1, 4, 5]);
    assert_eq!(replica.base_time(), Some(ServerTime(2600)));
}

const LINK2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1);

/// Issue 12: a watch of two links runs one filtered ACTIVELEASEQUERY per link, each with its
/// own xid and catch-up, on one connection; a DataMissing on the second link's stream
/// resyncs that link alone, holding only that stream's saved base-time at the gap's start.
#[test]
fn data_missing_on_one_stream_resyncs_only_what_that_stream_covers() {
    let (tx, rx) = channel::<(usize, Request)>();
    let link2_bulks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = FakeServer::start(move |mut c| {
        while let Some(q) = c.read(Duration::from_secs(10)) {
            let _ = tx.send((c.index, q.clone()));
            let to = q.requestor.clone();
            match (q.msg_type, q.link) {
                (MessageType::Leasequery, Some(LINK)) => c.send(&bulk_answer(
                    q.xid,
                    1000,
                    &to,
                    &[(1, "2001:db8:0:1::1")],
                    Status::Success,
                )),
                (MessageType::Leasequery, Some(LINK2)) => {
                    let answer: &[(u8, &str)] = if link2_bulks.fetch_add(1, Ordering::SeqCst) == 0 {
                        &[(2, "2001:db8:0:2::2")]
                    } else {
                        // The resync (after the live update at 1600): client 2 ended in
                        // the gap, 5 is new.
                        &[(4, "2001:db8:0:2::4"), (5, "2001:db8:0:2::5")]
                    };
                    c.send(&bulk_answer(q.xid, 2100, &to, answer, Status::Success));
                }
                (MessageType::ActiveLeasequery, Some(LINK)) => {
                    c.send(&reply(q.xid, None, Some(1001), &to));
                    c.send(&data(q.xid, 1002, Some(Status::CatchUpComplete), None));
                    c.send(&data(q.xid, 1100, None, Some((3, "2001:db8:0:1::3"))));
                }
                (MessageType::ActiveLeasequery, Some(LINK2)) => {
                    c.send(&reply(q.xid, None, Some(1001), &to));
                    c.send(&data(q.xid, 1002, Some(Status::CatchUpComplete), None));
                    c.send(&data(q.xid, 1500, Some(Status::DataMissing), None));
                    c.send(&data(q.xid, 1600, None, Some((4, "2001:db8:0:2::4"))));
                }
                _ => {}
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut active = settings();
    active.stop = Some(Arc::clone(&stop));
    let mut ws = WatchSettings::new(server.addr, active);
    ws.links = vec![LINK, LINK2];
    let mut w = Watch::open(ws).unwrap();
    let mut events = Vec::new();
    let mut held_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Until the resync's answer and both streams' live updates have been applied.
    while !(w.replica().stream_base_time(0) == Some(ServerTime(1100))
        && w.replica().stream_base_time(1) == Some(ServerTime(1600))
        && events
            .iter()
            .any(|e| matches!(e, WatchEvent::Synced { recovery: true, .. })))
    {
        assert!(Instant::now() < deadline, "{events:#?}");
        let e = w.next_event().unwrap().unwrap();
        if matches!(e, WatchEvent::DataMissing { .. }) {
            held_at = Some(w.replica().stream_base_time(1));
        }
        events.push(e);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(w.next_event().unwrap().is_none(), "stopped");

    let requests: Vec<(usize, MessageType, Option<Ipv6Addr>, Option<ServerTime>)> = rx
        .try_iter()
        .map(|(i, r)| (i, r.msg_type, r.link, r.start))
        .collect();
    let (lq, alq) = (MessageType::Leasequery, MessageType::ActiveLeasequery);
    assert_eq!(
        requests,
        [
            (0, lq, Some(LINK), None),
            (0, lq, Some(LINK2), None),
            // Both streams on one connection, each from its own sync's first base-time.
            (1, alq, Some(LINK), Some(ServerTime(1000))),
            (1, alq, Some(LINK2), Some(ServerTime(2100))),
            // The resync of link 2 alone.
            (2, lq, Some(LINK2), None),
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        WatchEvent::DataMissing {
            start: Some(ServerTime(1002)),
            end: Some(ServerTime(1500)),
            scope: Some(Query::LinkAddress(LINK2)),
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        WatchEvent::Synced { recovery: true, scopes, queries: 1, .. }
            if scopes == &[Query::LinkAddress(LINK2)]
    )));
    // While the recovery was pending, link 2's saved base-time stayed at the gap's start.
    assert_eq!(held_at, Some(Some(ServerTime(1002))));
    let r = w.replica();
    let ids: Vec<u8> = r.clients().keys().map(|k| k[9]).collect();
    assert_eq!(ids, [1, 3, 4, 5], "link 1 untouched; link 2 resynced");
    assert_eq!(r.stream_base_time(0), Some(ServerTime(1100)));
    assert_eq!(r.stream_base_time(1), Some(ServerTime(1600)));
    assert_eq!(r.base_time(), Some(ServerTime(1100)), "the earliest");
}

/// A server that runs fewer queries per connection than a subscription sends leaves the rest
/// unread (digest §10.4 step 18): the stream without a LEASEQUERY-REPLY is reported after the
/// receive timeout, though the connection itself is alive.
#[test]
fn a_query_the_server_leaves_unread_is_reported_after_the_receive_timeout() {
    let server = FakeServer::start(|mut c| {
        // Reads one query, answers it, and keeps it alive; never reads the second.
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        c.send(&reply(q.xid, None, Some(100), &q.requestor));
        for t in 0..50 {
            std::thread::sleep(Duration::from_millis(100));
            c.send(&data(q.xid, 101 + t, None, None));
        }
    });
    let mut s = settings();
    s.rcv_timeout = Duration::from_millis(800);
    let mut sub = Subscription::with_streams(
        server.addr,
        s,
        [
            (Some(lqd::requestor::Query::LinkAddress(LINK)), None),
            (Some(lqd::requestor::Query::LinkAddress(LINK2)), None),
        ],
    );
    let started = Instant::now();
    let mut connected = 0;
    let reason = loop {
        match sub.next_stream_event().unwrap().unwrap() {
            (Some(_), Event::Connected { .. }) => connected += 1,
            (None, Event::Disconnected { reason, .. }) => break reason.to_string(),
            _ => {}
        }
    };
    assert_eq!(connected, 2);
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(sub.stream_phase(0), lqd::requestor::Phase::Disconnected);
    assert!(
        reason.contains("no LEASEQUERY-REPLY within 0.8s to the query for link-address=2001:db8:0:2::1 (2 of 2 on the connection)"),
        "{reason}"
    );
    assert!(reason.contains("fewer queries per connection"), "{reason}");
}

/// `queries_per_connection` spreads the streams over connections: with 1, a server that runs
/// one query per connection answers every stream.
#[test]
fn streams_beyond_queries_per_connection_go_on_further_connections() {
    let (tx, rx) = channel::<(usize, Option<Ipv6Addr>)>();
    let server = FakeServer::start(move |mut c| {
        let Some(q) = c.read(Duration::from_secs(10)) else {
            return;
        };
        let _ = tx.send((c.index, q.link));
        let to = q.requestor.clone();
        match q.msg_type {
            MessageType::Leasequery => {
                c.send(&bulk_answer(q.xid, 1000, &to, &[], Status::Success));
                // The sync asks its second query on the same connection.
                if let Some(q) = c.read(Duration::from_secs(10)) {
                    let _ = tx.send((c.index, q.link));
                    c.send(&bulk_answer(q.xid, 1000, &to, &[], Status::Success));
                }
            }
            _ => {
                c.send(&reply(q.xid, None, Some(1001), &to));
                c.send(&data(q.xid, 1002, Some(Status::CatchUpComplete), None));
            }
        }
        c.until_closed(Duration::from_secs(30));
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut active = settings();
    active.stop = Some(Arc::clone(&stop));
    let mut ws = WatchSettings::new(server.addr, active);
    ws.links = vec![LINK, LINK2];
    ws.queries_per_connection = 1;
    let mut w = Watch::open(ws).unwrap();
    let mut caught_up = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while caught_up.len() < 2 {
        assert!(Instant::now() < deadline);
        if let WatchEvent::CatchUpComplete { scope, .. } = w.next_event().unwrap().unwrap() {
            caught_up.push(scope);
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(w.next_event().unwrap().is_none());
    caught_up.sort_by_key(|s| s.as_ref().map(ToString::to_string));
    assert_eq!(
        caught_up,
        [
            Some(Query::LinkAddress(LINK)),
            Some(Query::LinkAddress(LINK2))
        ]
    );
    let mut active_on: Vec<(usize, Option<Ipv6Addr>)> = rx.try_iter().skip(2).collect();
    active_on.sort();
    assert_eq!(active_on.len(), 2);
    assert_ne!(active_on[0].0, active_on[1].0, "one connection each");
}
