//! The changes loadgen injects, and how a delivered message names the change it carries.
//!
//! Change `k` (k = 0, 1, 2, …) is for binding `b = k mod M` (`--bindings`): the client with
//! DUID-EN enterprise 32473 (RFC 5612's documentation number) and identifier `b` as four
//! octets, holding one IA_NA address derived from `b` on one link. Its generation `g = k / M`
//! sets the valid lifetime, `86400 + g` seconds (preferred: half of it), so that every change
//! really changes its binding: lqd journals nothing for an identical re-send.
//!
//! A LEASEQUERY-DATA reports the lifetimes left at its base-time and OPTION_CLT_TIME, the time
//! since the client's last transaction at that same base-time (RFC 7653 §4.1.2.4), so
//! `valid-lifetime + CLT_TIME` is the lifetime granted and gives `g` back: every delivery
//! names exactly one change, `k = g·M + b`. That is what lets the receivers tell a gap (lost)
//! from a repeat (duplicated) and measure each delivery from its own change's intended time.
//!
//! A model can be moved on by whole generations ([`Model::after`]): with `--preload`, lqd is
//! first given generation 0 of every binding (changes `0..M`), and the measured changes are
//! numbered from 0 again but written as generation 1 on (change `k` as `k + M`), so each
//! renews a binding lqd already holds with new lifetimes instead of repeating it. The receivers
//! see the same numbers as without the preload; a delivery of a preloaded change is an error.
//!
//! With `--filter` ([`Keys`]), change `k` is also on key `k mod N` (N requestors): on link
//! `k mod N` (`LINK` is link 0; link `i` is `i` /64s above it, and the address moves with its
//! link), or relayed by a relay with relay-id `k mod N`, or with remote-id `k mod N`. M must be
//! a multiple of N, so that a binding stays on one key from one generation to the next.

use std::io::Write as _;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use lqd::codec::{
    BuildOptions, DhcpOption, MessageBuilder, MessageRepr, MessageType, OptionCode, Options,
    QueryType, ServerTime, Status,
};

use super::FilterKind;

/// The enterprise number of the clients' DUID-EN (32473: RFC 5612, for documentation).
const ENTERPRISE: u32 = 32_473;
/// DUID-EN's type code (RFC 8415 §11.3).
const DUID_EN: u16 = 2;
/// The valid lifetime of generation 0, seconds; generation `g` gets `BASE_VALID + g`.
const BASE_VALID: u32 = 86_400;
/// The most generations a run may have (keeps the lifetimes far from infinity).
const MAX_GENERATIONS: u64 = 1 << 24;
/// The link every client is on: its relay's link-address.
pub(crate) const LINK: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The link's prefix, for lqd's `[[link]]` table.
pub(crate) const LINK_PREFIX: &str = "2001:db8:1::/64";
/// Interface identifiers of the clients' addresses start here (clear of the link-address).
const ADDRESS_BASE: u64 = 0x1_0000;
/// The IAID of every client's IA_NA.
const IAID: u32 = 1;
/// The first octet of a relay-id's DUID-EN identifier (then the key, four octets), which sets
/// relays apart from clients.
const RELAY_TAG: u8 = b'r';

/// The keys of a filtered run: requestor `i` asks for key `i`, change `k` is on key `k mod
/// count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keys {
    /// What a key is.
    pub(crate) kind: FilterKind,
    /// N, the number of keys (one per requestor).
    pub(crate) count: u32,
}

impl Keys {
    /// Link `i`: `LINK` moved up by `i` /64s.
    pub(crate) fn link(i: u32) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(LINK) + (u128::from(i) << 64))
    }

    /// Relay-id `i`: a DUID-EN (enterprise 32473) whose identifier is `r` and `i`.
    pub(crate) fn relay_id(i: u32) -> [u8; 11] {
        let mut d = [0u8; 11];
        d[..2].copy_from_slice(&DUID_EN.to_be_bytes());
        d[2..6].copy_from_slice(&ENTERPRISE.to_be_bytes());
        d[6] = RELAY_TAG;
        d[7..].copy_from_slice(&i.to_be_bytes());
        d
    }

    /// Remote-id `i` (RFC 4649): enterprise 32473, the remote-id `i` as four octets.
    pub(crate) fn remote_id(i: u32) -> (u32, [u8; 4]) {
        (ENTERPRISE, i.to_be_bytes())
    }

    /// Adds requestor `i`'s OPTION_LQ_QUERY, the query for key `i` alone, to an
    /// ACTIVELEASEQUERY.
    pub(crate) fn query(self, i: u32, b: MessageBuilder) -> MessageBuilder {
        match self.kind {
            FilterKind::Link => b.lq_query(QueryType::ByLinkAddress, Self::link(i), |q| q),
            FilterKind::RelayId => b.lq_query(QueryType::ByRelayId, Ipv6Addr::UNSPECIFIED, |q| {
                q.relay_id(&Self::relay_id(i))
            }),
            FilterKind::RemoteId => {
                let (enterprise, id) = Self::remote_id(i);
                b.lq_query(QueryType::ByRemoteId, Ipv6Addr::UNSPECIFIED, |q| {
                    q.remote_id(enterprise, &id)
                })
            }
        }
    }
}

/// The binding population the changes cycle over, and the keys they are spread over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Model {
    bindings: u32,
    keys: Option<Keys>,
    /// Generations skipped: change `k` is written (and read back) as change `k + shift`, a
    /// multiple of M (so of N too), which keeps each change's binding and key.
    shift: u64,
}

/// What one message on a stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// LEASEQUERY-REPLY: its status (absent means Success) and base-time.
    Reply {
        status: Status,
        base_time: Option<ServerTime>,
    },
    /// LEASEQUERY-DATA with client data: change `k`.
    Change { k: u64 },
    /// LEASEQUERY-DATA with client data whose address has valid lifetime 0: binding `b`'s
    /// lease ended (D5), as a release in Kea's lease database reports it (`loadgen pgsql`).
    Released { b: u32 },
    /// LEASEQUERY-DATA with a status (CatchUpComplete, DataMissing) and base-time.
    Status {
        status: Status,
        base_time: Option<ServerTime>,
    },
    /// LEASEQUERY-DATA with only a base-time: a keepalive (RFC 7653 §8.2, D2).
    Keepalive { base_time: Option<ServerTime> },
    /// LEASEQUERY-DONE: the query ended.
    Done { status: Status },
}

impl Model {
    /// `bindings` clients (at least 1).
    pub(crate) fn new(bindings: u32) -> Result<Self, String> {
        if bindings == 0 {
            return Err("--bindings must be at least 1".to_owned());
        }
        Ok(Self {
            bindings,
            keys: None,
            shift: 0,
        })
    }

    /// This model with its changes spread over `keys`; M must be a multiple of N.
    pub(crate) fn keyed(self, keys: Keys) -> Result<Self, String> {
        if keys.count == 0 || self.bindings % keys.count != 0 {
            return Err(format!(
                "--filter with {} requestors: --bindings {} is not a multiple of {}, so a \
                 binding's key (k mod N) would change from one generation to the next; pass a \
                 multiple, such as --bindings {}",
                keys.count,
                self.bindings,
                keys.count,
                u64::from(self.bindings).div_ceil(u64::from(keys.count.max(1)))
                    * u64::from(keys.count)
            ));
        }
        Ok(Self {
            keys: Some(keys),
            ..self
        })
    }

    /// This model with its changes `generations` generations on: change `k` is written as
    /// change `k + generations·M` (the same binding and key, other lifetimes), and a delivery
    /// of a change before that (a preloaded one) is an error.
    pub(crate) fn after(self, generations: u64) -> Self {
        Self {
            shift: self.shift + generations * u64::from(self.bindings),
            ..self
        }
    }

    /// M, the number of bindings.
    pub(crate) const fn bindings(self) -> u32 {
        self.bindings
    }

    /// The keys changes are spread over, when filtered.
    pub(crate) const fn keys(self) -> Option<Keys> {
        self.keys
    }

    /// The key of change `k` (`k mod N`), when filtered.
    pub(crate) fn key(self, k: u64) -> Option<u32> {
        self.keys
            .map(|keys| u32::try_from(k % u64::from(keys.count)).unwrap_or(0))
    }

    /// Checks that `changes` changes stay within the generations the lifetimes can encode.
    pub(crate) fn check_changes(self, changes: u64) -> Result<(), String> {
        if (changes + self.shift) / u64::from(self.bindings) >= MAX_GENERATIONS {
            return Err(format!(
                "{changes} changes over {} bindings: more than {MAX_GENERATIONS} generations",
                self.bindings
            ));
        }
        Ok(())
    }

    fn binding(self, k: u64) -> u32 {
        u32::try_from(k % u64::from(self.bindings)).unwrap_or(0)
    }

    fn valid_lifetime(self, k: u64) -> u32 {
        let g = (k + self.shift) / u64::from(self.bindings);
        BASE_VALID.saturating_add(u32::try_from(g).unwrap_or(u32::MAX - BASE_VALID - 1))
    }

    /// The DUID of binding `b`'s client.
    fn duid(b: u32) -> [u8; 10] {
        let mut d = [0u8; 10];
        d[..2].copy_from_slice(&DUID_EN.to_be_bytes());
        d[2..6].copy_from_slice(&ENTERPRISE.to_be_bytes());
        d[6..].copy_from_slice(&b.to_be_bytes());
        d
    }

    /// The link of binding `b`: its key's link when filtered by link, `LINK` otherwise.
    fn link(self, b: u32) -> Ipv6Addr {
        match self.keys {
            Some(keys) if keys.kind == FilterKind::Link => Keys::link(b % keys.count),
            _ => LINK,
        }
    }

    /// The IA_NA address of binding `b`, in its link's /64.
    fn address(self, b: u32) -> Ipv6Addr {
        let prefix = u128::from(self.link(b)) & !u128::from(u64::MAX);
        Ipv6Addr::from(prefix | u128::from(ADDRESS_BASE + u64::from(b)))
    }

    /// Appends change `k` as one line of lqd's JSON-lines feed
    /// (`schema/lease-change.schema.json`), with `cltt` in Unix seconds; filtered by relay-id
    /// or remote-id, with its key's `relay`.
    pub(crate) fn json_line(self, k: u64, cltt_unix: u64, out: &mut Vec<u8>) {
        let b = self.binding(k);
        let valid = self.valid_lifetime(k);
        let hex = |out: &mut Vec<u8>, octets: &[u8]| {
            for o in octets {
                let _ = write!(out, "{o:02x}");
            }
        };
        let _ = write!(out, "{{\"client_id\":\"");
        hex(out, &Self::duid(b));
        let _ = write!(
            out,
            "\",\"link\":\"{}\",\"kind\":\"na\",\"address\":\"{}\",\"iaid\":{IAID},\
             \"preferred_lifetime\":{},\"valid_lifetime\":{valid},\"cltt\":{cltt_unix},\
             \"state\":\"active\"",
            self.link(b),
            self.address(b),
            valid / 2,
        );
        if let Some(keys) = self.keys {
            let key = b % keys.count;
            match keys.kind {
                FilterKind::Link => {}
                FilterKind::RelayId => {
                    let _ = write!(out, ",\"relay\":{{\"relay_ids\":[\"");
                    hex(out, &Keys::relay_id(key));
                    let _ = write!(out, "\"]}}");
                }
                FilterKind::RemoteId => {
                    let (enterprise, id) = Keys::remote_id(key);
                    let _ = write!(
                        out,
                        ",\"relay\":{{\"remote_ids\":[{{\"enterprise\":{enterprise},\"id\":\""
                    );
                    hex(out, &id);
                    let _ = write!(out, "\"}}]}}");
                }
            }
        }
        let _ = writeln!(out, "}}");
    }

    /// Change `k` as the LEASEQUERY-DATA lqd sends for it (base-time `now`, the lease just
    /// granted: full lifetimes, CLT_TIME 0), unframed; for the baselines.
    pub(crate) fn data_message(self, k: u64, xid: u32, now: ServerTime) -> Result<Vec<u8>, String> {
        let b = self.binding(k);
        let valid = self.valid_lifetime(k);
        let duid = Self::duid(b);
        MessageBuilder::data(xid)
            .base_time(now)
            .client_data(|c| {
                c.client_id(&duid)
                    .iaaddr(self.address(b), valid / 2, valid)
                    .clt_time(0)
            })
            .build()
            .map_err(|e| format!("building change {k}'s LEASEQUERY-DATA: {e}"))
    }

    /// The binding whose client has this DUID, if loadgen made that client (in or beyond the
    /// model's bindings).
    fn binding_number(duid: &[u8]) -> Option<u32> {
        match duid {
            [t0, t1, e0, e1, e2, e3, i0, i1, i2, i3]
                if u16::from_be_bytes([*t0, *t1]) == DUID_EN
                    && u32::from_be_bytes([*e0, *e1, *e2, *e3]) == ENTERPRISE =>
            {
                Some(u32::from_be_bytes([*i0, *i1, *i2, *i3]))
            }
            _ => None,
        }
    }

    /// The IA_NA address of binding `b`.
    pub(crate) fn address_of(self, b: u32) -> Ipv6Addr {
        self.address(b)
    }

    /// Change `k` as a row of Kea's `lease6` table holds it (`loadgen pgsql`).
    pub(crate) fn kea_lease(self, k: u64) -> KeaLease {
        let b = self.binding(k);
        KeaLease {
            binding: b,
            duid: Self::duid(b),
            address: self.address(b),
            valid: self.valid_lifetime(k),
            link: self.link(b),
        }
    }

    /// What a message's OPTION_CLIENT_DATA reports: a change, or a binding's lease ended.
    fn change_of(self, cd: &Options<'_>) -> Result<Seen, String> {
        let duid = cd.client_id().ok_or("client data without a client id")?;
        let Some(b) = Self::binding_number(duid.as_bytes()) else {
            return Err(format!(
                "client data of a client loadgen never made: {:02x?}",
                duid.as_bytes()
            ));
        };
        if b >= self.bindings {
            return Err(format!("client data of binding {b}, beyond --bindings"));
        }
        let mut valid = None;
        let mut clt = None;
        for o in cd.iter() {
            match o {
                DhcpOption::IaAddr(a) if a.address == self.address(b) => {
                    valid = Some(a.valid_lifetime);
                }
                DhcpOption::IaAddr(a) => {
                    return Err(format!("binding {b} with a foreign address {}", a.address));
                }
                DhcpOption::CltTime(t) => clt = Some(t),
                _ => {}
            }
        }
        let valid = valid.ok_or_else(|| format!("binding {b} without its address"))?;
        if valid == 0 {
            return Ok(Seen::Released { b });
        }
        let granted = valid.saturating_add(clt.ok_or("client data without CLT_TIME")?);
        let g = granted
            .checked_sub(BASE_VALID)
            .ok_or_else(|| format!("binding {b} with a lifetime of {granted} s"))?;
        let k = u64::from(g) * u64::from(self.bindings) + u64::from(b);
        let k = k.checked_sub(self.shift).ok_or_else(|| {
            format!(
                "binding {b} in generation {g}, from before the run (a preloaded change, {} \
                 generations back)",
                self.shift / u64::from(self.bindings)
            )
        })?;
        Ok(Seen::Change { k })
    }

    /// What `message` is, checking its xid when `xid` is given.
    pub(crate) fn classify(self, message: &[u8], xid: Option<u32>) -> Result<Seen, String> {
        let m = MessageRepr::parse(message).map_err(|e| format!("unparsable message: {e}"))?;
        if let Some(x) = xid {
            if m.xid().map(|x| x.value()) != Some(x) {
                return Err(format!("a message with xid {:?}, not {x:#x}", m.xid()));
            }
        }
        let status = m.options.status().map_or(Status::Success, |s| s.status);
        let base_time = m.options.base_time();
        Ok(match m.msg_type() {
            MessageType::LeasequeryReply => Seen::Reply { status, base_time },
            MessageType::LeasequeryData => match m.options.get(OptionCode::ClientData) {
                Some(DhcpOption::ClientData(cd)) => self.change_of(&cd)?,
                _ if m.options.status().is_some() => Seen::Status { status, base_time },
                _ => Seen::Keepalive { base_time },
            },
            MessageType::LeasequeryDone => Seen::Done { status },
            t => return Err(format!("an unexpected {t}")),
        })
    }
}

/// One of loadgen's leases as Kea keeps it in its lease database: change `k`'s binding, its
/// client's DUID, its IA_NA address, the valid lifetime granted and the link (its relay's
/// link-address).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeaLease {
    pub(crate) binding: u32,
    pub(crate) duid: [u8; 10],
    pub(crate) address: Ipv6Addr,
    pub(crate) valid: u32,
    pub(crate) link: Ipv6Addr,
}

/// The bindings as a Bulk answer by link reports them (unkeyed: all on `LINK`).
impl crate::bulk::Clients for Model {
    fn link(&self) -> Ipv6Addr {
        Self::link(*self, 0)
    }

    fn clients(&self) -> usize {
        self.bindings as usize
    }

    fn client(&self, duid: &[u8]) -> Option<u32> {
        Self::binding_number(duid).filter(|&b| b < self.bindings)
    }
}

/// When each change is due: change `k` at `t0 + k / rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// When change 0 is due.
    pub(crate) t0: Instant,
    /// Changes per second; infinite for "all at once".
    pub(crate) rate: f64,
    /// Changes in all.
    pub(crate) total: u64,
}

impl Schedule {
    /// The intended injection time of change `k`.
    pub(crate) fn at(&self, k: u64) -> Instant {
        if self.rate.is_finite() && self.rate > 0.0 {
            self.t0 + Duration::from_secs_f64(k as f64 / self.rate)
        } else {
            self.t0
        }
    }

    /// How many changes are due by `now` (at most `total`).
    pub(crate) fn due(&self, now: Instant) -> u64 {
        if now < self.t0 {
            return 0;
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return self.total;
        }
        let n = (now.duration_since(self.t0).as_secs_f64() * self.rate).floor() as u64;
        n.saturating_add(1).min(self.total)
    }

    /// When the last change is due.
    pub(crate) fn end(&self) -> Instant {
        self.at(self.total.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_message_names_its_change() {
        let m = Model::new(1000).unwrap();
        for k in [0, 1, 999, 1000, 123_456] {
            let msg = m.data_message(k, 7, ServerTime(1_000)).unwrap();
            assert_eq!(m.classify(&msg, Some(7)).unwrap(), Seen::Change { k });
        }
        let msg = m.data_message(5, 7, ServerTime(1_000)).unwrap();
        assert!(m.classify(&msg, Some(8)).is_err(), "xid checked");
    }

    #[test]
    fn lifetimes_left_plus_clt_time_give_the_generation() {
        let m = Model::new(10).unwrap();
        let k = 37; // binding 7, generation 3
        let valid = BASE_VALID + 3;
        let msg = MessageBuilder::data(1)
            .client_data(|c| {
                c.client_id(&Model::duid(7))
                    .iaaddr(m.address(7), 0, valid - 40)
                    .clt_time(40)
            })
            .build()
            .unwrap();
        assert_eq!(m.classify(&msg, None).unwrap(), Seen::Change { k });
    }

    #[test]
    fn the_json_line_follows_the_schema_example() {
        let m = Model::new(100).unwrap();
        let mut out = Vec::new();
        m.json_line(101, 1_700_000_000, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["client_id"], "000200007ed900000001");
        assert_eq!(v["address"], "2001:db8:1::1:1");
        assert_eq!(v["valid_lifetime"], BASE_VALID + 1);
        assert_eq!(v["cltt"], 1_700_000_000u64);
        assert!(out.ends_with(b"}\n"));
    }

    fn keyed(kind: FilterKind, bindings: u32, count: u32) -> Model {
        Model::new(bindings)
            .unwrap()
            .keyed(Keys { kind, count })
            .unwrap()
    }

    fn line(m: Model, k: u64) -> serde_json::Value {
        let mut out = Vec::new();
        m.json_line(k, 1_700_000_000, &mut out);
        assert!(out.ends_with(b"}\n"));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn keyed_changes_are_on_key_k_mod_n() {
        assert!(
            Model::new(1000)
                .unwrap()
                .keyed(Keys {
                    kind: FilterKind::Link,
                    count: 300,
                })
                .is_err(),
            "M must be a multiple of N"
        );
        let m = keyed(FilterKind::Link, 1000, 100);
        assert_eq!((m.key(0), m.key(1234)), (Some(0), Some(34)));
        assert_eq!(Model::new(1000).unwrap().key(5), None);
        // Link 0 is LINK; link i is i /64s above, and the address moves with it.
        let v = line(m, 1234);
        assert_eq!(v["link"], "2001:db8:1:22::1");
        assert_eq!(v["address"], "2001:db8:1:22::1:ea");
        assert!(v.get("relay").is_none());
        assert_eq!(line(m, 100)["link"], LINK.to_string());
        let msg = m.data_message(1234, 7, ServerTime(1_000)).unwrap();
        assert_eq!(m.classify(&msg, Some(7)).unwrap(), Seen::Change { k: 1234 });
        let unkeyed = Model::new(1000).unwrap();
        assert!(
            unkeyed.classify(&msg, Some(7)).is_err(),
            "the address is on link 34"
        );

        let m = keyed(FilterKind::RelayId, 1000, 100);
        let v = line(m, 1234);
        assert_eq!(v["link"], LINK.to_string());
        assert_eq!(v["address"], "2001:db8:1::1:ea");
        assert_eq!(v["relay"]["relay_ids"][0], "000200007ed97200000022");
        assert!(v["relay"].get("remote_ids").is_none());
        let unkeyed = Model::new(1000).unwrap();
        assert_eq!(
            m.data_message(1234, 7, ServerTime(1_000)).unwrap(),
            unkeyed.data_message(1234, 7, ServerTime(1_000)).unwrap(),
            "the same data as unfiltered"
        );

        let v = line(keyed(FilterKind::RemoteId, 1000, 100), 1234);
        assert_eq!(v["relay"]["remote_ids"][0]["enterprise"], ENTERPRISE);
        assert_eq!(v["relay"]["remote_ids"][0]["id"], "00000022");
        assert!(v["relay"].get("relay_ids").is_none());
    }

    #[test]
    fn a_model_after_the_preload_renews_each_binding() {
        let preload = keyed(FilterKind::Link, 1000, 100);
        let m = preload.after(1);
        for k in [0, 7, 999, 1000, 1234] {
            let (before, after) = (line(preload, k), line(m, k));
            for field in ["client_id", "link", "address", "iaid", "cltt"] {
                assert_eq!(before[field], after[field], "change {k}'s {field}");
            }
            assert_eq!(
                before["valid_lifetime"].as_u64().unwrap() + 1,
                after["valid_lifetime"]
            );
            assert_ne!(before, after, "a new state of the binding, not a re-send");
            assert_eq!(m.key(k), preload.key(k));
            let msg = m.data_message(k, 7, ServerTime(1_000)).unwrap();
            assert_eq!(m.classify(&msg, Some(7)).unwrap(), Seen::Change { k });
        }
        assert_eq!(
            line(m, 0),
            line(preload, 1000),
            "change k is written as k + M"
        );
        let preloaded = preload.data_message(999, 7, ServerTime(1_000)).unwrap();
        assert_eq!(
            preload.classify(&preloaded, Some(7)).unwrap(),
            Seen::Change { k: 999 }
        );
        assert!(
            m.classify(&preloaded, Some(7)).is_err(),
            "a preloaded change is none of the run's"
        );
        let unkeyed = Model::new(10).unwrap();
        assert!(unkeyed.check_changes(10 * (MAX_GENERATIONS - 1)).is_ok());
        assert!(
            unkeyed
                .after(1)
                .check_changes(10 * (MAX_GENERATIONS - 1))
                .is_err()
        );
    }

    #[test]
    fn each_requestor_asks_for_its_own_key() {
        let query = |kind| {
            let keys = Keys { kind, count: 10 };
            keys.query(7, MessageBuilder::active_leasequery(1))
                .build()
                .unwrap()
        };
        let bytes = query(FilterKind::Link);
        let m = MessageRepr::parse(&bytes).unwrap();
        let q = m.options.lq_query().unwrap();
        assert_eq!(q.query_type, QueryType::ByLinkAddress);
        assert_eq!(q.link_address, Keys::link(7));
        assert_eq!(
            q.link_address,
            "2001:db8:1:7::1".parse::<Ipv6Addr>().unwrap()
        );

        let bytes = query(FilterKind::RelayId);
        let m = MessageRepr::parse(&bytes).unwrap();
        let q = m.options.lq_query().unwrap();
        assert_eq!(q.query_type, QueryType::ByRelayId);
        assert!(q.link_address.is_unspecified());
        let relay_ids: Vec<Vec<u8>> = q
            .options
            .iter()
            .filter_map(|o| match o {
                DhcpOption::RelayId(d) => Some(d.as_bytes().to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(relay_ids, [Keys::relay_id(7).to_vec()]);

        let bytes = query(FilterKind::RemoteId);
        let m = MessageRepr::parse(&bytes).unwrap();
        let q = m.options.lq_query().unwrap();
        assert_eq!(q.query_type, QueryType::ByRemoteId);
        assert!(q.link_address.is_unspecified());
        let remote_ids: Vec<(u32, Vec<u8>)> = q
            .options
            .iter()
            .filter_map(|o| match o {
                DhcpOption::RemoteId(r) => Some((r.enterprise_number, r.remote_id.to_vec())),
                _ => None,
            })
            .collect();
        assert_eq!(remote_ids, [(ENTERPRISE, vec![0, 0, 0, 7])]);
    }

    #[test]
    fn the_schedule_is_due_at_k_over_rate() {
        let t0 = Instant::now();
        let s = Schedule {
            t0,
            rate: 1000.0,
            total: 10,
        };
        assert_eq!(s.due(t0), 1);
        assert_eq!(s.due(t0 + Duration::from_micros(2500)), 3);
        assert_eq!(s.due(t0 + Duration::from_secs(5)), 10);
        assert_eq!(s.at(4), t0 + Duration::from_millis(4));
    }
}
