//! lqd in front of a real Kea DHCPv6 server (Debian's `kea-dhcp6-server`, 2.2), following its
//! memfile lease file with the `kea-csv` source (issue 6, point 4; issue 15).
//!
//! The lab: Kea runs in a network namespace of its own (`…-s`), joined by a veth pair to a
//! client namespace (`…-c`) where `tests/peers/kea_client.py` (built on dhcpkit's codec) plays
//! directly attached clients (link-local, port 546, to ff02::1:2) and relay agents (RELAY-FORW
//! from port 547, each layer with a relay-id, a remote-id and an interface-id): two relays on
//! subnet 2 (link-addresses `2001:db8:2::1` and `::2`), on subnet 3 one relay inside its prefix,
//! one whose link-address is outside it but listed as the subnet's relay address, and a
//! two-hop chain whose inner relay's link-address is `2001:db8:3::5`, and a shared network of
//! subnets 4 and 5 (subnet 4's pools hold one lease each, so that Kea leases from subnet 5 to
//! the next client of the same relay). Kea stores extended info and cleans its lease file up
//! every 2 seconds (`lfc-interval`), so the run crosses real lease file cleanups.
//!
//! lqd runs on loopback in the test's own namespace with **no configuration file**: only
//! `--listen`, `--source kea-csv:…`, `--state-dir` and `LQD_KEA_CONFIG`; its links are Kea's
//! subnets (D30). An unfiltered Active query in the test itself, and `lq watch` by link, follow
//! it.
//!
//! The test drives SOLICIT/REQUEST, RENEW and RELEASE exchanges, NA and PD, relayed and not,
//! one at a time, and after each waits for the Active query to show exactly the client's new
//! leases. The time from Kea's write of the lease file (seen by the test's own inotify watch
//! on Kea's directory) to the message that shows it is measured, and the time from the
//! client's message (before Kea's write: an upper bound of it); the median of the upper bound
//! must be under 5 ms (issue 15), and no change may take more than 1 second. At
//! the end, with Kea stopped, the leases in Kea's files (read here independently: Kea's load
//! order, the last row per lease wins) must equal `lq watch`'s replica, and a Bulk query of
//! every query type, and a UDP query by address and by client-id, must agree with the file; a
//! Bulk query by link-address for any address of a subnet (its prefix, its relays' addresses)
//! returns every lease of its link (a shared network is one link) and nothing else.
//! OPTION_LQ_RELAY_DATA, asked for by Bulk and by UDP, must hold the relay chain the client
//! script sent, each layer's hop count, link-address, peer-address, interface-id, remote-id and
//! relay-id (D29).
//!
//! Needs root, `ip netns`, Debian's `kea-dhcp6-server` and the dhcpkit venv (`.ci/setup`
//! installs them); without them the test fails, it never skips.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;
#[path = "common/peers.rs"]
mod peers;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/watching.rs"]
mod watching;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Lqd, wait_for_log};
use inotify::{Inotify, WatchMask};
use lq::{Bindings, LqWatch, diff, state, wait_until};
use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, OptionCode,
    QueryType,
};
use peers::{ip, is_root, peer_python, quiet, repo};
use serde_json::{Value, json};

/// A relay agent of the lab: its link-address, its DUID (relay-id) and the address it sends
/// from (the peer-address of a relay outside it).
struct Relay {
    link: &'static str,
    relay_id: &'static str,
    address: &'static str,
}

const fn relay(link: &'static str, relay_id: &'static str) -> Relay {
    Relay {
        link,
        relay_id,
        address: "::",
    }
}

/// Subnet 2: two relays, two link-addresses inside the prefix.
const RELAY_A: Relay = relay("2001:db8:2::1", "000300010200000000aa");
const RELAY_A2: Relay = relay("2001:db8:2::2", "000300010200000000ab");
/// Subnet 3: a relay inside the prefix, and one whose link-address is listed as the subnet's
/// relay address (outside the prefix).
const RELAY_B: Relay = relay("2001:db8:3::1", "0002000009bf72656c61792d62");
const RELAY_B2: Relay = relay("2001:db8:ff03::1", "0002000009bf72656c61792d6232");
/// A two-hop chain into subnet 3: the outer relay's link is in no subnet, the inner relay's
/// link-address is inside subnet 3.
const OUTER_C: Relay = relay("2001:db8:f0::1", "000300010200000000cc");
const INNER_C: Relay = Relay {
    link: "2001:db8:3::5",
    relay_id: "000300010200000000cd",
    address: "2001:db8:3::5",
};
/// The shared network of subnets 4 and 5: a relay in each.
const RELAY_S4: Relay = relay("2001:db8:4::1", "000300010200000000d4");
const RELAY_S5: Relay = relay("2001:db8:5::1", "000300010200000000d5");
/// Kea's lifetimes (preferred, valid), the same for every subnet.
const VALID: u64 = 3600;
/// The longest a change may take from the client's message to the Active query.
const DEADLINE: Duration = Duration::from_secs(1);
/// The median time from Kea's write to the Active query may not exceed this (issue 15).
const MEDIAN_FROM_WRITE: Duration = Duration::from_millis(5);
/// The enterprise number of the relays' remote-ids.
const REMOTE_ID_ENTERPRISE: u32 = 3561;

/// The links, each with its Kea subnets and addresses that must name it (its prefix's first
/// address, relays' link-addresses, any address inside, a listed relay address).
const LINKS: &[(&[u32], &[&str])] = &[
    (
        &[1],
        &[
            "2001:db8:1::",
            "2001:db8:1::1",
            "2001:db8:1::2",
            "2001:db8:1::abcd",
        ],
    ),
    (
        &[2],
        &[
            "2001:db8:2::",
            "2001:db8:2::1",
            "2001:db8:2::2",
            "2001:db8:2::beef",
        ],
    ),
    (
        &[3],
        &[
            "2001:db8:3::",
            "2001:db8:3::1",
            "2001:db8:3::5",
            "2001:db8:ff03::1",
        ],
    ),
    (
        &[4, 5],
        &[
            "2001:db8:4::1",
            "2001:db8:4::9",
            "2001:db8:5::1",
            "2001:db8:5::abc",
        ],
    ),
];

/// A client of the scenario: how it reaches Kea (its relays, outer first) and what it asks
/// for.
struct Scripted {
    name: &'static str,
    relays: &'static [&'static Relay],
    na: bool,
    pd: bool,
}

impl Scripted {
    /// The remote-id and interface-id of relay layer `i` (outer first): the innermost relay's
    /// remote-id is `port-NAME`, an outer one's `aggI-NAME`.
    fn ids(&self, i: usize) -> (String, String) {
        let remote = if i + 1 == self.relays.len() {
            format!("port-{}", self.name)
        } else {
            format!("agg{i}-{}", self.name)
        };
        (
            hex::encode(remote),
            hex::encode(format!("eth{i}/{}", self.name)),
        )
    }

    fn remote_id(&self) -> String {
        hex::encode(format!("port-{}", self.name))
    }

    fn bind_command(&self) -> Value {
        let relay = (!self.relays.is_empty()).then(|| {
            Value::Array(
                self.relays
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let (remote, interface) = self.ids(i);
                        json!({
                            "link": r.link,
                            "relay_id": r.relay_id,
                            "address": r.address,
                            "remote_id": [REMOTE_ID_ENTERPRISE, remote],
                            "interface_id": interface,
                        })
                    })
                    .collect(),
            )
        });
        json!({"op": "bind", "name": self.name, "na": self.na, "pd": self.pd, "relay": relay})
    }
}

/// Every client; the last two bind after the first lease file cleanup.
fn clients() -> Vec<Scripted> {
    let c = |name, relays, na, pd| Scripted {
        name,
        relays,
        na,
        pd,
    };
    vec![
        c("d1", &[], true, true),
        c("d2", &[], true, false),
        c("d3", &[], false, true),
        c("a1", &[&RELAY_A], true, true),
        c("a2", &[&RELAY_A], true, false),
        c("a3", &[&RELAY_A], false, true),
        c("a5", &[&RELAY_A2], true, true),
        c("b1", &[&RELAY_B], true, true),
        c("b2", &[&RELAY_B], true, true),
        c("b3", &[&RELAY_B2], true, false),
        c("c1", &[&OUTER_C, &INNER_C], true, true),
        c("s1", &[&RELAY_S4], true, true),
        c("s2", &[&RELAY_S4], true, true),
        c("s3", &[&RELAY_S5], true, false),
        c("d4", &[], true, true),
        c("a4", &[&RELAY_A], true, true),
    ]
}

/// How many clients bind before the first cleanup.
const FIRST: usize = 14;

/// Kea in a network namespace, and the client namespace beside it.
struct KeaLab {
    tag: String,
    dir: PathBuf,
    config: PathBuf,
    lease_file: PathBuf,
    kea: Option<Child>,
}

impl KeaLab {
    fn ns(&self, side: char) -> String {
        format!("{}-{side}", self.tag)
    }

    fn start(dir: &Path) -> Self {
        Self::start_with(dir, None)
    }

    /// The lab with `lease_db` as Kea's `lease-database` (JSON) instead of its memfile.
    fn start_with(dir: &Path, lease_db: Option<&str>) -> Self {
        assert!(
            is_root(),
            "the Kea end-to-end test needs root (network namespaces)"
        );
        // One lab per test: the tests of this file run side by side in one process, so the
        // process id alone would give both the same namespaces (and one would delete the other's).
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("lqk{}{n}", std::process::id() % 1_000_000);
        let lab = Self {
            tag: tag.clone(),
            dir: dir.to_owned(),
            config: dir.join("kea-dhcp6.conf"),
            lease_file: dir.join("kea-leases6.csv"),
            kea: None,
        };
        let (s, c) = (lab.ns('s'), lab.ns('c'));
        let (s_if, c_if) = (format!("{tag}s"), format!("{tag}c"));
        quiet("ip", &["netns", "del", &s]);
        quiet("ip", &["netns", "del", &c]);
        ip(&["netns", "add", &s]);
        ip(&["netns", "add", &c]);
        ip(&["link", "add", &s_if, "type", "veth", "peer", "name", &c_if]);
        ip(&["link", "set", &s_if, "netns", &s]);
        ip(&["link", "set", &c_if, "netns", &c]);
        ip(&[
            "-n",
            &s,
            "addr",
            "add",
            "2001:db8:1::1/64",
            "dev",
            &s_if,
            "nodad",
        ]);
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            "2001:db8:1::2/64",
            "dev",
            &c_if,
            "nodad",
        ]);
        for (ns, dev) in [(&s, &s_if), (&c, &c_if)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The link-local addresses (Kea answers direct clients from it, to theirs) must finish
        // duplicate address detection first.
        let settled = wait_until(10, || {
            [(&s, &s_if), (&c, &c_if)].iter().all(|(ns, dev)| {
                let out = Command::new("ip")
                    .args(["-n", ns, "-6", "addr", "show", "dev", dev])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                text.contains("scope link") && !text.contains("tentative")
            })
        });
        assert!(settled, "the veth link-local addresses stayed tentative");
        std::fs::write(
            &lab.config,
            kea_config(&s_if, &lab.lease_file, dir, lease_db),
        )
        .unwrap();
        lab
    }

    fn start_kea(&mut self) {
        let log = self.dir.join("kea.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns('s'), "kea-dhcp6", "-c"])
            .arg(&self.config)
            .env("KEA_LOCKFILE_DIR", &self.dir)
            .env("KEA_PIDFILE_DIR", &self.dir)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start kea-dhcp6 (Debian's kea-dhcp6-server is needed): {e}")
            });
        self.kea = Some(child);
        let started = wait_until(10, || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("DHCP6_STARTED"))
        });
        assert!(
            started,
            "kea-dhcp6 did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// SIGTERM to Kea, and waits for it to end: its files are then still.
    fn stop_kea(&mut self) {
        if let Some(mut k) = self.kea.take() {
            quiet("kill", &["-TERM", &k.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while k.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = k.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn kea_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kea.log")).unwrap_or_default()
    }
}

impl Drop for KeaLab {
    fn drop(&mut self) {
        self.stop_kea();
        for side in ['s', 'c'] {
            let ns = self.ns(side);
            // Whatever still runs in the namespace was started here.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    quiet("kill", &["-KILL", pid]);
                }
            }
            quiet("ip", &["netns", "del", &ns]);
        }
    }
}

/// Kea's configuration: subnet 1 on the interface (direct clients), subnets 2 and 3 behind
/// relays (3 also by a listed relay address), the shared network of subnets 4 and 5 (4's pools
/// hold one lease each), each with an address pool and a prefix-delegation pool; extended info
/// stored; lease file cleanup every 2 seconds. Kea's own syntax: comments, a trailing comma,
/// and the shared network in a file of its own, included.
fn kea_config(interface: &str, lease_file: &Path, dir: &Path, lease_db: Option<&str>) -> String {
    let memfile = format!(
        r#"{{ "type": "memfile", "persist": true, "name": "{}", "lfc-interval": 2 }}"#,
        lease_file.display()
    );
    std::fs::write(
        dir.join("kea-shared.json"),
        r#"# The shared network, included by kea-dhcp6.conf.
[ { "name": "sn",
    "subnet6": [
      { "id": 4, "subnet": "2001:db8:4::/64",
        "pools": [ { "pool": "2001:db8:4::100-2001:db8:4::100" } ],
        "pd-pools": [ { "prefix": "2001:db8:400::", "prefix-len": 56, "delegated-len": 56 } ] },
      { "id": 5, "subnet": "2001:db8:5::/64",
        "pools": [ { "pool": "2001:db8:5::100-2001:db8:5::1ff" } ],
        "pd-pools": [ { "prefix": "2001:db8:500::", "prefix-len": 40, "delegated-len": 56 } ] },
    ] } ]
"#,
    )
    .unwrap();
    format!(
        r#"// Written by tests/kea_e2e.rs.
{{
  "Dhcp6": {{
    "interfaces-config": {{ "interfaces": [ "{interface}/2001:db8:1::1" ] }},
    "lease-database": {lease_db},
    "store-extended-info": true,
    "preferred-lifetime": 1800, "valid-lifetime": {VALID},
    "renew-timer": 900, "rebind-timer": 1400,
    "server-id": {{ "type": "EN", "enterprise-id": 2495, "identifier": "6b6561", "persist": false }},
    "subnet6": [
      {{ "id": 1, "subnet": "2001:db8:1::/64", "interface": "{interface}",
         "pools": [ {{ "pool": "2001:db8:1::100-2001:db8:1::1ff" }} ],
         "pd-pools": [ {{ "prefix": "2001:db8:100::", "prefix-len": 40, "delegated-len": 56 }} ] }},
      {{ "id": 2, "subnet": "2001:db8:2::/64",
         "pools": [ {{ "pool": "2001:db8:2::100-2001:db8:2::1ff" }} ],
         "pd-pools": [ {{ "prefix": "2001:db8:200::", "prefix-len": 40, "delegated-len": 56 }} ] }},
      /* The second relay's link, also selected by a relay address outside it. */
      {{ "id": 3, "subnet": "2001:db8:3::/64",
         "relay": {{ "ip-addresses": [ "2001:db8:ff03::1" ] }},
         "pools": [ {{ "pool": "2001:db8:3::100-2001:db8:3::1ff" }} ],
         "pd-pools": [ {{ "prefix": "2001:db8:300::", "prefix-len": 40, "delegated-len": 56 }} ] }},
    ],
    "shared-networks": <?include "{shared}"?>,
    "loggers": [ {{ "name": "kea-dhcp6", "output_options": [ {{ "output": "stdout" }} ],
                    "severity": "INFO" }} ]
  }}
}}
"#,
        lease_db = lease_db.unwrap_or(&memfile),
        shared = dir.join("kea-shared.json").display(),
    )
}

/// The scripted client process in the client namespace.
struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn start(lab: &KeaLab) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab.ns('c')])
            .arg(peer_python())
            .arg(repo().join("tests/peers/kea_client.py"))
            .args([&format!("{}c", lab.tag), "2001:db8:1::1", "2001:db8:1::2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Self {
            child,
            stdin,
            stdout,
        };
        let ready = p.read();
        assert_eq!(ready["ready"], true, "{ready}");
        p
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the client script ended");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Runs one command; panics with the script's error when it fails.
    fn run(&mut self, command: &Value, lab: &KeaLab) -> Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self.read();
        assert_eq!(
            answer["ok"],
            true,
            "{command} failed: {answer}\nKea's log:\n{}",
            lab.kea_log()
        );
        answer
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A lease as `lq` prints it: address or prefix, length, and the Unix time it ends.
type Lease = (Ipv6Addr, u8, i64);

fn leases_of(v: &Value) -> BTreeSet<Lease> {
    v["leases"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    (
                        l["address"].as_str().unwrap().parse().unwrap(),
                        u8::try_from(l["prefix_len"].as_u64().unwrap()).unwrap(),
                        l["valid_until_unix_s"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `lq watch`'s current view, from its events: client DUID (hex) → leases.
fn watch_view(watch: &LqWatch) -> BTreeMap<String, BTreeSet<Lease>> {
    let mut view = BTreeMap::new();
    for e in watch.events() {
        let id = e["client_id"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str() {
            Some("added" | "updated") => {
                view.insert(id, leases_of(&e));
            }
            Some("removed") => {
                view.remove(&id);
            }
            _ => {}
        }
    }
    view.retain(|_, l| !l.is_empty());
    view
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// When Kea wrote its lease file: the test's own inotify watch on Kea's directory, a time for
/// every write event of the lease file's name (the file Kea writes now, whichever inode).
struct KeaWrites {
    times: Arc<Mutex<Vec<SystemTime>>>,
}

impl KeaWrites {
    fn start(lease_file: &Path) -> Self {
        let times = Arc::new(Mutex::new(Vec::new()));
        let mut inotify = Inotify::init().unwrap();
        inotify
            .watches()
            .add(lease_file.parent().unwrap(), WatchMask::MODIFY)
            .unwrap();
        let name = lease_file.file_name().unwrap().to_owned();
        let t = Arc::clone(&times);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                let Ok(events) = inotify.read_events_blocking(&mut buffer) else {
                    return;
                };
                let now = SystemTime::now();
                if events.into_iter().any(|e| e.name == Some(name.as_os_str())) {
                    t.lock().unwrap().push(now);
                }
            }
        });
        Self { times }
    }

    /// The time of the write that lqd's message at `seen` showed: the last write seen from
    /// `sent` to `seen`. The test's watch wakes on the same event as lqd's and may run later
    /// than lqd's whole path: then the first write seen after `sent` (waited for up to a
    /// second), and the time from it is counted as zero.
    fn write_for(&self, sent: SystemTime, seen: SystemTime) -> Option<SystemTime> {
        let give_up = Instant::now() + Duration::from_secs(1);
        loop {
            {
                let times = self.times.lock().unwrap();
                let after = times.iter().filter(|w| **w >= sent);
                let first = after.clone().next().copied();
                if let Some(w) = after.rev().find(|w| **w <= seen) {
                    return Some(*w);
                }
                if first.is_some() {
                    return first;
                }
            }
            if Instant::now() > give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A message of the Active query: when it arrived, and the client and the live leases of each
/// OPTION_CLIENT_DATA in it.
struct Arrival {
    at: SystemTime,
    clients: Vec<(String, BTreeSet<(Ipv6Addr, u8)>)>,
}

/// An unfiltered ACTIVELEASEQUERY to lqd, read on a thread of its own: every message is
/// stamped when it arrives.
struct ActiveQuery {
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

impl ActiveQuery {
    fn start(lqd: &Lqd) -> Self {
        let mut s = TcpStream::connect(lqd.addr).unwrap();
        s.set_nodelay(true).unwrap();
        let query = MessageBuilder::active_leasequery(0x00ac71)
            .client_id(&common::REQUESTOR)
            .build_frame()
            .unwrap();
        s.write_all(&query).unwrap();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let a = Arc::clone(&arrivals);
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 65536];
            let mut dec = FrameDecoder::default();
            loop {
                let n = match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let at = SystemTime::now();
                buf.extend_from_slice(&chunk[..n]);
                let mut pos = 0;
                while let Ok(Decoded::Frame { message, consumed }) = dec.decode(&buf[pos..]) {
                    let m = MessageRepr::parse(message).unwrap();
                    let clients = m
                        .options
                        .iter()
                        .filter_map(|o| match o {
                            DhcpOption::ClientData(cd) => Some(cd),
                            _ => None,
                        })
                        .map(|cd| {
                            let id = hex::encode(cd.client_id().unwrap().as_bytes());
                            let live = cd
                                .iter()
                                .filter_map(|o| match o {
                                    DhcpOption::IaAddr(x) if x.valid_lifetime > 0 => {
                                        Some((x.address, 128))
                                    }
                                    DhcpOption::IaPrefix(p) if p.valid_lifetime > 0 => {
                                        Some((p.prefix, p.prefix_len))
                                    }
                                    _ => None,
                                })
                                .collect();
                            (id, live)
                        })
                        .collect();
                    a.lock().unwrap().push(Arrival { at, clients });
                    pos += consumed;
                }
                buf.drain(..pos);
            }
        });
        Self { arrivals }
    }

    /// Waits for the first message after `sent` that shows exactly `want` for `duid`; returns
    /// when it arrived.
    fn wait_for(
        &self,
        duid: &str,
        want: &BTreeSet<(Ipv6Addr, u8)>,
        sent: SystemTime,
    ) -> Option<SystemTime> {
        let give_up = Instant::now() + DEADLINE * 5;
        while Instant::now() < give_up {
            let found = self.arrivals.lock().unwrap().iter().find_map(|a| {
                (a.at >= sent
                    && a.clients
                        .iter()
                        .any(|(id, live)| id == duid && live == want))
                .then_some(a.at)
            });
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        None
    }
}

/// Waits until the Active query shows exactly the leases the client reported; returns the
/// time from Kea's last write before that message, and from the client's message.
fn wait_seen(
    active: &ActiveQuery,
    writes: &KeaWrites,
    answer: &Value,
    what: &str,
) -> (Duration, Duration) {
    let duid = answer["duid"].as_str().unwrap().to_owned();
    let sent = UNIX_EPOCH + Duration::from_secs_f64(answer["sent"].as_f64().unwrap());
    let want: BTreeSet<(Ipv6Addr, u8)> = leases_of(answer)
        .into_iter()
        .map(|(a, l, _)| (a, l))
        .collect();
    let Some(seen) = active.wait_for(&duid, &want, sent) else {
        panic!("{what}: the Active query never showed {want:?} for {duid}");
    };
    let written = writes
        .write_for(sent, seen)
        .unwrap_or_else(|| panic!("{what}: no write of Kea's lease file seen"));
    (
        seen.duration_since(written).unwrap_or_default(),
        seen.duration_since(sent).unwrap_or_default(),
    )
}

/// One row of Kea's lease file, the columns this test needs (read by header name).
#[derive(Debug, Clone)]
struct KeaLease {
    duid: String,
    valid: u64,
    expire: i64,
    subnet: u32,
    prefix_len: u8,
    state: u32,
}

/// The leases in Kea's files, read as Kea loads them at start: `.completed` if there is one,
/// else `.2` then `.1`, then the file itself; the last row for (type, address) wins.
fn kea_leases(file: &Path) -> HashMap<(u8, Ipv6Addr), KeaLease> {
    let with = |s: &str| PathBuf::from(format!("{}{s}", file.display()));
    let mut files = if with(".completed").exists() {
        vec![with(".completed")]
    } else {
        vec![with(".2"), with(".1")]
    };
    files.push(file.to_owned());
    let mut leases = HashMap::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (address, duid, valid, expire, subnet, kind, plen, st) = (
            col("address"),
            col("duid"),
            col("valid_lifetime"),
            col("expire"),
            col("subnet_id"),
            col("lease_type"),
            col("prefix_len"),
            col("state"),
        );
        for line in lines.filter(|l| !l.is_empty() && !l.starts_with("address,")) {
            let f: Vec<&str> = line.split(',').collect();
            leases.insert(
                (f[kind].parse().unwrap(), f[address].parse().unwrap()),
                KeaLease {
                    duid: f[duid].replace(':', ""),
                    valid: f[valid].parse().unwrap(),
                    expire: f[expire].parse().unwrap(),
                    subnet: f[subnet].parse().unwrap(),
                    prefix_len: f[plen].parse().unwrap(),
                    state: f[st].parse().unwrap(),
                },
            );
        }
    }
    leases
}

/// The live leases of Kea's files (state default, valid lifetime not zero), as bindings with
/// their end times, for the clients `keep` accepts.
fn kea_bindings(
    leases: &HashMap<(u8, Ipv6Addr), KeaLease>,
    keep: impl Fn(&str, &KeaLease) -> bool,
) -> BTreeMap<String, BTreeSet<Lease>> {
    let mut out: BTreeMap<String, BTreeSet<Lease>> = BTreeMap::new();
    for ((_, address), l) in leases {
        if l.state == 0 && l.valid > 0 && keep(&l.duid, l) {
            out.entry(l.duid.clone())
                .or_default()
                .insert((*address, l.prefix_len, l.expire));
        }
    }
    out
}

fn without_times(b: &BTreeMap<String, BTreeSet<Lease>>) -> Bindings {
    b.iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|(a, l, _)| (*a, *l)).collect()))
        .collect()
}

/// Runs `lq ARGS --server lqd --json` and returns the live bindings it printed.
fn lq_json(lqd: &Lqd, args: &[&str]) -> BTreeMap<String, BTreeSet<Lease>> {
    let out = Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(&args[..1])
        .args(["--server", &lqd.addr.to_string(), "--json"])
        .args(&args[1..])
        .output()
        .unwrap();
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "lq {args:?} failed ({code:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = unix_now();
    let mut found: BTreeMap<String, BTreeSet<Lease>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        #[allow(clippy::cast_precision_loss)]
        let live: BTreeSet<Lease> = leases_of(&v)
            .into_iter()
            .filter(|(_, _, until)| *until as f64 > now)
            .collect();
        if !live.is_empty() {
            found
                .entry(v["client_id"].as_str().unwrap().to_owned())
                .or_default()
                .extend(live);
        }
    }
    found
}

/// End times may differ by a second: lqd sends lifetimes relative to its base time and `lq`
/// maps them back to local time.
fn same_with_times(
    a: &BTreeMap<String, BTreeSet<Lease>>,
    b: &BTreeMap<String, BTreeSet<Lease>>,
) -> bool {
    without_times(a) == without_times(b)
        && a.iter()
            .all(|(k, ls)| ls.iter().zip(&b[k]).all(|(x, y)| (x.2 - y.2).abs() <= 1))
}

/// Starts lqd with no configuration file: its links come from Kea's (`LQD_KEA_CONFIG`).
fn start_lqd(dir: &Path, source: &str, kea_config: &Path) -> Lqd {
    start_lqd_until(dir, source, kea_config, &format!("source: {source}"))
}

/// The same, waiting for a log line holding `ready`.
fn start_lqd_until(dir: &Path, source: &str, kea_config: &Path, ready: &str) -> Lqd {
    let port = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let state = dir.join("lqd");
    std::fs::create_dir_all(&state).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_lqd"))
        .args([
            "--listen",
            &addr.to_string(),
            "--source",
            source,
            "--state-dir",
        ])
        .arg(&state)
        .env("LQD_KEA_CONFIG", kea_config)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(state.join("lqd.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let lqd = Lqd {
        child,
        addr,
        dir: state,
    };
    wait_for_log(&lqd, ready, 20);
    lqd
}

/// The OPTION_LQ_RELAY_DATA a reply holds (inside its OPTION_CLIENT_DATA for Bulk, at the top
/// for UDP), read by hand: peer-address, then each RELAY-FORW layer, outer first, as (hop
/// count, link-address, peer-address, options by code).
type Layer = (u8, Ipv6Addr, Ipv6Addr, BTreeMap<u16, Vec<u8>>);

fn options(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let code = u16::from_be_bytes([b[0], b[1]]);
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        assert!(b.len() >= 4 + len, "an option runs past its container");
        out.push((code, &b[4..4 + len]));
        b = &b[4 + len..];
    }
    assert!(b.is_empty(), "octets after the last option");
    out
}

fn relay_data_in(message: &[u8], udp: bool) -> Option<(Ipv6Addr, Vec<Layer>)> {
    let top = options(&message[4..]);
    let data = if udp {
        top.iter().find(|(c, _)| *c == 47).map(|(_, v)| *v)
    } else {
        let cd = top.iter().find(|(c, _)| *c == 45)?.1;
        options(cd)
            .into_iter()
            .find(|(c, _)| *c == 47)
            .map(|(_, v)| v)
    }?;
    let peer = Ipv6Addr::from(<[u8; 16]>::try_from(&data[..16]).unwrap());
    let mut layers = Vec::new();
    let mut m = &data[16..];
    loop {
        assert_eq!(m[0], 12, "not a RELAY-FORW");
        let link = Ipv6Addr::from(<[u8; 16]>::try_from(&m[2..18]).unwrap());
        let layer_peer = Ipv6Addr::from(<[u8; 16]>::try_from(&m[18..34]).unwrap());
        let opts = options(&m[34..]);
        let inner = opts.iter().find(|(c, _)| *c == 9).map(|(_, v)| *v);
        let map = opts
            .iter()
            .filter(|(c, _)| *c != 9)
            .map(|(c, v)| (*c, v.to_vec()))
            .collect();
        layers.push((m[1], link, layer_peer, map));
        match inner {
            Some(i) => m = i,
            None => return Some((peer, layers)),
        }
    }
}

#[test]
fn lq_watch_follows_a_real_kea_server_through_lqd() {
    let dir = std::env::temp_dir().join(format!("lqd-kea-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = KeaLab::start(&dir);
    lab.start_kea();
    let writes = KeaWrites::start(&lab.lease_file);

    let source = format!("kea-csv:{}", lab.lease_file.display());
    let lqd = start_lqd(&dir, &source, &lab.config);
    wait_for_log(&lqd, "4 links taken from Kea's configuration", 1);
    let active = ActiveQuery::start(&lqd);
    let state_file = dir.join("lq-state.json");
    let state_arg = state_file.display().to_string();
    let mut watch_args: Vec<&str> = Vec::new();
    for (_, addresses) in LINKS {
        watch_args.extend(["--link", addresses[1]]);
    }
    watch_args.extend(["--state", &state_arg, "--save-interval", "0.2"]);
    let watch = LqWatch::start(&dir, "kea", lqd.addr, &watch_args);
    watch.wait_events("synced", 1, 10);

    let scripted = clients();
    let mut client = ClientProcess::start(&lab);
    let mut latencies: Vec<(String, Duration, Duration)> = Vec::new();
    let mut step = |client: &mut ClientProcess, command: Value, what: String| {
        let answer = client.run(&command, &lab);
        let (from_write, from_message) = wait_seen(&active, &writes, &answer, &what);
        latencies.push((what, from_write, from_message));
        answer
    };

    // Every client binds (the last two come later).
    let mut leased = BTreeMap::new();
    for c in &scripted[..FIRST] {
        let a = step(&mut client, c.bind_command(), format!("bind {}", c.name));
        let n = a["leases"].as_array().unwrap().len();
        assert_eq!(n, usize::from(c.na) + usize::from(c.pd), "{a}");
        leased.insert(c.name, a);
    }
    // A renewal writes new end times: let a second pass so that they differ.
    std::thread::sleep(Duration::from_millis(1100));
    for c in &scripted[..FIRST] {
        step(
            &mut client,
            json!({"op": "renew", "name": c.name}),
            format!("renew {}", c.name),
        );
    }
    // Wait for a lease file cleanup to have happened, then release some and bind new ones.
    let lfc = wait_until(10, || {
        PathBuf::from(format!("{}.2", lab.lease_file.display())).exists()
    });
    assert!(lfc, "Kea ran no lease file cleanup:\n{}", lab.kea_log());
    for name in ["d2", "a2", "b1"] {
        step(
            &mut client,
            json!({"op": "release", "name": name}),
            format!("release {name}"),
        );
    }
    for c in &scripted[FIRST..] {
        let a = step(&mut client, c.bind_command(), format!("bind {}", c.name));
        leased.insert(c.name, a);
    }
    std::thread::sleep(Duration::from_millis(1100));
    for name in ["d1", "a1", "d4", "c1", "s2"] {
        step(
            &mut client,
            json!({"op": "renew", "name": name}),
            format!("renew {name}"),
        );
    }
    // Another cleanup while everything is quiet, then Kea stops: its files are final.
    let cleanups_before = wait_for_replacements(&lqd, 1);
    std::thread::sleep(Duration::from_millis(2500));
    lab.stop_kea();

    let mut from_write: Vec<Duration> = latencies.iter().map(|l| l.1).collect();
    from_write.sort();
    let mut from_message: Vec<Duration> = latencies.iter().map(|l| l.2).collect();
    from_message.sort();
    let worst = latencies.iter().max_by_key(|l| l.2).unwrap();
    let median = from_write[from_write.len() / 2];
    // The time from the client's message bounds the time from Kea's write from above.
    let median_bound = from_message[from_message.len() / 2];
    eprintln!(
        "{} changes; from Kea's write of the lease file to the Active requestor: median {:?}, \
         p90 {:?}, max {:?}; from the client's message: median {:?}, max {:?} ({}); lease \
         file cleanups seen by lqd: {cleanups_before}+",
        latencies.len(),
        median,
        from_write[from_write.len() * 9 / 10],
        from_write[from_write.len() - 1],
        from_message[from_message.len() / 2],
        worst.2,
        worst.0
    );
    assert!(
        worst.2 <= DEADLINE,
        "{} took {:?} to reach the Active query: {latencies:?}",
        worst.0,
        worst.2
    );
    assert!(
        median_bound < MEDIAN_FROM_WRITE,
        "the median time from Kea's write to the Active query is {median:?}, and from the \
         client's message {median_bound:?}: {latencies:?}"
    );

    // The replica equals the leases in Kea's files.
    let kea = kea_leases(&lab.lease_file);
    let truth = kea_bindings(&kea, |_, _| true);
    assert_eq!(
        truth.len(),
        scripted.len() - 3,
        "Kea's file: {truth:#?}\n{}",
        lab.kea_log()
    );
    let view = watch_view(&watch);
    assert!(
        same_with_times(&view, &truth),
        "lq watch's view vs Kea's file: {}",
        diff(&without_times(&view), &without_times(&truth))
    );
    // The shared network leased from both its subnets.
    for subnet in [4, 5] {
        assert!(
            kea.values().any(|l| l.subnet == subnet && l.valid > 0),
            "Kea leased nothing from subnet {subnet}: {kea:#?}"
        );
    }
    let saved = wait_until(5, || {
        state(&state_file).is_some_and(|(_, b)| b == without_times(&truth))
    });
    assert!(
        saved,
        "the replica in the state file differs from Kea's file: {}",
        state(&state_file).map_or_else(
            || "no state file".to_owned(),
            |(_, b)| diff(&b, &without_times(&truth))
        )
    );

    // Bulk by link-address for any address of a subnet: every lease of its link, and nothing
    // else.
    for (subnets, addresses) in LINKS {
        let want = kea_bindings(&kea, |_, l| subnets.contains(&l.subnet));
        assert!(!want.is_empty(), "no lease in subnets {subnets:?}");
        for link in *addresses {
            let got = lq_json(&lqd, &["bulk", "--link-address", link]);
            assert!(
                same_with_times(&got, &want),
                "bulk by link-address {link} (subnets {subnets:?}): {}",
                diff(&without_times(&got), &without_times(&want))
            );
        }
    }

    // A Bulk query of every other type agrees with the file. The clients' DUIDs as the client
    // script reported them.
    let duid_of: HashMap<&str, String> = leased
        .iter()
        .map(|(n, a)| (*n, a["duid"].as_str().unwrap().to_owned()))
        .collect();
    for duid in truth.keys().chain(duid_of.values()) {
        let want = kea_bindings(&kea, |d, _| d == duid);
        let got = lq_json(&lqd, &["bulk", "--client-id", duid]);
        assert!(
            same_with_times(&got, &want),
            "bulk by client-id {duid}: {got:?} vs {want:?}"
        );
        let got = lq_json(&lqd, &["query", "--client-id", duid]);
        assert!(
            same_with_times(&got, &want),
            "UDP query by client-id {duid}: {got:?} vs {want:?}"
        );
    }
    for relay in [
        &RELAY_A, &RELAY_A2, &RELAY_B, &RELAY_B2, &OUTER_C, &INNER_C, &RELAY_S4, &RELAY_S5,
    ] {
        let relayed: BTreeSet<&str> = scripted
            .iter()
            .filter(|c| c.relays.iter().any(|r| r.relay_id == relay.relay_id))
            .map(|c| duid_of[c.name].as_str())
            .collect();
        let want = kea_bindings(&kea, |d, _| relayed.contains(d));
        let got = lq_json(&lqd, &["bulk", "--relay-id", relay.relay_id]);
        assert!(
            same_with_times(&got, &want),
            "bulk by relay-id {}: {}",
            relay.relay_id,
            diff(&without_times(&got), &without_times(&want))
        );
    }
    for c in scripted.iter().filter(|c| !c.relays.is_empty()) {
        let duid = &duid_of[c.name];
        let want = kea_bindings(&kea, |d, _| d == duid);
        let remote = format!("{REMOTE_ID_ENTERPRISE}:{}", c.remote_id());
        let got = lq_json(&lqd, &["bulk", "--remote-id", &remote]);
        assert!(
            same_with_times(&got, &want),
            "bulk by remote-id {remote}: {got:?} vs {want:?}"
        );
    }
    for ((_, address), l) in kea.iter().filter(|(_, l)| l.state == 0 && l.valid > 0) {
        let want = kea_bindings(&kea, |d, _| *d == l.duid);
        let a = address.to_string();
        let got = lq_json(&lqd, &["bulk", "--address", &a]);
        assert!(
            same_with_times(&got, &want),
            "bulk by address {a}: {got:?} vs {want:?}"
        );
        let got = lq_json(&lqd, &["query", "--address", &a]);
        assert!(
            same_with_times(&got, &want),
            "UDP query by address {a}: {got:?} vs {want:?}"
        );
    }
    // A released address that no one took since is no one's.
    for name in ["d2", "a2", "b1"] {
        for (address, _, _) in leases_of(&leased[name]) {
            let taken = kea
                .iter()
                .any(|((_, a), l)| *a == address && l.state == 0 && l.valid > 0);
            if !taken {
                let got = lq_json(&lqd, &["bulk", "--address", &address.to_string()]);
                assert!(got.is_empty(), "released {address} still answers: {got:?}");
            }
        }
    }

    // OPTION_LQ_RELAY_DATA, by Bulk and by UDP: the chain the client's relays sent (D29).
    let mut checked_hops = BTreeSet::new();
    for c in scripted.iter().filter(|c| !c.relays.is_empty()) {
        let duid = hex::decode(&duid_of[c.name]).unwrap();
        let client_ll: Ipv6Addr = leased[c.name]["link_local"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let want: Vec<Layer> = c
            .relays
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (remote, interface) = c.ids(i);
                let mut remote_opt = REMOTE_ID_ENTERPRISE.to_be_bytes().to_vec();
                remote_opt.extend(hex::decode(remote).unwrap());
                let peer = c
                    .relays
                    .get(i + 1)
                    .map_or(client_ll, |inner| inner.address.parse().unwrap());
                let opts = BTreeMap::from([
                    (18, hex::decode(interface).unwrap()),
                    (37, remote_opt),
                    (53, hex::decode(r.relay_id).unwrap()),
                ]);
                (
                    u8::try_from(c.relays.len() - 1 - i).unwrap(),
                    r.link.parse().unwrap(),
                    peer,
                    opts,
                )
            })
            .collect();
        let outer_link: Ipv6Addr = c.relays[0].link.parse().unwrap();
        let query = |xid: u32| {
            MessageBuilder::leasequery(xid)
                .client_id(&common::REQUESTOR)
                .lq_query(QueryType::ByClientId, Ipv6Addr::UNSPECIFIED, |q| {
                    q.client_id(&duid).oro(&[OptionCode::LqRelayData])
                })
        };
        let mut tcp = lqd.connect();
        tcp.write_all(&query(0x4701).build_frame().unwrap())
            .unwrap();
        let answers = common::read_answers(&mut tcp, &[0x4701]);
        let bulk: Vec<_> = answers
            .iter()
            .filter_map(|m| relay_data_in(m, false))
            .collect();
        let udp = UdpSocket::bind("[::1]:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        udp.send_to(&query(0x4702).build().unwrap(), lqd.addr)
            .unwrap();
        let mut buf = [0u8; 65536];
        let n = udp.recv(&mut buf).unwrap();
        let by_udp = relay_data_in(&buf[..n], true);
        if kea_bindings(&kea, |d, _| *d == duid_of[c.name]).is_empty() {
            continue; // released: no binding to carry it
        }
        for (how, got) in [("Bulk", bulk.first().cloned()), ("UDP", by_udp)] {
            let (peer, layers) =
                got.unwrap_or_else(|| panic!("{}: no OPTION_LQ_RELAY_DATA by {how}", c.name));
            assert_eq!(layers, want, "{}: the relay chain by {how}", c.name);
            assert_eq!(
                peer, outer_link,
                "{}: peer-address by {how}: the outer relay's link-address (D29)",
                c.name
            );
        }
        checked_hops.insert(c.relays.len());
    }
    assert_eq!(
        checked_hops,
        BTreeSet::from([1, 2]),
        "relay data checked for one-hop and two-hop chains"
    );
    wait_for_log(&lqd, "the lease file was replaced", 1);
}

/// Waits for lqd to have seen `n` replacements of the lease file (cleanups); returns how many
/// it has logged.
fn wait_for_replacements(lqd: &Lqd, n: usize) -> usize {
    let count = || lqd.log().matches("the lease file was replaced").count();
    wait_until(10, || count() >= n);
    count()
}

/// Issue 18, real parts: Kea 2.2 with its leases in PostgreSQL (`lease-database` type
/// `postgresql`, the database made by `kea-admin db-init pgsql`), serving real clients and
/// relays in the lab's namespaces, followed by two lqd instances through logical replication,
/// each with its own slot. Both must end with the table's leases, report each client's last
/// change with the same base-time (its commit time, D33), and give the same Bulk answer to
/// every query type (bindings, lifetimes, relay data, base-time).
#[test]
fn two_lqd_instances_follow_kea_on_postgresql_alike() {
    use lqd::requestor::Query;
    use watching::{Seen, Watching};

    let dir = std::env::temp_dir().join(format!("lqd-kea-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pg = pg::Pg::start("kea-e2e");
    pg.kea_db("kea");
    // Kea in its namespace reaches PostgreSQL by its Unix socket (trust: the test's cluster).
    let lease_db = format!(
        r#"{{ "type": "postgresql", "name": "kea", "host": "{}", "port": {}, "user": "kea", "password": "{}" }}"#,
        pg.socket_dir().display(),
        pg.port,
        pg::KEA_PASSWORD
    );
    let mut lab = KeaLab::start_with(&dir, Some(&lease_db));
    lab.start_kea();
    let secret = dir.join("pgpass");
    std::fs::write(&secret, format!("{}\n", pg::KEA_PASSWORD)).unwrap();
    let source = |slot: &str| {
        format!(
            "kea-pgsql:{}&password_file={}",
            pg.uri("kea", slot),
            secret.display()
        )
    };
    let a = start_lqd_until(
        &dir.join("a"),
        &source("lqd_ka"),
        &lab.config,
        "following the stream",
    );
    let b = start_lqd_until(
        &dir.join("b"),
        &source("lqd_kb"),
        &lab.config,
        "following the stream",
    );
    let (wa, wb) = (Watching::start(&a, None), Watching::start(&b, None));
    std::thread::sleep(Duration::from_millis(300));

    let scripted = clients();
    let chosen: Vec<&Scripted> = scripted
        .iter()
        .filter(|c| ["d1", "d2", "a1", "a5", "b1", "c1", "s1", "s3"].contains(&c.name))
        .collect();
    let mut client = ClientProcess::start(&lab);
    let mut duids = BTreeMap::new();
    for c in &chosen {
        let answer = client.run(&c.bind_command(), &lab);
        duids.insert(c.name, answer["duid"].as_str().unwrap().to_owned());
    }
    std::thread::sleep(Duration::from_millis(1100));
    for name in ["a1", "c1"] {
        client.run(&json!({"op": "renew", "name": name}), &lab);
    }
    client.run(&json!({"op": "release", "name": "d2"}), &lab);

    // Both instances hold the table's leases, link by link.
    let table: BTreeSet<(String, Ipv6Addr, u8)> = pg
        .sql(
            "kea",
            "SELECT encode(duid, 'hex'), address, CASE WHEN lease_type = 2 THEN prefix_len \
             ELSE 128 END FROM lease6 WHERE state = 0 AND valid_lifetime > 0",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(table.len() >= 10, "{table:?}");
    let links: Vec<Query> = LINKS
        .iter()
        .map(|(_, addresses)| Query::LinkAddress(addresses[0].parse().unwrap()))
        .collect();
    let held = |lqd: &Lqd| -> BTreeSet<(String, Ipv6Addr, u8)> {
        let mut conn =
            lqd::requestor::Connection::open(lqd.addr, &common::REQUESTOR, None).unwrap();
        let mut all = BTreeSet::new();
        for q in &links {
            for d in &mut conn.bulk(q, lqd::requestor::TimeWindow::ALL).unwrap() {
                let d = d.unwrap();
                for l in &d.leases {
                    all.insert((hex::encode(&d.client_id), l.address, l.prefix_len));
                }
            }
        }
        all
    };
    for (name, lqd) in [("A", &a), ("B", &b)] {
        let equal = wait_until(10, || held(lqd) == table);
        assert!(
            equal,
            "{name} holds the table's leases: {:?} vs {table:?}",
            held(lqd)
        );
    }

    // Each client's last change reported alike by both, with the same base-time.
    let last = |w: &Watching| -> BTreeMap<String, Seen> {
        let mut m = BTreeMap::new();
        for s in w.drain(Duration::from_secs(1)) {
            if let Seen::Binding { client, .. } = &s {
                m.insert(client.clone(), s.clone());
            }
        }
        m
    };
    let (la, lb) = (last(&wa), last(&wb));
    assert_eq!(la.len(), chosen.len(), "every client reported: {la:#?}");
    assert_eq!(
        la, lb,
        "each client's last change alike, base-time included"
    );

    // Every query type's Bulk answer alike.
    let any = Ipv6Addr::UNSPECIFIED;
    let a1 = chosen.iter().find(|c| c.name == "a1").unwrap();
    let mut queries = links.clone();
    queries.extend([
        Query::ClientId {
            duid: hex::decode(&duids["a1"]).unwrap(),
            link: any,
        },
        Query::RelayId {
            duid: hex::decode(RELAY_B.relay_id).unwrap(),
            link: any,
        },
        Query::RemoteId {
            enterprise_number: REMOTE_ID_ENTERPRISE,
            remote_id: hex::decode(a1.remote_id()).unwrap(),
            link: any,
        },
    ]);
    if let Some((_, addr, _)) = table.iter().find(|(d, _, l)| *d == duids["c1"] && *l < 128) {
        queries.push(Query::Address {
            address: *addr,
            link: any,
        });
    }
    let (qa, qb) = (
        watching::bulk_answers(&a, &queries),
        watching::bulk_answers(&b, &queries),
    );
    for (x, y) in qa.iter().zip(&qb) {
        assert!(!x.1.0.is_empty(), "{} answered nothing", x.0);
        assert_eq!(x, y, "the same Bulk answer from both instances");
    }
    assert_eq!(qa.len(), queries.len());
    lab.stop_kea();
}
