//! Kea's own DHCPv6 configuration, read for the links it defines (issue 15).
//!
//! lqd's links (D16, [`LinkDef`]) can be taken from Kea's configuration file instead of being
//! copied into `[[link]]` tables by hand: lqd then knows every link Kea knows, by the same
//! addresses Kea selects a subnet by (decision D30).
//!
//! # What a Kea subnet gives
//!
//! | Kea (`Dhcp6`) | lqd link |
//! |---|---|
//! | a `subnet6[]` entry | one link |
//! | a `shared-networks[]` entry, with all its `subnet6[]` | **one** link (a shared network is one physical link holding several subnets) |
//! | `subnet` | a prefix of the link: any address inside names it |
//! | `pd-pools[]` (`prefix`, `prefix-len`) | managed space (not NotConfigured), not naming the link |
//! | `relay.ip-addresses[]`, or the older `relay.ip-address` (of the subnet or the shared network) | each names the link (a /128 prefix), also outside `subnet` |
//! | `interface` (of the subnet or the shared network), with an address of that interface in `interfaces-config.interfaces` (`"eth0/2001:db8:1::1"`) | that address names the link |
//! | `id` | the subnet id of Kea's lease rows, mapped to the link ([`KeaLinks::subnets`]) |
//!
//! A link's canonical address (its `address`, as answers and Active filters name it) is the
//! first address of its first subnet's prefix: subnet `2001:db8:2::/64` gives
//! `2001:db8:2::`. Every address inside the prefix maps to it, so a relay whose link-address is
//! `2001:db8:2::1` and a second relay on the same link at `2001:db8:2::2` both name this link,
//! and a Bulk query by link-address for any address of the subnet returns every lease of the
//! subnet (with a shared network: of all its subnets), as Kea's own lease_query hook selects a
//! subnet.
//!
//! Kea may repeat what lqd's links must not: a relay address listed for two subnets (Kea then
//! chooses by client class), two subnets with the same first address. The first keeps it, the
//! other is logged as a warning; the configuration is not refused, since Kea accepts it.
//!
//! # The file as Kea reads it
//!
//! Kea's JSON allows comments (`//` and `#` to the end of the line, `/* … */`) outside strings,
//! and `<?include "PATH"?>`, which Kea replaces with the text of the file at `PATH` (that file
//! may include others). A relative `PATH` is looked for as Kea does, from the current
//! directory, and then beside the including file (lqd seldom runs where Kea runs). Includes
//! deeper than [`MAX_INCLUDE_DEPTH`] (a file including itself) are an error. A file that
//! cannot be read or is not JSON is an error naming the file and the reason.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv6Net;
use serde_json::Value;

use crate::store::LinkDef;

/// The environment variable naming Kea's configuration file.
pub const KEA_CONFIG_ENV: &str = "LQD_KEA_CONFIG";

/// Where Kea's configuration file is looked for without `kea_config` or [`KEA_CONFIG_ENV`].
pub const KEA_CONFIG_DEFAULT: &str = "/etc/kea/kea-dhcp6.conf";

/// The memfile lease file of a Kea configuration that names none (Debian's build).
pub const KEA_LEASE_FILE_DEFAULT: &str = "/var/lib/kea/kea-leases6.csv";

/// How deep `<?include ?>` may nest.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Why Kea's configuration cannot be used: the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeaConfigError {
    /// The file (the top one, or the include that failed).
    pub file: PathBuf,
    /// One sentence.
    pub reason: String,
}

impl fmt::Display for KeaConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Kea's configuration {}: {}",
            self.file.display(),
            self.reason
        )
    }
}

impl std::error::Error for KeaConfigError {}

/// The links of a Kea configuration, and its subnets' ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeaLinks {
    /// One link per subnet outside a shared network, and one per shared network.
    pub links: Vec<LinkDef>,
    /// Subnet id → the canonical address of its link.
    pub subnets: HashMap<u32, Ipv6Addr>,
    /// Why parts of the configuration were left out, one sentence each, for the log.
    pub warnings: Vec<String>,
    /// The memfile lease file Kea writes (`lease-database.name`), when it says.
    pub lease_file: Option<PathBuf>,
}

/// Removes Kea's comments (`//`, `#` to the end of the line, `/* … */`) outside strings,
/// keeping every newline (so line numbers stay right).
#[must_use]
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '#' => skip_line(&mut chars, &mut out),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars, &mut out),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Removes the commas Kea accepts before a closing `]` or `}` (Debian's own
/// `kea-dhcp6.conf` has them), outside strings. Run on text without comments.
#[must_use]
pub fn strip_trailing_commas(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c == ',' {
            let next = text
                .get(i + 1..)
                .and_then(|rest| rest.chars().find(|n| !n.is_whitespace()));
            if matches!(next, Some(']' | '}')) {
                continue;
            }
        }
        if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    for n in chars.by_ref() {
        if n == '\n' {
            out.push('\n');
            return;
        }
    }
}

const INCLUDE_OPEN: &str = "<?include";
const INCLUDE_CLOSE: &str = "?>";

/// Reads the file at `path` as Kea does: comments removed, every `<?include "PATH"?>`
/// replaced by its file's text (read the same way).
///
/// # Errors
///
/// A file that cannot be read, an include without its path or its `?>`, or includes nested
/// deeper than [`MAX_INCLUDE_DEPTH`].
pub fn read_kea_text(path: &Path) -> Result<String, KeaConfigError> {
    read_depth(path, 0)
}

fn read_depth(path: &Path, depth: usize) -> Result<String, KeaConfigError> {
    let fail = |reason: String| KeaConfigError {
        file: path.to_owned(),
        reason,
    };
    if depth > MAX_INCLUDE_DEPTH {
        return Err(fail(format!(
            "includes nest deeper than {MAX_INCLUDE_DEPTH} files (does a file include itself?)"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = strip_comments(&text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(INCLUDE_OPEN) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let body = from.get(INCLUDE_OPEN.len()..).unwrap_or_default();
        let Some(end) = body.find(INCLUDE_CLOSE) else {
            return Err(fail(format!("{INCLUDE_OPEN} without its {INCLUDE_CLOSE}")));
        };
        let name = body.get(..end).unwrap_or_default().trim();
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .ok_or_else(|| {
                fail(format!(
                    "{INCLUDE_OPEN} {name}{INCLUDE_CLOSE}: the path must be in double quotes"
                ))
            })?;
        out.push_str(&read_depth(&include_path(path, name), depth + 1)?);
        rest = body.get(end + INCLUDE_CLOSE.len()..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// Where `<?include "name"?>` in `including` points: an absolute path as is; a relative one
/// from the current directory (as Kea reads it) when there is such a file, else beside
/// `including`.
fn include_path(including: &Path, name: &str) -> PathBuf {
    let p = PathBuf::from(name);
    if p.is_absolute() || p.exists() {
        return p;
    }
    including.parent().map_or(p.clone(), |dir| dir.join(&p))
}

/// Reads Kea's configuration file at `path` (comments, includes) and its links.
///
/// # Errors
///
/// See [`read_kea_text`] and [`KeaLinks::parse`]; the error names the file.
pub fn load_kea_links(path: &Path) -> Result<KeaLinks, KeaConfigError> {
    let text = read_kea_text(path)?;
    KeaLinks::parse(&text).map_err(|reason| KeaConfigError {
        file: path.to_owned(),
        reason,
    })
}

/// Reads the subnets of a Kea DHCPv6 configuration's text (comments allowed, no includes):
/// subnet id → the canonical address of its link.
///
/// # Errors
///
/// When the text is not JSON (after removing comments) or has no `Dhcp6` object.
pub fn parse_kea_config(text: &str) -> Result<HashMap<u32, Ipv6Addr>, String> {
    KeaLinks::parse(&strip_comments(text)).map(|l| l.subnets)
}

/// A link being built: its subnets' prefixes, pools, relay addresses and interface.
#[derive(Debug, Default)]
struct Draft {
    what: String,
    prefixes: Vec<Ipv6Net>,
    pd_pools: Vec<Ipv6Net>,
    relays: Vec<Ipv6Addr>,
    interface: Option<String>,
    ids: Vec<u32>,
}

impl KeaLinks {
    /// The links of a Kea configuration's JSON text (comments and includes already resolved).
    ///
    /// # Errors
    ///
    /// When the text is not JSON, or has no `Dhcp6` object. Parts that make no link (a subnet
    /// without a valid `subnet`, a bad relay address) are left out with a warning in
    /// [`warnings`](Self::warnings).
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(&strip_trailing_commas(text))
            .map_err(|e| format!("not JSON (comments removed): {e}"))?;
        let dhcp6 = value
            .get("Dhcp6")
            .ok_or("no \"Dhcp6\" object: not a Kea DHCPv6 configuration")?;
        let mut warnings = Vec::new();
        let mut drafts = Vec::new();
        for (i, s) in array(dhcp6.get("subnet6")).enumerate() {
            let mut d = Draft {
                what: format!("subnet6[{i}]"),
                ..Draft::default()
            };
            add_subnet(&mut d, s, &mut warnings);
            add_relay_and_interface(&mut d, s, &mut warnings);
            drafts.push(d);
        }
        for (i, n) in array(dhcp6.get("shared-networks")).enumerate() {
            let name = n.get("name").and_then(Value::as_str).unwrap_or("?");
            let mut d = Draft {
                what: format!("shared network {name:?}"),
                ..Draft::default()
            };
            add_relay_and_interface(&mut d, n, &mut warnings);
            for s in array(n.get("subnet6")) {
                add_subnet(&mut d, s, &mut warnings);
                add_relay_and_interface(&mut d, s, &mut warnings);
            }
            if d.prefixes.is_empty() {
                warnings.push(format!(
                    "shared-networks[{i}] ({name:?}) has no subnet: no link"
                ));
            }
            drafts.push(d);
        }
        let interface_addresses = interface_addresses(dhcp6);
        let lease_file = dhcp6
            .get("lease-database")
            .filter(|db| db.get("type").and_then(Value::as_str) == Some("memfile"))
            .and_then(|db| db.get("name"))
            .and_then(Value::as_str)
            .map(PathBuf::from);
        let mut out = Self {
            warnings,
            lease_file,
            ..Self::default()
        };
        out.build(drafts, &interface_addresses);
        Ok(out)
    }

    /// Turns the drafts into links, keeping every address and prefix on one link only.
    fn build(&mut self, drafts: Vec<Draft>, interface_addresses: &[(String, Ipv6Addr)]) {
        let mut taken_prefixes: HashMap<Ipv6Net, Ipv6Addr> = HashMap::new();
        for d in drafts {
            let Some(first) = d.prefixes.first() else {
                continue;
            };
            let mut address = first.network();
            // Two links may not share a canonical address: a subnet starting where another
            // does (nested prefixes) takes the next free address of its prefix.
            while self.links.iter().any(|l| l.address == address) {
                match u128::from(address).checked_add(1).map(Ipv6Addr::from) {
                    Some(next) if first.contains(&next) => address = next,
                    _ => break,
                }
            }
            if self.links.iter().any(|l| l.address == address) {
                self.warnings.push(format!(
                    "{}: no free address for the link; left out",
                    d.what
                ));
                continue;
            }
            let mut link = LinkDef {
                address,
                prefixes: Vec::new(),
                pd_pools: d.pd_pools.clone(),
            };
            let relays = d.relays.iter().copied().chain(
                interface_addresses
                    .iter()
                    .filter(|(i, _)| Some(i) == d.interface.as_ref())
                    .map(|(_, a)| *a),
            );
            let nets = d
                .prefixes
                .iter()
                .copied()
                .chain(relays.filter_map(|a| Ipv6Net::new(a, 128).ok()));
            for net in nets {
                match taken_prefixes.get(&net) {
                    Some(other) if *other == address => {}
                    Some(other) => self.warnings.push(format!(
                        "{}: {net} already names link {other}; it stays there",
                        d.what
                    )),
                    None => {
                        taken_prefixes.insert(net, address);
                        link.prefixes.push(net);
                    }
                }
            }
            for id in d.ids {
                self.subnets.insert(id, address);
            }
            self.links.push(link);
        }
    }
}

fn array(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// A subnet's prefix, pools and id, into `d`.
fn add_subnet(d: &mut Draft, s: &Value, warnings: &mut Vec<String>) {
    let net = s.get("subnet").and_then(Value::as_str);
    match net.map(str::parse::<Ipv6Net>) {
        Some(Ok(n)) => d.prefixes.push(n.trunc()),
        _ => {
            warnings.push(format!(
                "{}: a subnet whose \"subnet\" is {:?}, not an IPv6 prefix: left out",
                d.what,
                net.unwrap_or("missing")
            ));
            return;
        }
    }
    match s
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
    {
        Some(id) => d.ids.push(id),
        None => warnings.push(format!(
            "{}: subnet {} has no \"id\": its leases are found by their relays only",
            d.what,
            net.unwrap_or("?")
        )),
    }
    for p in array(s.get("pd-pools")) {
        let prefix = p.get("prefix").and_then(Value::as_str);
        let len = p
            .get("prefix-len")
            .and_then(Value::as_u64)
            .and_then(|l| u8::try_from(l).ok());
        match (prefix.and_then(|a| a.parse::<Ipv6Addr>().ok()), len) {
            (Some(a), Some(l)) if l <= 128 => {
                if let Ok(n) = Ipv6Net::new(a, l) {
                    d.pd_pools.push(n.trunc());
                }
            }
            _ => warnings.push(format!(
                "{}: a pd-pool without a valid \"prefix\" and \"prefix-len\": left out",
                d.what
            )),
        }
    }
}

/// The relay addresses and the interface of a subnet or a shared network, into `d`.
fn add_relay_and_interface(d: &mut Draft, v: &Value, warnings: &mut Vec<String>) {
    if let Some(relay) = v.get("relay") {
        let listed = array(relay.get("ip-addresses"))
            .chain(relay.get("ip-address"))
            .filter_map(Value::as_str);
        for a in listed {
            match a.parse::<Ipv6Addr>() {
                Ok(a) if !a.is_unspecified() => {
                    if !d.relays.contains(&a) {
                        d.relays.push(a);
                    }
                }
                Ok(_) => {}
                Err(_) => warnings.push(format!(
                    "{}: relay address {a:?} is not an IPv6 address: left out",
                    d.what
                )),
            }
        }
    }
    if d.interface.is_none() {
        d.interface = v
            .get("interface")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
}

/// The unicast addresses of `interfaces-config.interfaces` (`"eth0/2001:db8:1::1"`).
fn interface_addresses(dhcp6: &Value) -> Vec<(String, Ipv6Addr)> {
    let interfaces = dhcp6
        .get("interfaces-config")
        .and_then(|c| c.get("interfaces"));
    array(interfaces)
        .filter_map(Value::as_str)
        .filter_map(|s| {
            let (name, addr) = s.split_once('/')?;
            Some((name.to_owned(), addr.parse().ok()?))
        })
        .collect()
}

/// Where Kea's configuration is: `kea_config` when set, else [`KEA_CONFIG_ENV`] when set and
/// not empty, else [`KEA_CONFIG_DEFAULT`] when it exists. The flag says whether it was named
/// explicitly (then it must be readable).
#[must_use]
pub fn kea_config_path(kea_config: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = kea_config {
        return Some((p.to_owned(), true));
    }
    if let Some(p) = std::env::var_os(KEA_CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let default = Path::new(KEA_CONFIG_DEFAULT);
    default.exists().then(|| (default.to_owned(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_relays_interfaces_and_shared_networks_make_links() {
        let text = r#"{ "Dhcp6": {
          "interfaces-config": { "interfaces": [ "eth1/2001:db8:1::1", "eth2" ] },
          "subnet6": [
            { "id": 1, "subnet": "2001:db8:1::/64", "interface": "eth1",
              "pd-pools": [ { "prefix": "2001:db8:100::", "prefix-len": 40, "delegated-len": 56 } ] },
            { "id": 2, "subnet": "2001:db8:2::/64",
              "relay": { "ip-addresses": [ "2001:db8:ff::2", "2001:db8:ff::22" ] } },
            { "id": 3, "subnet": "2001:db8:3::/64", "relay": { "ip-address": "2001:db8:ff::2" } },
            { "id": 4, "subnet": "not a prefix" }
          ],
          "shared-networks": [ { "name": "sn", "relay": { "ip-addresses": [ "2001:db8:ff::5" ] },
            "subnet6": [ { "id": 5, "subnet": "2001:db8:5::/64" }, { "id": 6, "subnet": "2001:db8:6::/64" } ] } ]
        } }"#;
        let l = KeaLinks::parse(text).unwrap();
        assert_eq!(l.links.len(), 4, "{l:#?}");
        let map = crate::store::LinkMap::new(&l.links).unwrap();
        assert_eq!(map.link_of(a("2001:db8:1::77")), Some(a("2001:db8:1::")));
        assert_eq!(map.link_of(a("2001:db8:1::1")), Some(a("2001:db8:1::")));
        assert!(map.manages(a("2001:db8:100:5500::")));
        assert_eq!(map.link_of(a("2001:db8:ff::22")), Some(a("2001:db8:2::")));
        // The relay address listed twice stays with the first subnet, with a warning.
        assert_eq!(map.link_of(a("2001:db8:ff::2")), Some(a("2001:db8:2::")));
        assert!(l.warnings.iter().any(|w| w.contains("2001:db8:ff::2/128")));
        assert!(l.warnings.iter().any(|w| w.contains("not a prefix")));
        // A shared network is one link.
        assert_eq!(map.link_of(a("2001:db8:6::9")), Some(a("2001:db8:5::")));
        assert_eq!(map.link_of(a("2001:db8:ff::5")), Some(a("2001:db8:5::")));
        assert_eq!(l.subnets[&5], a("2001:db8:5::"));
        assert_eq!(l.subnets[&6], a("2001:db8:5::"));
        assert_eq!(l.subnets[&3], a("2001:db8:3::"));
        assert!(!l.subnets.contains_key(&4));
    }

    #[test]
    fn trailing_commas_are_kea_s_and_strings_keep_theirs() {
        let text = "{ \"Dhcp6\": { \"x\": \",]\", \"subnet6\": [ { \"id\": 1, \"subnet\": \"2001:db8::/64\", }, ], }, }";
        let l = KeaLinks::parse(text).unwrap();
        assert_eq!(l.subnets[&1], a("2001:db8::"));
        assert_eq!(strip_trailing_commas("[\",]\" , ]"), "[\",]\"  ]");
    }

    #[test]
    fn debian_s_own_configuration_reads() {
        // Debian's kea-dhcp6-server ships one, with trailing commas; not every machine has it.
        let p = Path::new(KEA_CONFIG_DEFAULT);
        if p.exists() {
            let l = load_kea_links(p).unwrap();
            assert!(!l.links.is_empty());
        }
    }

    #[test]
    fn nested_subnets_get_distinct_link_addresses() {
        let text = r#"{ "Dhcp6": { "subnet6": [
            { "id": 1, "subnet": "2001:db8::/48" }, { "id": 2, "subnet": "2001:db8::/64" } ] } }"#;
        let l = KeaLinks::parse(text).unwrap();
        assert_eq!(l.subnets[&1], a("2001:db8::"));
        assert_eq!(l.subnets[&2], a("2001:db8::1"));
        let map = crate::store::LinkMap::new(&l.links).unwrap();
        assert_eq!(map.link_of(a("2001:db8::5")), Some(a("2001:db8::1")));
        assert_eq!(map.link_of(a("2001:db8:0:1::5")), Some(a("2001:db8::")));
    }

    #[test]
    fn includes_are_read_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("kea.conf");
        std::fs::write(
            dir.path().join("subnets.json"),
            "# included\n[ { \"id\": 3, \"subnet\": \"2001:db8:3::/64\" } ]",
        )
        .unwrap();
        std::fs::write(
            &main,
            "// top\n{ \"Dhcp6\": { \"subnet6\": <?include \"subnets.json\"?> } }\n",
        )
        .unwrap();
        let l = load_kea_links(&main).unwrap();
        assert_eq!(l.subnets[&3], a("2001:db8:3::"));

        std::fs::write(&main, "{ \"Dhcp6\": <?include \"kea.conf\"?> }").unwrap();
        let e = load_kea_links(&main).unwrap_err();
        assert!(e.to_string().contains("nest deeper"), "{e}");
        std::fs::write(&main, "{ \"Dhcp6\": <?include \"missing.json\"?> }").unwrap();
        let e = load_kea_links(&main).unwrap_err();
        assert!(
            e.to_string().contains("missing.json: cannot read it"),
            "{e}"
        );
        std::fs::write(&main, "{ \"Dhcp6\": { \"subnet6\": [ } }").unwrap();
        let e = load_kea_links(&main).unwrap_err();
        assert!(
            e.to_string()
                .contains("kea.conf: not JSON (comments removed): "),
            "{e}"
        );
        std::fs::write(&main, "{ \"Dhcp4\": {} }").unwrap();
        let e = load_kea_links(&main).unwrap_err();
        assert!(e.to_string().contains("no \"Dhcp6\" object"), "{e}");
    }
}
