//! Asks a running lqd a question and prints the answer: a small requestor until `lq` arrives.
//!
//! ```text
//! cargo run --example query -- [::1]:5470 link 2001:db8:0:1::1     # Bulk, over TCP
//! cargo run --example query -- [::1]:5470 address 2001:db8:0:1::2a  # UDP
//! ```

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
    OptionCode, QueryType,
};

const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0x01];

fn print(msg: &MessageRepr<'_>) -> usize {
    let Some(DhcpOption::ClientData(cd)) = msg.options.get(OptionCode::ClientData) else {
        if let Some(s) = msg.options.status() {
            println!("{}: {} {}", msg.msg_type(), s.status, s.message_lossy());
        }
        return 0;
    };
    let client = cd.client_id().map(|d| d.to_string()).unwrap_or_default();
    for o in cd.iter() {
        match o {
            DhcpOption::IaAddr(a) => {
                println!("{client}  {}  valid {}s", a.address, a.valid_lifetime)
            }
            DhcpOption::IaPrefix(p) => {
                println!(
                    "{client}  {}/{}  valid {}s",
                    p.prefix, p.prefix_len, p.valid_lifetime
                );
            }
            _ => {}
        }
    }
    1
}

fn bulk(server: SocketAddr, link: Ipv6Addr) -> std::io::Result<usize> {
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let q = MessageBuilder::leasequery(1)
        .client_id(&REQUESTOR)
        .lq_query(QueryType::ByLinkAddress, link, |q| q)
        .build_frame()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    s.write_all(&q)?;
    let (mut buf, mut chunk, mut dec, mut bindings) =
        (Vec::new(), [0u8; 65536], FrameDecoder::default(), 0);
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(bindings);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut pos = 0;
        while let Ok(Decoded::Frame { message, consumed }) = dec.decode(&buf[pos..]) {
            pos += consumed;
            let Ok(m) = MessageRepr::parse(message) else {
                continue;
            };
            bindings += print(&m);
            let has_data = m.options.get(OptionCode::ClientData).is_some();
            if m.msg_type() == MessageType::LeasequeryDone
                || (m.msg_type() == MessageType::LeasequeryReply && !has_data)
            {
                return Ok(bindings);
            }
        }
        buf.drain(..pos);
    }
}

fn udp(server: SocketAddr, address: Ipv6Addr) -> std::io::Result<usize> {
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
    Ok(print(&m))
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
        Ok(n) => {
            eprintln!("{n} binding(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
