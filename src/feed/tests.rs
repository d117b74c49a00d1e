//! The feed channel: bounds, wake-ups, budgets and disconnection.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Poll, Token, Waker};

use super::*;
use crate::codec::ServerTime;
use crate::store::{Lease, LeaseKind, LeaseState};

const FEED: Token = Token(7);

/// A distinct change per `n`.
fn change(n: u32) -> Change {
    Change {
        client_id: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, n as u8].into_boxed_slice(),
        link: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1),
        lease: Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 0x1000 + n as u16),
            prefix_len: 128,
            iaid: n,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(n),
            state: LeaseState::Active,
        },
        relay: None,
    }
}

fn setup(capacity: usize) -> (Poll, FeedHandle, FeedReceiver) {
    let poll = Poll::new().expect("mio::Poll");
    let waker = Arc::new(Waker::new(poll.registry(), FEED).expect("mio::Waker"));
    let (handle, receiver) = feed(capacity, waker);
    (poll, handle, receiver)
}

/// Whether the waker's token fired within `timeout`.
fn woken(poll: &mut Poll, timeout: Duration) -> bool {
    let mut events = Events::with_capacity(8);
    poll.poll(&mut events, Some(timeout)).expect("poll");
    events.iter().any(|e| e.token() == FEED)
}

fn drain_all(receiver: &mut FeedReceiver, budget: usize) -> (Vec<Change>, Drained) {
    let mut got = Vec::new();
    let drained = receiver.drain(budget, |c| got.push(c));
    (got, drained)
}

#[test]
fn a_full_channel_gives_the_change_back() {
    let (_poll, handle, mut receiver) = setup(2);
    assert_eq!(handle.capacity(), 2);
    handle.try_send(change(1)).expect("room for the first");
    handle.try_send(change(2)).expect("room for the second");
    assert_eq!(handle.len(), 2);
    match handle.try_send(change(3)) {
        Err(TrySendError::Full(c)) => assert_eq!(c, change(3)),
        other => panic!("expected Full with the change back, got {other:?}"),
    }
    let (got, drained) = drain_all(&mut receiver, 10);
    assert_eq!(got, vec![change(1), change(2)]);
    assert_eq!(
        drained,
        Drained {
            count: 2,
            more: false,
            disconnected: false
        }
    );
    handle
        .try_send(change(3))
        .expect("room again after the drain");
}

#[test]
fn zero_capacity_still_holds_one_change() {
    let (_poll, handle, mut receiver) = setup(0);
    assert_eq!(handle.capacity(), 1);
    handle.try_send(change(1)).expect("one slot");
    assert!(handle.try_send(change(2)).is_err_and(|e| e.is_full()));
    let (got, _) = drain_all(&mut receiver, 4);
    assert_eq!(got, vec![change(1)]);
}

#[test]
fn a_send_from_another_thread_wakes_the_poll() {
    let (mut poll, handle, mut receiver) = setup(16);
    let sender = std::thread::spawn(move || handle.send(change(5)).is_ok());
    assert!(woken(&mut poll, Duration::from_secs(10)), "no wake-up");
    assert!(sender.join().expect("sender thread"), "feed closed");
    let (got, drained) = drain_all(&mut receiver, 16);
    assert_eq!(got, vec![change(5)]);
    // The only handle went away with the thread.
    assert!(drained.disconnected);
}

#[test]
fn wake_ups_are_coalesced_until_the_next_drain() {
    let (mut poll, handle, mut receiver) = setup(16);
    handle.send(change(1)).expect("open");
    assert!(
        woken(&mut poll, Duration::from_secs(10)),
        "first send wakes"
    );
    // Not drained yet: the loop already knows, so further sends do not wake it again.
    handle.send(change(2)).expect("open");
    handle.try_send(change(3)).expect("open");
    assert!(
        !woken(&mut poll, Duration::from_millis(100)),
        "extra wake-up"
    );
    let (got, drained) = drain_all(&mut receiver, 16);
    assert_eq!(got, vec![change(1), change(2), change(3)]);
    assert!(!drained.more);
    // After a drain, the next send wakes the loop again.
    handle.try_send(change(4)).expect("open");
    assert!(
        woken(&mut poll, Duration::from_secs(10)),
        "wake-up after drain"
    );
    assert_eq!(drain_all(&mut receiver, 16).0, vec![change(4)]);
}

#[test]
fn drain_honours_the_budget_and_reports_more() {
    let (_poll, handle, mut receiver) = setup(16);
    for n in 0..10 {
        handle.try_send(change(n)).expect("room");
    }
    let (none, d0) = drain_all(&mut receiver, 0);
    assert!(none.is_empty());
    assert_eq!((d0.count, d0.more), (0, true));
    let mut all = Vec::new();
    let mut rounds = Vec::new();
    loop {
        let (got, d) = drain_all(&mut receiver, 4);
        assert_eq!(got.len(), d.count);
        assert!(!d.disconnected);
        all.extend(got);
        rounds.push((d.count, d.more));
        if !d.more {
            break;
        }
    }
    assert_eq!(rounds, vec![(4, true), (4, true), (2, false)]);
    assert_eq!(all, (0..10).map(change).collect::<Vec<_>>());
    // Exactly the budget left nothing behind: `more` is false.
    for n in 0..4 {
        handle.try_send(change(n)).expect("room");
    }
    let (_, d) = drain_all(&mut receiver, 4);
    assert_eq!((d.count, d.more), (4, false));
}

#[test]
fn dropping_every_handle_is_reported_after_the_last_change() {
    let (_poll, handle, mut receiver) = setup(16);
    let clone = handle.clone();
    handle.send(change(1)).expect("open");
    clone.send(change(2)).expect("open");
    drop(handle);
    let (got, d) = drain_all(&mut receiver, 16);
    assert_eq!(got.len(), 2);
    assert!(!d.disconnected, "a clone still holds the feed open");
    clone.send(change(3)).expect("open");
    drop(clone);
    // Waiting changes come first; disconnection is reported once they are all taken.
    let (got, d) = drain_all(&mut receiver, 1);
    assert_eq!(got, vec![change(3)]);
    assert_eq!(
        d,
        Drained {
            count: 1,
            more: false,
            disconnected: false
        }
    );
    let (got, d) = drain_all(&mut receiver, 16);
    assert!(got.is_empty());
    assert!(d.disconnected);
}

#[test]
fn a_dropped_receiver_closes_the_feed() {
    let (_poll, handle, receiver) = setup(4);
    assert!(!handle.is_closed());
    drop(receiver);
    assert!(handle.is_closed());
    assert_eq!(handle.send(change(1)), Err(FeedClosed(change(1))));
    match handle.try_send(change(2)) {
        Err(TrySendError::Closed(c)) => assert_eq!(c, change(2)),
        other => panic!("expected Closed, got {other:?}"),
    }
}

#[test]
fn blocking_sends_wait_for_the_loop_and_nothing_is_lost() {
    // One slot: every send after the first waits for a drain, and every wake-up must come.
    let (mut poll, handle, mut receiver) = setup(1);
    let sender = std::thread::spawn(move || {
        for n in 0..200 {
            handle.send(change(n)).expect("open");
        }
    });
    let mut got = Vec::new();
    while got.len() < 200 {
        let (batch, d) = drain_all(&mut receiver, 8);
        got.extend(batch);
        // The sender may finish (and drop its handle) within the drain that takes the last.
        assert!(
            !d.disconnected || got.len() == 200,
            "disconnected after {} changes",
            got.len()
        );
        if !d.more && got.len() < 200 {
            assert!(
                woken(&mut poll, Duration::from_secs(10)),
                "lost wake-up after {} changes",
                got.len()
            );
        }
    }
    sender.join().expect("sender thread");
    assert_eq!(got, (0..200).map(change).collect::<Vec<_>>());
    let (rest, d) = drain_all(&mut receiver, 8);
    assert!(rest.is_empty() && d.disconnected);
}

/// The file follower, driven poll by poll (no sleeping: each `poll` is one look at the path).
mod follow {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::ops::ControlFlow;
    use std::path::Path;

    use crate::feed::follow::{Event, Follower, WINDOW};

    /// What one poll reported, as text: `3:line` for line 3, or the event's name.
    fn poll(f: &mut Follower) -> Vec<String> {
        let mut got = Vec::new();
        let flow = f.poll(|e| {
            got.push(match e {
                Event::Line { number, line, .. } => match line {
                    Ok(l) => format!("{number}:{l}"),
                    Err(e) => format!("{number}!{e}"),
                },
                Event::CaughtUp { lines } => format!("caught up {lines}"),
                Event::Replaced { lines } => format!("replaced {lines}"),
                Event::Truncated { .. } => "truncated".into(),
                Event::Rewritten { .. } => "rewritten".into(),
                Event::Waiting(_) => "waiting".into(),
                Event::ReadError(e) => format!("read error {e}"),
            });
            ControlFlow::Continue(())
        });
        assert!(flow.is_continue());
        got
    }

    fn append(path: &Path, text: &str) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(text.as_bytes()).expect("append");
    }

    #[test]
    fn appends_and_a_part_line_and_waiting_for_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = Follower::new(&path);
        assert_eq!(f.id(), None);
        assert_eq!(poll(&mut f), ["waiting"]);
        assert!(poll(&mut f).is_empty(), "waiting is reported once");
        append(&path, "a\nb");
        assert_eq!(poll(&mut f), ["1:a", "caught up 1"]);
        assert!(poll(&mut f).is_empty());
        append(&path, "c\r\nd\n");
        assert_eq!(poll(&mut f), ["2:bc", "3:d"]);
        assert!(f.id().is_some());
    }

    #[test]
    fn unread_counts_octets_not_yet_taken_as_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut f = Follower::new(&path);
        assert_eq!(f.unread(), 0, "no file open");
        append(&path, "a\nbb\n");
        poll(&mut f);
        assert_eq!(f.unread(), 0);
        // Written since the last look: all of it is unread.
        append(&path, "ccc\n");
        assert_eq!(f.unread(), 4);
        poll(&mut f);
        assert_eq!(f.unread(), 0);
        // A line without its newline is read but not taken: it counts until it ends.
        append(&path, "dd");
        poll(&mut f);
        assert_eq!(f.unread(), 2);
        append(&path, "d\n");
        assert_eq!(f.unread(), 4);
        assert_eq!(poll(&mut f), ["4:ddd"]);
        assert_eq!(f.unread(), 0);
    }

    #[test]
    fn a_replaced_file_is_finished_then_the_new_one_read_from_its_beginning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        append(&path, "a\n");
        let mut f = Follower::new(&path);
        assert_eq!(poll(&mut f), ["1:a", "caught up 1"]);
        // Renamed away: not a replacement while nothing is at the path; the old file is read.
        let old = dir.path().join("f.1");
        fs::rename(&path, &old).expect("rename");
        append(&old, "b\n");
        assert_eq!(poll(&mut f), ["2:b"]);
        // A new file at the path: the old one is finished, its last line without a newline
        // included, then the new one is read from line 1.
        append(&old, "c");
        append(&path, "x\ny\n");
        assert_eq!(
            poll(&mut f),
            ["3:c", "replaced 3", "1:x", "2:y", "caught up 2"]
        );
        append(&old, "lost\n");
        append(&path, "z\n");
        assert_eq!(poll(&mut f), ["3:z"]);
    }

    #[test]
    fn a_truncated_file_is_read_again_from_its_beginning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        append(&path, "one\ntwo\nthr");
        let mut f = Follower::new(&path);
        assert_eq!(poll(&mut f), ["1:one", "2:two", "caught up 2"]);
        fs::write(&path, "new\n").expect("rewrite");
        assert_eq!(poll(&mut f), ["truncated", "1:new"]);
    }

    #[test]
    fn a_file_truncated_and_grown_past_the_old_size_between_polls_is_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        append(&path, "one\ntwo\n");
        let mut f = Follower::new(&path);
        assert_eq!(poll(&mut f), ["1:one", "2:two", "caught up 2"]);
        // Truncated and written again, longer, before the next poll: the size alone says
        // "appended"; the first octets say otherwise.
        fs::write(&path, "uno\ndos\ntres\n").expect("rewrite");
        assert_eq!(poll(&mut f), ["rewritten", "1:uno", "2:dos", "3:tres"]);

        // The same first window (a header, say) but other octets before the old end: the last
        // window read tells.
        let header = format!("{}\n", "h".repeat(WINDOW));
        let body: String = (0..1000).map(|i| format!("row {i}\n")).collect();
        fs::write(&path, format!("{header}{body}")).expect("write");
        let mut f = Follower::new(&path);
        assert_eq!(poll(&mut f).len(), 1002);
        let changed = body.replace("row 999", "row 99x");
        fs::write(&path, format!("{header}{changed}more\n")).expect("rewrite");
        let got = poll(&mut f);
        assert_eq!(got.first().map(String::as_str), Some("rewritten"));
        assert_eq!(got.len(), 1 + 1002);
        assert_eq!(got.last().map(String::as_str), Some("1002:more"));

        // A plain append after all that is not a rewrite.
        append(&path, "tail\n");
        assert_eq!(poll(&mut f), ["1003:tail"]);
    }

    #[test]
    fn a_breaking_callback_stops_the_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        append(&path, "a\nb\nc\n");
        let mut f = Follower::new(&path);
        let mut lines = 0;
        let flow = f.poll(|e| {
            if matches!(e, Event::Line { .. }) {
                lines += 1;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        assert!(flow.is_break());
        assert_eq!(lines, 1);
    }
}
