//! dhcpkit 1.0.7 as a requestor against a real lqd process, across network namespaces.
//!
//! - dhcpkit's own requestor CLI, `ipv6-dhcp-test-leasequery`, asks lqd over TCP (Bulk, by
//!   link-address, client-id, client address and relay-id) and over UDP (by client address and
//!   client-id, and the Bulk-only types, which get NotAllowed, D11). Every reply it prints must
//!   have parsed, with no unknown option and no error, and must hold the same clients,
//!   addresses, prefixes, relay-ids and remote-ids as lqd's own answer to the same query, read
//!   here with our codec.
//! - The CLI cannot send a query by remote-id (its `remote-id` subcommand dies on an argparse
//!   attribute name), so `tests/peers/dhcpkit_query.py` sends the queries by relay-id and by
//!   remote-id built from dhcpkit's message classes, parses every reply with dhcpkit and prints
//!   what it found; that too must match lqd's own answers.
//!
//! lqd runs in a namespace of its own on port 547 (the CLI knows no other), reached from this
//! test's namespace over one veth pair and from a requestor namespace, where dhcpkit runs, over
//! another. The CLI binds UDP port 546, so the requestor namespace also keeps parallel runs
//! apart. The demo source changes a lease a second: each comparison asks lqd before and after
//! the peer, and asks again when those two answers differ.
//!
//! Needs root and `ip netns` (CI has both); without them the tests fail, they never skip. The
//! peer runs from the venv made by `.ci/setup` (`<repo>/.venv-peers`), or from the Python named
//! by `$LQD_PEER_PYTHON`, as in `interop_dhcpkit.rs`.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "common/peers.rs"]
mod peers;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType, Status,
};
use peers::{
    between, cli_command, cli_duid, cli_reply_blocks, ip, is_root, peer_python, quiet, repo,
};

const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0x02, 0, 0, 0, 0x5c, 0x11];
const LINKS: u16 = 4;
const DEMO: &str = "clients = 200\nlinks = 4\nchanges_per_sec = 1\nseed = 7\n";
/// The requestor namespace's interface, as the CLI's `-i` wants it.
const REQUESTOR_IF: &str = "lan0";
/// The transaction-ids `dhcpkit_query.py` uses: this plus the query's index.
const SCRIPT_XID_BASE: u32 = 0x4c_5100;
const TIMEOUT: Duration = Duration::from_secs(5);
/// A relay-id and a remote-id no relay uses.
const NO_RELAY: [u8; 8] = [0, 2, 0, 0, 0x7e, 0xd9, 0xde, 0xad];
const NO_REMOTE: &[u8] = b"nobody";

/// What a query asks for.
#[derive(Debug, Clone)]
enum Key {
    Address(Ipv6Addr),
    ClientId(Vec<u8>),
    RelayId(Vec<u8>),
    LinkAddress,
    RemoteId(u32, Vec<u8>),
}

#[derive(Debug, Clone)]
struct Query {
    key: Key,
    link: Ipv6Addr,
    /// Ask for OPTION_LQ_RELAY_DATA (an ORO with 47 inside OPTION_LQ_QUERY).
    relay_data: bool,
}

impl Query {
    fn new(key: Key, link: Ipv6Addr, relay_data: bool) -> Self {
        Self {
            key,
            link,
            relay_data,
        }
    }

    fn build(&self, xid: u32) -> MessageBuilder {
        let query_type = match self.key {
            Key::Address(_) => QueryType::ByAddress,
            Key::ClientId(_) => QueryType::ByClientId,
            Key::RelayId(_) => QueryType::ByRelayId,
            Key::LinkAddress => QueryType::ByLinkAddress,
            Key::RemoteId(..) => QueryType::ByRemoteId,
        };
        MessageBuilder::leasequery(xid)
            .client_id(&REQUESTOR)
            .lq_query(query_type, self.link, |q| {
                let q = match &self.key {
                    Key::Address(a) => q.iaaddr(*a, 0, 0),
                    Key::ClientId(d) => q.client_id(d),
                    Key::RelayId(d) => q.relay_id(d),
                    Key::LinkAddress => q,
                    Key::RemoteId(e, r) => q.remote_id(*e, r),
                };
                if self.relay_data {
                    q.oro(&[OptionCode::LqRelayData])
                } else {
                    q
                }
            })
    }

    /// The CLI's arguments after the common ones.
    fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.relay_data {
            args.push("-R".to_owned());
        }
        args.extend(["-L".to_owned(), self.link.to_string()]);
        match &self.key {
            Key::Address(a) => args.extend(["client-address".to_owned(), a.to_string()]),
            Key::ClientId(d) => args.extend(["client-id".to_owned(), cli_duid(d)]),
            Key::RelayId(d) => args.extend(["relay-id".to_owned(), cli_duid(d)]),
            Key::LinkAddress => args.push("link-address".to_owned()),
            Key::RemoteId(..) => panic!("the CLI cannot send a query by remote-id"),
        }
        args
    }

    /// The query as a line of `dhcpkit_query.py`'s input.
    fn script_line(&self) -> String {
        match &self.key {
            Key::RelayId(d) => format!("relay-id\t{}\t{}\n", self.link, hex::encode(d)),
            Key::RemoteId(e, r) => {
                format!("remote-id\t{}\t{e}\t{}\n", self.link, hex::encode(r))
            }
            _ => panic!("dhcpkit_query.py sends queries by relay-id and remote-id only"),
        }
    }
}

/// One reply message, reduced to what every peer can be compared on (lifetimes and CLT_TIME
/// move with the clock and are left out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Summary {
    class: String,
    status: Option<u16>,
    client: Option<Vec<u8>>,
    addresses: BTreeSet<Ipv6Addr>,
    prefixes: BTreeSet<(Ipv6Addr, u8)>,
    /// Every OPTION_RELAY_ID and OPTION_REMOTE_ID anywhere in the message.
    relay_ids: BTreeSet<Vec<u8>>,
    remote_ids: BTreeSet<(u32, Vec<u8>)>,
}

/// dhcpkit's class for a message type.
fn dhcpkit_class(t: MessageType) -> &'static str {
    match t {
        MessageType::LeasequeryReply => "LeasequeryReplyMessage",
        MessageType::LeasequeryData => "LeasequeryDataMessage",
        MessageType::LeasequeryDone => "LeasequeryDoneMessage",
        other => panic!("unexpected reply type {other}"),
    }
}

/// Reads lqd's message with our codec.
fn summarize(bytes: &[u8]) -> Summary {
    let m = MessageRepr::parse(bytes).unwrap();
    let mut s = Summary {
        class: dhcpkit_class(m.msg_type()).to_owned(),
        status: m.options.status().map(|s| s.status.value()),
        client: None,
        addresses: BTreeSet::new(),
        prefixes: BTreeSet::new(),
        relay_ids: BTreeSet::new(),
        remote_ids: BTreeSet::new(),
    };
    if let Some(DhcpOption::ClientData(cd)) = m.options.get(OptionCode::ClientData) {
        s.client = cd.client_id().map(|d| d.as_bytes().to_vec());
        for o in cd.iter() {
            match o {
                DhcpOption::IaAddr(a) => {
                    s.addresses.insert(a.address);
                }
                DhcpOption::IaPrefix(p) => {
                    s.prefixes.insert((p.prefix, p.prefix_len));
                }
                _ => {}
            }
        }
    }
    m.options.walk(&mut |_, o| match o {
        DhcpOption::RelayId(d) => {
            s.relay_ids.insert(d.as_bytes().to_vec());
        }
        DhcpOption::RemoteId(r) => {
            s.remote_ids
                .insert((r.enterprise_number, r.remote_id.to_vec()));
        }
        _ => {}
    });
    s
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Python's `repr()` of a bytes object.
fn py_bytes(b: &[u8]) -> String {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    let mut s = format!("b{}", quote as char);
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'\t' => s.push_str("\\t"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            _ if c == quote => {
                s.push('\\');
                s.push(c as char);
            }
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push(quote as char);
    s
}

/// How dhcpkit prints a DUID on one line.
fn duid_repr(d: &[u8]) -> String {
    let u16_at = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    match u16_at(0) {
        1 => format!(
            "LinkLayerTimeDUID(hardware_type={}, time={}, link_layer_address={})",
            u16_at(2),
            u32_at(4),
            py_bytes(&d[8..])
        ),
        2 => format!(
            "EnterpriseDUID(enterprise_number={}, identifier={})",
            u32_at(2),
            py_bytes(&d[6..])
        ),
        3 => format!(
            "LinkLayerDUID(hardware_type={}, link_layer_address={})",
            u16_at(2),
            py_bytes(&d[4..])
        ),
        t => format!(
            "UnknownDUID(duid_type={t}, duid_data={})",
            py_bytes(&d[2..])
        ),
    }
}

/// A reply as dhcpkit's CLI prints it: the client DUID and the relay-ids and remote-ids in
/// dhcpkit's own notation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CliView {
    class: String,
    status: Option<u16>,
    client: Option<String>,
    addresses: BTreeSet<Ipv6Addr>,
    prefixes: BTreeSet<(Ipv6Addr, u8)>,
    relay: BTreeSet<String>,
}

impl Summary {
    /// What the CLI must print for this message.
    fn cli_view(&self) -> CliView {
        let relay_ids = self
            .relay_ids
            .iter()
            .map(|d| format!("RelayIdOption(duid={})", duid_repr(d)));
        let remote_ids = self.remote_ids.iter().map(|(e, r)| {
            format!(
                "RemoteIdOption(enterprise_number={e}, remote_id={})",
                py_bytes(r)
            )
        });
        CliView {
            class: self.class.clone(),
            status: self.status,
            client: self
                .client
                .as_ref()
                .map(|d| format!("ClientIdOption(duid={})", duid_repr(d))),
            addresses: self.addresses.clone(),
            prefixes: self.prefixes.clone(),
            relay: relay_ids.chain(remote_ids).collect(),
        }
    }
}

/// Joins a message the CLI printed over several lines into dhcpkit's one-line form.
fn one_line(lines: &[&str]) -> String {
    let mut s = String::new();
    for line in lines.iter().map(|l| l.trim()) {
        if line.starts_with(')') || line.starts_with(']') {
            if s.ends_with(',') {
                s.pop();
            }
        } else if !(s.is_empty() || s.ends_with('(') || s.ends_with('[')) {
            s.push(' ');
        }
        s.push_str(line);
    }
    s
}

/// The index just past the quoted literal that starts at `i`.
fn skip_literal(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        if b[j] == b'\\' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Every `name(…)` in dhcpkit's one-line text, nested ones too, skipping quoted literals.
fn calls<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    let b = text.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' || b[i] == b'"' {
            i = skip_literal(b, i);
            continue;
        }
        let open = i + name.len();
        if b[i..].starts_with(name.as_bytes())
            && b.get(open) == Some(&b'(')
            && (i == 0 || !is_ident(b[i - 1]))
        {
            let mut depth = 0;
            let mut j = open;
            while j < b.len() {
                match b[j] {
                    b'\'' | b'"' => {
                        j = skip_literal(b, j);
                        continue;
                    }
                    b'(' | b'[' => depth += 1,
                    b')' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            found.push(&text[i..=j.min(b.len() - 1)]);
        }
        i += 1;
    }
    found
}

fn parse_prefix(s: &str) -> (Ipv6Addr, u8) {
    let (p, l) = s.split_once('/').unwrap();
    (p.parse().unwrap(), l.parse().unwrap())
}

/// One message the CLI printed.
fn cli_message(lines: &[&str]) -> CliView {
    let text = one_line(lines);
    let class = text[..text.find('(').unwrap()].to_owned();
    let status = text.contains("status_code=").then(|| {
        let shown = between(&text, "status_code=", ")");
        shown.rsplit('(').next().unwrap().parse().unwrap()
    });
    let client_data = calls(&text, "ClientDataOption");
    assert!(
        client_data.len() <= 1,
        "one client per message (D13): {text}"
    );
    let mut view = CliView {
        class,
        status,
        client: None,
        addresses: BTreeSet::new(),
        prefixes: BTreeSet::new(),
        relay: calls(&text, "RelayIdOption")
            .into_iter()
            .chain(calls(&text, "RemoteIdOption"))
            .map(str::to_owned)
            .collect(),
    };
    if let Some(cd) = client_data.first() {
        view.client = calls(cd, "ClientIdOption").first().map(|c| c.to_string());
        for a in calls(cd, "IAAddressOption") {
            view.addresses
                .insert(between(a, "IPv6Address('", "'").parse().unwrap());
        }
        for p in calls(cd, "IAPrefixOption") {
            view.prefixes
                .insert(parse_prefix(between(p, "IPv6Network('", "'")));
        }
    }
    view
}

/// The messages in the CLI's log, in the order it received them.
fn cli_messages(log: &str) -> Vec<CliView> {
    let blocks = cli_reply_blocks(log);
    blocks.iter().map(|b| cli_message(b)).collect()
}

/// Asks lqd (before and after) and the peer, until lqd's answer held still meanwhile.
fn settled<T: PartialEq + Debug, P>(
    mut truth: impl FnMut() -> T,
    mut peer: impl FnMut() -> P,
) -> (T, P) {
    for _ in 0..8 {
        let before = truth();
        let answer = peer();
        if truth() == before {
            return (before, answer);
        }
    }
    panic!("lqd's answer kept changing under the demo's churn");
}

/// Checks the message sequence of one Bulk answer: REPLY, DATA…, DONE, or a lone REPLY.
fn assert_bulk_sequence(classes: &[&str], what: &dyn Debug) {
    assert_eq!(classes[0], "LeasequeryReplyMessage", "{what:?}");
    if classes.len() > 1 {
        assert_eq!(
            classes[classes.len() - 1],
            "LeasequeryDoneMessage",
            "{what:?}"
        );
        assert!(
            classes[1..classes.len() - 1]
                .iter()
                .all(|c| *c == "LeasequeryDataMessage"),
            "{what:?}: {classes:?}"
        );
    }
}

/// One run of dhcpkit's CLI.
struct CliRun {
    /// The replies it printed, in the order it received them.
    replies: Vec<CliView>,
    log: String,
    path: PathBuf,
}

/// Fails, showing only the differences, unless the peer saw the messages lqd sent.
fn assert_same<T: Ord + Clone + Debug>(peer: &[T], lqd: &[T], what: &dyn Debug) {
    let (peer, lqd) = (sorted(peer.to_vec()), sorted(lqd.to_vec()));
    if peer != lqd {
        let only_peer: Vec<&T> = peer.iter().filter(|m| !lqd.contains(m)).collect();
        let only_lqd: Vec<&T> = lqd.iter().filter(|m| !peer.contains(m)).collect();
        panic!(
            "{what:?}: the peer saw {} messages, lqd sent {}\n\
             only the peer's: {only_peer:#?}\nonly lqd's: {only_lqd:#?}",
            peer.len(),
            lqd.len()
        );
    }
}

/// lqd in a namespace, with a veth pair to this test's namespace and one to a requestor
/// namespace.
struct Lab {
    lqd: Option<Child>,
    server_ns: String,
    requestor_ns: String,
    host_if: String,
    dir: PathBuf,
    /// lqd, as this test reaches it.
    server: Ipv6Addr,
    /// lqd, as the requestor namespace reaches it.
    server_for_peer: Ipv6Addr,
    cli_runs: Cell<usize>,
}

impl Lab {
    /// `tag` (a lowercase letter) keeps the names and addresses of parallel tests apart.
    fn start(tag: char) -> Self {
        assert!(
            is_root(),
            "this test needs root: it creates network namespaces and runs lqd on port 547 \
             (CI runs it as root)"
        );
        let pid = std::process::id();
        let net = |side: u16, host: u16| {
            Ipv6Addr::new(
                0xfd6c,
                (pid >> 16) as u16,
                pid as u16,
                (tag as u16) << 4 | side,
                0,
                0,
                0,
                host,
            )
        };
        let dir = std::env::temp_dir().join(format!("lqd-cli-{tag}-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut lab = Self {
            lqd: None,
            server_ns: format!("lqd-cli-{tag}-{pid}-s"),
            requestor_ns: format!("lqd-cli-{tag}-{pid}-r"),
            host_if: format!("lq{tag}{pid}"),
            dir,
            server: net(0, 2),
            server_for_peer: net(1, 2),
            cli_runs: Cell::new(0),
        };
        lab.remove_network();
        let (s, r, h) = (&lab.server_ns, &lab.requestor_ns, &lab.host_if);
        for ns in [s, r] {
            let out = Command::new("ip").args(["netns", "add", ns]).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!(
                    "`ip netns add {ns}` failed: {} (this test needs network namespaces)",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => panic!("cannot run `ip` (iproute2 is needed): {e}"),
            }
        }
        ip(&[
            "link", "add", h, "type", "veth", "peer", "name", "up0", "netns", s,
        ]);
        ip(&[
            "link",
            "add",
            REQUESTOR_IF,
            "netns",
            r,
            "type",
            "veth",
            "peer",
            "name",
            "down0",
            "netns",
            s,
        ]);
        let cidr = |a: Ipv6Addr| format!("{a}/64");
        ip(&["addr", "add", &cidr(net(0, 1)), "dev", h, "nodad"]);
        ip(&["link", "set", h, "up"]);
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &cidr(lab.server),
            "dev",
            "up0",
            "nodad",
        ]);
        ip(&[
            "-n",
            s,
            "addr",
            "add",
            &cidr(lab.server_for_peer),
            "dev",
            "down0",
            "nodad",
        ]);
        ip(&[
            "-n",
            r,
            "addr",
            "add",
            &cidr(net(1, 1)),
            "dev",
            REQUESTOR_IF,
            "nodad",
        ]);
        // The CLI offers only interfaces that have a link-local address for `-i`.
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
        for (ns, dev) in [
            (s, "lo"),
            (s, "up0"),
            (s, "down0"),
            (r, "lo"),
            (r, REQUESTOR_IF),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }

        let config = lab.dir.join("lqd.toml");
        std::fs::write(
            &config,
            format!(
                "listen = [\"[{}]:547\", \"[{}]:547\"]\nstate_dir = \"{}\"\njournal_size = 8388608\nsource = \"demo\"\n[[requestor]]\nprefix = \"::/0\"\n[demo]\n{DEMO}",
                lab.server,
                lab.server_for_peer,
                lab.dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", s, env!("CARGO_BIN_EXE_lqd"), "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(lab.dir.join("lqd.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        lab.lqd = Some(child);
        lab.wait_ready();
        lab
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("lqd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log().contains("initial population sent") {
            let exited = self.lqd.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "lqd did not start ({exited:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    fn remove_network(&self) {
        quiet("ip", &["netns", "del", &self.server_ns]);
        quiet("ip", &["netns", "del", &self.requestor_ns]);
        quiet("ip", &["link", "del", &self.host_if]);
    }

    /// lqd's answer over TCP, read with our codec.
    fn ask_tcp(&self, q: &Query) -> Vec<Summary> {
        let mut s = TcpStream::connect(SocketAddr::from((self.server, 547))).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.write_all(&q.build(0x77).build_frame().unwrap()).unwrap();
        let (mut buf, mut chunk, mut dec) = (Vec::new(), [0u8; 65536], FrameDecoder::default());
        let mut out = Vec::new();
        loop {
            let n = s.read(&mut chunk).expect("lqd answers in time");
            assert!(n > 0, "lqd closed the connection mid-answer: {q:?}");
            buf.extend_from_slice(&chunk[..n]);
            let mut pos = 0;
            while let Decoded::Frame { message, consumed } = dec.decode(&buf[pos..]).unwrap() {
                pos += consumed;
                let m = summarize(message);
                let ended = m.class == "LeasequeryDoneMessage"
                    || (m.class == "LeasequeryReplyMessage" && m.client.is_none());
                out.push(m);
                if ended {
                    return out;
                }
            }
            buf.drain(..pos);
        }
    }

    /// lqd's answer over UDP, read with our codec.
    fn ask_udp(&self, q: &Query) -> Vec<Summary> {
        let udp = UdpSocket::bind("[::]:0").unwrap();
        udp.set_read_timeout(Some(TIMEOUT)).unwrap();
        udp.send_to(&q.build(0x78).build().unwrap(), (self.server, 547))
            .unwrap();
        let mut buf = [0u8; 65536];
        let (n, _) = udp.recv_from(&mut buf).expect("lqd answers in time");
        vec![summarize(&buf[..n])]
    }

    /// Runs `command` in the requestor namespace, killing it after 20 s; returns whether it
    /// succeeded and the file holding its stdout and stderr.
    fn run_in_requestor_ns(&self, command: &[String]) -> (bool, PathBuf) {
        self.cli_runs.set(self.cli_runs.get() + 1);
        let path = self.dir.join(format!("peer-{}.log", self.cli_runs.get()));
        let file = std::fs::File::create(&path).unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.requestor_ns])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{command:?} did not finish:\n{}",
                    std::fs::read_to_string(&path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status.success(), path)
    }

    /// Runs dhcpkit's CLI for `q` and reads what it printed.
    fn cli(&self, q: &Query, tcp: bool) -> CliRun {
        let mut command = cli_command();
        command.extend(["-s".to_owned(), self.server_for_peer.to_string()]);
        if tcp {
            command.push("-t".to_owned());
        } else {
            command.extend(["-i".to_owned(), REQUESTOR_IF.to_owned()]);
        }
        command.extend(q.cli_args());
        let (ok, path) = self.run_in_requestor_ns(&command);
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(ok, "the CLI failed for {q:?}:\n{log}");
        for bad in [
            "[CRITICAL]",
            "[ERROR]",
            "Traceback",
            "UnknownOption",
            "UnknownMessage",
            "Error",
        ] {
            assert!(
                !log.contains(bad),
                "the CLI printed {bad:?} for {q:?}:\n{log}"
            );
        }
        CliRun {
            replies: cli_messages(&log),
            log,
            path,
        }
    }

    /// Runs dhcpkit_query.py for `queries`; returns each query's reply messages, in order.
    fn script(&self, queries: &[Query]) -> Vec<Vec<Summary>> {
        let input: String = queries.iter().map(Query::script_line).collect();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.requestor_ns])
            .arg(peer_python())
            .arg(repo().join("tests/peers/dhcpkit_query.py"))
            .arg(self.server_for_peer.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        let stdout = String::from_utf8(stdout).unwrap();
        assert!(
            status.success(),
            "dhcpkit_query.py failed ({status}): {}\n{stdout}",
            String::from_utf8_lossy(&stderr)
        );
        let mut answers = vec![Vec::new(); queries.len()];
        for line in stdout.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [
                n,
                class,
                xid,
                status,
                client,
                addresses,
                prefixes,
                relay_ids,
                remote_ids,
                unknown,
            ] = f[..]
            else {
                panic!("unexpected line from dhcpkit_query.py: {line:?}");
            };
            let n: usize = n.parse().unwrap();
            assert_eq!(
                u32::from_str_radix(xid, 16).unwrap(),
                SCRIPT_XID_BASE + n as u32,
                "the reply echoes the query's transaction-id: {line}"
            );
            assert_eq!(unknown, "-", "dhcpkit knows every option lqd sent: {line}");
            answers[n].push(Summary {
                class: class.to_owned(),
                status: (status != "-").then(|| status.parse().unwrap()),
                client: (client != "-").then(|| hex::decode(client).unwrap()),
                addresses: field_list(addresses).map(|a| a.parse().unwrap()).collect(),
                prefixes: field_list(prefixes).map(parse_prefix).collect(),
                relay_ids: field_list(relay_ids)
                    .map(|d| hex::decode(d).unwrap())
                    .collect(),
                remote_ids: field_list(remote_ids)
                    .map(|r| {
                        let (e, id) = r.split_once(':').unwrap();
                        (e.parse().unwrap(), hex::decode(id).unwrap())
                    })
                    .collect(),
            });
        }
        answers
    }

    /// lqd's bindings on every link, with relay data: (link number, message).
    fn survey(&self) -> Vec<(u16, Summary)> {
        let mut clients = Vec::new();
        for k in 1..=LINKS {
            let q = Query::new(Key::LinkAddress, link(k), true);
            clients.extend(
                self.ask_tcp(&q)
                    .into_iter()
                    .filter(|m| m.client.is_some())
                    .map(|m| (k, m)),
            );
        }
        assert!(
            clients.len() >= 100,
            "the demo's 200 clients hold leases: {}",
            clients.len()
        );
        clients
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut lqd) = self.lqd.take() {
            let _ = lqd.kill();
            let _ = lqd.wait();
        }
        self.remove_network();
        // On failure the logs stay, for the paths the messages name.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A comma-separated field of dhcpkit_query.py's output (`-` when empty).
fn field_list(field: &str) -> impl Iterator<Item = &str> {
    field.split(',').filter(|s| !s.is_empty() && *s != "-")
}

fn link(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
}

fn duid_type(d: &[u8]) -> u16 {
    u16::from_be_bytes([d[0], d[1]])
}

/// Every relay-id the survey saw, in order.
fn relay_ids(survey: &[(u16, Summary)]) -> Vec<Vec<u8>> {
    let ids: BTreeSet<Vec<u8>> = survey
        .iter()
        .flat_map(|(_, m)| m.relay_ids.iter().cloned())
        .collect();
    ids.into_iter().collect()
}

#[test]
fn the_dhcpkit_cli_over_tcp_sees_what_lqd_answers() {
    let lab = Lab::start('t');
    let survey = lab.survey();
    let mut queries: Vec<Query> = (1..=LINKS)
        .map(|k| Query::new(Key::LinkAddress, link(k), false))
        .collect();
    for t in [1, 2, 3] {
        let (_, m) = survey
            .iter()
            .find(|(_, m)| duid_type(m.client.as_ref().unwrap()) == t && !m.relay_ids.is_empty())
            .unwrap_or_else(|| panic!("no relayed client with a DUID of type {t}"));
        queries.push(Query::new(
            Key::ClientId(m.client.clone().unwrap()),
            Ipv6Addr::UNSPECIFIED,
            true,
        ));
    }
    let (k, m) = &survey[survey.len() / 2];
    queries.push(Query::new(
        Key::Address(*m.addresses.first().unwrap()),
        link(*k),
        false,
    ));
    let relays = relay_ids(&survey);
    assert_eq!(
        relays.len(),
        4,
        "three access relays and an aggregation relay"
    );
    for r in &relays {
        queries.push(Query::new(
            Key::RelayId(r.clone()),
            Ipv6Addr::UNSPECIFIED,
            true,
        ));
    }

    for q in &queries {
        let (truth, run) = settled(
            || sorted(lab.ask_tcp(q).iter().map(Summary::cli_view).collect()),
            || lab.cli(q, true),
        );
        let (seen, log) = (&run.replies, run.path.display());
        let classes: Vec<&str> = seen.iter().map(|m| m.class.as_str()).collect();
        assert_bulk_sequence(&classes, &(q, &log));
        assert_same(seen, &truth, &(q, &log));
        assert!(
            seen.iter().any(|m| m.client.is_some()),
            "{q:?} finds bindings: {log}"
        );
        if let Some(done) = seen.last().filter(|m| m.class == "LeasequeryDoneMessage") {
            assert_eq!(done.status, Some(0), "DONE carries Success (D14)");
        }
        if let Key::RelayId(r) = &q.key {
            let wanted = format!("RelayIdOption(duid={})", duid_repr(r));
            assert!(
                seen.iter()
                    .filter(|m| m.client.is_some())
                    .all(|m| m.relay.contains(&wanted)),
                "every client found by relay-id was relayed by it: {log}"
            );
        }
    }
}

#[test]
fn the_dhcpkit_cli_over_udp_sees_what_lqd_answers() {
    let lab = Lab::start('u');
    let survey = lab.survey();
    let (relayed_link, relayed) = survey
        .iter()
        .find(|(_, m)| !m.remote_ids.is_empty())
        .cloned()
        .unwrap();
    let (direct_link, direct) = survey
        .iter()
        .find(|(_, m)| m.relay_ids.is_empty())
        .cloned()
        .expect("a directly connected client");
    let any_address = Ipv6Addr::UNSPECIFIED;
    let answered = [
        Query::new(
            Key::Address(*relayed.addresses.first().unwrap()),
            any_address,
            true,
        ),
        Query::new(
            Key::ClientId(direct.client.clone().unwrap()),
            any_address,
            false,
        ),
        Query::new(
            Key::ClientId(relayed.client.clone().unwrap()),
            link(relayed_link),
            false,
        ),
        Query::new(
            Key::Address(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                direct_link,
                0,
                0,
                0xdead,
                1,
            )),
            any_address,
            false,
        ),
    ];
    for (i, q) in answered.iter().enumerate() {
        let (truth, run) = settled(
            || {
                lab.ask_udp(q)
                    .iter()
                    .map(Summary::cli_view)
                    .collect::<Vec<_>>()
            },
            || lab.cli(q, false),
        );
        let (seen, log) = (&run.replies, &run.log);
        assert_eq!(seen, &truth, "{q:?}\n{log}");
        assert_eq!(seen[0].class, "LeasequeryReplyMessage");
        if i < 3 {
            assert!(seen[0].client.is_some(), "{q:?} finds its client:\n{log}");
        }
        if q.relay_data {
            // Over UDP the relay data sits at the top level of the reply (D17).
            assert!(
                !seen[0].relay.is_empty() && log.contains("\n    LQRelayDataOption("),
                "{log}"
            );
        }
    }

    // The Bulk-only query types over UDP: NotAllowed (D11).
    let relay = relay_ids(&survey).remove(0);
    for q in [
        Query::new(Key::LinkAddress, link(1), false),
        Query::new(Key::RelayId(relay), any_address, false),
    ] {
        let truth: Vec<CliView> = lab.ask_udp(&q).iter().map(Summary::cli_view).collect();
        let run = lab.cli(&q, false);
        let (seen, log) = (&run.replies, &run.log);
        assert_eq!(seen, &truth, "{q:?}\n{log}");
        assert_eq!(
            seen[0].status,
            Some(Status::NotAllowed.value()),
            "D11:\n{log}"
        );
        assert!(log.contains("status_code=NotAllowed (10)"), "{log}");
    }
}

#[test]
fn dhcpkit_queries_by_relay_id_and_remote_id_get_what_lqd_answers() {
    let lab = Lab::start('s');
    let survey = lab.survey();
    let any = Ipv6Addr::UNSPECIFIED;
    let mut queries: Vec<Query> = relay_ids(&survey)
        .into_iter()
        .map(|r| Query::new(Key::RelayId(r), any, true))
        .collect();
    queries.push(Query::new(Key::RelayId(NO_RELAY.to_vec()), any, true));
    let relayed_links: BTreeSet<u16> = survey
        .iter()
        .filter(|(_, m)| !m.remote_ids.is_empty())
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(relayed_links.len(), 3, "round(4 × 0.75) relayed links");
    let mut remote_ids = Vec::new();
    for k in &relayed_links {
        let (_, m) = survey.iter().find(|(l, _)| l == k).unwrap();
        let (e, r) = m.remote_ids.first().unwrap().clone();
        remote_ids.push((*k, e, r));
    }
    for (_, e, r) in &remote_ids {
        queries.push(Query::new(Key::RemoteId(*e, r.clone()), any, true));
    }
    let (k, e, r) = remote_ids[0].clone();
    let other = if k == 1 { 2 } else { 1 };
    queries.push(Query::new(Key::RemoteId(e, r.clone()), link(k), true));
    queries.push(Query::new(Key::RemoteId(e, r.clone()), link(other), true));
    queries.push(Query::new(Key::RemoteId(e, NO_REMOTE.to_vec()), any, true));

    let (truth, seen) = settled(
        || {
            queries
                .iter()
                .map(|q| sorted(lab.ask_tcp(q)))
                .collect::<Vec<_>>()
        },
        || lab.script(&queries),
    );
    for ((q, truth), seen) in queries.iter().zip(&truth).zip(&seen) {
        let classes: Vec<&str> = seen.iter().map(|m| m.class.as_str()).collect();
        assert_bulk_sequence(&classes, q);
        assert_same(seen, truth, q);
        let clients: Vec<&Summary> = seen.iter().filter(|m| m.client.is_some()).collect();
        match &q.key {
            Key::RelayId(r) if r[..] != NO_RELAY => {
                assert!(!clients.is_empty(), "{q:?}");
                assert!(clients.iter().all(|m| m.relay_ids.contains(r)), "{q:?}");
            }
            Key::RemoteId(e, r) if r != NO_REMOTE && q.link != link(other) => {
                assert_eq!(clients.len(), 1, "a remote-id names one client: {q:?}");
                assert!(clients[0].remote_ids.contains(&(*e, r.clone())), "{q:?}");
            }
            _ => {
                // Nothing found: a lone REPLY with neither status nor client data (D12).
                assert_eq!(seen.len(), 1, "{q:?}: {seen:?}");
                assert_eq!((seen[0].status, &seen[0].client), (None, &None), "{q:?}");
            }
        }
    }
}
