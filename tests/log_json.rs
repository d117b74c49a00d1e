//! `--log-format json` (issue 16): a real lqd writes every log line as one JSON object with
//! `timestamp`, `level`, `target` and `message`, and each event's fields (such as `peer`) as
//! keys of their own; the same run in the text format shows the same fields as `key=value`.
//! A format lqd does not know stops it at start with a one-line error.

#[path = "common/lqd.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use common::{Lqd, by_link, link, read_answers, start_with_source, wait_for_log};
use serde_json::{Map, Value};

const DEMO: &str = "[demo]\nclients = 300\nlinks = 4\nchanges_per_sec = 1\nseed = 11\n";

/// Runs the same session against an lqd started with `args`: a Bulk query answered, a
/// connection closed by its requestor, a malformed frame, then SIGTERM. Returns lqd's log and
/// the local addresses of the two connections.
fn session(name: &str, args: &[&str]) -> (String, SocketAddr, SocketAddr) {
    let mut all = vec!["--source", "demo"];
    all.extend_from_slice(args);
    let mut lqd: Lqd = start_with_source(name, &all, DEMO, "source: demo");
    wait_for_log(&lqd, "initial population sent", 20);

    let mut s = lqd.connect();
    let quiet = s.local_addr().unwrap();
    s.write_all(&by_link(7, link(1))).unwrap();
    let answers = read_answers(&mut s, &[7]);
    assert!(!answers.is_empty());
    drop(s);
    wait_for_log(&lqd, &quiet.to_string(), 10);

    // A frame whose message is too short to be one: lqd closes this connection and says why.
    let mut bad = lqd.connect();
    let noisy = bad.local_addr().unwrap();
    bad.write_all(&[0, 2, 0xff, 0xff]).unwrap();
    wait_for_log(&lqd, &noisy.to_string(), 10);

    assert!(lqd.sigterm().success());
    (lqd.log(), quiet, noisy)
}

fn str_field<'a>(o: &'a Map<String, Value>, key: &str, line: &str) -> &'a str {
    o.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string {key:?} in {line}"))
}

#[test]
fn every_json_line_is_an_object_with_the_text_lines_fields() {
    let (json_log, quiet, noisy) = session("log-json", &["--log-format", "json"]);
    let lines: Vec<&str> = json_log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 8, "too few lines:\n{json_log}");

    let mut events = Vec::new();
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nwhole log:\n{json_log}"));
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        let timestamp = str_field(o, "timestamp", line);
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z') && timestamp.contains('T'),
            "timestamp {timestamp:?}"
        );
        let level = str_field(o, "level", line);
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "level {level:?} in {line}"
        );
        let target = str_field(o, "target", line);
        assert!(target.starts_with("lqd"), "target {target:?} in {line}");
        let message = str_field(o, "message", line);
        assert!(!message.is_empty(), "{line}");
        // Fields are flattened beside the message, not nested, and nothing else is there.
        assert!(
            !o.contains_key("fields") && !o.contains_key("span"),
            "{line}"
        );
        let mut keys: Vec<String> = o
            .keys()
            .filter(|k| !["timestamp", "level", "target", "message"].contains(&k.as_str()))
            .cloned()
            .collect();
        keys.sort();
        events.push((
            level.to_owned(),
            target.to_owned(),
            message.to_owned(),
            keys,
            o.clone(),
        ));
    }

    // The lines a shipper will look for, with their fields.
    let find = |message: &str, peer: Option<SocketAddr>| {
        events
            .iter()
            .find(|(_, _, m, _, o)| {
                m == message
                    && peer.is_none_or(|p| {
                        o.get("peer").and_then(Value::as_str) == Some(&*p.to_string())
                    })
            })
            .unwrap_or_else(|| panic!("no {message:?} line (peer {peer:?}):\n{json_log}"))
    };
    let (level, target, _, keys, _) = find("listening", None);
    assert_eq!((level.as_str(), target.as_str()), ("INFO", "lqd::server"));
    assert_eq!(*keys, ["tcp", "udp"]);
    let (_, _, _, keys, o) = find("server DUID", None);
    assert_eq!(*keys, ["duid"]);
    assert!(o["duid"].as_str().unwrap().contains(':'));
    let (_, _, _, keys, o) = find("demo: initial population sent", None);
    assert_eq!(*keys, ["changes"]);
    assert!(
        o["changes"].as_u64().unwrap() > 0,
        "a number stays a number"
    );
    for peer in [quiet, noisy] {
        let (level, target, _, keys, o) = find("connection closed", Some(peer));
        assert_eq!((level.as_str(), target.as_str()), ("INFO", "lqd::server"));
        assert_eq!(*keys, ["peer", "reason"]);
        assert_eq!(
            o["peer"].as_str().unwrap().parse::<SocketAddr>().unwrap(),
            peer
        );
        assert!(!o["reason"].as_str().unwrap().is_empty());
    }
    find("stopped", None);

    // The text format of the same session: each JSON event's message is there, from the same
    // target at the same level, with the same fields as key=value.
    let (text_log, _, _) = session("log-text", &[]);
    assert!(
        text_log.lines().all(|l| !l.trim_start().starts_with('{')),
        "text is the default"
    );
    let mut compared = 0;
    for (level, target, message, keys, _) in &events {
        let head = format!(" {target}: {message}");
        let Some(line) = text_log.lines().find(|l| {
            l.contains(&head)
                && l.contains(level.as_str())
                && keys.iter().all(|k| l.contains(&format!(" {k}=")))
        }) else {
            // Lines that depend on timing (such as a demo round) may be in one run only; the
            // ones every run has are required below.
            assert!(
                !["listening", "server DUID", "connection closed", "stopped"]
                    .contains(&message.as_str()),
                "no text line {head:?} with fields {keys:?}:\n{text_log}"
            );
            continue;
        };
        let after = &line[line.find(&head).unwrap() + head.len()..];
        let text_keys = after
            .split(' ')
            .filter_map(|w| w.split_once('=').map(|(k, _)| k))
            .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .count();
        assert!(
            text_keys >= keys.len(),
            "{line}: fewer fields than JSON's {keys:?}"
        );
        compared += 1;
    }
    assert!(compared >= 6, "only {compared} lines compared");
}

#[test]
fn an_unknown_log_format_stops_lqd_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_lqd"))
        .args(["--source", "demo", "--log-format", "logfmt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown log format `logfmt`: expected \"text\" or \"json\""),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("lqd-log-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("lqd.toml");
    std::fs::write(&file, "source = \"demo\"\nlog_format = \"syslog\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lqd"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "lqd: config file {}, line 2, column 14: unknown log format `syslog`: expected \
             \"text\" or \"json\"",
            file.display()
        )
    );
}
