//! The `demo` source: realistic lease churn from a simulated population of DHCPv6 clients.
//!
//! A fixed population of clients lives on several links. Each client has a DUID (DUID-LLT,
//! DUID-EN or DUID-LL), an IA_NA and, for a share of them, an IA_PD. The generator first
//! reports every client's initial leases (the state a lease store would already hold), then
//! produces churn one lease change at a time:
//!
//! | event | what the DHCPv6 server saw | changes |
//! |---|---|---|
//! | renew | RENEW (or REBIND): the client least recently heard from renews all its leases | `Active`, same addresses and IAIDs, new cltt |
//! | solicit | SOLICIT / REQUEST from a client without leases | `Active`, new (or its previous) address, a prefix from the pool |
//! | release | RELEASE of all its leases | `Released` |
//! | leave | nothing: the client disappears without releasing | `Expired` once the valid lifetime has run out since its last transaction |
//! | decline | DECLINE of its address (duplicate address detection failed), then a new REQUEST | `Declined`, then `Active` for a new address and the renewed prefix |
//!
//! A client that left may come back before its leases expire (it then renews them). Leases that
//! nobody renewed in time (a population too large for the configured rate) expire as well.
//!
//! # Addressing
//!
//! Link `k` (1 ≤ k ≤ `links`) is `2001:db8:0:k::/64`; its link address (the first relay's
//! link-address, or the configured address of a directly connected link, decision D16) is
//! `2001:db8:0:k::1`, and NA addresses are random inside that /64. Delegated prefixes are
//! `/pd_prefix_len` prefixes handed out in order from `3fff::/20` (RFC 9637), reused after
//! they are released or expire.
//!
//! # Relays
//!
//! The first `round(links × relay_share)` links sit behind an access relay (a DUID-EN per
//! relay, vendor enterprise numbers 9, 2636 and 6527). It adds OPTION_INTERFACE_ID, a
//! per-client OPTION_REMOTE_ID (its enterprise number and a circuit id such as
//! `juniper-3/1/17`: link, then the client's slot and port) and OPTION_RELAY_ID. A share of the relayed links (`two_hop_share`) is behind an aggregation relay
//! too, which adds its own OPTION_RELAY_ID. Every change a client's message caused carries a
//! [`RelayInfo`] with those ids and the relayed message as the server kept it: the RELAY-FORW
//! chain without the innermost OPTION_RELAY_MSG, and the address of the relay it came from.
//! Expiries carry no relay info: no message caused them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::Ipv6Addr;
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::FeedHandle;
use super::pace::Pacer;
use crate::codec::ServerTime;
use crate::store::{Change, Lease, LeaseKind, LeaseState, LinkDef, RelayInfo};
use ipnet::Ipv6Net;

mod net;

use net::{Client, Link, Status, build_links, new_client};

/// The most clients the demo simulates: link-layer addresses are unique up to this many.
pub const MAX_CLIENTS: usize = 1 << 24;

/// The relative weights of the churn events (see the module table). A weight of zero turns an
/// event off; all zero means renewals only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChurnMix {
    /// Renewals of the client least recently heard from.
    pub renew: u32,
    /// New leases for a client that has none.
    pub solicit: u32,
    /// Releases of all of a client's leases.
    pub release: u32,
    /// Clients that disappear; their leases expire later.
    pub leave: u32,
    /// Declined addresses (rare in real networks).
    pub decline: u32,
}

impl Default for ChurnMix {
    fn default() -> Self {
        Self {
            renew: 70,
            solicit: 12,
            release: 8,
            leave: 8,
            decline: 1,
        }
    }
}

/// How the demo population looks and how fast it churns.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Clients in the population (at most [`MAX_CLIENTS`], at least one).
    pub clients: usize,
    /// Links the clients are spread over, uniformly (at least one).
    pub links: u16,
    /// Changes sent per second by [`spawn_demo`]; 0 sends as fast as the feed takes them.
    pub changes_per_sec: u32,
    /// Seed of the generator: the same seed gives the same changes.
    pub seed: u64,
    /// Share of clients that also hold a delegated prefix (IA_PD), 0.0 to 1.0.
    pub pd_share: f64,
    /// Share of links behind a relay, 0.0 to 1.0, rounded to whole links (at least one relayed
    /// and one direct link when the share is strictly between 0 and 1 and there are two links).
    pub relay_share: f64,
    /// Share of relayed links whose access relay is itself behind an aggregation relay.
    pub two_hop_share: f64,
    /// Preferred lifetime of every lease, seconds.
    pub preferred_lifetime: u32,
    /// Valid lifetime of every lease, seconds (`u32::MAX` is infinite: no lease expires).
    pub valid_lifetime: u32,
    /// Length of the delegated prefixes, 48 to 64.
    pub pd_prefix_len: u8,
    /// The mix of churn events.
    pub mix: ChurnMix,
    /// Stop [`spawn_demo`] after this many changes; `None` runs until the feed closes.
    pub limit: Option<u64>,
    /// Stop [`spawn_demo`] after this many changes following the initial population; `None`
    /// churns on.
    pub churn_limit: Option<u64>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            clients: 10_000,
            links: 16,
            changes_per_sec: 1_000,
            seed: 1,
            pd_share: 0.3,
            relay_share: 0.75,
            two_hop_share: 0.25,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            pd_prefix_len: 56,
            mix: ChurnMix::default(),
            limit: None,
            churn_limit: None,
        }
    }
}

/// What happens next in the churn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Renew,
    Solicit,
    Release,
    Leave,
    Decline,
}

/// The demo churn generator: a plain state machine, one [`Change`] per call, no threads.
///
/// [`spawn_demo`] runs one on a thread and paces it; tests call
/// [`next_change`](Self::next_change) directly with a clock of their own.
#[derive(Debug)]
pub struct DemoSource {
    config: DemoConfig,
    rng: SmallRng,
    links: Vec<Link>,
    clients: Vec<Client>,
    /// Clients whose initial leases were reported.
    initialised: usize,
    idle: Vec<u32>,
    bound: Vec<u32>,
    /// Bound clients in order of their last transaction: `(client, epoch)`, stale entries
    /// skipped. The front is the next to renew, and the first to expire if none renews.
    rotation: VecDeque<(u32, u32)>,
    /// Clients that left: `(expiry, client)`, earliest first.
    gone: BinaryHeap<Reverse<(u32, u32)>>,
    /// Pool numbers of released delegated prefixes, reused first.
    pd_free: Vec<u64>,
    pd_next: u64,
    /// Changes of the current event not yet returned.
    pending: VecDeque<Change>,
    /// The latest time seen; leases never go back in time.
    now: ServerTime,
}

/// A share in `0.0..=1.0` (NaN counts as zero).
fn share(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

impl DemoSource {
    /// Builds the population for `config`. Out-of-range settings are clamped to the documented
    /// ranges.
    #[must_use]
    pub fn new(config: DemoConfig) -> Self {
        let mut config = config;
        config.clients = config.clients.clamp(1, MAX_CLIENTS);
        config.links = config.links.max(1);
        config.pd_share = share(config.pd_share);
        config.relay_share = share(config.relay_share);
        config.two_hop_share = share(config.two_hop_share);
        config.pd_prefix_len = config.pd_prefix_len.clamp(48, 64);
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let links = build_links(&config, &mut rng);
        let nic_mask = rng.r#gen::<u32>() & 0x00ff_ffff;
        let clients = (0..config.clients)
            .map(|i| new_client(&config, &mut rng, i, nic_mask))
            .collect();
        Self {
            config,
            rng,
            links,
            clients,
            initialised: 0,
            idle: Vec::new(),
            bound: Vec::new(),
            rotation: VecDeque::new(),
            gone: BinaryHeap::new(),
            pd_free: Vec::new(),
            pd_next: 0,
            pending: VecDeque::new(),
            now: ServerTime(0),
        }
    }

    /// The configuration in use, after clamping.
    #[must_use]
    pub const fn config(&self) -> &DemoConfig {
        &self.config
    }

    /// True once every client's initial leases have been returned.
    #[must_use]
    pub fn initial_done(&self) -> bool {
        self.initialised == self.clients.len() && self.pending.is_empty()
    }

    /// The links the demo population lives on, as lqd's configuration would describe them
    /// (D16): link `k`'s address and /64, and the delegated-prefix pool `3fff::/20`.
    #[must_use]
    pub fn link_defs(config: &DemoConfig) -> Vec<LinkDef> {
        let pool = Ipv6Net::new(Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20).ok();
        (1..=config.links)
            .map(|k| LinkDef {
                address: Self::link_address(k),
                prefixes: Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 0), 64)
                    .into_iter()
                    .collect(),
                pd_pools: pool.into_iter().collect(),
            })
            .collect()
    }

    /// The link address of link `k` (1-based), as the changes report it.
    #[must_use]
    pub fn link_address(k: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
    }

    /// The next lease change at server time `now` (a time earlier than one already seen counts
    /// as that one).
    pub fn next_change(&mut self, now: ServerTime) -> Change {
        self.now = self.now.max(now);
        loop {
            if let Some(change) = self.pending.pop_front() {
                return change;
            }
            // Each step queues at least one change, or moves a bound client to gone; there are
            // finitely many bound clients, so this ends.
            self.step();
        }
    }

    fn step(&mut self) {
        if let Some(i) = self.due_expiry() {
            self.expire(i);
        } else if self.initialised < self.clients.len() {
            let i = self.initialised;
            self.initialised = i.saturating_add(1);
            self.solicit(i, true);
        } else {
            self.churn();
        }
    }

    fn churn(&mut self) {
        let done = match self.pick_event() {
            Event::Renew => self.renew_next(),
            Event::Solicit => self.pick(false).map(|i| self.solicit(i, false)).is_some(),
            Event::Release => self.pick(true).map(|i| self.release(i)).is_some(),
            Event::Leave => self.pick(true).map(|i| self.leave(i)).is_some(),
            Event::Decline => self.pick(true).map(|i| self.decline(i)).is_some(),
        };
        if done {
            return;
        }
        // The event had no client to act on: a new lease, a renewal, or a client coming back.
        if let Some(i) = self.pick(false) {
            self.solicit(i, false);
        } else if !self.renew_next() {
            if let Some(Reverse((_, i))) = self.gone.pop() {
                self.renew(i as usize);
            }
        }
    }

    fn pick_event(&mut self) -> Event {
        let m = self.config.mix;
        let weights = [
            (Event::Renew, m.renew),
            (Event::Solicit, m.solicit),
            (Event::Release, m.release),
            (Event::Leave, m.leave),
            (Event::Decline, m.decline),
        ];
        let total: u64 = weights.iter().map(|&(_, w)| u64::from(w)).sum();
        if total == 0 {
            return Event::Renew;
        }
        let mut r = self.rng.gen_range(0..total);
        for (event, w) in weights {
            match r.checked_sub(u64::from(w)) {
                Some(rest) => r = rest,
                None => return event,
            }
        }
        Event::Renew
    }

    /// A random bound (or idle) client.
    fn pick(&mut self, bound: bool) -> Option<usize> {
        let list = if bound { &self.bound } else { &self.idle };
        if list.is_empty() {
            return None;
        }
        let at = self.rng.gen_range(0..list.len());
        list.get(at).map(|&i| i as usize)
    }

    /// The expiry time of client `i`'s leases.
    fn expiry(&self, i: usize) -> u32 {
        let cltt = self.clients.get(i).map_or(0, |c| c.cltt.0);
        match self.config.valid_lifetime {
            u32::MAX => u32::MAX,
            valid => cltt.saturating_add(valid),
        }
    }

    fn live(&self, (i, epoch): (u32, u32)) -> bool {
        self.clients
            .get(i as usize)
            .is_some_and(|c| c.status == Status::Bound && c.epoch == epoch)
    }

    /// A client whose leases' valid lifetime has run out: one that left, or one nobody renewed
    /// in time.
    fn due_expiry(&mut self) -> Option<usize> {
        let now = self.now.0;
        if let Some(&Reverse((at, i))) = self.gone.peek() {
            if at <= now && at != u32::MAX {
                self.gone.pop();
                return Some(i as usize);
            }
        }
        while let Some(&entry) = self.rotation.front() {
            if !self.live(entry) {
                self.rotation.pop_front();
                continue;
            }
            let i = entry.0 as usize;
            let at = self.expiry(i);
            if at <= now && at != u32::MAX {
                self.rotation.pop_front();
                return Some(i);
            }
            break;
        }
        None
    }

    /// Renews the bound client least recently heard from; false when none is bound.
    fn renew_next(&mut self) -> bool {
        while let Some(entry) = self.rotation.pop_front() {
            if self.live(entry) {
                self.renew(entry.0 as usize);
                return true;
            }
        }
        false
    }

    /// Moves client `i` to `to`, keeping the idle and bound lists, the rotation and the gone
    /// heap in step.
    fn set_status(&mut self, i: usize, to: Status) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let from = c.status;
        let pos = c.pos as usize;
        c.status = to;
        c.epoch = c.epoch.wrapping_add(1);
        let epoch = c.epoch;
        let list = match from {
            Status::Idle => Some(&mut self.idle),
            Status::Bound => Some(&mut self.bound),
            Status::Fresh | Status::Gone => None,
        };
        if let Some(list) = list {
            if pos < list.len() {
                list.swap_remove(pos);
                if let Some(&moved) = list.get(pos) {
                    if let Some(m) = self.clients.get_mut(moved as usize) {
                        m.pos = pos as u32;
                    }
                }
            }
        }
        let index = i as u32;
        match to {
            Status::Idle => self.push_list(i, false),
            Status::Bound => {
                self.push_list(i, true);
                self.rotation.push_back((index, epoch));
                self.compact_rotation();
            }
            Status::Gone => {
                let at = self.expiry(i);
                self.gone.push(Reverse((at, index)));
            }
            Status::Fresh => {}
        }
    }

    fn push_list(&mut self, i: usize, bound: bool) {
        let list = if bound {
            &mut self.bound
        } else {
            &mut self.idle
        };
        let pos = list.len() as u32;
        list.push(i as u32);
        if let Some(c) = self.clients.get_mut(i) {
            c.pos = pos;
        }
    }

    /// Drops stale rotation entries once they outnumber the live ones.
    fn compact_rotation(&mut self) {
        if self.rotation.len() > self.bound.len().saturating_mul(2).saturating_add(64) {
            let clients = &self.clients;
            self.rotation.retain(|&(i, epoch)| {
                clients
                    .get(i as usize)
                    .is_some_and(|c| c.status == Status::Bound && c.epoch == epoch)
            });
        }
    }

    fn alloc_pd(&mut self) -> u64 {
        if let Some(n) = self.pd_free.pop() {
            return n;
        }
        let n = self.pd_next;
        self.pd_next = n.saturating_add(1);
        n
    }

    fn fresh_na(&mut self, link: u16) -> Ipv6Addr {
        let prefix = self
            .links
            .get(usize::from(link))
            .map_or(0, |l| u128::from(l.prefix));
        // Interface ids below 0x100 are left to routers (`::1` is the link address).
        let iid = self.rng.gen_range(0x100..=u64::MAX);
        Ipv6Addr::from(prefix | u128::from(iid))
    }

    /// A client without leases gets them: its initial leases (`initial`), or a SOLICIT.
    fn solicit(&mut self, i: usize, initial: bool) {
        let Some((link, wants_pd)) = self.clients.get(i).map(|c| (c.link, c.wants_pd)) else {
            return;
        };
        // Servers often give a returning client its previous address back.
        let na = if initial || self.rng.gen_bool(0.5) {
            self.clients.get(i).map(|c| c.na)
        } else {
            None
        };
        let na = match na {
            Some(na) => na,
            None => self.fresh_na(link),
        };
        let pd = wants_pd.then(|| self.alloc_pd());
        let now = self.now;
        if let Some(c) = self.clients.get_mut(i) {
            c.na = na;
            c.pd = pd;
            c.cltt = now;
        }
        self.set_status(i, Status::Bound);
        self.report(i, LeaseState::Active, true);
    }

    /// RENEW of all of client `i`'s leases (also a client that left coming back).
    fn renew(&mut self, i: usize) {
        let now = self.now;
        if let Some(c) = self.clients.get_mut(i) {
            c.cltt = now;
        }
        self.set_status(i, Status::Bound);
        self.report(i, LeaseState::Active, true);
    }

    fn release(&mut self, i: usize) {
        let now = self.now;
        if let Some(c) = self.clients.get_mut(i) {
            c.cltt = now;
        }
        self.report(i, LeaseState::Released, true);
        self.end_leases(i);
    }

    fn expire(&mut self, i: usize) {
        self.report(i, LeaseState::Expired, false);
        self.end_leases(i);
    }

    fn end_leases(&mut self, i: usize) {
        if let Some(n) = self.clients.get_mut(i).and_then(|c| c.pd.take()) {
            self.pd_free.push(n);
        }
        self.set_status(i, Status::Idle);
    }

    fn leave(&mut self, i: usize) {
        self.set_status(i, Status::Gone);
    }

    /// DECLINE of the client's address, then a REQUEST that gets a new address and renews the
    /// prefix.
    fn decline(&mut self, i: usize) {
        let now = self.now;
        let Some(link) = self.clients.get_mut(i).map(|c| {
            c.cltt = now;
            c.link
        }) else {
            return;
        };
        let relay = self.relay_info(i);
        if let Some(change) = self.change(i, LeaseKind::Address, LeaseState::Declined, relay) {
            self.pending.push_back(change);
        }
        let na = self.fresh_na(link);
        if let Some(c) = self.clients.get_mut(i) {
            c.na = na;
        }
        self.renew(i);
    }

    /// Queues one change per lease of client `i`, in state `state`; `relayed` when a message
    /// from the client (through its relays) caused it.
    fn report(&mut self, i: usize, state: LeaseState, relayed: bool) {
        let relay = if relayed { self.relay_info(i) } else { None };
        let has_pd = self.clients.get(i).is_some_and(|c| c.pd.is_some());
        if let Some(change) = self.change(i, LeaseKind::Address, state, relay.clone()) {
            self.pending.push_back(change);
        }
        if has_pd {
            if let Some(change) = self.change(i, LeaseKind::Prefix, state, relay) {
                self.pending.push_back(change);
            }
        }
    }

    fn change(
        &self,
        i: usize,
        kind: LeaseKind,
        state: LeaseState,
        relay: Option<RelayInfo>,
    ) -> Option<Change> {
        let c = self.clients.get(i)?;
        let link = self.links.get(usize::from(c.link))?;
        let (address, prefix_len, iaid) = match kind {
            LeaseKind::Address => (c.na, 128, c.iaid_na),
            LeaseKind::Prefix => {
                let len = self.config.pd_prefix_len;
                let n = u128::from(c.pd?);
                let base = 0x3fffu128 << 112;
                (
                    Ipv6Addr::from(base | (n << (128 - u32::from(len)))),
                    len,
                    c.iaid_pd,
                )
            }
        };
        Some(Change {
            client_id: c.duid.clone(),
            link: link.address,
            lease: Lease {
                kind,
                address,
                prefix_len,
                iaid,
                preferred_lifetime: self.config.preferred_lifetime,
                valid_lifetime: self.config.valid_lifetime,
                cltt: c.cltt,
                state,
            },
            relay,
        })
    }

    /// What client `i`'s relays told the server, or `None` on a direct link.
    fn relay_info(&self, i: usize) -> Option<RelayInfo> {
        let c = self.clients.get(i)?;
        self.links.get(usize::from(c.link))?.relay_info(i, c)
    }
}

/// The current server time from the system clock: what [`spawn_demo`] uses in production.
#[must_use]
pub fn system_time() -> ServerTime {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ServerTime::from_unix(unix)
}

/// Runs a [`DemoSource`] for `config` on its own thread, sending its changes into `handle`:
/// the initial population at once, then the churn at `config.changes_per_sec` (see [`Pacer`]),
/// with `clock` giving the server time of each change (pass [`system_time`]).
///
/// The thread stops when the feed closes (lqd's loop dropped its receiver) or after
/// `config.limit` changes, and returns how many changes it sent. A full feed makes it wait:
/// that is the loop's back-pressure, and the pacer catches up afterwards by at most
/// [`Pacer::MAX_CATCH_UP`].
pub fn spawn_demo<C>(
    config: DemoConfig,
    handle: FeedHandle,
    mut clock: C,
) -> std::io::Result<JoinHandle<u64>>
where
    C: FnMut() -> ServerTime + Send + 'static,
{
    std::thread::Builder::new()
        .name("lqd-feed-demo".into())
        .spawn(move || {
            let rate = config.changes_per_sec;
            let limit = config.limit.unwrap_or(u64::MAX);
            let churn_limit = config.churn_limit.unwrap_or(u64::MAX);
            let mut churned = 0u64;
            let mut source = DemoSource::new(config);
            // The initial population is the state the lease store already holds: it is
            // loaded at once, and only the churn after it is paced.
            let mut pacer: Option<Pacer> = None;
            let mut sent = 0u64;
            let mut announced = false;
            while sent < limit {
                if announced && churned >= churn_limit {
                    tracing::info!(changes = churned, "demo: churn limit reached");
                    break;
                }
                if rate > 0 && (pacer.is_some() || source.initial_done()) {
                    let pacer = pacer.get_or_insert_with(|| Pacer::new(rate, Instant::now()));
                    while let Some(wait) = pacer.delay(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    pacer.sent();
                }
                if handle.send(source.next_change(clock())).is_err() {
                    break;
                }
                sent = sent.saturating_add(1);
                if announced {
                    churned = churned.saturating_add(1);
                }
                if !announced && source.initial_done() {
                    announced = true;
                    tracing::info!(changes = sent, "demo: initial population sent");
                }
            }
            sent
        })
}
