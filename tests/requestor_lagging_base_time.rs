//! A requestor that falls behind an Active stream and reconnects from the last base-time it
//! saw misses nothing (digest §10.5 step 8): while older changes wait behind a query's cursor,
//! lqd stamps its messages with the time of the next of them, not with the current time, so
//! the catch-up from that base-time still holds them. (Found by this test: lqd used to stamp
//! every message with the current time, and 37–91 of 3,000 bindings stayed stale.)

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;

use std::time::Duration;

use common::{Lqd, link};
use lq::{Bindings, diff, truth};
use lqd::codec::ServerTime;
use lqd::requestor::{ActiveSettings, Connection, Event, Query, Replica, Subscription, TimeWindow};

const ME: [u8; 6] = [0, 3, 0, 1, 1, 2];

fn bindings(r: &Replica) -> Bindings {
    r.clients()
        .iter()
        .map(|(k, c)| {
            (
                hex::encode(k),
                c.leases.iter().map(|l| (l.address, l.prefix_len)).collect(),
            )
        })
        .collect()
}

/// Reads a catch-up from `start` into `replica` until CatchUpComplete; bindings received.
fn catch_up(lqd: &Lqd, start: ServerTime, replica: &mut Replica) -> usize {
    let mut sub = Subscription::new(lqd.addr, ActiveSettings::new(&ME), Some(start));
    let mut n = 0;
    loop {
        match sub.next_event().unwrap().unwrap() {
            Event::Binding(d) => {
                replica.apply(&d);
                n += 1;
            }
            Event::CatchUpComplete(_) => return n,
            Event::DataMissing { .. } => panic!("the 64 MiB journal holds everything"),
            _ => {}
        }
    }
}

#[test]
fn a_reconnect_from_the_last_base_time_of_a_lagging_stream_misses_nothing() {
    let lqd = Lqd::start_with_demo(
        "lq-lag",
        "journal_size = 67108864\ntcp_send_buffer = 4096",
        "clients = 3000\nlinks = 1\nchanges_per_sec = 5000\nseed = 30\nchurn_limit = 20000\n",
    );
    // lqd's journal began before this: no catch-up from an earlier time is complete (D19).
    let started = lqd::feed::system_time();
    // Everything by Bulk, then the Active stream from the Bulk's base-time, read slowly.
    let mut replica = Replica::new();
    let mut conn = Connection::connect(lqd.addr, &ME).unwrap();
    let mut bulk = conn
        .bulk(&Query::LinkAddress(link(1)), TimeWindow::ALL)
        .unwrap();
    let all: Vec<_> = bulk.by_ref().map(|d| d.unwrap()).collect();
    let start = bulk.first_base_time().unwrap();
    drop(bulk);
    replica.replace_all(&all);
    let mut sub = Subscription::new(lqd.addr, ActiveSettings::new(&ME), Some(start));
    let (mut n, mut live) = (0, false);
    while !(live && lqd.log().contains("demo: churn limit reached") && n % 50 == 0) {
        match sub.next_event().unwrap().unwrap() {
            Event::Binding(d) => {
                replica.apply(&d);
                n += 1;
                std::thread::sleep(Duration::from_micros(1500));
            }
            Event::CatchUpComplete(_) => live = true,
            Event::DataMissing { .. } => panic!("the 64 MiB journal holds everything"),
            _ => {}
        }
    }
    // The connection is lost here; the requestor resumes from its saved base-time.
    let saved = sub.resume_point().unwrap();
    drop(sub);
    std::thread::sleep(Duration::from_secs(1));
    let truth = truth(&lqd, 1);
    let caught = catch_up(&lqd, saved, &mut replica);
    let after_resume = bindings(&replica);
    let from_saved = diff(&after_resume, &truth);
    // Five seconds earlier (but not before the journal began), the same catch-up finds what
    // was still queued.
    let caught_earlier = catch_up(&lqd, ServerTime((saved.0 - 5).max(started.0)), &mut replica);
    eprintln!(
        "read {n} live; catch-up from the saved {saved:?}: {caught} bindings, {}; from 5 s \
         earlier: {caught_earlier} bindings, {}",
        from_saved.lines().next().unwrap_or_default(),
        diff(&bindings(&replica), &truth)
            .lines()
            .next()
            .unwrap_or_default()
    );
    assert_eq!(after_resume, truth, "{from_saved}");
}
