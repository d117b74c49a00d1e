//! dhcpkit 1.0.7's DHCPv6 server (PyPI) as a Leasequery and Bulk Leasequery server for the
//! requestor tests, with leases it handed out itself; and dhcpkit's own requestor CLI,
//! `ipv6-dhcp-test-leasequery`, to ask it.
//!
//! The server runs in a network namespace of its own (`…-s`, interface `srv0`, a ULA made of the
//! test's pid and tag: dhcpkit's TCP listener refuses `::1`) reached over a veth pair from a
//! requestor namespace (`…-r`, interface `lan0`), where the requestors run. `lan0` has three
//! addresses: the requestor's (the only one the server's `allow-from` lists), the relay's
//! (deprecated, `preferred_lft 0`, so that no requestor picks it as a source) and `fe80::1`
//! (the CLI's `-i` only offers interfaces with a link-local address).
//!
//! Start-up, in [`DhcpkitServer::start`]:
//! - `tests/peers/dhcpkit_server.py` runs dhcpkit's server with two run-time patches for
//!   Python 3.11 (its SQLite store's `VACUUM` inside a transaction; its pool's pre-3.8
//!   `ApplyResult` call), see that file; `max-exceptions` is set high so that one bad packet
//!   cannot stop it.
//! - Its config: UDP and TCP listeners on the server's address, rapid commit allowed, static
//!   assignments from a CSV file (by DUID, or by the relay's remote-id for the client that is on
//!   two links), the `leasequery` handler with an SQLite store, and a `server-unicast` handler
//!   for the requestor's subnet only: without it, dhcpkit answers every unicast LEASEQUERY, UDP or
//!   TCP, with a REPLY (type 7) carrying UseMulticast.
//! - dhcpkit's store only knows leases from its own REPLY messages, so
//!   `tests/peers/dhcpkit_populate.py` plays a relay agent (RELAY-FORW around a SOLICIT with
//!   Rapid Commit, built with dhcpkit's codec) for every client of [`clients`]; each REPLY must
//!   hand out exactly the client's addresses and prefixes.
//!
//! Drop sends SIGTERM to the server, SIGKILL to whatever still runs in the two namespaces (all
//! started here), deletes the namespaces and, unless the test failed, the temporary directory.
//!
//! Needs root and `ip netns`; without them it panics, it never skips. The Python is
//! `$LQD_PEER_PYTHON`, else `<repo>/.venv-peers/bin/python` (made by `.ci/setup`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::peers::{
    between, cli_command, cli_duid, cli_reply_blocks, ip, is_root, peer_python, quiet, repo,
};

/// The server's interface, in the server namespace.
pub(crate) const SERVER_IF: &str = "srv0";
/// The requestor namespace's interface.
pub(crate) const REQUESTOR_IF: &str = "lan0";
/// The two links the clients are on, as the relay's link-address names them.
pub(crate) const LINK_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1);
pub(crate) const LINK_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 1);
/// Lifetimes the server gives (preferred, valid): distinct, so that a mix-up shows.
pub(crate) const ADDRESS_LIFETIMES: (u32, u32) = (3600, 7200);
pub(crate) const PREFIX_LIFETIMES: (u32, u32) = (10800, 14400);
/// How long any peer command may take before it is killed and the test fails.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// A client the server hands leases to, on one link.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    pub(crate) name: &'static str,
    pub(crate) duid: Vec<u8>,
    pub(crate) link: Ipv6Addr,
    /// OPTION_REMOTE_ID the relay adds (enterprise number, value).
    pub(crate) remote_id: Option<(u32, Vec<u8>)>,
    pub(crate) addresses: Vec<Ipv6Addr>,
    pub(crate) prefixes: Vec<(Ipv6Addr, u8)>,
}

impl Client {
    /// The binding a Leasequery answer must hold for this client (lifetimes as handed out).
    pub(crate) fn binding(&self) -> Binding {
        Binding {
            client_id: self.duid.clone(),
            clt: Some(0),
            addresses: self
                .addresses
                .iter()
                .map(|a| (*a, ADDRESS_LIFETIMES))
                .collect(),
            prefixes: self
                .prefixes
                .iter()
                .map(|p| (*p, PREFIX_LIFETIMES))
                .collect(),
        }
    }

    /// The line of the static-assignment CSV that gives this client its leases: by DUID, or by
    /// the relay's remote-id for a DUID that is on more than one link (`shared`).
    fn csv_line(&self, shared: bool) -> String {
        let id = match &self.remote_id {
            Some((e, r)) if shared => format!("remote-id:{e}:{}", hex::encode(r)),
            _ => format!("duid:{}", hex::encode(&self.duid)),
        };
        let address = self.addresses.first().map(|a| a.to_string());
        let prefix = self.prefixes.first().map(|(p, l)| format!("{p}/{l}"));
        format!(
            "{id},{},{}\n",
            address.unwrap_or_default(),
            prefix.unwrap_or_default()
        )
    }

    fn ias(&self) -> &'static str {
        match (self.addresses.is_empty(), self.prefixes.is_empty()) {
            (false, false) => "na,pd",
            (false, true) => "na",
            (true, false) => "pd",
            (true, true) => unreachable!("a client without leases"),
        }
    }
}

fn a(segments: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::from(segments)
}

/// The clients: three DUID types, IA_NA and IA_PD, two links, and one client (`m`, the same
/// DUID) on both links with different leases, assigned by the relay's remote-id.
pub(crate) fn clients() -> Vec<Client> {
    let ll = |tail: u8| vec![0, 3, 0, 1, 2, 0, 0, 0, 0x0a, tail];
    let en = |id: &[u8]| [&[0, 2, 0, 0, 0x7e, 0xd9][..], id].concat();
    let m = vec![0, 3, 0, 1, 2, 0, 0, 0, 0x0c, 0x01];
    vec![
        Client {
            name: "a1",
            duid: ll(0xa1),
            link: LINK_A,
            remote_id: None,
            addresses: vec![a([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0xa1])],
            prefixes: vec![(a([0x2001, 0xdb8, 0xa1, 0, 0, 0, 0, 0]), 48)],
        },
        Client {
            name: "a2",
            // DUID-LLT.
            duid: vec![0, 1, 0, 1, 0x2a, 0x2a, 0x2a, 0x2a, 2, 0, 0, 0, 0x0a, 0xa2],
            link: LINK_A,
            remote_id: Some((9, b"port-a2".to_vec())),
            addresses: vec![a([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0xa2])],
            prefixes: vec![],
        },
        Client {
            name: "a3",
            duid: en(b"lqd-a3"),
            link: LINK_A,
            remote_id: None,
            addresses: vec![],
            prefixes: vec![(a([0x2001, 0xdb8, 0xa3, 0, 0, 0, 0, 0]), 56)],
        },
        Client {
            name: "b1",
            duid: ll(0xb1),
            link: LINK_B,
            remote_id: None,
            addresses: vec![a([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0xb1])],
            prefixes: vec![(a([0x2001, 0xdb8, 0xb1, 0, 0, 0, 0, 0]), 48)],
        },
        Client {
            name: "b2",
            duid: en(b"lqd-b2"),
            link: LINK_B,
            remote_id: None,
            addresses: vec![a([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0xb2])],
            prefixes: vec![],
        },
        Client {
            name: "m-a",
            duid: m.clone(),
            link: LINK_A,
            remote_id: Some((9, b"m-on-a".to_vec())),
            addresses: vec![a([0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0xc1])],
            prefixes: vec![],
        },
        Client {
            name: "m-b",
            duid: m,
            link: LINK_B,
            remote_id: Some((9, b"m-on-b".to_vec())),
            addresses: vec![a([0x2001, 0xdb8, 0xb, 0, 0, 0, 0, 0xc1])],
            prefixes: vec![(a([0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 0]), 56)],
        },
    ]
}

/// One client's data in a Leasequery answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Binding {
    pub(crate) client_id: Vec<u8>,
    /// OPTION_CLT_TIME, when the answer has one.
    pub(crate) clt: Option<u32>,
    /// Address → (preferred, valid).
    pub(crate) addresses: BTreeMap<Ipv6Addr, (u32, u32)>,
    /// (Prefix, length) → (preferred, valid).
    pub(crate) prefixes: BTreeMap<(Ipv6Addr, u8), (u32, u32)>,
}

/// What identifies a binding when lifetimes are left aside.
pub(crate) type BindingKey = (String, Vec<Ipv6Addr>, Vec<(Ipv6Addr, u8)>);

impl Binding {
    pub(crate) fn key(&self) -> BindingKey {
        (
            hex::encode(&self.client_id),
            self.addresses.keys().copied().collect(),
            self.prefixes.keys().copied().collect(),
        )
    }
}

/// Fails unless `got` and `want` hold the same bindings (client, addresses, prefixes), in any
/// order, with lifetimes at most `slack` seconds apart.
pub(crate) fn assert_same_bindings(got: &[Binding], want: &[Binding], slack: u32, what: &str) {
    let keys = |v: &[Binding]| {
        let mut k: Vec<BindingKey> = v.iter().map(Binding::key).collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(got),
        keys(want),
        "{what}: not the same bindings\ngot: {got:#?}\nwant: {want:#?}"
    );
    for g in got {
        let w = want.iter().find(|w| w.key() == g.key()).unwrap();
        let close =
            |x: (u32, u32), y: (u32, u32)| x.0.abs_diff(y.0) <= slack && x.1.abs_diff(y.1) <= slack;
        for (k, l) in &g.addresses {
            assert!(
                close(*l, w.addresses[k]),
                "{what}: lifetimes of {k}: {l:?} vs {:?} (slack {slack} s)",
                w.addresses[k]
            );
        }
        for (k, l) in &g.prefixes {
            assert!(
                close(*l, w.prefixes[k]),
                "{what}: lifetimes of {}/{}: {l:?} vs {:?} (slack {slack} s)",
                k.0,
                k.1,
                w.prefixes[k]
            );
        }
    }
}

/// What a query asks for.
#[derive(Debug, Clone)]
pub(crate) enum Key {
    Address(Ipv6Addr),
    ClientId(Vec<u8>),
    /// QUERY_BY_LINK_ADDRESS for the query's link-address (`::`: every link).
    LinkAddress,
}

/// One reply message as dhcpkit's CLI printed it.
#[derive(Debug, Clone)]
pub(crate) struct CliReply {
    /// dhcpkit's class name, e.g. `LeasequeryReplyMessage`.
    pub(crate) class: String,
    /// The top-level OPTION_STATUS_CODE.
    pub(crate) status: Option<u16>,
    pub(crate) binding: Option<Binding>,
    /// OPTION_LQ_CLIENT_LINK's addresses, sorted.
    pub(crate) client_links: Vec<Ipv6Addr>,
}

/// A command run to its end in a namespace.
pub(crate) struct Run {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// dhcpkit's server in a namespace, populated with [`clients`].
pub(crate) struct DhcpkitServer {
    server: Option<Child>,
    pub(crate) server_ns: String,
    pub(crate) requestor_ns: String,
    pub(crate) dir: PathBuf,
    /// The server's address (UDP and TCP port 547), reachable from the requestor namespace.
    pub(crate) server_addr: Ipv6Addr,
    /// The requestor namespace's source address (the only one allowed to query).
    pub(crate) requestor_addr: Ipv6Addr,
    /// The relay's address, in the requestor namespace.
    pub(crate) relay_addr: Ipv6Addr,
    /// The clients, as the server's REPLY messages gave them their leases.
    pub(crate) clients: Vec<Client>,
    /// When the leases were handed out.
    pub(crate) populated_at: Instant,
    runs: std::cell::Cell<usize>,
}

impl DhcpkitServer {
    /// `tag` (a lowercase letter) keeps the names of parallel tests apart.
    pub(crate) fn start(tag: char) -> Self {
        assert!(
            is_root(),
            "this test needs root: it creates network namespaces and runs dhcpkit's server on \
             port 547 (CI runs it as root)"
        );
        let pid = std::process::id();
        let net = |host: u16| {
            Ipv6Addr::new(
                0xfd6b,
                (pid >> 16) as u16,
                pid as u16,
                tag as u16,
                0,
                0,
                0,
                host,
            )
        };
        let dir = std::env::temp_dir().join(format!("lqd-dks-{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            server: None,
            server_ns: format!("lqd-dks-{tag}-{pid}-s"),
            requestor_ns: format!("lqd-dks-{tag}-{pid}-r"),
            dir,
            server_addr: net(2),
            requestor_addr: net(1),
            relay_addr: net(3),
            clients: clients(),
            populated_at: Instant::now(),
            runs: std::cell::Cell::new(0),
        };
        lab.remove_network();
        lab.make_network();
        lab.start_server();
        lab.populate();
        lab
    }

    fn make_network(&self) {
        let (s, r) = (&self.server_ns, &self.requestor_ns);
        for ns in [s, r] {
            match Command::new("ip").args(["netns", "add", ns]).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!(
                    "`ip netns add {ns}` failed: {} (this test needs network namespaces)",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => panic!("cannot run `ip` (iproute2 is needed): {e}"),
            }
        }
        ip(&[
            "link",
            "add",
            SERVER_IF,
            "netns",
            s,
            "type",
            "veth",
            "peer",
            "name",
            REQUESTOR_IF,
            "netns",
            r,
        ]);
        let cidr = |a: Ipv6Addr| format!("{a}/64");
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &cidr(self.server_addr),
            "dev",
            SERVER_IF,
            "nodad",
        ]);
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &cidr(self.requestor_addr),
            "dev",
            REQUESTOR_IF,
            "nodad",
        ]);
        // Deprecated: the relay binds it explicitly; nothing else picks it as a source.
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &cidr(self.relay_addr),
            "dev",
            REQUESTOR_IF,
            "nodad",
            "preferred_lft",
            "0",
        ]);
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            "fe80::1/64",
            "dev",
            REQUESTOR_IF,
            "nodad",
        ]);
        for (ns, dev) in [(s, "lo"), (s, SERVER_IF), (r, "lo"), (r, REQUESTOR_IF)] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        let (s, r) = (self.server_addr, self.requestor_addr);
        let seg = s.segments();
        let subnet = Ipv6Addr::new(seg[0], seg[1], seg[2], seg[3], 0, 0, 0, 0);
        let (ap, av) = ADDRESS_LIFETIMES;
        let (pp, pv) = PREFIX_LIFETIMES;
        format!(
            "user root\n\
             group root\n\
             pid-file {d}/dhcpkit.pid\n\
             control-socket {d}/dhcpkit.sock\n\
             workers 2\n\
             allow-rapid-commit yes\n\
             max-exceptions 1000000\n\
             <logging>\n  <console>\n    level debug-packets\n  </console>\n</logging>\n\
             <listen-unicast {s} />\n\
             <listen-tcp>\n  address {s}\n  allow-from {r}/128\n</listen-tcp>\n\
             # Unicast LEASEQUERY would get UseMulticast without this; the relay's SOLICITs have\n\
             # link-addresses outside this subnet.\n\
             <subnet {subnet}/64>\n  <server-unicast>\n    address {s}\n  </server-unicast>\n</subnet>\n\
             <leasequery>\n  allow-from {r}/128\n  <lq-sqlite {d}/leasequery.sqlite />\n</leasequery>\n\
             <static-csv {d}/assignments.csv>\n\
             \x20 address-preferred-lifetime {ap}s\n  address-valid-lifetime {av}s\n\
             \x20 prefix-preferred-lifetime {pp}s\n  prefix-valid-lifetime {pv}s\n\
             </static-csv>\n"
        )
    }

    fn start_server(&mut self) {
        let mut csv = String::from("id,address,prefix\n");
        for c in &self.clients {
            let shared = self.clients.iter().filter(|o| o.duid == c.duid).count() > 1;
            csv.push_str(&c.csv_line(shared));
        }
        std::fs::write(self.dir.join("assignments.csv"), csv).unwrap();
        let config = self.dir.join("server.conf");
        std::fs::write(&config, self.config()).unwrap();
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns])
            .arg(peer_python())
            .arg(repo().join("tests/peers/dhcpkit_server.py"))
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while !self.log().contains("server is ready to handle requests") {
            let exited = self.server.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "dhcpkit's server did not start ({exited:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `command` in the requestor namespace with `stdin`, killing it (and failing) after
    /// [`COMMAND_TIMEOUT`].
    pub(crate) fn run(&self, command: &[String], stdin: &str) -> Run {
        self.runs.set(self.runs.get() + 1);
        let n = self.runs.get();
        let out_path = self.dir.join(format!("run-{n}.out"));
        let err_path = self.dir.join(format!("run-{n}.err"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.requestor_ns])
            .args(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        // Written whole before the child reads: small inputs only (the pipe buffer is 64 KiB).
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.as_bytes()).unwrap();
        drop(pipe);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{command:?} did not finish in {COMMAND_TIMEOUT:?}:\n{}\n{}\nserver log:\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default(),
                    std::fs::read_to_string(&err_path).unwrap_or_default(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run {
            status,
            stdout: std::fs::read_to_string(&out_path).unwrap(),
            stderr: std::fs::read_to_string(&err_path).unwrap(),
        }
    }

    /// Has the server hand out every client's leases, through the relay.
    fn populate(&mut self) {
        let mut input = String::new();
        for c in &self.clients {
            let remote = c
                .remote_id
                .as_ref()
                .map_or("-".to_owned(), |(e, r)| format!("{e}:{}", hex::encode(r)));
            writeln!(
                input,
                "{}\t{}\t{}\t{remote}",
                hex::encode(&c.duid),
                c.link,
                c.ias()
            )
            .unwrap();
        }
        let command = [
            peer_python().display().to_string(),
            repo()
                .join("tests/peers/dhcpkit_populate.py")
                .display()
                .to_string(),
            self.server_addr.to_string(),
            self.relay_addr.to_string(),
        ];
        let run = self.run(&command, &input);
        self.populated_at = Instant::now();
        assert!(
            run.status.success(),
            "dhcpkit_populate.py failed ({}): {}\n{}\nserver log:\n{}",
            run.status,
            run.stdout,
            run.stderr,
            self.log()
        );
        let lines: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(lines.len(), self.clients.len(), "{}", run.stdout);
        for (c, line) in self.clients.iter().zip(lines) {
            let f: Vec<&str> = line.split('\t').collect();
            let [duid, link, class, addresses, prefixes] = f[..] else {
                panic!("bad line from dhcpkit_populate.py: {line:?}");
            };
            assert_eq!(
                (duid, link),
                (hex::encode(&c.duid).as_str(), c.link.to_string().as_str())
            );
            assert_eq!(class, "ReplyMessage", "{line}");
            let (ap, av) = ADDRESS_LIFETIMES;
            let (pp, pv) = PREFIX_LIFETIMES;
            let want_addresses: Vec<String> = c
                .addresses
                .iter()
                .map(|a| format!("{a}/{ap}/{av}"))
                .collect();
            let want_prefixes: Vec<String> = c
                .prefixes
                .iter()
                .map(|(p, l)| format!("{p}/{l}/{pp}/{pv}"))
                .collect();
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(",")
                }
            };
            assert_eq!(
                (addresses, prefixes),
                (list(want_addresses).as_str(), list(want_prefixes).as_str()),
                "client {} did not get its leases",
                c.name
            );
        }
    }

    /// Seconds since the leases were handed out, plus two: how far apart lifetimes read now
    /// may be from the ones handed out, or from each other.
    pub(crate) fn slack(&self) -> u32 {
        self.populated_at.elapsed().as_secs() as u32 + 2
    }

    /// The bindings a query must find: the clients that match `key`, on `link` unless that is
    /// `::`.
    pub(crate) fn expected(&self, key: &Key, link: Ipv6Addr) -> Vec<Binding> {
        self.clients
            .iter()
            .filter(|c| link.is_unspecified() || c.link == link)
            .filter(|c| match key {
                Key::Address(x) => {
                    c.addresses.contains(x)
                        || c.prefixes.iter().any(|(p, l)| {
                            let mask = u128::MAX.checked_shl(128 - u32::from(*l)).unwrap_or(0);
                            u128::from(*x) & mask == u128::from(*p)
                        })
                }
                Key::ClientId(d) => c.duid == *d,
                Key::LinkAddress => true,
            })
            .map(Client::binding)
            .collect()
    }

    /// Runs dhcpkit's CLI for one query, over TCP (Bulk) or UDP, and reads its replies.
    pub(crate) fn cli(&self, key: &Key, link: Ipv6Addr, tcp: bool) -> Vec<CliReply> {
        let mut command = cli_command();
        command.extend(["-s".to_owned(), self.server_addr.to_string()]);
        if tcp {
            command.push("-t".to_owned());
        } else {
            command.extend(["-i".to_owned(), REQUESTOR_IF.to_owned()]);
        }
        command.extend(["-L".to_owned(), link.to_string()]);
        match key {
            Key::Address(a) => command.extend(["client-address".to_owned(), a.to_string()]),
            Key::ClientId(d) => command.extend(["client-id".to_owned(), cli_duid(d)]),
            Key::LinkAddress => command.push("link-address".to_owned()),
        }
        let run = self.run(&command, "");
        // The CLI logs to stderr, and exits 0 even when nothing came back.
        let log = format!("{}{}", run.stdout, run.stderr);
        assert!(run.status.success(), "the CLI failed for {key:?}:\n{log}");
        for bad in [
            "[CRITICAL]",
            "[ERROR]",
            "Traceback",
            "UnknownOption",
            "UnknownMessage",
        ] {
            assert!(
                !log.contains(bad),
                "the CLI printed {bad:?} for {key:?}:\n{log}"
            );
        }
        cli_replies(&log)
    }
}

impl Drop for DhcpkitServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SIGTERM lets dhcpkit stop its workers and its forkserver.
            quiet("kill", &["-TERM", &child.id().to_string()]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.remove_network();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl DhcpkitServer {
    /// Kills what still runs in the namespaces (only this test's processes can be there) and
    /// deletes them.
    fn remove_network(&self) {
        for ns in [&self.server_ns, &self.requestor_ns] {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    quiet("kill", &["-KILL", pid]);
                }
            }
            quiet("ip", &["netns", "del", ns]);
        }
    }
}

/// Reads a Python bytes literal (`b'…'` or `b"…"`) at the start of `s`: its value and length.
fn py_bytes(s: &str) -> (Vec<u8>, usize) {
    let b = s.as_bytes();
    assert!(
        b[0] == b'b' && (b[1] == b'\'' || b[1] == b'"'),
        "not a bytes literal: {s}"
    );
    let quote = b[1];
    let mut out = Vec::new();
    let mut i = 2;
    while b[i] != quote {
        if b[i] == b'\\' {
            let (c, used) = match b[i + 1] {
                b'x' => (u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap(), 4),
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                c @ (b'\\' | b'\'' | b'"') => (c, 2),
                c => panic!("unknown escape \\{} in {s}", c as char),
            };
            out.push(c);
            i += used;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (out, i + 1)
}

/// Reads dhcpkit's one-line repr of a DUID at the start of `s`, e.g.
/// `LinkLayerDUID(hardware_type=1, link_layer_address=b'…')`, into the DUID's octets.
fn py_duid(s: &str) -> Vec<u8> {
    let open = s.find('(').unwrap();
    let class = &s[..open];
    let mut fields: Vec<(&str, Vec<u8>, u64)> = Vec::new();
    let mut rest = &s[open + 1..];
    while !rest.starts_with(')') {
        let eq = rest.find('=').unwrap();
        let name = &rest[..eq];
        rest = &rest[eq + 1..];
        if rest.starts_with("b'") || rest.starts_with("b\"") {
            let (v, used) = py_bytes(rest);
            fields.push((name, v, 0));
            rest = &rest[used..];
        } else {
            let end = rest.find([',', ')']).unwrap();
            let n = rest[..end]
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {s}"));
            fields.push((name, Vec::new(), n));
            rest = &rest[end..];
        }
        rest = rest.strip_prefix(", ").unwrap_or(rest);
    }
    let int = |name: &str| {
        fields
            .iter()
            .find(|f| f.0 == name)
            .unwrap_or_else(|| panic!("{name} in {s}"))
            .2
    };
    let bytes = |name: &str| {
        &fields
            .iter()
            .find(|f| f.0 == name)
            .unwrap_or_else(|| panic!("{name} in {s}"))
            .1
    };
    let mut d = Vec::new();
    match class {
        "LinkLayerDUID" => {
            d.extend(3u16.to_be_bytes());
            d.extend((int("hardware_type") as u16).to_be_bytes());
            d.extend(bytes("link_layer_address"));
        }
        "LinkLayerTimeDUID" => {
            d.extend(1u16.to_be_bytes());
            d.extend((int("hardware_type") as u16).to_be_bytes());
            d.extend((int("time") as u32).to_be_bytes());
            d.extend(bytes("link_layer_address"));
        }
        "EnterpriseDUID" => {
            d.extend(2u16.to_be_bytes());
            d.extend((int("enterprise_number") as u32).to_be_bytes());
            d.extend(bytes("identifier"));
        }
        "UnknownDUID" => {
            d.extend((int("duid_type") as u16).to_be_bytes());
            d.extend(bytes("duid_data"));
        }
        other => panic!("unknown DUID class {other} in {s}"),
    }
    d
}

/// The number right after the first `name` in `s`.
fn number_after(s: &str, name: &str) -> u32 {
    let at = s.find(name).unwrap_or_else(|| panic!("no {name} in {s}")) + name.len();
    let digits: String = s[at..].chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {name} in {s}"))
}

/// Reads the one-line repr of an OPTION_CLIENT_DATA.
fn cli_client_data(line: &str) -> Binding {
    let mut b = Binding {
        client_id: py_duid(&line[line.find("ClientIdOption(duid=").unwrap() + 20..]),
        clt: line
            .contains("CLTTimeOption(")
            .then(|| number_after(line, "clt_time=")),
        addresses: BTreeMap::new(),
        prefixes: BTreeMap::new(),
    };
    for (i, _) in line.match_indices("IAAddressOption(") {
        let o = &line[i..];
        let address = between(o, "IPv6Address('", "'").parse().unwrap();
        let lifetimes = (
            number_after(o, "preferred_lifetime="),
            number_after(o, "valid_lifetime="),
        );
        b.addresses.insert(address, lifetimes);
    }
    for (i, _) in line.match_indices("IAPrefixOption(") {
        let o = &line[i..];
        let (p, l) = between(o, "IPv6Network('", "'").split_once('/').unwrap();
        let lifetimes = (
            number_after(o, "preferred_lifetime="),
            number_after(o, "valid_lifetime="),
        );
        b.prefixes
            .insert((p.parse().unwrap(), l.parse().unwrap()), lifetimes);
    }
    b
}

/// The messages in the CLI's log, in the order it received them.
pub(crate) fn cli_replies(log: &str) -> Vec<CliReply> {
    let blocks = cli_reply_blocks(log);
    blocks
        .iter()
        .map(|lines| {
            let first = lines
                .first()
                .unwrap_or_else(|| panic!("an empty reply in\n{log}"));
            let mut reply = CliReply {
                class: first[..first.find('(').unwrap()].to_owned(),
                status: None,
                binding: None,
                client_links: Vec::new(),
            };
            for line in lines.iter().map(|l| l.trim()) {
                if line.starts_with("status_code=") {
                    reply.status = Some(number_after(between(line, "(", ")"), "") as u16);
                } else if line.starts_with("ClientDataOption(") {
                    assert!(reply.binding.is_none(), "two OPTION_CLIENT_DATA in\n{log}");
                    reply.binding = Some(cli_client_data(line));
                } else if line.starts_with("LQClientLink(") {
                    reply.client_links = line
                        .match_indices("IPv6Address('")
                        .map(|(i, m)| between(&line[i..], m, "'").parse().unwrap())
                        .collect();
                    reply.client_links.sort();
                }
            }
            reply
        })
        .collect()
}
