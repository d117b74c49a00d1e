//! A live capture of lq's STARTTLS (RFC 7653; digest §12, D25), read by tshark: after the
//! STARTTLS exchange only TLS records cross the wire, and no leasequery message travels in
//! cleartext.
//!
//! `dumpcap` captures loopback while `lq bulk --tls` (rustls) queries the Python/OpenSSL
//! STARTTLS server of `tests/peers/starttls_server.py`. tshark then reads the capture three
//! ways:
//!
//! 1. as DHCPv6 Bulk Leasequery on the server's port (`-d tcp.port==PORT,dhcpv6.bulk_leasequery`):
//!    exactly two messages, both STARTTLS (23), the requestor's then the server's, with the
//!    same xid;
//! 2. as TLS on that port (`-d tcp.port==PORT,tls`): every octet after the server's STARTTLS is
//!    inside a TLS record (the records' lengths add up to the TCP payload), the first is the
//!    requestor's ClientHello, and application data follows in both directions;
//! 3. the raw TCP payloads: the binding's address and client DUID, which the server sends in
//!    its answer, appear nowhere; the requestor's DUID appears only in the two STARTTLS
//!    messages (the server's echoes OPTION_CLIENTID).
//!
//! Needs root (dumpcap on `lo`), tshark and dumpcap (`.ci/setup` installs tshark); without
//! them the test fails, it never skips.

#[path = "common/pki.rs"]
#[allow(unreachable_pub)]
mod pki;
#[path = "common/starttls_peer.rs"]
mod starttls_peer;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use starttls_peer::{Pki, PyServer};

/// Our DUID in the capture: DUID-LL 02:00:00:00:00:99.
const DUID_HEX: &str = "0003000102000000009a";
/// The server's one binding (see starttls_server.py): client DUID-LL 02:00:00:00:10:00 and
/// 2001:db8:1::100, as octets on the wire.
const BINDING_DUID_HEX: &str = "00030001020000001000";
const BINDING_ADDRESS_HEX: &str = "20010db8000100000000000000000100";

fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("tshark (install it: .ci/setup)");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Tab-separated fields, one row per line.
fn rows(s: &str) -> Vec<Vec<String>> {
    s.lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

#[test]
fn after_starttls_only_tls_records_cross_the_wire() {
    let pki = Pki::new();
    let server = PyServer::start("::1", &pki.server, &["--bindings", "1"]);
    let port = server.addr.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("starttls.pcapng");

    // A closed port beside the server's, for the probes that show the capture is running.
    let probe_port = std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let filter = format!("tcp port {port} or tcp port {probe_port}");
    let mut dumpcap = Command::new("dumpcap")
        .args(["-i", "lo", "-f", &filter, "-w"])
        .arg(&capture)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dumpcap (install tshark: .ci/setup)");
    // dumpcap says "Capturing on 'Loopback: lo'" once it captures (the test needs root).
    let mut said = Vec::new();
    let mut lines = BufReader::new(dumpcap.stderr.take().expect("stderr")).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("Capturing on") => break,
            Some(Ok(l)) => said.push(l),
            _ => {
                let _ = dumpcap.kill();
                panic!("dumpcap did not start capturing (root?): {said:?}");
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    // "Capturing on" comes before the first packet is seen: probe the closed port until a
    // probe is in the file.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = std::net::TcpStream::connect(("::1", probe_port));
        std::thread::sleep(Duration::from_millis(100));
        let seen = Command::new("tshark")
            .arg("-r")
            .arg(&capture)
            .args(["-Y", &format!("tcp.port=={probe_port}"), "-c", "1"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if seen {
            break;
        }
        assert!(Instant::now() < deadline, "dumpcap captured nothing");
    }

    let out = Command::new(env!("CARGO_BIN_EXE_lq"))
        .args(["bulk", "--tls", "--json", "--ca"])
        .arg(&pki.ca)
        .args(["--duid", DUID_HEX, "--link-address", "2001:db8:1::1"])
        .arg("--server")
        .arg(server.addr.to_string())
        .output()
        .expect("run lq");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        printed.contains(BINDING_DUID_HEX),
        "lq got the binding: {printed}"
    );

    // Let the last segments (close_notify, FIN) reach the capture, then stop it cleanly.
    std::thread::sleep(Duration::from_millis(500));
    let pid = dumpcap.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while dumpcap.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "dumpcap did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 1. The STARTTLS exchange, decoded as DHCPv6 Bulk Leasequery.
    let decode_lq = format!("tcp.port=={port},dhcpv6.bulk_leasequery");
    let lq = rows(&tshark(
        &capture,
        &[
            "-d",
            &decode_lq,
            "-Y",
            &format!("dhcpv6.bulk_leasequery && tcp.port=={port}"),
            "-T",
            "fields",
            "-E",
            "occurrence=f",
            "-e",
            "frame.number",
            "-e",
            "tcp.dstport",
            "-e",
            "dhcpv6.bulk_leasequery.msgtype",
            "-e",
            "dhcpv6.bulk_leasequery.trans_id",
        ],
    ));
    // Exactly two: TLS records read as Bulk Leasequery frames would claim sizes of 0x14xx to
    // 0x17xx octets (content type, then version major 3) that the stream never completes.
    assert_eq!(lq.len(), 2, "two cleartext messages, both STARTTLS: {lq:?}");
    let (ask, answer) = (&lq[0], &lq[1]);
    assert_eq!(
        ask[2], "23",
        "the requestor's first message is STARTTLS: {lq:?}"
    );
    assert_eq!(ask[1], port.to_string(), "sent to the server: {lq:?}");
    assert_eq!(answer[2], "23", "the server accepts with STARTTLS: {lq:?}");
    assert_ne!(answer[1], port.to_string(), "sent by the server: {lq:?}");
    assert_eq!(ask[3], answer[3], "the same xid: {lq:?}");
    let accepted: u64 = answer[0].parse().expect("frame number");

    // 2. Everything after it, decoded as TLS.
    let decode_tls = format!("tcp.port=={port},tls");
    let payload = rows(&tshark(
        &capture,
        &[
            "-d",
            &decode_tls,
            "-Y",
            &format!("tcp.port=={port} && tcp.len > 0 && frame.number > {accepted}"),
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "frame.number",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.len",
            "-e",
            "tls.record.content_type",
            "-e",
            "tls.record.length",
            "-e",
            "tls.handshake.type",
            "-e",
            "tls.record.opaque_type",
        ],
    ));
    assert!(!payload.is_empty(), "no payload after STARTTLS");
    let list = |s: &str| -> Vec<u64> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(|x| x.parse().expect("a number"))
            .collect()
    };
    let mut tcp_octets = 0;
    let mut record_octets = 0;
    let mut types = Vec::new();
    for row in &payload {
        tcp_octets += list(&row[2]).iter().sum::<u64>();
        record_octets += list(&row[4]).iter().map(|l| l + 5).sum::<u64>();
        // TLS 1.3 shows its encrypted records' outer type as opaque_type.
        for t in list(&row[3]).into_iter().chain(list(&row[6])) {
            types.push((row[1] == port.to_string(), t));
        }
    }
    assert_eq!(
        tcp_octets, record_octets,
        "every octet after STARTTLS is in a TLS record: {payload:?}"
    );
    let first = &payload[0];
    assert_eq!(
        first[1],
        port.to_string(),
        "the requestor speaks first: {payload:?}"
    );
    assert_eq!(
        list(&first[3]).first(),
        Some(&22),
        "a handshake record: {payload:?}"
    );
    assert_eq!(
        list(&first[5]).first(),
        Some(&1),
        "a ClientHello: {payload:?}"
    );
    assert!(
        types.contains(&(true, 23)) && types.contains(&(false, 23)),
        "application data both ways: {types:?}"
    );

    // 3. The raw payloads: nothing of the answer in cleartext, our DUID only in STARTTLS.
    let raw = rows(&tshark(
        &capture,
        &[
            "-Y",
            &format!("tcp.port=={port} && tcp.len > 0"),
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tcp.payload",
        ],
    ));
    let hex_of = |row: &Vec<String>| row.get(1).map(|p| p.replace(':', "")).unwrap_or_default();
    for row in &raw {
        let hex = hex_of(row);
        assert!(
            !hex.contains(BINDING_DUID_HEX),
            "cleartext client DUID: {row:?}"
        );
        assert!(
            !hex.contains(BINDING_ADDRESS_HEX),
            "cleartext address: {row:?}"
        );
    }
    let with_duid: Vec<&String> = raw
        .iter()
        .filter(|r| hex_of(r).contains(DUID_HEX))
        .map(|r| &r[0])
        .collect();
    // The server's STARTTLS echoes our OPTION_CLIENTID.
    assert_eq!(
        with_duid,
        [&ask[0], &answer[0]],
        "our DUID only in the two STARTTLS frames"
    );
    // And the server did answer over TLS.
    assert!(server.wait_for("query type=14", 1).contains("tls=1"));
}
