//! lqd in front of a real Kea DHCPv6 server (Debian's `kea-dhcp6-server`, 2.2), following its
//! memfile lease file with the `kea-csv` source (issue 6, point 4).
//!
//! The lab: Kea runs in a network namespace of its own (`…-s`), joined by a veth pair to a
//! client namespace (`…-c`) where `tests/peers/kea_client.py` (built on dhcpkit's codec) plays
//! directly attached clients (link-local, port 546, to ff02::1:2) and two relay agents (RELAY-FORW
//! from port 547 with a relay-id, a remote-id and an interface-id, for two remote links). Kea
//! stores extended info (the relays' options) and cleans its lease file up every 2 seconds
//! (`lfc-interval`), so the run crosses real lease file cleanups. lqd and `lq watch` run on
//! loopback in the test's own namespace; lqd reads Kea's file and Kea's configuration (for the
//! subnets of directly attached clients).
//!
//! The test drives SOLICIT/REQUEST, RENEW and RELEASE exchanges, NA and PD, relayed and not,
//! one at a time, and after each waits for `lq watch` to show exactly the client's new leases:
//! each must show within 1 second of the client sending the message that makes Kea write the
//! lease (an upper bound on the time from Kea's write). At the end, with Kea stopped, the leases
//! in Kea's files (read here independently: Kea's load order, the last row per lease wins) must
//! equal `lq watch`'s replica (its state file, and the lifetimes it was last told), and a Bulk
//! query of every query type (link-address, client-id, relay-id, remote-id, address), and a UDP
//! query by address and by client-id, must agree with the file.
//!
//! Needs root, `ip netns`, Debian's `kea-dhcp6-server` and the dhcpkit venv (`.ci/setup`
//! installs them); without them the test fails, it never skips.

#[path = "common/lqd.rs"]
mod common;
#[path = "common/lq.rs"]
mod lq;
#[path = "common/peers.rs"]
mod peers;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Lqd, start_with_source_env, wait_for_log};
use lq::{Bindings, LqWatch, diff, state, wait_until};
use peers::{ip, is_root, peer_python, quiet, repo};
use serde_json::{Value, json};

/// The directly attached link (Kea's subnet 1 on its interface) and the two relayed links.
const LINK_DIRECT: &str = "2001:db8:1::1";
const LINK_A: &str = "2001:db8:2::1";
const LINK_B: &str = "2001:db8:3::1";
/// Kea's lifetimes (preferred, valid), the same for every subnet.
const VALID: u64 = 3600;
/// The longest a change may take from the client's message to `lq watch`'s output.
const DEADLINE: Duration = Duration::from_secs(1);

/// A relay agent of the lab: its DUID (relay-id) and the link its clients are on.
struct Relay {
    link: &'static str,
    relay_id: &'static str,
}

const RELAY_A: Relay = Relay {
    link: LINK_A,
    relay_id: "000300010200000000aa",
};
const RELAY_B: Relay = Relay {
    link: LINK_B,
    relay_id: "0002000009bf72656c61792d62",
};
/// The enterprise number of the relays' remote-ids.
const REMOTE_ID_ENTERPRISE: u32 = 3561;

/// A client of the scenario: how it reaches Kea and what it asks for.
struct Scripted {
    name: &'static str,
    relay: Option<&'static Relay>,
    na: bool,
    pd: bool,
}

impl Scripted {
    fn remote_id(&self) -> String {
        hex::encode(format!("port-{}", self.name))
    }

    fn bind_command(&self) -> Value {
        let relay = self.relay.map(|r| {
            json!({
                "link": r.link,
                "relay_id": r.relay_id,
                "remote_id": [REMOTE_ID_ENTERPRISE, self.remote_id()],
                "interface_id": hex::encode(format!("eth0/{}", self.name)),
            })
        });
        json!({"op": "bind", "name": self.name, "na": self.na, "pd": self.pd, "relay": relay})
    }
}

fn clients() -> Vec<Scripted> {
    let c = |name, relay, na, pd| Scripted {
        name,
        relay,
        na,
        pd,
    };
    vec![
        c("d1", None, true, true),
        c("d2", None, true, false),
        c("d3", None, false, true),
        c("a1", Some(&RELAY_A), true, true),
        c("a2", Some(&RELAY_A), true, false),
        c("a3", Some(&RELAY_A), false, true),
        c("b1", Some(&RELAY_B), true, true),
        c("b2", Some(&RELAY_B), true, true),
        c("d4", None, true, true),
        c("a4", Some(&RELAY_A), true, true),
    ]
}

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
        assert!(
            is_root(),
            "the Kea end-to-end test needs root (network namespaces)"
        );
        let tag = format!("lqk{}", std::process::id());
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
        std::fs::write(&lab.config, kea_config(&s_if, &lab.lease_file)).unwrap();
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
/// the relays, each with an address pool and a prefix-delegation pool; extended info stored;
/// lease file cleanup every 2 seconds.
fn kea_config(interface: &str, lease_file: &Path) -> String {
    format!(
        r#"// Written by tests/kea_e2e.rs.
{{
  "Dhcp6": {{
    "interfaces-config": {{ "interfaces": [ "{interface}/2001:db8:1::1" ] }},
    "lease-database": {{
      "type": "memfile", "persist": true, "name": "{lease}", "lfc-interval": 2
    }},
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
      /* The second relay's link. */
      {{ "id": 3, "subnet": "2001:db8:3::/64",
         "pools": [ {{ "pool": "2001:db8:3::100-2001:db8:3::1ff" }} ],
         "pd-pools": [ {{ "prefix": "2001:db8:300::", "prefix-len": 40, "delegated-len": 56 }} ] }}
    ],
    "loggers": [ {{ "name": "kea-dhcp6", "output_options": [ {{ "output": "stdout" }} ],
                    "severity": "INFO" }} ]
  }}
}}
"#,
        lease = lease_file.display()
    )
}

/// lqd's links: one per Kea subnet, its prefix and its delegated-prefix pool.
const LQD_LINKS: &str = r#"
[[link]]
address = "2001:db8:1::1"
prefixes = ["2001:db8:1::/64"]
pd_pools = ["2001:db8:100::/40"]

[[link]]
address = "2001:db8:2::1"
prefixes = ["2001:db8:2::/64"]
pd_pools = ["2001:db8:200::/40"]

[[link]]
address = "2001:db8:3::1"
prefixes = ["2001:db8:3::/64"]
pd_pools = ["2001:db8:300::/40"]
"#;

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

/// Waits until `lq watch` shows exactly the leases the client reported (each ending no
/// earlier than its message's time plus the valid lifetime, so that a renewal shows as new);
/// returns the time from the message to that moment.
fn wait_seen(lqd: &Lqd, watch: &LqWatch, answer: &Value, what: &str) -> Duration {
    let duid = answer["duid"].as_str().unwrap().to_owned();
    let sent = answer["sent"].as_f64().unwrap();
    let want: BTreeSet<(Ipv6Addr, u8)> = leases_of(answer)
        .into_iter()
        .map(|(a, l, _)| (a, l))
        .collect();
    #[allow(clippy::cast_possible_truncation)]
    let not_before = sent.floor() as i64 + i64::try_from(VALID).unwrap() - 1;
    let give_up = Instant::now() + DEADLINE * 5;
    loop {
        let view = watch_view(watch);
        let have = view.get(&duid);
        let matches = match have {
            None => want.is_empty(),
            Some(ls) => {
                ls.iter().map(|(a, l, _)| (*a, *l)).collect::<BTreeSet<_>>() == want
                    && ls.iter().all(|(_, _, until)| *until >= not_before)
            }
        };
        if matches {
            return Duration::from_secs_f64((unix_now() - sent).max(0.0));
        }
        assert!(
            Instant::now() < give_up,
            "{what}: lq watch never showed {want:?} for {duid} (it shows {have:?}; lqd answers \
             {:?})\n{}",
            lq_json(lqd, &["bulk", "--client-id", &duid]),
            watch.transcript()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

#[test]
fn lq_watch_follows_a_real_kea_server_through_lqd() {
    let dir = std::env::temp_dir().join(format!("lqd-kea-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut lab = KeaLab::start(&dir);
    lab.start_kea();

    let source = format!("kea-csv:{}", lab.lease_file.display());
    let config = lab.config.display().to_string();
    let lqd = start_with_source_env(
        "kea-e2e",
        &["--source", &source],
        LQD_LINKS,
        &format!("source: {source}"),
        &[("LQD_KEA_CONFIG", &config)],
    );
    let state_file = dir.join("lq-state.json");
    let state_arg = state_file.display().to_string();
    let watch = LqWatch::start(
        &dir,
        "kea",
        lqd.addr,
        &[
            "--link",
            LINK_DIRECT,
            "--link",
            LINK_A,
            "--link",
            LINK_B,
            "--state",
            &state_arg,
            "--save-interval",
            "0.2",
        ],
    );
    watch.wait_events("synced", 1, 10);

    let scripted = clients();
    let mut client = ClientProcess::start(&lab);
    let mut latencies: Vec<(String, Duration)> = Vec::new();
    let mut step = |client: &mut ClientProcess, command: Value, what: String| {
        let answer = client.run(&command, &lab);
        let took = wait_seen(&lqd, &watch, &answer, &what);
        latencies.push((what, took));
        answer
    };

    // Every client binds (the last two come later).
    let mut leased = BTreeMap::new();
    for c in &scripted[..8] {
        let a = step(&mut client, c.bind_command(), format!("bind {}", c.name));
        let n = a["leases"].as_array().unwrap().len();
        assert_eq!(n, usize::from(c.na) + usize::from(c.pd), "{a}");
        leased.insert(c.name, a);
    }
    // A renewal writes new end times: let a second pass so that they differ.
    std::thread::sleep(Duration::from_millis(1500));
    for c in &scripted[..8] {
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
    for c in &scripted[8..] {
        let a = step(&mut client, c.bind_command(), format!("bind {}", c.name));
        leased.insert(c.name, a);
    }
    std::thread::sleep(Duration::from_millis(1100));
    for name in ["d1", "a1", "d4"] {
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

    let mut sorted: Vec<Duration> = latencies.iter().map(|(_, d)| *d).collect();
    sorted.sort();
    let worst = latencies.iter().max_by_key(|(_, d)| *d).unwrap();
    eprintln!(
        "{} changes; from the client's message to lq watch: median {:?}, max {:?} ({}); \
         lease file cleanups seen by lqd: {cleanups_before}+",
        latencies.len(),
        sorted[sorted.len() / 2],
        worst.1,
        worst.0
    );
    assert!(
        worst.1 <= DEADLINE,
        "{} took {:?} to reach lq watch: {latencies:?}",
        worst.0,
        worst.1
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

    // A Bulk query of every type agrees with the file. The clients' DUIDs as the client
    // script reported them.
    let duid_of: HashMap<&str, String> = leased
        .iter()
        .map(|(n, a)| (*n, a["duid"].as_str().unwrap().to_owned()))
        .collect();
    let subnet_link = |s: u32| [LINK_DIRECT, LINK_A, LINK_B][usize::try_from(s).unwrap() - 1];
    for link in [LINK_DIRECT, LINK_A, LINK_B] {
        let want = kea_bindings(&kea, |_, l| subnet_link(l.subnet) == link);
        let got = lq_json(&lqd, &["bulk", "--link-address", link]);
        assert!(
            same_with_times(&got, &want),
            "bulk by link-address {link}: {}",
            diff(&without_times(&got), &without_times(&want))
        );
    }
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
    for relay in [&RELAY_A, &RELAY_B] {
        let relayed: BTreeSet<&str> = scripted
            .iter()
            .filter(|c| c.relay.is_some_and(|r| r.relay_id == relay.relay_id))
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
    for c in scripted.iter().filter(|c| c.relay.is_some()) {
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
    wait_for_log(&lqd, "the lease file was replaced", 1);
}

/// Waits for lqd to have seen `n` replacements of the lease file (cleanups); returns how many
/// it has logged.
fn wait_for_replacements(lqd: &Lqd, n: usize) -> usize {
    let count = || lqd.log().matches("the lease file was replaced").count();
    wait_until(10, || count() >= n);
    count()
}
