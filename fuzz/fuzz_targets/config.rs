//! Fuzz target: lqd's TOML configuration, `Config::from_toml`.
//!
//! The input is the configuration text (invalid UTF-8 is skipped: the file is read as a
//! string). Parsing must never panic, and an error must be describable. An accepted
//! configuration must answer everything lqd asks of it at start-up without panicking (its link
//! map, its warnings, the access of a few requestor addresses and of each configured prefix,
//! its paths, the demo settings), and its source and server DUID, written out, must read back
//! the same.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use lqd::config::{Config, ServerDuid, SourceSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error without a message");
            return;
        }
    };
    if let Ok(map) = config.link_map() {
        let _ = format!("{map:?}");
    }
    for w in config.warnings() {
        assert!(!w.is_empty());
    }
    let mut addrs: Vec<IpAddr> = [
        "::1",
        "2001:db8::1",
        "192.0.2.1",
        "::ffff:192.0.2.1",
        "0.0.0.0",
    ]
    .iter()
    .map(|a| a.parse().expect("an address"))
    .collect();
    for r in &config.requestors {
        // A certificate-only table (mutual TLS) has no prefix.
        if let Some(prefix) = r.prefix {
            addrs.push(prefix.addr());
            addrs.push(prefix.broadcast());
        }
        let _ = r.query_types.to_string();
    }
    for a in addrs {
        let access = config.access(a);
        let _ = (access.is_allowed(), format!("{access:?}"));
    }
    let _ = (
        config.duid_path(),
        config.journal_path(),
        config.demo.demo_config(),
    );

    if let Some(spec) = &config.source {
        let written = spec.to_string();
        let back: SourceSpec = written
            .parse()
            .unwrap_or_else(|e| panic!("source {written:?} does not read back: {e}"));
        assert_eq!(&back, spec, "source {written:?}");
    }
    if let Some(duid) = &config.server_duid {
        let written = duid.to_string();
        let back: ServerDuid = written
            .parse()
            .unwrap_or_else(|e| panic!("server DUID {written:?} does not read back: {e}"));
        assert_eq!(back.as_bytes(), duid.as_bytes(), "server DUID {written:?}");
    }
});
