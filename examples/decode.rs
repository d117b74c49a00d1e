//! Decodes DHCPv6 leasequery messages given in hex and prints their option tree.
//!
//! ```text
//! cargo run --example decode -- 00200f123456...        # a TCP frame or a bare message
//! echo 0e123456... | cargo run --example decode         # one message or frame per line
//! ```
//!
//! Input that starts with a plausible 2-octet `message-size` matching its length is treated as
//! a TCP stream of frames; anything else as one bare message (a UDP payload).

use std::io::BufRead;
use std::process::ExitCode;

use lqd::codec::{Decoded, DhcpOption, FrameDecoder, Header, MessageRepr, Options};

fn print_options(opts: &Options<'_>, depth: usize) {
    for o in opts.iter() {
        let pad = "  ".repeat(depth);
        let code = o.code();
        match o {
            DhcpOption::ClientId(d) | DhcpOption::ServerId(d) | DhcpOption::RelayId(d) => {
                println!("{pad}{code}: {d}");
            }
            DhcpOption::IaNa(ia) | DhcpOption::IaPd(ia) => {
                println!("{pad}{code}: iaid {} t1 {} t2 {}", ia.iaid, ia.t1, ia.t2);
                print_options(&ia.options, depth + 1);
            }
            DhcpOption::IaAddr(a) => {
                println!(
                    "{pad}{code}: {} preferred {} valid {}",
                    a.address, a.preferred_lifetime, a.valid_lifetime
                );
                print_options(&a.options, depth + 1);
            }
            DhcpOption::IaPrefix(p) => {
                println!(
                    "{pad}{code}: {}/{} preferred {} valid {}",
                    p.prefix, p.prefix_len, p.preferred_lifetime, p.valid_lifetime
                );
                print_options(&p.options, depth + 1);
            }
            DhcpOption::Oro(l) => {
                let codes: Vec<String> = l.iter().map(|c| c.to_string()).collect();
                println!("{pad}{code}: {}", codes.join(", "));
            }
            DhcpOption::StatusCode(s) => {
                println!("{pad}{code}: {} \"{}\"", s.status, s.message_lossy());
            }
            DhcpOption::RemoteId(r) => {
                println!(
                    "{pad}{code}: enterprise {} id {}",
                    r.enterprise_number,
                    hex(r.remote_id)
                );
            }
            DhcpOption::LqQuery(q) => {
                println!("{pad}{code}: {} link {}", q.query_type, q.link_address);
                print_options(&q.options, depth + 1);
            }
            DhcpOption::ClientData(l) => {
                println!("{pad}{code}");
                print_options(&l, depth + 1);
            }
            DhcpOption::CltTime(t) => println!("{pad}{code}: {t} s ago"),
            DhcpOption::LqBaseTime(t) | DhcpOption::LqStartTime(t) | DhcpOption::LqEndTime(t) => {
                println!("{pad}{code}: {} (unix {})", t.0, t.to_unix());
            }
            DhcpOption::LqClientLink(l) => {
                let links: Vec<String> = l.iter().map(|a| a.to_string()).collect();
                println!("{pad}{code}: {}", links.join(", "));
            }
            DhcpOption::RelayMsg(m) => {
                println!("{pad}{code}");
                if let Ok(m) = m.message() {
                    print_message(&m, depth + 1);
                }
            }
            DhcpOption::LqRelayData(r) => {
                println!("{pad}{code}: peer {}", r.peer_address);
                if let Ok(m) = r.relay_message.message() {
                    print_message(&m, depth + 1);
                }
            }
            DhcpOption::InterfaceId(b) => println!("{pad}{code}: {}", hex(b)),
            DhcpOption::Unknown(raw) => println!("{pad}option {}: {}", raw.code, hex(raw.data)),
            _ => println!("{pad}{code}"),
        }
    }
}

fn print_message(m: &MessageRepr<'_>, depth: usize) {
    let pad = "  ".repeat(depth);
    match m.header {
        Header::ClientServer { msg_type, xid } => println!("{pad}{msg_type} xid {xid}"),
        Header::Relay {
            msg_type,
            hop_count,
            link_address,
            peer_address,
        } => {
            println!("{pad}{msg_type} hop {hop_count} link {link_address} peer {peer_address}");
        }
    }
    print_options(&m.options, depth + 1);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn decode(bytes: &[u8]) -> Result<(), String> {
    let framed = bytes.len() >= 2
        && usize::from(u16::from_be_bytes([bytes[0], bytes[1]])) + 2 <= bytes.len();
    if !framed {
        let m = MessageRepr::parse(bytes).map_err(|e| format!("message: {e}"))?;
        print_message(&m, 0);
        return Ok(());
    }
    let mut dec = FrameDecoder::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match dec.decode(rest).map_err(|e| format!("frame: {e}"))? {
            Decoded::Frame { message, consumed } => {
                let m = MessageRepr::parse(message).map_err(|e| format!("message: {e}"))?;
                print_message(&m, 0);
                rest = &rest[consumed..];
            }
            Decoded::Incomplete { needed } => {
                return Err(format!(
                    "incomplete frame: {} of {needed} octets",
                    rest.len()
                ));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inputs: Vec<String> = if args.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        args
    };
    let mut failed = false;
    for input in inputs.iter().filter(|l| !l.trim().is_empty()) {
        let result = unhex(input)
            .ok_or_else(|| "not hex".to_string())
            .and_then(|b| decode(&b));
        if let Err(e) = result {
            eprintln!("error: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
