//! What the dhcpkit peer tests share: where the dhcpkit venv is, how to run its requestor CLI,
//! and the `ip` and privilege helpers for their network namespaces.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository (for `tests/peers/` and the venv).
pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has dhcpkit: `$LQD_PEER_PYTHON`, else the venv `.ci/setup` makes.
pub(crate) fn peer_python() -> PathBuf {
    let python = std::env::var_os("LQD_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-peers/bin/python"));
    assert!(
        python.exists(),
        "dhcpkit venv not found: run .ci/setup (looked for {})",
        python.display()
    );
    python
}

/// dhcpkit's requestor CLI: the console script beside the Python, else its module run with
/// `-m`.
pub(crate) fn cli_command() -> Vec<String> {
    let python = peer_python();
    let script = python.with_file_name("ipv6-dhcp-test-leasequery");
    if script.exists() {
        vec![script.display().to_string()]
    } else {
        vec![
            python.display().to_string(),
            "-m".into(),
            "dhcpkit.ipv6.client.test_leasequery".into(),
        ]
    }
}

/// True when this process runs as root (namespaces need it).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Runs `ip ARGS`, failing the test with its error output when it fails.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command for its effect only (cleanup), whatever becomes of it.
pub(crate) fn quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A DUID in the CLI's `parse_duid` syntax, as it takes one on its command line.
pub(crate) fn cli_duid(d: &[u8]) -> String {
    let u16_at = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    match u16_at(0) {
        1 => format!(
            "linklayer-time:{}:{}:{}",
            u16_at(2),
            u32_at(4),
            hex::encode(&d[8..])
        ),
        2 => format!("enterprise:{}:0x{}", u32_at(2), hex::encode(&d[6..])),
        3 => format!("linklayer:{}:{}", u16_at(2), hex::encode(&d[4..])),
        t => panic!("the CLI cannot write a DUID of type {t}"),
    }
}

/// The text of `s` between the first `start` and the next `end`.
pub(crate) fn between<'t>(s: &'t str, start: &str, end: &str) -> &'t str {
    let from = s.find(start).unwrap_or_else(|| panic!("no {start} in {s}")) + start.len();
    let len = s[from..].find(end).unwrap();
    &s[from..from + len]
}

/// The replies in the CLI's log, each as its lines, in the order it received them; checked
/// against the count the CLI prints at the end.
pub(crate) fn cli_reply_blocks(log: &str) -> Vec<Vec<&str>> {
    let mut blocks: Vec<Vec<&str>> = Vec::new();
    let mut in_reply = false;
    for line in log.lines() {
        if line.contains("MainProcess: [") {
            in_reply = line.contains("] Received from ");
            if in_reply {
                blocks.push(Vec::new());
            }
        } else if in_reply {
            blocks.last_mut().unwrap().push(line);
        }
    }
    let received = log
        .lines()
        .find_map(|l| {
            l.strip_suffix(" responses received")
                .or_else(|| l.strip_suffix(" response received"))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("the CLI did not say how many replies it got:\n{log}"));
    assert_eq!(received, blocks.len(), "{log}");
    blocks
}
