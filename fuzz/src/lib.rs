//! Checks shared by the fuzz targets: what must hold for any input the codec accepts.
//!
//! The codec promises three things for untrusted bytes: it never panics, a message it accepts
//! re-emits byte for byte (it keeps unknown options and never reorders), and everything nested in
//! an accepted message (option lists, relayed messages) decodes lazily without error, because
//! parsing already validated it. Every check here panics when a promise is broken, which is how
//! libFuzzer learns about a bug.

pub mod fixture;

use lqd::codec::{
    DhcpOption, Duid, Header, Message, MessageRepr, OptionCode, Options, RawOptions, RelayMessage,
};

/// Runs every check on `data` taken as one DHCPv6 message (no TCP prefix).
pub fn check_message(data: &[u8]) {
    // The raw views take anything and must never panic.
    walk_raw(RawOptions::new(data));
    if let Ok(view) = Message::new_checked(data) {
        let _ = (view.msg_type(), view.xid());
        walk_raw(view.options());
    }
    if let Ok(view) = RelayMessage::new_checked(data) {
        let _ = (
            view.msg_type(),
            view.hop_count(),
            view.link_address(),
            view.peer_address(),
        );
        walk_raw(view.options());
    }

    let repr = match MessageRepr::parse(data) {
        Ok(repr) => repr,
        Err(e) => {
            // The error must be describable.
            let _ = (e.kind(), e.option(), e.reason(), e.to_string());
            return;
        }
    };

    check_round_trip(data, &repr);
    check_views_agree(data, &repr);
    walk_message(&repr, 0);
}

/// Walks a raw option list up to its first error; every option that types cleanly on its own
/// must emit back to its own bytes.
fn walk_raw(options: RawOptions<'_>) {
    let mut rest = options.remaining();
    for item in options {
        let Ok(raw) = item else { break };
        let total = 4 + raw.data.len();
        let own_bytes = &rest[..total];
        rest = &rest[total..];
        if let Ok(opt) = DhcpOption::from_raw(raw) {
            assert_eq!(
                opt.code().value(),
                raw.code,
                "typed option changed its code"
            );
            assert_eq!(opt.buffer_len(), total, "typed option length");
            let mut buf = vec![0xa5; total];
            assert_eq!(opt.emit(&mut buf).expect("emit a parsed option"), total);
            assert_eq!(buf, own_bytes, "a parsed option re-emits differently");
        }
    }
}

/// A parsed message must emit into exactly `buffer_len()` octets, as the input, and parse again
/// to an equal repr.
fn check_round_trip(data: &[u8], repr: &MessageRepr<'_>) {
    let len = repr.buffer_len();
    assert_eq!(len, data.len(), "buffer_len differs from the input length");
    let mut buf = vec![0xa5; len];
    let n = repr.emit(&mut buf).expect("emit a parsed message");
    assert_eq!(n, len, "emit wrote a different length than buffer_len");
    assert_eq!(buf, data, "re-emitted bytes differ from the input");
    if len > 0 {
        // One octet short must be a clean error, not a panic or a partial success.
        let mut short = vec![0xa5; len - 1];
        assert!(repr.emit(&mut short).is_err(), "emit into a short buffer");
    }
    let mut out = vec![7u8];
    let range = repr.emit_to_vec(&mut out).expect("emit_to_vec");
    assert_eq!(range, 1..1 + len);
    assert_eq!(&out[1..], data, "emit_to_vec bytes");

    let again = MessageRepr::parse(&buf).expect("re-parse our own emission");
    assert_eq!(&again, repr, "re-parsed repr differs");
}

/// The raw views read the same header and option codes as the typed parse.
fn check_views_agree(data: &[u8], repr: &MessageRepr<'_>) {
    let raw: Vec<u16> = match repr.header {
        Header::ClientServer { msg_type, xid } => {
            let view = Message::new_checked(data).expect("parsed message has a header");
            assert_eq!((view.msg_type(), view.xid()), (msg_type, xid));
            assert_eq!(repr.xid(), Some(xid));
            view.options().map(|o| o.expect("validated").code).collect()
        }
        Header::Relay {
            msg_type,
            hop_count,
            link_address,
            peer_address,
        } => {
            let view = RelayMessage::new_checked(data).expect("parsed relay has a header");
            assert_eq!(
                (
                    view.msg_type(),
                    view.hop_count(),
                    view.link_address(),
                    view.peer_address()
                ),
                (msg_type, hop_count, link_address, peer_address)
            );
            view.options().map(|o| o.expect("validated").code).collect()
        }
    };
    let typed: Vec<u16> = repr.options.iter().map(|o| o.code().value()).collect();
    assert_eq!(raw, typed, "raw and typed option codes differ");
}

/// Decodes everything nested, so every lazy path runs on validated bytes.
fn walk_message(msg: &MessageRepr<'_>, depth: usize) {
    assert!(
        depth <= usize::from(lqd::codec::MAX_DEPTH),
        "nested deeper than MAX_DEPTH"
    );
    let _ = format!("{msg:?}");
    let opts = &msg.options;
    let _ = (
        opts.status(),
        opts.client_id(),
        opts.lq_query(),
        opts.base_time(),
        opts.requests(OptionCode::LqBaseTime),
        opts.get(OptionCode::ClientData),
        opts.len(),
        opts.is_empty(),
    );
    walk_options(opts, depth + 1);
}

fn walk_options(options: &Options<'_>, depth: usize) {
    let wire = options.wire_bytes().expect("parsed lists keep their bytes");
    let mut total = 0usize;
    for opt in options.iter() {
        total += opt.buffer_len();
        check_option_round_trip(&opt);
        match opt {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                check_duid(d)
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => walk_options(&ia.options, depth + 1),
            DhcpOption::IaAddr(a) => walk_options(&a.options, depth + 1),
            DhcpOption::IaPrefix(p) => {
                assert!(p.prefix_len <= 128, "prefix length above 128 accepted");
                walk_options(&p.options, depth + 1);
            }
            DhcpOption::Oro(codes) => {
                assert_eq!(codes.iter().count() * 2, codes.buffer_len());
            }
            DhcpOption::LqClientLink(links) => {
                assert_eq!(links.iter().count() * 16, links.buffer_len());
            }
            DhcpOption::RelayMsg(m) => {
                let inner = m.message().expect("a validated embedded message decodes");
                assert_eq!(inner.buffer_len(), m.buffer_len());
                walk_message(&inner, depth + 1);
            }
            DhcpOption::StatusCode(s) => {
                let _ = (s.status.value(), s.status.name(), s.message_lossy());
            }
            DhcpOption::LqQuery(q) => {
                let _ = (q.query_type.value(), q.query_type.name());
                walk_options(&q.options, depth + 1);
            }
            DhcpOption::ClientData(c) => walk_options(&c, depth + 1),
            DhcpOption::LqRelayData(r) => {
                let inner = r
                    .relay_message
                    .message()
                    .expect("a validated relay-data message decodes");
                assert_eq!(inner.buffer_len(), r.relay_message.buffer_len());
                walk_message(&inner, depth + 1);
            }
            DhcpOption::Unknown(raw) => {
                assert!(
                    matches!(OptionCode::from(raw.code), OptionCode::Unknown(_)),
                    "a typed code ({}) was kept as Unknown",
                    raw.code
                );
            }
            _ => {}
        }
    }
    // Lazy iteration must see every octet the parse validated.
    assert_eq!(
        total,
        wire.len(),
        "iteration stopped early in a validated list"
    );
}

/// Each option on its own: exact length, and it parses back to itself.
fn check_option_round_trip(opt: &DhcpOption<'_>) {
    let len = opt.buffer_len();
    let mut buf = vec![0xa5; len];
    assert_eq!(opt.emit(&mut buf).expect("emit a parsed option"), len);
    let raw = RawOptions::new(&buf)
        .next()
        .expect("one option")
        .expect("a well-formed option header");
    assert_eq!(4 + raw.data.len(), len);
    let again = DhcpOption::from_raw(raw).expect("our own option parses");
    assert_eq!(&again, opt, "option re-parse differs");
}

fn check_duid(d: Duid<'_>) {
    let _ = (d.duid_type(), d.kind(), d.to_string(), d.as_bytes().len());
}
