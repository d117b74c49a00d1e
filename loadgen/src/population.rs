//! The demo population lqd holds, regenerated here from the same seed.
//!
//! lqd's demo source is a deterministic generator (`lqd::feed::DemoSource`): the same settings
//! give the same clients, the same initial leases and the same churn, in the same order; only
//! the lease times depend on the clock. loadgen runs its own copy, so it knows every binding lqd
//! holds once the initial population is loaded (one per client, all on link 1), and it replays
//! the churn to know which clients the churn may have changed since. That makes the loss check
//! exact: a client the churn has not touched must be in every by-link answer, exactly once.
//!
//! The churn is paced (`changes_per_sec`) from the moment the initial population is sent, so
//! the number of churn changes lqd can have applied by a time `t` is bounded by the pace; see
//! [`ChurnClock`]. Replaying up to that bound over-approximates what was touched, never under.

use std::collections::{HashMap, HashSet};
use std::net::Ipv6Addr;
use std::time::Instant;

use lqd::config::DemoSettings;
use lqd::feed::{DemoSource, system_time};
use lqd::store::{Change, LeaseKind};

/// One lease slot as the store tells them apart: kind, address or prefix, prefix length.
type Slot = (LeaseKind, Ipv6Addr, u8);

/// Bounds the number of churn changes the demo has sent by a given time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChurnClock {
    /// No later than the moment the churn's pacer started.
    origin: Instant,
    rate: u32,
}

impl ChurnClock {
    /// A clock for churn at `rate` changes a second that started after `origin`.
    pub(crate) const fn new(origin: Instant, rate: u32) -> Self {
        Self { origin, rate }
    }

    /// At least as many churn changes as were sent by `t`. The demo's pacer sends change `n`
    /// at `start + n / rate` (catching up never gets ahead of that schedule), and starts at or
    /// after `origin`; a margin of three covers rounding.
    pub(crate) fn sent_by(&self, t: Instant) -> u64 {
        let secs = t.saturating_duration_since(self.origin).as_secs_f64();
        (secs * f64::from(self.rate)).floor() as u64 + 3
    }
}

/// The demo population and a replay of its churn.
pub(crate) struct Population {
    source: DemoSource,
    /// Client DUID → client number, in the order the initial population reports them.
    index: HashMap<Box<[u8]>, u32>,
    /// Each client's leases after the replayed churn.
    leases: Vec<Vec<Slot>>,
    lease_count: u64,
    /// Clients whose set of leases the replayed churn changed at least once.
    touched: Vec<bool>,
    touched_count: usize,
    /// Churn changes replayed.
    replayed: u64,
    last: (Box<[u8]>, Ipv6Addr),
    link: Ipv6Addr,
}

impl Population {
    /// Generates the initial population for `settings` (which must have one link), checking
    /// that it gives exactly one binding per client: no DUID or address appears twice.
    pub(crate) fn generate(settings: &DemoSettings) -> Result<Self, String> {
        if settings.links != 1 {
            return Err("the population model covers one link".to_owned());
        }
        let link = DemoSource::link_address(1);
        let mut source = DemoSource::new(settings.demo_config());
        let clients = source.config().clients;
        let mut index: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(clients);
        let mut leases: Vec<Vec<Slot>> = Vec::with_capacity(clients);
        let mut addresses: HashSet<Slot> = HashSet::with_capacity(clients + clients / 2);
        let mut last = None;
        let mut lease_count = 0u64;
        let now = system_time();
        while !source.initial_done() {
            let change = source.next_change(now);
            if change.link != link || !change.lease.state.is_active() {
                return Err(format!("unexpected initial change {change:?}"));
            }
            let next = index.len() as u32;
            let i = *index.entry(change.client_id.clone()).or_insert(next);
            if i == next {
                leases.push(Vec::with_capacity(2));
            } else if i + 1 != next {
                return Err(format!(
                    "the demo population reuses a DUID ({:02x?}): lqd would hold fewer bindings",
                    change.client_id
                ));
            }
            let slot = change.lease.slot();
            if !addresses.insert(slot) {
                return Err(format!(
                    "the demo population gives {} twice: lqd would hold fewer bindings",
                    slot.1
                ));
            }
            if let Some(l) = leases.get_mut(i as usize) {
                l.push(slot);
            }
            lease_count += 1;
            last = Some((change.client_id, slot.1));
        }
        let last = last.ok_or("empty demo population")?;
        Ok(Self {
            source,
            touched: vec![false; index.len()],
            index,
            leases,
            lease_count,
            touched_count: 0,
            replayed: 0,
            last,
            link,
        })
    }

    /// Clients in the population: the bindings lqd holds once it has loaded it.
    pub(crate) fn clients(&self) -> usize {
        self.leases.len()
    }

    /// Leases in the initial population (an address each, plus the delegated prefixes).
    pub(crate) fn leases(&self) -> u64 {
        self.lease_count
    }

    /// The link every client is on.
    pub(crate) const fn link(&self) -> Ipv6Addr {
        self.link
    }

    /// The client and address of the initial population's last change.
    pub(crate) fn last_initial(&self) -> (&[u8], Ipv6Addr) {
        (&self.last.0, self.last.1)
    }

    /// The number of the client with this DUID.
    pub(crate) fn client(&self, duid: &[u8]) -> Option<u32> {
        self.index.get(duid).copied()
    }

    /// Replays the churn up to what the demo can have sent by `t`.
    pub(crate) fn replay_until(&mut self, clock: &ChurnClock, t: Instant) {
        let target = clock.sent_by(t);
        while self.replayed < target {
            let change = self.source.next_change(system_time());
            self.apply(&change);
            self.replayed += 1;
        }
    }

    /// What lqd's store does with a change, as far as which client holds which lease.
    fn apply(&mut self, change: &Change) {
        let Some(i) = self.client(&change.client_id) else {
            return;
        };
        let slot = change.lease.slot();
        let Some(leases) = self.leases.get_mut(i as usize) else {
            return;
        };
        let had = leases.contains(&slot);
        let changed = if change.lease.state.is_active() {
            if !had {
                leases.push(slot);
            }
            !had
        } else {
            leases.retain(|s| *s != slot);
            had
        };
        if changed {
            if let Some(t) = self.touched.get_mut(i as usize) {
                if !*t {
                    *t = true;
                    self.touched_count += 1;
                }
            }
        }
    }

    /// True when the replayed churn changed client `i`'s leases.
    pub(crate) fn touched(&self, i: u32) -> bool {
        self.touched.get(i as usize).copied().unwrap_or(true)
    }

    /// Clients the replayed churn changed.
    pub(crate) const fn touched_count(&self) -> usize {
        self.touched_count
    }

    /// Churn changes replayed so far.
    pub(crate) const fn replayed(&self) -> u64 {
        self.replayed
    }

    /// Bindings (clients holding at least one lease) after the replayed churn.
    pub(crate) fn held(&self) -> usize {
        self.leases.iter().filter(|l| !l.is_empty()).count()
    }
}
