//! `lq`, lqd's requestor CLI, against dhcpkit 1.0.7's server (PyPI): `lq query` (UDP,
//! RFC 5007) and `lq bulk` (TCP, RFC 5460) must find the same bindings as dhcpkit's own
//! requestor CLI, `ipv6-dhcp-test-leasequery`, asking the same server the same questions.
//!
//! The server runs in a network namespace with leases it handed out itself, through a relay,
//! to seven client bindings: three DUID types, addresses (IA_NA) and delegated prefixes
//! (IA_PD), two links, and one client on both links with different leases (see
//! `common/dhcpkit_server.rs`). Every query is asked by dhcpkit's CLI and by `lq --json` from a
//! requestor namespace; the CLI's answer must be the bindings the server handed out, and lq's
//! must be the CLI's: the same client DUIDs, addresses and prefixes, with lifetimes at most the
//! seconds since the leases were handed out apart (lq prints end times, turned back into
//! lifetimes here from the time lq was started). The queries: by each binding's address (or
//! prefix), by an address inside a delegated prefix, by an address nobody has, by an address
//! on the wrong link and on its own, by each client-id without a link-address, with each link
//! of the two-link client, and by a client-id nobody has; over TCP also by link-address (each
//! link, and `::` for all).
//!
//! Over UDP the two-link client's query without a link-address gets OPTION_LQ_CLIENT_LINK
//! from the server; lq follows it with one query per link by itself, the CLI does not: lq's
//! answer is compared with the CLI's answers for each listed link.
//!
//! What is arranged or left out, and why (dhcpkit 1.0.7 is the last release):
//! - dhcpkit sends every reply to a non-relayed message to UDP port 546 of the source address,
//!   whatever the source port. lq sends from an ephemeral port by default, so it would get
//!   nothing and give up after 5 transmissions (~25 s, exit 4: "no answer"); the UDP test runs
//!   `lq query --source-port 546`, the port dhcpkit's CLI binds too.
//! - Queries by relay-id and by remote-id are not compared: dhcpkit's server cannot parse a
//!   LEASEQUERY holding them ("LQQueryOption cannot contain RelayIdOption / RemoteIdOption" in
//!   its log) and answers nothing, leaving the TCP connection open, so `lq bulk` would wait out
//!   BULK_LQ_DATA_TIMEOUT (300 s) and dhcpkit's CLI prints "0 responses received" after 3 s. Its
//!   server also refuses every RELAY-FORW that carries OPTION_RELAY_ID, so it cannot even hold
//!   a binding with a relay-id.
//! - Relay data (OPTION_LQ_RELAY_DATA) and CLT_TIME are not compared: `lq` does not ask for
//!   the first and prints the second as a time.
//!
//! Needs root and `ip netns`; without them the tests fail, they never skip. The peer runs from
//! the venv made by `.ci/setup` (`<repo>/.venv-peers`), or from the Python named by
//! `$LQD_PEER_PYTHON`.

#[path = "common/dhcpkit_server.rs"]
mod dhcpkit;
#[path = "common/peers.rs"]
mod peers;

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use dhcpkit::{Binding, CliReply, DhcpkitServer, Key, LINK_A, LINK_B, assert_same_bindings};
use serde_json::Value;

const ANY: Ipv6Addr = Ipv6Addr::UNSPECIFIED;

/// One question, asked of both requestors.
#[derive(Debug, Clone)]
struct Case {
    what: String,
    key: Key,
    link: Ipv6Addr,
}

/// The questions for one lab: see the module's doc.
fn cases(lab: &DhcpkitServer, tcp: bool) -> Vec<Case> {
    let case = |what: String, key: Key, link: Ipv6Addr| Case { what, key, link };
    let mut v = Vec::new();
    for c in &lab.clients {
        let a = c
            .addresses
            .first()
            .copied()
            .unwrap_or_else(|| c.prefixes[0].0);
        v.push(case(
            format!("{} by address {a}", c.name),
            Key::Address(a),
            ANY,
        ));
    }
    let a1 = &lab.clients[0];
    let other_link = if a1.link == LINK_A { LINK_B } else { LINK_A };
    v.push(case(
        "a1 by address on the wrong link".into(),
        Key::Address(a1.addresses[0]),
        other_link,
    ));
    v.push(case(
        "a1 on its own link".into(),
        Key::Address(a1.addresses[0]),
        a1.link,
    ));
    let inside = "2001:db8:a1:5::7".parse().unwrap();
    v.push(case(
        "an address inside a1's prefix".into(),
        Key::Address(inside),
        ANY,
    ));
    let nobody = "2001:db8:ffff::1".parse().unwrap();
    v.push(case("nobody's address".into(), Key::Address(nobody), ANY));
    let mut duids: Vec<Vec<u8>> = lab.clients.iter().map(|c| c.duid.clone()).collect();
    duids.dedup();
    for d in duids {
        v.push(case(
            format!("client-id {}", hex::encode(&d)),
            Key::ClientId(d),
            ANY,
        ));
    }
    let m = lab.clients.iter().find(|c| c.name == "m-a").unwrap();
    for link in [LINK_A, LINK_B] {
        v.push(case(
            format!("the two-link client on {link}"),
            Key::ClientId(m.duid.clone()),
            link,
        ));
    }
    v.push(case(
        "a client-id nobody has".into(),
        Key::ClientId(vec![0, 3, 0, 1, 2, 0, 0, 0, 0xff, 0xff]),
        ANY,
    ));
    if tcp {
        for link in [LINK_A, LINK_B, ANY] {
            v.push(case(format!("link-address {link}"), Key::LinkAddress, link));
        }
    }
    v
}

/// The bindings in the CLI's answer; checks its message sequence and that nothing failed.
fn cli_bindings(replies: &[CliReply], tcp: bool, what: &str) -> Vec<Binding> {
    assert!(!replies.is_empty(), "{what}: no reply");
    assert_eq!(
        replies[0].class, "LeasequeryReplyMessage",
        "{what}: {replies:#?}"
    );
    for r in replies {
        assert_eq!(r.status.unwrap_or(0), 0, "{what}: {replies:#?}");
    }
    if tcp && replies.len() > 1 {
        let last = replies.len() - 1;
        assert_eq!(
            replies[last].class, "LeasequeryDoneMessage",
            "{what}: {replies:#?}"
        );
        assert!(
            replies[1..last]
                .iter()
                .all(|r| r.class == "LeasequeryDataMessage"),
            "{what}: {replies:#?}"
        );
    } else {
        assert_eq!(replies.len(), 1, "{what}: {replies:#?}");
    }
    replies.iter().filter_map(|r| r.binding.clone()).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One of lq's JSON lines as a binding; end times become lifetimes from `started` (Unix
/// seconds), `null` (infinite) becomes 0xffffffff.
fn lq_binding(line: &str, started: i64) -> Binding {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("lq printed {line:?}: {e}"));
    let lifetime = |l: &Value, field: &str| match &l[field] {
        Value::Null => u32::MAX,
        t => {
            let end = t.as_i64().unwrap_or_else(|| panic!("{field} in {line}"));
            u32::try_from((end - started).max(0)).unwrap()
        }
    };
    let mut b = Binding {
        client_id: hex::decode(v["client_id"].as_str().unwrap()).unwrap(),
        clt: None,
        addresses: BTreeMap::new(),
        prefixes: BTreeMap::new(),
    };
    for l in v["leases"].as_array().unwrap() {
        let address: Ipv6Addr = l["address"].as_str().unwrap().parse().unwrap();
        let lifetimes = (
            lifetime(l, "preferred_until_unix_s"),
            lifetime(l, "valid_until_unix_s"),
        );
        match l["type"].as_str().unwrap() {
            "address" => {
                assert_eq!(l["prefix_len"], 128, "{line}");
                b.addresses.insert(address, lifetimes);
            }
            "prefix" => {
                let len = u8::try_from(l["prefix_len"].as_u64().unwrap()).unwrap();
                b.prefixes.insert((address, len), lifetimes);
            }
            other => panic!("lease type {other} in {line}"),
        }
    }
    b
}

/// Runs `lq query` (UDP) or `lq bulk` (TCP) for `case` in the requestor namespace; its
/// bindings. lq must exit 0 with bindings, 1 ("no binding matched") without.
fn lq(lab: &DhcpkitServer, case: &Case, tcp: bool) -> Vec<Binding> {
    let mut command = vec![
        env!("CARGO_BIN_EXE_lq").to_owned(),
        if tcp { "bulk" } else { "query" }.to_owned(),
        "--server".to_owned(),
        format!("[{}]:547", lab.server_addr),
        "--json".to_owned(),
    ];
    match &case.key {
        Key::Address(a) => command.extend(["--address".to_owned(), a.to_string()]),
        Key::ClientId(d) => command.extend(["--client-id".to_owned(), hex::encode(d)]),
        Key::LinkAddress => command.extend(["--link-address".to_owned(), case.link.to_string()]),
    }
    if !tcp {
        command.extend(["--source-port".to_owned(), "546".to_owned()]);
    }
    if !case.link.is_unspecified() && !matches!(case.key, Key::LinkAddress) {
        command.extend(["--link".to_owned(), case.link.to_string()]);
    }
    let started = unix_now();
    let run = lab.run(&command, "");
    let bindings: Vec<Binding> = run.stdout.lines().map(|l| lq_binding(l, started)).collect();
    let want = if bindings.is_empty() { 1 } else { 0 };
    assert_eq!(
        run.status.code(),
        Some(want),
        "{}: {command:?} exited {}\nstdout: {}\nstderr: {}",
        case.what,
        run.status,
        run.stdout,
        run.stderr
    );
    bindings
}

/// Asks every case of [`cases`] of both requestors and compares the answers.
fn compare(lab: &DhcpkitServer, tcp: bool) {
    for case in cases(lab, tcp) {
        let what = format!("{} ({})", case.what, if tcp { "TCP" } else { "UDP" });
        let want = lab.expected(&case.key, case.link);
        let replies = lab.cli(&case.key, case.link, tcp);
        let cli = if !tcp && want.len() > 1 {
            // On several links: OPTION_LQ_CLIENT_LINK and no client data; then per link.
            let Key::ClientId(duid) = &case.key else {
                panic!("{what}: only a client-id finds several bindings over UDP");
            };
            let mut links: Vec<Ipv6Addr> = lab
                .clients
                .iter()
                .filter(|c| c.duid == *duid)
                .map(|c| c.link)
                .collect();
            links.sort();
            assert!(
                cli_bindings(&replies, tcp, &what).is_empty(),
                "{what}: {replies:#?}"
            );
            assert_eq!(replies[0].client_links, links, "{what}: {replies:#?}");
            links
                .iter()
                .flat_map(|link| cli_bindings(&lab.cli(&case.key, *link, tcp), tcp, &what))
                .collect()
        } else {
            cli_bindings(&replies, tcp, &what)
        };
        assert_same_bindings(&cli, &want, lab.slack(), &format!("{what}: dhcpkit's CLI"));
        let lq = lq(lab, &case, tcp);
        assert_same_bindings(
            &lq,
            &cli,
            lab.slack(),
            &format!("{what}: lq vs dhcpkit's CLI"),
        );
    }
}

/// `lq query` and dhcpkit's CLI over UDP: the same bindings.
#[test]
fn lq_query_finds_what_dhcpkit_cli_finds() {
    let lab = DhcpkitServer::start('q');
    compare(&lab, false);
}

/// `lq bulk` and dhcpkit's CLI over TCP (Bulk Leasequery): the same bindings.
#[test]
fn lq_bulk_finds_what_dhcpkit_cli_finds() {
    let lab = DhcpkitServer::start('b');
    compare(&lab, true);
}
