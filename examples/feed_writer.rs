//! A writer for lqd's `jsonl:unix` socket that loses no line to a restart of lqd: it names
//! itself, numbers its lines, keeps each line until lqd acknowledges it, and after reconnecting
//! re-sends from the line after the one lqd says it holds (`docs/jsonl-acks.md`).
//!
//! ```text
//! cargo run --example feed_writer -- /run/lqd/feed.sock kea-primary < changes.jsonl
//! ```
//!
//! Standard input holds lease changes, one per line (`schema/lease-change.schema.json`), without
//! `seq`: this writer numbers them. It ends once its input has ended and lqd has acknowledged
//! every line. The unacknowledged lines are kept in memory: across restarts of lqd it resumes
//! exactly; across a restart of the writer itself it numbers on from lqd's acknowledgement, and
//! the lines it had not had acknowledged are gone with it (a lease store then re-sends its
//! state).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

use serde_json::{Value, json};

/// What the writer keeps across connections.
struct Writer {
    name: String,
    /// Numbered lines lqd has not acknowledged yet, oldest first.
    unacked: VecDeque<(u64, String)>,
    /// The number of the next new line: decided by lqd's answer to the first hello.
    next_seq: Option<u64>,
    input_done: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, name] = args.as_slice() else {
        return Err("usage: feed_writer SOCKET WRITER-NAME < changes.jsonl".into());
    };
    // Standard input on its own thread, so that waiting for lqd never waits for input.
    let (lines, input) = sync_channel::<String>(1024);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if !line.trim().is_empty() && lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut w = Writer {
        name: name.clone(),
        unacked: VecDeque::new(),
        next_seq: None,
        input_done: false,
    };
    loop {
        match session(socket, &mut w, &input) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!(
                    "feed_writer: {e}; {} lines unacknowledged; reconnecting in 1 s",
                    w.unacked.len()
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// One connection: hello, re-send what lqd lacks, then new lines; Ok once the input has ended
/// and every line is acknowledged.
fn session(socket: &str, w: &mut Writer, input: &Receiver<String>) -> std::io::Result<()> {
    let mut to_lqd = UnixStream::connect(socket)?;
    let mut from_lqd = BufReader::new(to_lqd.try_clone()?);
    writeln!(to_lqd, "{}", json!({ "hello": w.name }))?;
    let welcome = read(&mut from_lqd)?;
    if let Some(e) = welcome.get("error") {
        return Err(std::io::Error::other(format!("lqd refused the hello: {e}")));
    }
    let held = welcome["ack"].as_u64();
    eprintln!("feed_writer: lqd holds our lines up to {held:?}");
    let next = w.next_seq.get_or_insert(held.map_or(1, |s| s + 1));
    if held.is_some_and(|h| h >= *next) {
        // lqd holds lines this writer does not know of (an earlier run): number on after them.
        *next = held.map_or(1, |h| h + 1);
    }
    w.unacked.retain(|(seq, _)| Some(*seq) > held);
    for (_, line) in &w.unacked {
        writeln!(to_lqd, "{line}")?;
    }

    // What lqd writes back, on a thread of its own: acknowledgements, rejected lines.
    let acked = Arc::new(AtomicU64::new(held.map_or(0, |s| s + 1)));
    let reader = {
        let acked = Arc::clone(&acked);
        std::thread::spawn(move || {
            while let Ok(m) = read(&mut from_lqd) {
                if let Some(a) = m["ack"].as_u64() {
                    acked.fetch_max(a + 1, Ordering::AcqRel);
                }
                if m.get("rejected").is_some() || m.get("error").is_some() {
                    eprintln!("feed_writer: lqd says {m}");
                }
            }
        })
    };
    let result = (|| loop {
        let acked = acked.load(Ordering::Acquire).checked_sub(1);
        w.unacked.retain(|(seq, _)| Some(*seq) > acked);
        if w.input_done {
            if w.unacked.is_empty() {
                return Ok(());
            }
            writeln!(to_lqd, "{}", json!({ "sync": true }))?;
            std::thread::sleep(Duration::from_millis(100));
            if reader.is_finished() {
                return Err(std::io::Error::other("lqd closed the connection"));
            }
            continue;
        }
        match input.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let Ok(Value::Object(mut change)) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("feed_writer: not a JSON object, not sent: {line}");
                    continue;
                };
                let seq = w.next_seq.unwrap_or(1);
                w.next_seq = Some(seq + 1);
                change.insert("seq".into(), seq.into());
                let line = Value::Object(change).to_string();
                // Kept before it is written: a write that fails is re-sent on the next
                // connection.
                w.unacked.push_back((seq, line.clone()));
                writeln!(to_lqd, "{line}")?;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => w.input_done = true,
        }
    })();
    let _ = to_lqd.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    result
}

/// One line from lqd as JSON.
fn read(from_lqd: &mut BufReader<UnixStream>) -> std::io::Result<Value> {
    let mut line = String::new();
    if from_lqd.read_line(&mut line)? == 0 {
        return Err(std::io::Error::other("lqd closed the connection"));
    }
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
