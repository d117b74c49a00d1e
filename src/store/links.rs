//! The links lqd serves: how an address names a link, and what address space is managed.
//!
//! Decision D16: a binding's link is the first relay's link-address, or the configured link of
//! a directly connected client. A relay may use any of its addresses on the link, and a source
//! that knows only a subnet reports that subnet's prefix, so the same link can arrive under
//! several addresses. A [`LinkMap`] gives each link one canonical address (its `address`) and
//! maps every address inside one of its `prefixes` to it, both for the changes a source sends
//! and for the link-address of a query.
//!
//! The map also knows which address space lqd answers for (the links' prefixes and the
//! delegated-prefix pools), so a query about an address or link outside it gets NotConfigured
//! (digest §8.1 item 7). An empty map configures nothing: links are taken as sources name them
//! and no query is NotConfigured.

use std::fmt;
use std::net::Ipv6Addr;

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

/// One link: its canonical address and the address space on it. In lqd's TOML configuration
/// it is a `[[link]]` table with the same keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkDef {
    /// The link's address as bindings and answers name it: the first relay's link-address.
    pub address: Ipv6Addr,
    /// Prefixes assigned to the link: any address inside names this link.
    #[serde(default)]
    pub prefixes: Vec<Ipv6Net>,
    /// Pools delegated prefixes on this link come from. They are managed space (a query by
    /// address inside them is not NotConfigured) but do not name the link.
    #[serde(default)]
    pub pd_pools: Vec<Ipv6Net>,
}

/// Why a set of links cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMapError(String);

impl fmt::Display for LinkMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LinkMapError {}

/// The configured links, looked up by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkMap {
    /// Canonical addresses, sorted, for exact matches.
    addresses: Vec<Ipv6Addr>,
    /// Link prefixes with their link's address, longest first, so the first match wins.
    prefixes: Vec<(Ipv6Net, Ipv6Addr)>,
    /// Every managed prefix: link prefixes and pools.
    managed: Vec<Ipv6Net>,
}

impl LinkMap {
    /// A map of `links`. Two links with the same address, or one prefix on two links, are
    /// errors; a link's address need not lie in its prefixes (a relay may number the link from
    /// elsewhere).
    pub fn new(links: &[LinkDef]) -> Result<Self, LinkMapError> {
        let mut map = Self::default();
        for link in links {
            if map.addresses.contains(&link.address) {
                return Err(LinkMapError(format!(
                    "link {} is configured twice",
                    link.address
                )));
            }
            map.addresses.push(link.address);
            for p in &link.prefixes {
                let p = p.trunc();
                if let Some((_, other)) = map.prefixes.iter().find(|(q, _)| *q == p) {
                    return Err(LinkMapError(format!(
                        "prefix {p} is on two links, {other} and {}",
                        link.address
                    )));
                }
                map.prefixes.push((p, link.address));
                map.managed.push(p);
            }
            map.managed.extend(link.pd_pools.iter().map(Ipv6Net::trunc));
        }
        map.addresses.sort_unstable();
        map.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
        Ok(map)
    }

    /// True when no link is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// The number of configured links.
    #[must_use]
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// The canonical address of the link `addr` names: `addr` itself when it is a link's
    /// address, else the link with the longest prefix containing it; `None` when no configured
    /// link matches.
    #[must_use]
    pub fn link_of(&self, addr: Ipv6Addr) -> Option<Ipv6Addr> {
        if self.addresses.binary_search(&addr).is_ok() {
            return Some(addr);
        }
        self.prefixes
            .iter()
            .find(|(p, _)| p.contains(&addr))
            .map(|(_, link)| *link)
    }

    /// Hands `each` what decides the link a binding is filed under, in the map's order: each
    /// link's address (with no prefix), then each link prefix (network and length) with its
    /// link's address. A snapshot of the store names its links by these (D43).
    pub(crate) fn for_each_filing(&self, mut each: impl FnMut(Ipv6Addr, Option<(Ipv6Addr, u8)>)) {
        for a in &self.addresses {
            each(*a, None);
        }
        for (p, link) in &self.prefixes {
            each(*link, Some((p.network(), p.prefix_len())));
        }
    }

    /// True when `addr` lies in address space lqd answers for: a link's prefix or a pool.
    #[must_use]
    pub fn manages(&self, addr: Ipv6Addr) -> bool {
        self.managed.iter().any(|p| p.contains(&addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn n(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    fn two_links() -> LinkMap {
        LinkMap::new(&[
            LinkDef {
                address: a("2001:db8:0:1::1"),
                prefixes: vec![n("2001:db8:0:1::/64"), n("2001:db8:1::/48")],
                pd_pools: vec![n("3fff:100::/40")],
            },
            LinkDef {
                address: a("2001:db8:0:2::1"),
                prefixes: vec![n("2001:db8:1:5::/64")],
                pd_pools: vec![],
            },
        ])
        .unwrap()
    }

    #[test]
    fn any_address_on_a_link_names_its_canonical_address() {
        let m = two_links();
        assert_eq!(m.len(), 2);
        assert_eq!(m.link_of(a("2001:db8:0:1::1")), Some(a("2001:db8:0:1::1")));
        assert_eq!(m.link_of(a("2001:db8:0:1::")), Some(a("2001:db8:0:1::1")));
        assert_eq!(m.link_of(a("2001:db8:0:1::99")), Some(a("2001:db8:0:1::1")));
        // The longest prefix wins: 2001:db8:1:5::/64 sits inside link 1's /48.
        assert_eq!(m.link_of(a("2001:db8:1:5::7")), Some(a("2001:db8:0:2::1")));
        assert_eq!(m.link_of(a("2001:db8:1:6::7")), Some(a("2001:db8:0:1::1")));
        assert_eq!(m.link_of(a("2001:db8:0:3::1")), None);
        // A pool is managed space but does not name a link.
        assert_eq!(m.link_of(a("3fff:100:0:100::")), None);
    }

    #[test]
    fn managed_space_is_the_prefixes_and_the_pools() {
        let m = two_links();
        assert!(m.manages(a("2001:db8:0:1::abcd")));
        assert!(m.manages(a("3fff:100:ff:ffff::1")));
        assert!(!m.manages(a("3fff:101::1")));
        assert!(!m.manages(a("2001:db8:0:3::1")));
        let empty = LinkMap::default();
        assert!(empty.is_empty() && !empty.manages(a("2001:db8::1")));
        assert_eq!(empty.link_of(a("2001:db8::1")), None);
    }

    #[test]
    fn a_link_or_prefix_given_twice_is_refused() {
        let l = |addr: &str, p: &str| LinkDef {
            address: a(addr),
            prefixes: vec![n(p)],
            pd_pools: vec![],
        };
        let e = LinkMap::new(&[
            l("2001:db8::1", "2001:db8::/64"),
            l("2001:db8::1", "2001:db9::/64"),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "link 2001:db8::1 is configured twice");
        let e = LinkMap::new(&[
            l("2001:db8::1", "2001:db8::/64"),
            l("2001:db8::2", "2001:db8::5/64"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "prefix 2001:db8::/64 is on two links, 2001:db8::1 and 2001:db8::2"
        );
    }
}
