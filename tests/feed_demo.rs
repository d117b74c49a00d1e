//! The demo source: determinism, the realism it claims (states, kinds, links, relays, DUIDs,
//! renewals, addressing), consistency with the store, pacing, and its thread.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lqd::codec::{DhcpOption, Header, MessageRepr, MessageType, ServerTime};
use lqd::feed::{ChurnMix, DemoConfig, DemoSource, Pacer, feed, spawn_demo};
use lqd::store::{Change, LeaseKind, LeaseState, Store, prefix_contains};
use mio::{Events, Poll, Token, Waker};

const START: ServerTime = ServerTime(800_000_000);

/// `n` changes from `config`, the clock advancing at `per_sec` changes a second.
fn generate(config: DemoConfig, n: u32, per_sec: u32) -> Vec<(ServerTime, Change)> {
    let mut source = DemoSource::new(config);
    (0..n)
        .map(|k| {
            let now = ServerTime(START.0 + k / per_sec);
            (now, source.next_change(now))
        })
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_changes_and_another_seed_does_not() {
    let config = |seed| DemoConfig {
        clients: 500,
        seed,
        ..DemoConfig::default()
    };
    let a = generate(config(7), 5_000, 1);
    let b = generate(config(7), 5_000, 1);
    let c = generate(config(8), 5_000, 1);
    assert_eq!(a, b);
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert_eq!(same, 0, "seeds 7 and 8 gave {same} identical changes");
}

#[test]
fn the_initial_population_comes_first() {
    let config = DemoConfig {
        clients: 1_000,
        pd_share: 0.4,
        ..DemoConfig::default()
    };
    let mut source = DemoSource::new(config);
    let mut initial = Vec::new();
    while !source.initial_done() {
        initial.push(source.next_change(START));
        assert!(initial.len() <= 2_000, "initial population never ends");
    }
    assert!(initial.iter().all(|c| c.lease.state == LeaseState::Active));
    let na: HashSet<_> = initial
        .iter()
        .filter(|c| c.lease.kind == LeaseKind::Address)
        .map(|c| c.client_id.clone())
        .collect();
    let pd = initial.len()
        - initial
            .iter()
            .filter(|c| c.lease.kind == LeaseKind::Address)
            .count();
    assert_eq!(na.len(), 1_000, "one address per client, every client once");
    assert!(
        (300..=500).contains(&pd),
        "{pd} prefixes for a 0.4 share of 1000"
    );
}

/// Who holds an active lease: client, link, IAID, cltt.
type Holder = (Box<[u8]>, Ipv6Addr, u32, ServerTime);

/// The lease-store view the changes imply, checked as they come.
#[derive(Default)]
struct Model {
    /// Active leases by slot (kind, address, prefix length).
    active: HashMap<(LeaseKind, Ipv6Addr, u8), Holder>,
    renewals: HashMap<LeaseKind, usize>,
}

impl Model {
    fn apply(&mut self, now: ServerTime, c: &Change, valid: u32) {
        let slot = c.lease.slot();
        let held = self.active.get(&slot);
        if let Some((client, link, _, _)) = held {
            assert!(
                client == &c.client_id && *link == c.link,
                "{slot:?} changed for another client while active: {c:?}"
            );
        }
        match c.lease.state {
            LeaseState::Active => {
                if let Some(&(_, _, iaid, cltt)) = held {
                    // A renewal: same slot and IAID, later transaction time.
                    assert_eq!(iaid, c.lease.iaid, "renewal changed the IAID: {c:?}");
                    assert!(c.lease.cltt > cltt, "renewal did not move cltt: {c:?}");
                    *self.renewals.entry(c.lease.kind).or_default() += 1;
                }
                let v = (c.client_id.clone(), c.link, c.lease.iaid, c.lease.cltt);
                self.active.insert(slot, v);
            }
            state => {
                assert!(held.is_some(), "{state:?} for a lease never granted: {c:?}");
                if state == LeaseState::Expired {
                    assert!(c.relay.is_none(), "no message causes an expiry");
                    assert!(c.lease.cltt.0 + valid <= now.0, "expired early: {c:?}");
                } else {
                    // A client message sets cltt; its second lease is reported a call later.
                    assert!(
                        now.0 - c.lease.cltt.0 <= 1,
                        "cltt of a client message: {c:?}"
                    );
                }
                self.active.remove(&slot);
            }
        }
    }

    /// Bindings: distinct (client, link) holding at least one lease.
    fn bindings(&self) -> usize {
        let keys: HashSet<_> = self.active.values().map(|(c, l, _, _)| (c, l)).collect();
        keys.len()
    }
}

/// Checks a relay message against the relay info it came with; returns its hop count.
fn check_relay_message(c: &Change) -> u8 {
    let relay = c.relay.as_ref().expect("relayed");
    let (from, bytes) = relay.relay_message.as_ref().expect("a relay message");
    let msg = MessageRepr::parse(bytes).expect("the relay message parses");
    let Header::Relay {
        msg_type,
        hop_count,
        link_address,
        peer_address,
    } = msg.header
    else {
        panic!("not a relay header: {:?}", msg.header)
    };
    assert_eq!(msg_type, MessageType::RelayForw);
    let inner = if hop_count == 0 {
        assert!(
            from.segments()[..3] == [0x2001, 0xdb8, 1],
            "{from} is no access relay"
        );
        msg
    } else {
        assert_eq!(hop_count, 1);
        assert_eq!(link_address, Ipv6Addr::UNSPECIFIED);
        assert!(
            from.segments()[..3] == [0x2001, 0xdb8, 2],
            "{from} is no aggregation relay"
        );
        assert!(peer_address.segments()[..3] == [0x2001, 0xdb8, 1]);
        let opts: Vec<_> = msg.options.iter().collect();
        assert_eq!(opts.len(), 2, "{opts:?}");
        assert_eq!(
            opts[0],
            DhcpOption::RelayId(lqd::codec::Duid(&relay.relay_ids[1]))
        );
        let DhcpOption::RelayMsg(embedded) = opts[1] else {
            panic!("no RELAY_MSG: {opts:?}")
        };
        embedded.message().expect("inner message")
    };
    let Header::Relay {
        msg_type,
        hop_count: 0,
        link_address,
        peer_address,
    } = inner.header
    else {
        panic!("inner is not a hop-0 relay message: {:?}", inner.header)
    };
    assert_eq!(msg_type, MessageType::RelayForw);
    assert_eq!(
        link_address, c.link,
        "the first relay's link-address is the link"
    );
    assert!(peer_address.segments()[0] == 0xfe80, "peer {peer_address}");
    let opts: Vec<_> = inner.options.iter().collect();
    let remote = &relay.remote_ids[0];
    assert!(matches!(opts[0], DhcpOption::InterfaceId(i) if i.starts_with(b"ge-0/0/")));
    assert!(matches!(opts[1], DhcpOption::RemoteId(r)
        if r.enterprise_number == remote.enterprise_number && r.remote_id == &remote.remote_id[..]));
    assert_eq!(
        opts[2],
        DhcpOption::RelayId(lqd::codec::Duid(&relay.relay_ids[0]))
    );
    assert_eq!(opts.len(), 3, "no innermost RELAY_MSG: {opts:?}");
    hop_count
}

#[test]
fn fifty_thousand_changes_show_everything_the_demo_claims() {
    let config = DemoConfig::default();
    let valid = config.valid_lifetime;
    // Four changes a second: 10,000 clients renew about every 80 minutes, so the leases that
    // expire are those of clients that left, and 50,000 changes span three and a half hours.
    let changes = generate(config.clone(), 50_000, 4);
    let mut model = Model::default();
    let mut store = Store::new();
    let mut states = HashMap::new();
    let mut kinds = HashSet::new();
    let mut links = HashSet::new();
    let mut duid_types = HashSet::new();
    let mut enterprises = HashSet::new();
    let mut hops = HashMap::new();
    let (mut caused, mut relayed) = (0usize, 0usize);
    for (now, c) in &changes {
        model.apply(*now, c, valid);
        let outcome = store.apply(c, *now);
        assert!(
            outcome.displaced.is_none(),
            "the demo gave a held lease away: {c:?}"
        );

        *states
            .entry(format!("{:?}", c.lease.state))
            .or_insert(0usize) += 1;
        kinds.insert(c.lease.kind);
        links.insert(c.link);
        duid_types.insert(u16::from_be_bytes([c.client_id[0], c.client_id[1]]));
        assert_eq!(c.lease.preferred_lifetime, 3600);
        assert_eq!(c.lease.valid_lifetime, 7200);
        // The link is `2001:db8:0:k::1`.
        let [a, b, z, k, ..] = c.link.segments();
        assert!(
            a == 0x2001 && b == 0xdb8 && z == 0 && (1..=16).contains(&k),
            "{}",
            c.link
        );
        match c.lease.kind {
            LeaseKind::Address => {
                assert_eq!(c.lease.prefix_len, 128);
                assert!(prefix_contains(c.link, 64, c.lease.address), "{c:?}");
                assert_ne!(c.lease.address, c.link);
            }
            LeaseKind::Prefix => {
                assert_eq!(c.lease.prefix_len, 56);
                assert!(prefix_contains(
                    "3fff::".parse().unwrap(),
                    20,
                    c.lease.address
                ));
                assert_eq!(
                    u128::from(c.lease.address) & ((1 << 72) - 1),
                    0,
                    "host bits"
                );
            }
        }
        if c.lease.state != LeaseState::Expired {
            caused += 1;
            if let Some(relay) = &c.relay {
                relayed += 1;
                *hops.entry(check_relay_message(c)).or_insert(0usize) += 1;
                enterprises.insert(relay.remote_ids[0].enterprise_number);
                assert_eq!(relay.remote_ids.len(), 1);
            }
        }
    }
    for state in ["Active", "Released", "Declined", "Expired"] {
        assert!(
            states.get(state).is_some_and(|&n| n > 0),
            "no {state}: {states:?}"
        );
    }
    assert!(!states.contains_key("Deleted"));
    assert_eq!(kinds.len(), 2, "addresses and prefixes");
    assert_eq!(links.len(), 16, "every link");
    assert_eq!(duid_types, HashSet::from([1, 2, 3]));
    assert_eq!(enterprises, HashSet::from([9, 2636, 6527]));
    // 12 of 16 links are relayed; clients are spread uniformly.
    let share = relayed as f64 / caused as f64;
    assert!((0.70..=0.80).contains(&share), "relayed share {share}");
    assert!(hops.get(&0).is_some_and(|&n| n > 1000) && hops.get(&1).is_some_and(|&n| n > 1000));
    assert!(
        model
            .renewals
            .get(&LeaseKind::Address)
            .is_some_and(|&n| n > 1000)
    );
    assert!(
        model
            .renewals
            .get(&LeaseKind::Prefix)
            .is_some_and(|&n| n > 100)
    );
    // The store holds exactly the bindings the changes leave active.
    assert_eq!(store.len(), model.bindings());
}

#[test]
fn a_population_too_large_for_the_rate_expires_instead_of_renewing() {
    // 2000 clients, one change a minute: renewals cannot keep up with a 2-hour lifetime.
    let config = DemoConfig {
        clients: 2_000,
        mix: ChurnMix {
            renew: 1,
            ..ChurnMix::default()
        },
        ..DemoConfig::default()
    };
    let mut source = DemoSource::new(config);
    let mut expired = 0;
    for k in 0..10_000 {
        let now = ServerTime(START.0 + 60 * k);
        let c = source.next_change(now);
        if c.lease.state == LeaseState::Expired {
            assert!(c.lease.cltt.0 + 7200 <= now.0);
            expired += 1;
        }
    }
    assert!(expired > 1000, "{expired} expiries");
}

#[test]
fn the_pacer_keeps_the_rate_and_bounds_catch_up() {
    let t0 = Instant::now();
    let mut p = Pacer::new(1000, t0);
    assert_eq!(p.delay(t0), None, "the first send is due at once");
    p.sent();
    assert_eq!(p.delay(t0), Some(Duration::from_millis(1)));
    // 10 ms later, ten sends are due at once.
    let t = t0 + Duration::from_millis(10);
    let mut burst = 0;
    while p.delay(t).is_none() {
        p.sent();
        burst += 1;
    }
    assert_eq!(burst, 10);
    // After a 5 s stall, only one second's worth is caught up.
    let t = t0 + Duration::from_secs(5);
    let mut burst = 0;
    while p.delay(t).is_none() {
        p.sent();
        burst += 1;
        assert!(burst <= 2000, "unbounded catch-up");
    }
    assert!((1000..=1001).contains(&burst), "caught up {burst}");
    assert!(p.delay(t + Duration::from_millis(2)).is_none());
}

fn wait_for_changes(poll: &mut Poll, rx: &mut lqd::feed::FeedReceiver, n: usize) -> Vec<Change> {
    let mut events = Events::with_capacity(8);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < n {
        let d = rx.drain(64, |c| got.push(c));
        if !d.more && got.len() < n {
            assert!(!d.disconnected, "feed closed after {} changes", got.len());
            assert!(
                Instant::now() < deadline,
                "only {} changes in 30 s",
                got.len()
            );
            poll.poll(&mut events, Some(Duration::from_secs(1)))
                .unwrap();
        }
    }
    got
}

#[test]
fn the_demo_thread_sends_what_the_generator_makes_at_the_configured_rate() {
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let (handle, mut rx) = feed(32, waker);
    let mut config = DemoConfig {
        clients: 300,
        changes_per_sec: 2_000,
        ..DemoConfig::default()
    };
    // The initial population goes at once; the 400 changes of churn after it are paced.
    let mut probe = DemoSource::new(config.clone());
    let mut initial = 0;
    while !probe.initial_done() {
        probe.next_change(START);
        initial += 1;
    }
    let total = initial + 400;
    config.limit = Some(total as u64);
    let started = Instant::now();
    let thread = spawn_demo(config.clone(), handle, || START).unwrap();
    let got = wait_for_changes(&mut poll, &mut rx, total);
    let elapsed = started.elapsed();
    assert_eq!(thread.join().unwrap(), total as u64);
    // The 400th paced change is due 399/2000 s after the first: pacing never runs ahead.
    assert!(
        elapsed >= Duration::from_millis(195),
        "{total} changes in {elapsed:?}"
    );
    let mut source = DemoSource::new(config);
    let expected: Vec<_> = (0..total).map(|_| source.next_change(START)).collect();
    assert_eq!(got, expected);
    assert!(
        rx.drain(64, |c| panic!("beyond the limit: {c:?}"))
            .disconnected
    );
}

#[test]
fn the_demo_thread_stops_when_the_feed_closes() {
    let mut poll = Poll::new().unwrap();
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let (handle, mut rx) = feed(8, waker);
    let config = DemoConfig {
        changes_per_sec: 0,
        ..DemoConfig::default()
    };
    let thread = spawn_demo(config, handle, lqd::feed::system_time).unwrap();
    wait_for_changes(&mut poll, &mut rx, 100);
    drop(rx);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || done_tx.send(thread.join().unwrap()));
    let sent = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the demo thread did not stop after the feed closed");
    assert!(sent >= 100);
}
