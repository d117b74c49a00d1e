//! The populated store the `session` target runs over, the changes it applies between fills,
//! and the structured journal input of the `journal` target.
//!
//! Everything here is deterministic: the same fuzz input always meets the same store, so a
//! crash replays.

use std::net::Ipv6Addr;
use std::sync::OnceLock;

use lqd::codec::{MessageBuilder, MessageType, ServerTime};
use lqd::store::journal::{HEADER_LEN, Journal};
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey, Store};

/// The history the engine targets use: an in-memory journal.
pub type Hist = History<Journal<Vec<u8>>>;

/// The server's DUID.
pub const SERVER: [u8; 6] = [0, 3, 0, 1, 0xaa, 0xbb];
/// The server time the store was filled up to; queries start here.
pub const T0: ServerTime = ServerTime(800_000_000);
/// Links the clients are spread over.
pub const LINKS: u16 = 4;
/// Clients in the populated store (each with an address, every third with a prefix too): 200
/// bindings over 4 links, about 280 records.
pub const CLIENTS: u16 = 200;
/// The journal's ring: the populated store takes most of it, so the changes a run applies
/// make it evict (catch-up then meets DataMissing).
pub const RING: usize = 64 * 1024;

/// Link `k` (1 to [`LINKS`]).
#[must_use]
pub fn link(k: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, k, 0, 0, 0, 1)
}

/// Client `n`'s DUID (DUID-LL).
#[must_use]
pub fn client(n: u16) -> Box<[u8]> {
    vec![0, 3, 0, 1, 0x66, (n >> 8) as u8, n as u8].into()
}

/// Relay `r`'s DUID (OPTION_RELAY_ID).
#[must_use]
pub fn relay_id(r: u16) -> Vec<u8> {
    vec![0, 2, 0, 0, 0, 9, r as u8]
}

/// Remote-ID `k` of enterprise 9.
#[must_use]
pub fn remote_id(k: u16) -> RemoteIdKey {
    RemoteIdKey {
        enterprise_number: 9,
        remote_id: format!("port-{k}").into_bytes().into(),
    }
}

/// Client `n`'s link.
#[must_use]
pub fn link_of(n: u16) -> u16 {
    1 + n % LINKS
}

/// Client `n`'s address on its link.
#[must_use]
pub fn address_of(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, link_of(n), 0, 0, 1, n)
}

/// Client `n`'s delegated /64 (or /60 for every fifth client).
#[must_use]
pub fn prefix_of(n: u16) -> (Ipv6Addr, u8) {
    if n.is_multiple_of(5) {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0xf000 | link_of(n), n << 4, 0, 0, 0, 0),
            60,
        )
    } else {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 0xff00 | link_of(n), n, 0, 0, 0, 0),
            64,
        )
    }
}

/// A change of client `n`'s address (or prefix, `pd`).
#[must_use]
pub fn change(n: u16, pd: bool, state: LeaseState, cltt: ServerTime, valid: u32) -> Change {
    let l = link_of(n);
    let (kind, address, prefix_len) = if pd {
        let (p, len) = prefix_of(n);
        (LeaseKind::Prefix, p, len)
    } else {
        (LeaseKind::Address, address_of(n), 128)
    };
    let relay = (n % 7 != 6).then(|| RelayInfo {
        relay_ids: vec![relay_id(n % 3).into()],
        remote_ids: vec![remote_id(n % 11)],
        relay_message: n.is_multiple_of(4).then(|| {
            let forw = MessageBuilder::relay(
                MessageType::RelayForw,
                0,
                link(l),
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n),
            )
            .build()
            .expect("a RELAY-FORW header");
            (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1), forw.into())
        }),
    });
    Change {
        client_id: client(n),
        link: link(l),
        lease: Lease {
            kind,
            address,
            prefix_len,
            iaid: if pd { 2 } else { 1 },
            preferred_lifetime: valid / 2,
            valid_lifetime: valid,
            cltt,
            state,
        },
        relay,
    }
}

/// The journal of the populated store, built once.
fn template() -> &'static [u8] {
    static TEMPLATE: OnceLock<Vec<u8>> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let journal = Journal::format(vec![0; HEADER_LEN + RING]).expect("format");
        let (mut h, _) = History::open(Store::new(), journal);
        let start = T0.0 - 3 * u32::from(CLIENTS);
        for n in 0..CLIENTS {
            let t = ServerTime(start + 3 * u32::from(n));
            let valid = if n % 13 == 0 { u32::MAX } else { 7200 };
            h.apply(&change(n, false, LeaseState::Active, t, valid), t)
                .expect("the template fits");
            if n % 3 == 0 {
                h.apply(&change(n, true, LeaseState::Active, t, valid), t)
                    .expect("the template fits");
            }
            if n % 17 == 5 {
                // Ended bindings: tombstones in the ring.
                let t = ServerTime(t.0 + 1);
                h.apply(&change(n, false, LeaseState::Released, t, 0), t)
                    .expect("the template fits");
            }
        }
        let (_, journal) = h.into_parts();
        journal.into_inner()
    })
}

/// A fresh copy of the populated history, as lqd restores it after a restart.
#[must_use]
pub fn populated() -> Hist {
    let (journal, _) = Journal::open(template().to_vec()).expect("the template opens");
    History::open(Store::new(), journal).0
}

/// A small deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A random change at `now`: a known client most of the time, a new one sometimes.
pub fn random_change(rng: &mut Rng, now: ServerTime) -> Change {
    let n = rng.below(u64::from(CLIENTS) + 40) as u16;
    let pd = rng.below(3) == 0;
    let state = match rng.below(10) {
        0 => LeaseState::Released,
        1 => LeaseState::Declined,
        2 => LeaseState::Expired,
        3 => LeaseState::Deleted,
        _ => LeaseState::Active,
    };
    let valid = match rng.below(4) {
        0 => 30,
        1 => u32::MAX,
        _ => 7200,
    };
    change(n, pd, state, now, valid)
}

/// The journal's magic, which starts a raw journal input.
pub const JOURNAL_MAGIC: &[u8; 8] = b"LQDJRNL\0";
/// The octets of a structured journal input before its ring: flags, then one header slot.
pub const JOURNAL_PREFIX: usize = 1 + 48;

/// One header slot, as the `journal` target's structured input gives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotFields {
    /// Generation.
    pub generation: u64,
    /// Ring offset of the oldest record.
    pub tail_off: u64,
    /// Its sequence number.
    pub tail_seq: u64,
    /// Where the next record goes (a hint).
    pub head_off: u64,
    /// The next sequence number (a hint).
    pub head_seq: u64,
    /// Bit 0: records were evicted.
    pub flags: u32,
    /// The newest evicted record's time.
    pub evicted: u32,
}

impl SlotFields {
    fn to_bytes(self) -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0..8].copy_from_slice(&self.generation.to_le_bytes());
        b[8..16].copy_from_slice(&self.tail_off.to_le_bytes());
        b[16..24].copy_from_slice(&self.tail_seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.head_off.to_le_bytes());
        b[32..40].copy_from_slice(&self.head_seq.to_le_bytes());
        b[40..44].copy_from_slice(&self.flags.to_le_bytes());
        b[44..48].copy_from_slice(&self.evicted.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 octets"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 octets"));
        Self {
            generation: u64_at(0),
            tail_off: u64_at(8),
            tail_seq: u64_at(16),
            head_off: u64_at(24),
            head_seq: u64_at(32),
            flags: u32_at(40),
            evicted: u32_at(44),
        }
    }
}

/// Writes `slot` into header slot `i` with a valid CRC (`bad_crc`: an invalid one).
fn write_slot(header: &mut [u8], i: usize, slot: SlotFields, bad_crc: bool) {
    let at = 64 + 64 * i;
    header[at..at + 48].copy_from_slice(&slot.to_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..24]), &header[at..at + 60]);
    let crc = if bad_crc { !crc } else { crc };
    header[at + 60..at + 64].copy_from_slice(&crc.to_le_bytes());
}

/// The journal file a `journal` target input stands for.
///
/// An input that starts with the journal's magic is the file itself. Any other input is
/// structured, so that the header is valid most of the time and the fuzzer works on the ring:
/// a flags octet, a header slot (generation, tail offset and seq, head offset and seq, flags,
/// evicted time: little-endian, as in the file), then the ring's octets (zero-padded to at
/// least 256 and to a multiple of 8). Flags: bit 0 keeps the tail offset as given (otherwise it
/// is brought into the ring and aligned), bit 1 the same for the head offset, bit 2 adds an
/// older valid slot in the other place, bit 3 spoils the given slot's CRC, bit 4 zeroes the
/// header's magic.
#[must_use]
pub fn journal_file(data: &[u8]) -> Vec<u8> {
    if data.starts_with(JOURNAL_MAGIC) || data.len() < JOURNAL_PREFIX {
        return data.to_vec();
    }
    let flags = data[0];
    let mut slot = SlotFields::from_bytes(&data[1..JOURNAL_PREFIX]);
    let ring = &data[JOURNAL_PREFIX..];
    let ring_len = ring.len().max(256).next_multiple_of(8);
    if flags & 1 == 0 {
        slot.tail_off = slot.tail_off % ring_len as u64 / 8 * 8;
    }
    if flags & 2 == 0 {
        slot.head_off = slot.head_off % ring_len as u64 / 8 * 8;
    }
    let mut file = vec![0u8; HEADER_LEN + ring_len];
    file[..8].copy_from_slice(JOURNAL_MAGIC);
    file[8..12].copy_from_slice(&2u32.to_le_bytes());
    file[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    file[16..24].copy_from_slice(&(ring_len as u64).to_le_bytes());
    let i = (slot.generation % 2) as usize;
    write_slot(&mut file, i, slot, flags & 8 != 0);
    if flags & 4 != 0 {
        let older = SlotFields {
            generation: slot.generation.wrapping_sub(1),
            tail_off: 0,
            tail_seq: slot.tail_seq.saturating_sub(1),
            ..slot
        };
        write_slot(&mut file, 1 - i, older, false);
    }
    if flags & 16 != 0 {
        file[..8].fill(0);
    }
    file[HEADER_LEN..HEADER_LEN + ring.len()].copy_from_slice(ring);
    file
}

/// The structured `journal` input for a real journal file (the inverse of [`journal_file`]
/// for a valid journal): its newer slot, then its ring.
#[must_use]
pub fn journal_input(file: &[u8]) -> Vec<u8> {
    let slots = [64, 128].map(|at| SlotFields::from_bytes(&file[at..at + 48]));
    let slot = if slots[0].generation >= slots[1].generation {
        slots[0]
    } else {
        slots[1]
    };
    let mut out = vec![0u8];
    out.extend_from_slice(&slot.to_bytes());
    out.extend_from_slice(&file[HEADER_LEN..]);
    out
}
