//! Fuzz target: a whole Bulk / Active Leasequery connection over a populated store.
//!
//! The input is four control octets, then the TCP byte stream a requestor sends. The stream is
//! fed to `Session::handle_bytes` in reads of 1 to 64 octets (or all at once), the way the
//! server does: whatever a call leaves unconsumed waits for the next one, and after every call
//! `Session::fill` drains the running answers up to the high-water mark. Then, for a few rounds,
//! changes are applied to the history (new, renewed and ended bindings, expiry, a clock moved
//! forward past the Active idle timeout) and `fill` runs until the session has nothing left to
//! say, which drives the Active streams and their catch-up.
//!
//! Nothing may panic; every octet the session writes must be whole frames, each a message that
//! parses and passes `lqd_fuzz::check_message`, and each a message a server sends.
//!
//! Control octets: `[0]` bits 0-1 max concurrent queries (1 to 4), bit 2 Active off, bit 3
//! catch-up off, bits 4-5 the high-water mark, bit 6 changes between reads too, bit 7 a
//! shutdown (QueryTerminated) at the end; `[1]` bits 0-5 the read size, bit 6 one read of
//! everything, bit 7 a keepalive at the requestor's EOF; `[2]`, `[3]` the changes' seed, and
//! `[2]` bits 0-2 the rounds of changes (1 to 8).
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use lqd::codec::{Decoded, FrameDecoder, MessageRepr, MessageType, ServerTime};
use lqd::engine::active::EncodeCache;
use lqd::engine::session::{ActiveSettings, AllowAll, Ctx, Session};
use lqd_fuzz::fixture::{self, Hist, Rng, SERVER, T0};

/// Calls of `fill` before a session must have settled (no changes arriving meanwhile).
const SETTLE: usize = 20_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

struct Conn {
    h: Hist,
    session: Session,
    cache: EncodeCache,
    now: ServerTime,
    mono: Instant,
    active: ActiveSettings,
    high_water: usize,
    /// Everything the session wrote.
    wire: Vec<u8>,
    /// Octets read but not consumed yet.
    pending: Vec<u8>,
    closed: bool,
}

/// The context of a connection's turn, borrowing only its history (not its session).
macro_rules! ctx {
    ($c:expr) => {
        Ctx {
            history: &$c.h,
            server_id: &SERVER,
            now: $c.now,
            mono: $c.mono,
            active: $c.active,
        }
    };
}

impl Conn {
    /// One `handle_bytes` on what is pending; false when nothing was consumed.
    fn read(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let mut out = Vec::new();
        let mut events = Vec::new();
        let ctx = ctx!(self);
        let r = self
            .session
            .handle_bytes(&self.pending, &ctx, &AllowAll, &mut out, &mut events);
        self.wire.extend_from_slice(&out);
        for e in &events {
            let _ = format!("{e:?}");
        }
        match r {
            Ok(n) => {
                assert!(n <= self.pending.len(), "consumed more than it was given");
                self.pending.drain(..n);
                n > 0
            }
            Err(reason) => {
                let _ = reason.to_string();
                self.closed = true;
                false
            }
        }
    }

    /// One `fill`, the buffer then flushed; true when it wrote or has more.
    fn fill(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let mut out = Vec::new();
        let ctx = ctx!(self);
        let more = self
            .session
            .fill(&ctx, &mut self.cache, &mut out, self.high_water);
        let wrote = !out.is_empty();
        self.wire.extend_from_slice(&out);
        more || wrote
    }

    /// Reads and fills, as the server's loop does, until the session neither consumes nor
    /// writes.
    fn settle(&mut self) {
        for _ in 0..SETTLE {
            let read = self.read();
            let wrote = self.fill();
            if !read && !wrote {
                return;
            }
        }
        panic!("the session did not settle in {SETTLE} turns");
    }

    fn changes(&mut self, rng: &mut Rng) {
        self.now = ServerTime(self.now.0.saturating_add(rng.below(90) as u32));
        self.mono = epoch() + Duration::from_secs(u64::from(self.now.0 - T0.0));
        for _ in 0..rng.below(8) {
            let c = fixture::random_change(rng, self.now);
            self.h.apply(&c, self.now).expect("a change applies");
        }
        if rng.below(4) == 0 {
            self.h.expire(self.now).expect("expiry applies");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<4>() else {
        return;
    };
    let high_water = match (head[0] >> 4) & 3 {
        0 => 64 * 1024,
        1 => 4096,
        2 => 1024,
        _ => 200,
    };
    let mut conn = Conn {
        h: fixture::populated(),
        session: Session::new(usize::from(head[0] & 3) + 1),
        cache: EncodeCache::with_slots(256),
        now: T0,
        mono: epoch(),
        active: ActiveSettings {
            enabled: head[0] & 4 == 0,
            catch_up: head[0] & 8 == 0,
            idle_timeout: Duration::from_secs(60),
        },
        high_water,
        wire: Vec::new(),
        pending: Vec::new(),
        closed: false,
    };
    let chunk = if head[1] & 0x40 != 0 {
        stream.len().max(1)
    } else {
        usize::from(head[1] & 0x3f) + 1
    };
    let mut rng = Rng(u64::from(u16::from_le_bytes([head[2], head[3]])));
    for piece in stream.chunks(chunk) {
        conn.pending.extend_from_slice(piece);
        conn.settle();
        if head[0] & 0x40 != 0 {
            conn.changes(&mut rng);
        }
    }
    conn.settle();
    if head[1] & 0x80 != 0 && !conn.closed {
        let mut out = Vec::new();
        conn.session.keepalive_now(&ctx!(conn), &mut out);
        conn.wire.extend_from_slice(&out);
    }
    for _ in 0..=(head[2] & 7) {
        conn.changes(&mut rng);
        conn.settle();
    }
    if head[0] & 0x80 != 0 && !conn.closed {
        let mut out = Vec::new();
        conn.session.terminate_all(&SERVER, conn.now, &mut out);
        conn.wire.extend_from_slice(&out);
        assert_eq!(
            conn.session.running(),
            0,
            "queries left after terminate_all"
        );
    }

    check_wire(&conn.wire);
});

/// Every octet written is part of a whole frame holding a server's message that parses.
fn check_wire(wire: &[u8]) {
    let mut decoder = FrameDecoder::default();
    let mut rest = wire;
    while !rest.is_empty() {
        match decoder.decode(rest) {
            Ok(Decoded::Frame { message, consumed }) => {
                let repr = MessageRepr::parse(message).unwrap_or_else(|e| {
                    panic!("the session wrote a message that does not parse: {e}")
                });
                assert!(
                    matches!(
                        repr.msg_type(),
                        MessageType::LeasequeryReply
                            | MessageType::LeasequeryData
                            | MessageType::LeasequeryDone
                    ),
                    "the session wrote a {}",
                    repr.msg_type()
                );
                lqd_fuzz::check_message(message);
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete { .. }) => panic!("the session wrote a partial frame"),
            Err(e) => panic!("the session wrote a bad frame: {e}"),
        }
    }
}
