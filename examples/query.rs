//! Asks a running lqd a question and prints the answer, one line per lease: a requestor in
//! 130 lines, built on the codec alone. `lq` (src/bin/lq.rs) is the requestor to use; this
//! shows the wire format at work.
//!
//! ```text
//! cargo run --example query -- [::1]:5470 link 2001:db8:0:1::1     # Bulk, over TCP
//! cargo run --example query -- [::1]:5470 address 2001:db8:0:1::2a  # UDP
//! ```
//!
//! It ends with what it printed: `N lease(s) of M client(s)` on stderr.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::ops::AddAssign;
use std::process::ExitCode;
use std::time::Duration;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType,
};

const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0x01];

/// What was printed: lease lines, and the clients they belong to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Printed {
    leases: usize,
    clients: usize,
}

impl AddAssign for Printed {
    fn add_assign(&mut self, other: Self) {
        self.leases += other.leases;
        self.clients += other.clients;
    }
}

/// Prints each address and prefix of the message's client data to `out`, one line each (or
/// its status, when it has no client data); counts what it printed.
fn print(msg: &MessageRepr<'_>, out: &mut impl Write) -> std::io::Result<Printed> {
    let Some(DhcpOption::ClientData(cd)) = msg.options.get(OptionCode::ClientData) else {
        if let Some(s) = msg.options.status() {
            writeln!(
                out,
                "{}: {} {}",
                msg.msg_type(),
                s.status,
                s.message_lossy()
            )?;
        }
        return Ok(Printed::default());
    };
    let client = cd.client_id().map(|d| d.to_string()).unwrap_or_default();
    let mut leases = 0;
    for o in cd.iter() {
        match o {
            DhcpOption::IaAddr(a) => {
                writeln!(out, "{client}  {}  valid {}s", a.address, a.valid_lifetime)?;
            }
            DhcpOption::IaPrefix(p) => {
                writeln!(
                    out,
                    "{client}  {}/{}  valid {}s",
                    p.prefix, p.prefix_len, p.valid_lifetime
                )?;
            }
            _ => continue,
        }
        leases += 1;
    }
    Ok(Printed {
        leases,
        clients: usize::from(leases > 0),
    })
}

fn bulk(server: SocketAddr, link: Ipv6Addr) -> std::io::Result<Printed> {
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, link, |q| q)
        .build_frame()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&q)?;
    let (mut buf, mut chunk, mut dec) = (Vec::new(), [0u8; 65536], FrameDecoder::default());
    let (mut printed, mut out) = (Printed::default(), std::io::stdout().lock());
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(printed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Ok(Decoded::Frame { message, consumed }) = dec.decode(&buf[pos..]) {
            pos += consumed;
            let Ok(m) = MessageRepr::parse(message) else {
                continue;
            };
            printed += print(&m, &mut out)?;
            let has_data = m.options.get(OptionCode::ClientData).is_some();
            if m.msg_type() == MessageType::LeasequeryDone
                || (m.msg_type() == MessageType::LeasequeryReply && !has_data)
            {
                return Ok(printed);
            }
        }
        buf.drain(..pos);
    }
}

fn udp(server: SocketAddr, address: Ipv6Addr) -> std::io::Result<Printed> {
    let s = UdpSocket::bind(if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    })?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let q = MessageBuilder::leasequery(2)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(address, 0, 0)
        })
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.send_to(&q, server)?;
    let mut buf = [0u8; 65536];
    let (n, _) = s.recv_from(&mut buf)?;
    let m = MessageRepr::parse(&buf[..n]).map_err(|e| std::io::Error::other(e.to_string()))?;
    print(&m, &mut std::io::stdout().lock())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, kind, value] = args.as_slice() else {
        eprintln!("usage: query SERVER (link LINK-ADDRESS | address ADDRESS)");
        return ExitCode::from(2);
    };
    let (Ok(server), Ok(value)) = (server.parse::<SocketAddr>(), value.parse::<Ipv6Addr>()) else {
        eprintln!("error: SERVER is ADDR:PORT and the value an IPv6 address");
        return ExitCode::from(2);
    };
    let result = match kind.as_str() {
        "link" => bulk(server, value),
        "address" => udp(server, value),
        _ => {
            eprintln!("error: ask by 'link' or 'address'");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(p) => {
            eprintln!("{} lease(s) of {} client(s)", p.leases, p.clients);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count is of what was printed: one line per address or prefix (issue 17: it used
    /// to count messages, one per client, whatever they held).
    #[test]
    fn the_count_is_of_the_lines_printed() {
        let client = [0u8, 3, 0, 1, 2, 0, 0, 0, 0, 7];
        let data = MessageBuilder::data(5)
            .client_data(|c| {
                c.client_id(&client)
                    .iaaddr("2001:db8::1".parse().unwrap(), 100, 200)
                    .iaaddr("2001:db8::2".parse().unwrap(), 100, 200)
                    .iaprefix("3fff:0:1::".parse().unwrap(), 56, 100, 200)
            })
            .build()
            .unwrap();
        let m = MessageRepr::parse(&data).unwrap();
        let mut out = Vec::new();
        let p = print(&m, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(p.leases, text.lines().count(), "{text}");
        assert_eq!(
            p,
            Printed {
                leases: 3,
                clients: 1
            }
        );

        // A status only: its line, but no lease and no client.
        let done = MessageBuilder::done(5)
            .status(lqd::codec::Status::Success, "")
            .build()
            .unwrap();
        let m = MessageRepr::parse(&done).unwrap();
        let mut out = Vec::new();
        assert_eq!(print(&m, &mut out).unwrap(), Printed::default());
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
    }
}
