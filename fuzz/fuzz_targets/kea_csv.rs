//! Fuzz target: the `kea-csv` source's reading of a Kea memfile lease file, from bytes to
//! changes in a store, and the reading of Kea's configuration for its subnets.
//!
//! The input is one control octet, then the text. Its bits 0-1 pick what the text is: 0, a
//! lease file after Kea 2.2's header row; 1, the same after Kea 2.6's (with `pool_id`); 2, a
//! lease file with its own header row; 3, Kea's JSON configuration (`parse_kea_config`, with
//! comments). A lease file is read line by line as the source does: the header names the
//! columns (a later `address,` row replaces them), each row goes to `parse_row`, then to a
//! `KeaMapper`, and each change it makes is applied to a store with a small journal. Nothing
//! may panic; a row that parses keeps `parse_row`'s promises (lease type, prefix length,
//! state), a change keeps the store's (prefix length, preferred lifetime not above valid), and
//! a row applied again at once is a duplicate, not a second change.
#![no_main]

use std::collections::HashMap;
use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use lqd::codec::ServerTime;
use lqd::feed::follow::LineSplitter;
use lqd::feed::kea::{
    Applied, KeaHeader, KeaMapper, parse_kea_config, parse_row, relays_from_user_context,
    strip_comments, unescape,
};
use lqd::store::journal::{HEADER_LEN, Journal};
use lqd::store::{Change, History, LeaseKind, Store};

const HEADER_22: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,\
iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source";
const HEADER_26: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,lease_type,\
iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,hwaddr_source,pool_id";

fn check_change(c: &Change) {
    let l = &c.lease;
    match l.kind {
        LeaseKind::Address => assert_eq!(l.prefix_len, 128, "an address not /128"),
        LeaseKind::Prefix => assert!(
            (1..=128).contains(&l.prefix_len),
            "prefix_len {}",
            l.prefix_len
        ),
    }
    assert!(
        l.preferred_lifetime <= l.valid_lifetime,
        "preferred above valid"
    );
    assert!(!c.client_id.is_empty(), "a change without a client");
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, text)) = data.split_first() else {
        return;
    };
    let mode = control & 3;
    if mode == 3 {
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let _ = strip_comments(text);
        let _ = parse_kea_config(text);
        return;
    }
    let mut header = match mode {
        0 => Some(KeaHeader::parse(HEADER_22).expect("2.2 header")),
        1 => Some(KeaHeader::parse(HEADER_26).expect("2.6 header")),
        _ => None,
    };
    let mut header_seen = header.is_some();
    let mut lines = Vec::new();
    let mut splitter = LineSplitter::new();
    splitter.push(text, |(_, l)| lines.push(l.map(str::to_owned)));
    splitter.finish(|(_, l)| lines.push(l.map(str::to_owned)));

    let mut mapper = KeaMapper::new(HashMap::from([
        (1, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0)),
        (2, Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0)),
    ]));
    let mut changes = Vec::new();
    for line in &lines {
        let Ok(line) = line else { continue };
        if line.trim().is_empty() {
            continue;
        }
        if !header_seen {
            header_seen = true;
            header = KeaHeader::parse(line).ok();
            continue;
        }
        let Some(h) = header.as_mut() else {
            continue;
        };
        if line.starts_with("address,") {
            if let Ok(again) = KeaHeader::parse(line) {
                *h = again;
            }
            continue;
        }
        for field in line.split(',') {
            let _ = unescape(field);
        }
        let _ = relays_from_user_context(line);
        let row = match parse_row(h, line) {
            Ok(r) => r,
            Err(e) => {
                assert!(!e.0.is_empty(), "an error without a reason");
                continue;
            }
        };
        assert!(row.lease_type <= 2, "lease_type {}", row.lease_type);
        assert!(row.state <= 4, "state {}", row.state);
        if row.lease_type == 2 {
            assert!(
                (1..=128).contains(&row.prefix_len),
                "prefix_len {}",
                row.prefix_len
            );
        }
        let _ = relays_from_user_context(&row.user_context);
        match mapper.apply(&row) {
            Applied::Change(c) => {
                check_change(&c);
                if row.valid_lifetime != 0 {
                    assert_eq!(mapper.apply(&row), Applied::Duplicate, "a row read again");
                }
                changes.push(c);
            }
            Applied::Duplicate => {}
            Applied::Ignored(why) => assert!(!why.is_empty()),
        }
        let _ = mapper.remembered();
    }

    if !changes.is_empty() {
        let journal = Journal::format(vec![0; HEADER_LEN + 16 * 1024]).expect("format");
        let (mut h, _) = History::open(Store::new(), journal);
        for c in &changes {
            let _ = h.apply(c, c.lease.cltt);
        }
        let _ = h.expire(ServerTime(u32::MAX));
    }
});
