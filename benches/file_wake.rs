//! From a write to a followed lease file to the Active requestor that receives it (issue 15):
//! the kea-csv source woken by inotify, against the same source polling every 100 ms only.
//!
//! Two lqd servers run in this process, each the real event loop ([`Server`]) on loopback
//! with a kea-csv source following a lease file of its own: one with [`Wake::Inotify`] (lqd's
//! default), one with [`Wake::Polling`] (the fallback on file systems without inotify). One
//! unfiltered Active query (a raw TCP requestor, Nagle off) is connected to each. An
//! iteration appends one Kea 2.2 row (a new lease, one `write`, as Kea's memfile writes a row)
//! and waits until the requestor has read the LEASEQUERY-DATA holding that client: the time
//! from just before the write until the message is parsed. So it holds the wake-up, the
//! source's read and mapping, the feed, the loop's journal append and fan-out, loopback TCP and
//! the requestor's read.
//!
//! The writes come at random moments, as Kea's do: before each, an idle gap drawn evenly from
//! 0 to 100 ms (not timed), so that a write lands anywhere in the polling source's 100 ms
//! interval and the inotify source has gone back to sleep. The two labs take turns, row by row,
//! so that both see the same machine. Each row's time is recorded; the median, p90, p99 and
//! maximum of each, and the ratio of the medians, are printed as a Markdown table.
//!
//! A plain `main`, not criterion: criterion sizes its runs from the time measured, and the
//! untimed gaps (a thousand times longer than an inotify row) would make such a run last
//! hours. Writing rows back to back instead would put every polling write just after a poll,
//! so that it waits the whole interval, which is not how Kea's writes fall.
//!
//! Run with `cargo bench --bench file_wake` (`LQD_BENCH_ROWS`, default 300, rows per lab).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lqd::codec::{
    BuildOptions, Decoded, DhcpOption, FrameDecoder, MessageBuilder, MessageRepr, MessageType,
};
use lqd::engine::session::ActiveSettings;
use lqd::feed::{KeaCsvSource, Wake, feed};
use lqd::server::{JournalSettings, OpenAccess, Server, ServerConfig};
use lqd::store::LinkMap;
use lqd::store::journal::FlushPolicy;

/// Kea 2.2's lease6 header: 17 columns.
const KEA_HEADER: &str = "address,duid,valid_lifetime,expire,subnet_id,pref_lifetime,\
lease_type,iaid,prefix_len,fqdn_fwd,fqdn_rev,hostname,hwaddr,state,user_context,hwtype,\
hwaddr_source";

const REQUESTOR: [u8; 10] = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];

/// One lqd with a kea-csv source, and an Active requestor connected to it.
struct Lab {
    name: &'static str,
    file: std::fs::File,
    requestor: TcpStream,
    decoder: FrameDecoder,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    /// Rows written so far (each a new client).
    rows: u32,
    /// The time of every iteration.
    samples: Vec<Duration>,
    stop: Arc<AtomicBool>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Lab {
    fn start(dir: &Path, name: &'static str, wake: Wake) -> Self {
        let lease_file = dir.join(format!("{name}-leases6.csv"));
        std::fs::write(&lease_file, format!("{KEA_HEADER}\n")).unwrap();
        let mut server = Server::bind(ServerConfig {
            listen: vec!["[::1]:0".parse().unwrap()],
            server_id: vec![0, 2, 0, 0, 0, 9, b'w', b'a', b'k', b'e'],
            max_connections: 100,
            max_connections_per_requestor: 10,
            max_concurrent_queries: 4,
            bulk_data_timeout: Duration::from_secs(300),
            high_water: 64 * 1024,
            read_budget: 64,
            udp_receive_buffer: 1 << 20,
            tcp_send_buffer: 0,
            feed_budget: 4096,
            access: Box::new(OpenAccess),
            links: LinkMap::default(),
            active: ActiveSettings::default(),
            active_send_timeout: Duration::from_secs(120),
            journal: JournalSettings {
                path: dir.join(format!("{name}.journal")),
                size: 16 << 20,
                flush: FlushPolicy::Os,
            },
            tls: None,
            metrics: None,
            source_times: false,
        })
        .unwrap();
        let addr: SocketAddr = server.local_addrs().unwrap()[0];
        let (handle, receiver) = feed(4096, server.waker());
        server.set_feed(receiver);
        KeaCsvSource::new(lease_file.clone())
            .wake(wake)
            .spawn(handle)
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let loop_stop = Arc::clone(&stop);
        let server = std::thread::spawn(move || server.run(&loop_stop));

        let mut requestor = TcpStream::connect(addr).unwrap();
        requestor.set_nodelay(true).unwrap();
        let query = MessageBuilder::active_leasequery(0x00_0a_c7)
            .client_id(&REQUESTOR)
            .build_frame()
            .unwrap();
        requestor.write_all(&query).unwrap();
        let mut lab = Self {
            name,
            file: std::fs::OpenOptions::new()
                .append(true)
                .open(&lease_file)
                .unwrap(),
            requestor,
            decoder: FrameDecoder::default(),
            buf: Vec::new(),
            chunk: vec![0; 65536],
            rows: 0,
            samples: Vec::new(),
            stop,
            server: Some(server),
        };
        // The query's answer: the stream is live from here.
        lab.next_message(|m| m.msg_type() == MessageType::LeasequeryReply);
        lab
    }

    /// Reads until a message `wanted` accepts has been parsed.
    fn next_message(&mut self, mut wanted: impl FnMut(&MessageRepr<'_>) -> bool) {
        loop {
            let mut pos = 0;
            let mut found = false;
            while let Ok(Decoded::Frame { message, consumed }) =
                self.decoder.decode(&self.buf[pos..])
            {
                pos += consumed;
                let m = MessageRepr::parse(message).unwrap();
                if wanted(&m) {
                    found = true;
                    break;
                }
            }
            self.buf.drain(..pos);
            if found {
                return;
            }
            let n = self.requestor.read(&mut self.chunk).unwrap();
            assert!(n > 0, "{}: lqd closed the Active query", self.name);
            self.buf.extend_from_slice(&self.chunk[..n]);
        }
    }

    /// Appends one row (a new client's lease) and waits for the Active requestor to receive it;
    /// the time from just before the write.
    fn one(&mut self) -> Duration {
        self.rows += 1;
        let n = self.rows;
        let duid = [
            0,
            3,
            0,
            1,
            2,
            0,
            0,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ];
        let duid_text: Vec<String> = duid.iter().map(|b| format!("{b:02x}")).collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let row = format!(
            "2001:db8:9:{:x}:{:x}::1,{},3600,{},1,1800,0,1,128,0,0,,,0,,0,0\n",
            n >> 16,
            n & 0xffff,
            duid_text.join(":"),
            now + 3600
        );
        let started = Instant::now();
        self.file.write_all(row.as_bytes()).unwrap();
        self.next_message(|m| {
            m.msg_type() == MessageType::LeasequeryData
                && m.options.iter().any(|o| match o {
                    DhcpOption::ClientData(cd) => {
                        cd.client_id().is_some_and(|d| d.as_bytes() == duid)
                    }
                    _ => false,
                })
        });
        let took = started.elapsed();
        self.samples.push(took);
        took
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            s.join().unwrap().unwrap();
        }
    }
}

/// The `q` quantile of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

/// xorshift64: the idle gaps, the same every run.
struct Gaps(u64);

impl Gaps {
    /// A gap drawn evenly from 0 to 100 ms.
    fn next(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(self.0 % 100_000)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rows: usize = std::env::var("LQD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let mut labs = [
        Lab::start(dir.path(), "inotify", Wake::Inotify),
        Lab::start(dir.path(), "polling", Wake::Polling),
    ];
    // A first row each, to warm up; not counted.
    for lab in &mut labs {
        lab.one();
        lab.samples.clear();
    }
    let mut gaps = Gaps(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for _ in 0..rows {
        for lab in &mut labs {
            std::thread::sleep(gaps.next());
            lab.one();
        }
    }
    println!(
        "{rows} rows per lab in {:.1?}; from the write of a row to the Active requestor:\n",
        started.elapsed()
    );
    println!("| wake | rows | median | p90 | p99 | max |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for lab in &mut labs {
        lab.samples.sort();
        let s = &lab.samples;
        medians.push(quantile(s, 0.5));
        println!(
            "| {} | {} | {:.3?} | {:.3?} | {:.3?} | {:.3?} |",
            lab.name,
            s.len(),
            quantile(s, 0.5),
            quantile(s, 0.9),
            quantile(s, 0.99),
            s[s.len() - 1]
        );
    }
    println!(
        "\nmedian polling / inotify: {:.0}x",
        medians[1].as_secs_f64() / medians[0].as_secs_f64()
    );
    for lab in &mut labs {
        lab.stop();
    }
}
