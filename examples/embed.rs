//! A Rust DHCPv6 server embedding lqd: it runs lqd's event loop on a thread of its own and
//! pushes every lease change into it through a `FeedHandle`. Requestors then query lqd over
//! TCP and UDP as usual.
//!
//! ```text
//! cargo run --example embed
//! ```

use std::net::{Ipv6Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lqd::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageRepr, OptionCode, QueryType};
use lqd::engine::session::ActiveSettings;
use lqd::feed::{feed, system_time};
use lqd::server::{JournalSettings, OpenAccess, Server, ServerConfig};
use lqd::store::journal::FlushPolicy;
use lqd::store::{Change, Lease, LeaseKind, LeaseState, LinkMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // lqd's side: bind, connect the feed, run the loop on its own thread.
    let mut server = Server::bind(ServerConfig {
        listen: vec!["[::1]:0".parse()?],
        server_id: vec![0, 2, 0, 0, 0, 9, b'e', b'm', b'b', b'e', b'd'],
        max_connections: 10_000,
        max_connections_per_requestor: 10,
        max_concurrent_queries: 4,
        bulk_data_timeout: Duration::from_secs(300),
        high_water: 64 * 1024,
        read_budget: 64,
        udp_receive_buffer: 4 << 20,
        tcp_send_buffer: 256 << 10,
        feed_budget: 4096,
        access: Box::new(OpenAccess),
        links: LinkMap::default(),
        active: ActiveSettings::default(),
        active_send_timeout: Duration::from_secs(120),
        journal: JournalSettings {
            path: std::env::temp_dir().join(format!("lqd-embed-{}.journal", std::process::id())),
            size: 4 << 20,
            flush: FlushPolicy::Os,
        },
        tls: None,
        metrics: None,
        source_times: false,
    })?;
    let addr = server.local_addrs()?[0];
    let (leases, receiver) = feed(4096, server.waker());
    server.set_feed(receiver);
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = Arc::clone(&stop);
    let lqd = std::thread::spawn(move || server.run(&loop_stop));

    // The DHCPv6 server's side: it has just granted an address to a client on link 1.
    let granted = Change {
        client_id: vec![0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0x01].into_boxed_slice(),
        link: "2001:db8:0:1::1".parse()?,
        lease: Lease {
            kind: LeaseKind::Address,
            address: "2001:db8:0:1::1234".parse()?,
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: system_time(),
            state: LeaseState::Active,
        },
        relay: None,
    };
    leases.send(granted)?;
    std::thread::sleep(Duration::from_millis(100));

    // A requestor asks lqd about that address over UDP.
    let socket = UdpSocket::bind("[::1]:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let query = MessageBuilder::leasequery(7)
        .client_id(&[0, 3, 0, 1, 0x02, 0, 0, 0, 0, 0xff])
        .lq_query(QueryType::ByAddress, Ipv6Addr::UNSPECIFIED, |q| {
            q.iaaddr(
                "2001:db8:0:1::1234"
                    .parse()
                    .unwrap_or(Ipv6Addr::UNSPECIFIED),
                0,
                0,
            )
        })
        .build()?;
    socket.send_to(&query, addr)?;
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf)?;
    let reply = MessageRepr::parse(&buf[..n])?;
    match reply.options.get(OptionCode::ClientData) {
        Some(DhcpOption::ClientData(data)) => {
            println!("lqd knows the client: {:?}", data.client_id());
        }
        _ => println!("lqd has no binding for it"),
    }

    stop.store(true, Ordering::Relaxed);
    lqd.join().map_err(|_| "lqd's thread panicked")??;
    Ok(())
}
