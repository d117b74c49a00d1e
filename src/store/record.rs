//! A binding's state as one journal record payload: what the binding looked like after a change,
//! enough to report it (D5) and to rebuild the mirror at start; and, since version 2, the
//! numbered writers' marks that must be durable together with it.
//!
//! Version 3 (written now, decision D42): version 2's content, packed. Numbers marked *var* are
//! LEB128 (7 bits an octet, low first); fixed-size integers are big-endian.
//!
//! | field | size | meaning |
//! |---|---|---|
//! | version | 1 | [`RECORD_VERSION`], 3 |
//! | flags | 1 | bit 0: a binding follows; bit 1: the writers' marks of every earlier record are void; bit 2: the store's size follows; bit 3: marks follow; bit 4: a relay template's definition ([`template`]), and nothing else |
//! | definition | | bit 4: the template's number (var), its body's length (var) and body |
//! | binding | | bit 0 (below) |
//! | bindings | var | bit 2: as in version 2 |
//! | marks | | bit 3: as in version 2 (count, then each writer and seq) |
//!
//! The binding:
//!
//! | field | size | meaning |
//! |---|---|---|
//! | form | 1 | bits 0–1: the relayed message: 0 none, 1 by template, 2 whole; bit 2: the link is written (else it is the template's innermost link-address); bit 3: the innermost peer-address is `fe80::/64` (8 octets written, else 16); bits 4–5: the relay-ids and remote-ids: 0 written, 1 those of the message innermost hop first, 2 outermost first |
//! | template | var | form 1: its number |
//! | last_change | 4 | server time of the change |
//! | client_id | var + n | the client's DUID |
//! | link | 16 | form bit 2 |
//! | lease count | var | then per lease: |
//! | head | 1 | bit 0: kind; bits 1–3: state; bits 4–5: the address: 0 whole (16), 1 its last 8 octets (the first 8 are the link's), 2 its leading octets up to its last non-zero one (var count, then octets); bit 6: a prefix length follows (always for a prefix; for an address only when not 128) |
//! | prefix_len | 1 | head bit 6 |
//! | iaid, preferred, valid | var × 3 | |
//! | cltt | var | zigzag: cltt − last_change |
//! | relayed message | | form 1: the peer-address (8 or 16), then per remote-id hole of the template its length (var) and octets; form 2: the address it came from (16), its length (var) and octets |
//! | relay-ids, remote-ids | | form bits 4–5 = 0: count (var), each length (var) + octets; count (var), each enterprise 4 + length (var) + octets |
//!
//! Version 2 (still read; all integers big-endian):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | version | 1 | [`RECORD_VERSION`], 2 |
//! | flags | 1 | bit 0: a binding follows; bit 1: the writers' marks of every earlier record are void |
//! | binding | | when bit 0 is set: every field of version 1 after its version octet (below) |
//! | bindings | 4 | how many bindings lqd's store held once this record's change was applied |
//! | mark count | 1 | at most [`MAX_MARKS`]; then per mark: |
//! | writer length, writer | 1 + n | the writer's name, UTF-8, 1 to 255 octets |
//! | seq | 8 | the writer's last line lqd had taken (applied or rejected) when it wrote this record |
//!
//! A record without a binding carries only marks (and the count): a writer's numbered line that
//! changed nothing, or a mark the ring was about to drop. Active queries skip it, as they skip
//! any record whose binding they cannot read. How lqd uses the marks is told in
//! [`History`](super::History) and in `docs/jsonl-acks.md`.
//!
//! Version 1, still read (lqd before writers' marks wrote it):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | version | 1 | 1 |
//! | link | 16 | the binding's link |
//! | last_change | 4 | server time of the change |
//! | client_id length, client_id | 2 + n | the client's DUID |
//! | lease count | 2 | then per lease: |
//! | kind, state | 1 + 1 | [`LeaseKind`], [`LeaseState`] |
//! | address, prefix_len | 16 + 1 | |
//! | iaid, preferred, valid, cltt | 4 × 4 | lifetimes as granted at `cltt` |
//! | relay-id count | 1 | then per relay-id: length 2 + octets |
//! | remote-id count | 1 | then per remote-id: enterprise 4, length 2 + octets |
//! | relay message | 1 | 0, or 1 then peer address 16, length 2 + octets |
//!
//! A binding whose last lease ended is recorded with that lease in its ended state and zero
//! lifetimes, and no other: replaying it removes the binding.
//!
//! An lqd older than version 2 reads a version-2 record as unreadable: going back to it after
//! running this one starts without the bindings of those records (the source re-sends them).

use std::fmt;
use std::net::Ipv6Addr;

use super::model::{Binding, BindingKey, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey};
use crate::codec::ServerTime;

pub mod template;

use template::{Split, Templates, get_varint, put_varint};

/// The payload format's version written now, its first octet.
pub const RECORD_VERSION: u8 = 3;

/// The payload format with writers' marks, before the packed one; still read.
pub const RECORD_VERSION_2: u8 = 2;

/// The first payload format (a binding and nothing else), still read.
pub const RECORD_VERSION_1: u8 = 1;

/// The most writers' marks one record carries.
pub const MAX_MARKS: usize = 32;

/// Flags octet (version 2): a binding follows.
const HAS_BINDING: u8 = 1;
/// Flags octet (version 2): the marks of every earlier record are void.
const RESET_MARKS: u8 = 2;
/// Flags octet (version 3): the store's size follows.
const HAS_COUNT: u8 = 4;
/// Flags octet (version 3): marks follow.
const HAS_MARKS: u8 = 8;
/// Flags octet (version 3): a relay template's definition.
const DEFINITION: u8 = 16;

/// Why a payload could not be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The first octet is not a known version.
    Version(u8),
    /// The payload ends inside a field.
    Truncated,
    /// A lease kind or state out of range.
    BadValue,
    /// Octets left after the last field.
    Trailing,
    /// A field too long for its length prefix when writing.
    TooLong,
    /// A record of writers' marks only: it holds no binding.
    NoBinding,
    /// A relay template the record names is not known.
    Template(u32),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "unknown record version {v}"),
            Self::Truncated => f.write_str("record truncated"),
            Self::BadValue => f.write_str("record holds an out-of-range lease kind or state"),
            Self::Trailing => f.write_str("octets after the end of the record"),
            Self::TooLong => f.write_str("a field is too long for a record"),
            Self::NoBinding => f.write_str("a record of writers' marks, without a binding"),
            Self::Template(id) => write!(f, "the record names relay template {id}, unknown"),
        }
    }
}

impl std::error::Error for RecordError {}

fn kind_code(k: LeaseKind) -> u8 {
    match k {
        LeaseKind::Address => 0,
        LeaseKind::Prefix => 1,
    }
}

fn kind_of(c: u8) -> Option<LeaseKind> {
    match c {
        0 => Some(LeaseKind::Address),
        1 => Some(LeaseKind::Prefix),
        _ => None,
    }
}

fn state_code(s: LeaseState) -> u8 {
    match s {
        LeaseState::Active => 0,
        LeaseState::Released => 1,
        LeaseState::Declined => 2,
        LeaseState::Expired => 3,
        LeaseState::Deleted => 4,
    }
}

fn state_of(c: u8) -> Option<LeaseState> {
    match c {
        0 => Some(LeaseState::Active),
        1 => Some(LeaseState::Released),
        2 => Some(LeaseState::Declined),
        3 => Some(LeaseState::Expired),
        4 => Some(LeaseState::Deleted),
        _ => None,
    }
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) -> Result<(), RecordError> {
    let n = u16::try_from(b.len()).map_err(|_| RecordError::TooLong)?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// What a version-2 record says besides its binding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trailer {
    /// How many bindings lqd's store held once the record's change was applied: at start, a
    /// store rebuilt with fewer lost some (their records left the ring, or a crash tore it).
    pub bindings: u32,
    /// The marks of every earlier record are void.
    pub reset: bool,
    /// `bindings` was written (always before version 3; in version 3 when lqd had writers'
    /// marks).
    pub counted: bool,
    /// Writers' names and the last line of each lqd had taken when it wrote the record.
    pub marks: Vec<(Box<str>, u64)>,
}

/// A payload read back: the binding (absent in a record of marks only) and, from version 2
/// on, the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The binding's state after the change.
    pub binding: Option<Binding>,
    /// The store's size and the writers' marks; `None` in a version-1 record and in a
    /// template's definition.
    pub trailer: Option<Trailer>,
    /// A relay template's definition: its number and body (version 3).
    pub definition: Option<(u32, Vec<u8>)>,
    /// The relay template the binding's relayed message is written with (version 3).
    pub template: Option<u32>,
}

/// Appends a version-3 payload to `out`: `binding` (or none, for a record of marks only), its
/// relayed message split by its template (`relay`: the template's number and the split; none
/// to write the message whole), the store's binding count (`None`: not written), whether
/// earlier marks are void, and `marks` (at most [`MAX_MARKS`], names of 1 to 255 octets). On
/// error `out` may hold part of it.
pub fn encode<'a>(
    binding: Option<&Binding>,
    relay: Option<(u32, &Split)>,
    count: Option<u32>,
    reset: bool,
    marks: impl ExactSizeIterator<Item = (&'a str, u64)>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    out.push(RECORD_VERSION);
    let mut flags = if binding.is_some() { HAS_BINDING } else { 0 };
    if reset {
        flags |= RESET_MARKS;
    }
    if count.is_some() {
        flags |= HAS_COUNT;
    }
    if marks.len() > 0 {
        flags |= HAS_MARKS;
    }
    out.push(flags);
    if let Some(b) = binding {
        put_binding_v3(b, relay, out)?;
    }
    if let Some(c) = count {
        put_varint(out, u64::from(c));
    }
    if marks.len() > 0 {
        put_marks(marks, out)?;
    }
    Ok(())
}

/// Appends a version-3 payload defining relay template `id` with `body` to `out`.
pub fn encode_definition(id: u32, body: &[u8], out: &mut Vec<u8>) {
    out.push(RECORD_VERSION);
    out.push(DEFINITION);
    put_varint(out, u64::from(id));
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// The relay template number a version-3 definition's payload defines, read from its first
/// octets only; `None` for any other payload.
#[must_use]
pub fn definition_of(payload: &[u8]) -> Option<(u32, &[u8])> {
    let (&v, rest) = payload.split_first()?;
    let (&f, mut rest) = rest.split_first()?;
    if v != RECORD_VERSION || f != DEFINITION {
        return None;
    }
    let id = u32::try_from(get_varint(&mut rest)?).ok()?;
    let n = usize::try_from(get_varint(&mut rest)?).ok()?;
    (rest.len() == n).then_some((id, rest))
}

fn put_marks<'a>(
    marks: impl ExactSizeIterator<Item = (&'a str, u64)>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    if marks.len() > MAX_MARKS {
        return Err(RecordError::TooLong);
    }
    out.push(u8::try_from(marks.len()).map_err(|_| RecordError::TooLong)?);
    for (name, seq) in marks {
        let n = u8::try_from(name.len()).map_err(|_| RecordError::TooLong)?;
        if n == 0 {
            return Err(RecordError::BadValue);
        }
        out.push(n);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    Ok(())
}

/// Form octet (version 3): the relayed message, bits 0–1.
const RELAY_NONE: u8 = 0;
const RELAY_TEMPLATE: u8 = 1;
const RELAY_WHOLE: u8 = 2;
/// Form octet: the link is written.
const LINK_WRITTEN: u8 = 4;
/// Form octet: the innermost peer-address is link-local (`fe80::/64`), 8 octets written.
const PEER_LINK_LOCAL: u8 = 8;
/// Form octet, bits 4–5: the relay-ids and remote-ids are the message's.
const IDS_SHIFT: u8 = 4;
const IDS_WRITTEN: u8 = 0;
const IDS_INNER_FIRST: u8 = 1;
const IDS_OUTER_FIRST: u8 = 2;

/// Lease head octet: how the address is written, bits 4–5.
const ADDR_WHOLE: u8 = 0;
const ADDR_ON_LINK: u8 = 1;
const ADDR_LEADING: u8 = 2;
/// Lease head octet: a prefix length follows.
const HAS_PREFIX_LEN: u8 = 64;

fn link_local_prefix(a: Ipv6Addr) -> bool {
    a.octets().get(..8) == Some(&[0xfe, 0x80, 0, 0, 0, 0, 0, 0][..])
}

/// Which order of the message's ids the binding's are, if either.
fn ids_form(r: &RelayInfo, message: &[u8]) -> u8 {
    for (form, inner_first) in [(IDS_INNER_FIRST, true), (IDS_OUTER_FIRST, false)] {
        if let Some((relay, remote)) = template::ids_of(message, inner_first) {
            let same_relay = relay.len() == r.relay_ids.len()
                && relay.iter().zip(&r.relay_ids).all(|(a, b)| *a == &b[..]);
            let same_remote = remote.len() == r.remote_ids.len()
                && remote
                    .iter()
                    .zip(&r.remote_ids)
                    .all(|((e, id), k)| *e == k.enterprise_number && *id == &k.remote_id[..]);
            if same_relay && same_remote {
                return form;
            }
        }
    }
    IDS_WRITTEN
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_bytes_var(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_binding_v3(
    binding: &Binding,
    relay: Option<(u32, &Split)>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    let r = &binding.relay;
    let link = binding.key.link;
    let mut form = match (&r.relay_message, relay) {
        (None, _) => RELAY_NONE,
        (Some(_), Some(_)) => RELAY_TEMPLATE,
        (Some(_), None) => RELAY_WHOLE,
    };
    let template_link = relay.map(|(_, s)| s.link);
    if form != RELAY_TEMPLATE || template_link != Some(link) {
        form |= LINK_WRITTEN;
    }
    if let Some((_, s)) = relay {
        if link_local_prefix(s.peer) {
            form |= PEER_LINK_LOCAL;
        }
    }
    let ids = match &r.relay_message {
        Some((_, m)) => ids_form(r, m),
        None => IDS_WRITTEN,
    };
    form |= ids << IDS_SHIFT;
    out.push(form);
    if let Some((id, _)) = relay {
        put_varint(out, u64::from(id));
    }
    out.extend_from_slice(&binding.last_change.0.to_be_bytes());
    put_bytes_var(out, &binding.key.client_id);
    if form & LINK_WRITTEN != 0 {
        out.extend_from_slice(&link.octets());
    }
    put_varint(out, binding.leases.len() as u64);
    let link_octets = link.octets();
    for l in &binding.leases {
        let a = l.address.octets();
        let significant = a.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
        let mode = if a.get(..8) == link_octets.get(..8) {
            ADDR_ON_LINK
        } else if significant < 15 {
            ADDR_LEADING
        } else {
            ADDR_WHOLE
        };
        let with_len = l.kind == LeaseKind::Prefix || l.prefix_len != 128;
        let head = kind_code(l.kind)
            | (state_code(l.state) << 1)
            | (mode << 4)
            | if with_len { HAS_PREFIX_LEN } else { 0 };
        out.push(head);
        if with_len {
            out.push(l.prefix_len);
        }
        match mode {
            ADDR_ON_LINK => out.extend_from_slice(a.get(8..).unwrap_or_default()),
            ADDR_LEADING => put_bytes_var(out, a.get(..significant).unwrap_or_default()),
            _ => out.extend_from_slice(&a),
        }
        put_varint(out, u64::from(l.iaid));
        put_varint(out, u64::from(l.preferred_lifetime));
        put_varint(out, u64::from(l.valid_lifetime));
        put_varint(
            out,
            zigzag(i64::from(l.cltt.0) - i64::from(binding.last_change.0)),
        );
    }
    match (&r.relay_message, relay) {
        (Some(_), Some((_, s))) => {
            let p = s.peer.octets();
            if form & PEER_LINK_LOCAL != 0 {
                out.extend_from_slice(p.get(8..).unwrap_or_default());
            } else {
                out.extend_from_slice(&p);
            }
            for h in &s.holes {
                put_bytes_var(out, h);
            }
        }
        (Some((from, m)), None) => {
            out.extend_from_slice(&from.octets());
            put_bytes_var(out, m);
        }
        (None, _) => {}
    }
    if ids == IDS_WRITTEN {
        put_varint(out, r.relay_ids.len() as u64);
        for id in &r.relay_ids {
            put_bytes_var(out, id);
        }
        put_varint(out, r.remote_ids.len() as u64);
        for id in &r.remote_ids {
            out.extend_from_slice(&id.enterprise_number.to_be_bytes());
            put_bytes_var(out, &id.remote_id);
        }
    }
    Ok(())
}

/// Appends a version-2 payload to `out` (the format before version 3, for tools and tests):
/// `binding` (or none, for a record of marks only), the store's binding count, whether earlier
/// marks are void, and `marks`. On error `out` may hold part of it.
pub fn encode_v2<'a>(
    binding: Option<&Binding>,
    bindings: u32,
    reset: bool,
    marks: impl ExactSizeIterator<Item = (&'a str, u64)>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    out.push(RECORD_VERSION_2);
    let flags =
        if binding.is_some() { HAS_BINDING } else { 0 } | if reset { RESET_MARKS } else { 0 };
    out.push(flags);
    if let Some(b) = binding {
        put_binding(b, out)?;
    }
    out.extend_from_slice(&bindings.to_be_bytes());
    put_marks(marks, out)
}

/// The binding's fields, as version 1 has them after its version octet.
fn put_binding(binding: &Binding, out: &mut Vec<u8>) -> Result<(), RecordError> {
    out.extend_from_slice(&binding.key.link.octets());
    out.extend_from_slice(&binding.last_change.0.to_be_bytes());
    put_bytes16(out, &binding.key.client_id)?;
    let n = u16::try_from(binding.leases.len()).map_err(|_| RecordError::TooLong)?;
    out.extend_from_slice(&n.to_be_bytes());
    for l in &binding.leases {
        out.push(kind_code(l.kind));
        out.push(state_code(l.state));
        out.extend_from_slice(&l.address.octets());
        out.push(l.prefix_len);
        for v in [l.iaid, l.preferred_lifetime, l.valid_lifetime, l.cltt.0] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    let r = &binding.relay;
    out.push(u8::try_from(r.relay_ids.len()).map_err(|_| RecordError::TooLong)?);
    for id in &r.relay_ids {
        put_bytes16(out, id)?;
    }
    out.push(u8::try_from(r.remote_ids.len()).map_err(|_| RecordError::TooLong)?);
    for id in &r.remote_ids {
        out.extend_from_slice(&id.enterprise_number.to_be_bytes());
        put_bytes16(out, &id.remote_id)?;
    }
    match &r.relay_message {
        None => out.push(0),
        Some((peer, m)) => {
            out.push(1);
            out.extend_from_slice(&peer.octets());
            put_bytes16(out, m)?;
        }
    }
    Ok(())
}

/// A reader over a payload that never reads past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        self.take(N)?.try_into().map_err(|_| RecordError::Truncated)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<Ipv6Addr, RecordError> {
        Ok(Ipv6Addr::from(self.array::<16>()?))
    }

    fn bytes16(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// Reads the version octet, and from version 2 on the flags: a reader at the binding's first
/// field, the version, and the flags (version 1: a binding, nothing else).
fn open(payload: &[u8]) -> Result<(Reader<'_>, u8, u8), RecordError> {
    let mut r = Reader(payload);
    match r.u8()? {
        RECORD_VERSION_1 => Ok((r, RECORD_VERSION_1, HAS_BINDING)),
        RECORD_VERSION_2 => {
            let flags = r.u8()?;
            if flags & !(HAS_BINDING | RESET_MARKS) != 0 {
                return Err(RecordError::BadValue);
            }
            Ok((r, RECORD_VERSION_2, flags))
        }
        RECORD_VERSION => {
            let flags = r.u8()?;
            let known = HAS_BINDING | RESET_MARKS | HAS_COUNT | HAS_MARKS | DEFINITION;
            if flags & !known != 0 || (flags & DEFINITION != 0 && flags != DEFINITION) {
                return Err(RecordError::BadValue);
            }
            Ok((r, RECORD_VERSION, flags))
        }
        v => Err(RecordError::Version(v)),
    }
}

impl<'a> Reader<'a> {
    fn var(&mut self) -> Result<u64, RecordError> {
        get_varint(&mut self.0).ok_or(RecordError::Truncated)
    }

    fn var_u32(&mut self) -> Result<u32, RecordError> {
        u32::try_from(self.var()?).map_err(|_| RecordError::BadValue)
    }

    fn bytes_var(&mut self) -> Result<&'a [u8], RecordError> {
        let n = usize::try_from(self.var()?).map_err(|_| RecordError::Truncated)?;
        self.take(n)
    }
}

/// The binding key of a payload, read without allocating: the link and the client's DUID.
/// A version-3 record naming a relay template reads as [`RecordError::Template`]: see
/// [`key_in`].
pub fn key(payload: &[u8]) -> Result<(Ipv6Addr, &[u8]), RecordError> {
    key_with(payload, None)
}

/// [`key`], with the relay templates of the journal the payload is from.
pub fn key_in<'a>(
    payload: &'a [u8],
    templates: &Templates,
) -> Result<(Ipv6Addr, &'a [u8]), RecordError> {
    key_with(payload, Some(templates))
}

fn key_with<'a>(
    payload: &'a [u8],
    templates: Option<&Templates>,
) -> Result<(Ipv6Addr, &'a [u8]), RecordError> {
    let (mut r, version, flags) = open(payload)?;
    if flags & HAS_BINDING == 0 {
        return Err(RecordError::NoBinding);
    }
    if version != RECORD_VERSION {
        let link = r.addr()?;
        r.u32()?;
        return Ok((link, r.bytes16()?));
    }
    let form = r.u8()?;
    let template = if form & 3 == RELAY_TEMPLATE {
        Some(r.var_u32()?)
    } else {
        None
    };
    r.u32()?;
    let n = usize::try_from(r.var()?).map_err(|_| RecordError::Truncated)?;
    let client_id = r.take(n)?;
    let link = if form & LINK_WRITTEN != 0 {
        r.addr()?
    } else {
        let id = template.ok_or(RecordError::BadValue)?;
        templates
            .and_then(|t| t.shape(id))
            .ok_or(RecordError::Template(id))?
            .0
    };
    Ok((link, client_id))
}

/// Reads a payload back into the binding it describes; a record of marks only is
/// [`RecordError::NoBinding`], one naming a relay template [`RecordError::Template`] (see
/// [`decode_in`]).
pub fn decode(payload: &[u8]) -> Result<Binding, RecordError> {
    read(payload)?.binding.ok_or(RecordError::NoBinding)
}

/// [`decode`], with the relay templates of the journal the payload is from.
pub fn decode_in(payload: &[u8], templates: &Templates) -> Result<Binding, RecordError> {
    read_with(payload, Some(templates))?
        .binding
        .ok_or(RecordError::NoBinding)
}

/// Reads a payload of any version back: its binding, its trailer (from version 2 on), or the
/// relay template it defines. One naming a relay template reads as [`RecordError::Template`]:
/// see [`read_in`].
pub fn read(payload: &[u8]) -> Result<Payload, RecordError> {
    read_with(payload, None)
}

/// [`read`], with the relay templates of the journal the payload is from.
pub fn read_in(payload: &[u8], templates: &Templates) -> Result<Payload, RecordError> {
    read_with(payload, Some(templates))
}

fn read_with(payload: &[u8], templates: Option<&Templates>) -> Result<Payload, RecordError> {
    let (mut r, version, flags) = open(payload)?;
    if flags & DEFINITION != 0 {
        let id = r.var_u32()?;
        let body = r.bytes_var()?.to_vec();
        if !r.0.is_empty() {
            return Err(RecordError::Trailing);
        }
        return Ok(Payload {
            binding: None,
            trailer: None,
            definition: Some((id, body)),
            template: None,
        });
    }
    let (binding, template) = match (flags & HAS_BINDING != 0, version) {
        (false, _) => (None, None),
        (true, RECORD_VERSION) => {
            let (b, t) = binding_fields_v3(&mut r, templates)?;
            (Some(b), t)
        }
        (true, _) => (Some(binding_fields(&mut r)?), None),
    };
    let trailer = match version {
        RECORD_VERSION_2 => {
            let bindings = r.u32()?;
            Some(Trailer {
                bindings,
                reset: flags & RESET_MARKS != 0,
                counted: true,
                marks: read_marks(&mut r)?,
            })
        }
        RECORD_VERSION => {
            let count = if flags & HAS_COUNT != 0 {
                Some(r.var_u32()?)
            } else {
                None
            };
            let marks = if flags & HAS_MARKS != 0 {
                read_marks(&mut r)?
            } else {
                Vec::new()
            };
            Some(Trailer {
                bindings: count.unwrap_or(0),
                reset: flags & RESET_MARKS != 0,
                counted: count.is_some(),
                marks,
            })
        }
        _ => None,
    };
    if !r.0.is_empty() {
        return Err(RecordError::Trailing);
    }
    Ok(Payload {
        binding,
        trailer,
        definition: None,
        template,
    })
}

fn read_marks(r: &mut Reader<'_>) -> Result<Vec<(Box<str>, u64)>, RecordError> {
    let n = r.u8()?;
    if usize::from(n) > MAX_MARKS {
        return Err(RecordError::BadValue);
    }
    let mut marks = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let len = r.u8()?;
        let name =
            std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| RecordError::BadValue)?;
        if name.is_empty() {
            return Err(RecordError::BadValue);
        }
        marks.push((name.into(), u64::from_be_bytes(r.array()?)));
    }
    Ok(marks)
}

/// The binding's fields in version 3, and the relay template it names.
fn binding_fields_v3(
    r: &mut Reader<'_>,
    templates: Option<&Templates>,
) -> Result<(Binding, Option<u32>), RecordError> {
    let form = r.u8()?;
    if form & 0xc0 != 0 {
        return Err(RecordError::BadValue);
    }
    let relay_form = form & 3;
    let template = if relay_form == RELAY_TEMPLATE {
        let id = r.var_u32()?;
        let t = templates.ok_or(RecordError::Template(id))?;
        let body = t.body(id).ok_or(RecordError::Template(id))?;
        let shape = t.shape(id).ok_or(RecordError::Template(id))?;
        Some((id, body, shape))
    } else {
        None
    };
    let last_change = ServerTime(r.u32()?);
    let client_id: Box<[u8]> = r.bytes_var()?.into();
    let link = if form & LINK_WRITTEN != 0 {
        r.addr()?
    } else {
        template.ok_or(RecordError::BadValue)?.2.0
    };
    let link_octets = link.octets();
    let n = r.var()?;
    let mut leases = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(64));
    for _ in 0..n {
        let head = r.u8()?;
        if head & 0x80 != 0 {
            return Err(RecordError::BadValue);
        }
        let kind = kind_of(head & 1).ok_or(RecordError::BadValue)?;
        let state = state_of((head >> 1) & 7).ok_or(RecordError::BadValue)?;
        let prefix_len = if head & HAS_PREFIX_LEN != 0 {
            r.u8()?
        } else {
            128
        };
        if prefix_len > 128 {
            return Err(RecordError::BadValue);
        }
        let mut a = [0u8; 16];
        match (head >> 4) & 3 {
            ADDR_WHOLE => a = r.array()?,
            ADDR_ON_LINK => {
                let (hi, lo) = a.split_at_mut(8);
                hi.copy_from_slice(link_octets.get(..8).unwrap_or(&[0; 8]));
                lo.copy_from_slice(r.take(8)?);
            }
            ADDR_LEADING => {
                let lead = r.bytes_var()?;
                a.get_mut(..lead.len())
                    .ok_or(RecordError::BadValue)?
                    .copy_from_slice(lead);
            }
            _ => return Err(RecordError::BadValue),
        }
        let iaid = r.var_u32()?;
        let preferred_lifetime = r.var_u32()?;
        let valid_lifetime = r.var_u32()?;
        let cltt = i64::from(last_change.0)
            .checked_add(unzigzag(r.var()?))
            .and_then(|c| u32::try_from(c).ok())
            .ok_or(RecordError::BadValue)?;
        leases.push(Lease {
            kind,
            address: Ipv6Addr::from(a),
            prefix_len,
            iaid,
            preferred_lifetime,
            valid_lifetime,
            cltt: ServerTime(cltt),
            state,
        });
    }
    let relay_message = match (relay_form, template) {
        (RELAY_NONE, _) => None,
        (RELAY_TEMPLATE, Some((_, body, (_, holes)))) => {
            let peer = if form & PEER_LINK_LOCAL != 0 {
                let mut p = [0u8; 16];
                p[0] = 0xfe;
                p[1] = 0x80;
                p[8..].copy_from_slice(r.take(8)?);
                Ipv6Addr::from(p)
            } else {
                r.addr()?
            };
            let mut parts = Vec::with_capacity(holes.min(16));
            for _ in 0..holes {
                parts.push(r.bytes_var()?);
            }
            let mut m = Vec::new();
            let (from, _) =
                template::rebuild(body, peer, &parts, &mut m).ok_or(RecordError::BadValue)?;
            Some((from, m.into_boxed_slice()))
        }
        (RELAY_WHOLE, _) => {
            let from = r.addr()?;
            Some((from, r.bytes_var()?.into()))
        }
        _ => return Err(RecordError::BadValue),
    };
    let mut relay = RelayInfo {
        relay_message,
        ..RelayInfo::default()
    };
    match ((form >> IDS_SHIFT) & 3, &relay.relay_message) {
        (IDS_WRITTEN, _) => {
            for _ in 0..r.var()? {
                relay.relay_ids.push(r.bytes_var()?.into());
            }
            for _ in 0..r.var()? {
                let enterprise_number = r.u32()?;
                relay.remote_ids.push(RemoteIdKey {
                    enterprise_number,
                    remote_id: r.bytes_var()?.into(),
                });
            }
        }
        (f @ (IDS_INNER_FIRST | IDS_OUTER_FIRST), Some((_, m))) => {
            let (ids, remotes) =
                template::ids_of(m, f == IDS_INNER_FIRST).ok_or(RecordError::BadValue)?;
            relay.relay_ids = ids.into_iter().map(Into::into).collect();
            relay.remote_ids = remotes
                .into_iter()
                .map(|(enterprise_number, id)| RemoteIdKey {
                    enterprise_number,
                    remote_id: id.into(),
                })
                .collect();
        }
        _ => return Err(RecordError::BadValue),
    }
    Ok((
        Binding {
            key: BindingKey { client_id, link },
            leases,
            relay,
            last_change,
        },
        template.map(|(id, _, _)| id),
    ))
}

/// The binding's fields (version 1 after its version octet).
fn binding_fields(r: &mut Reader<'_>) -> Result<Binding, RecordError> {
    let link = r.addr()?;
    let last_change = ServerTime(r.u32()?);
    let client_id: Box<[u8]> = r.bytes16()?.into();
    let n = r.u16()?;
    let mut leases = Vec::with_capacity(usize::from(n).min(64));
    for _ in 0..n {
        let kind = kind_of(r.u8()?).ok_or(RecordError::BadValue)?;
        let state = state_of(r.u8()?).ok_or(RecordError::BadValue)?;
        let address = r.addr()?;
        let prefix_len = r.u8()?;
        if prefix_len > 128 {
            return Err(RecordError::BadValue);
        }
        leases.push(Lease {
            kind,
            address,
            prefix_len,
            iaid: r.u32()?,
            preferred_lifetime: r.u32()?,
            valid_lifetime: r.u32()?,
            cltt: ServerTime(r.u32()?),
            state,
        });
    }
    let mut relay = RelayInfo::default();
    for _ in 0..r.u8()? {
        relay.relay_ids.push(r.bytes16()?.into());
    }
    for _ in 0..r.u8()? {
        let enterprise_number = r.u32()?;
        relay.remote_ids.push(RemoteIdKey {
            enterprise_number,
            remote_id: r.bytes16()?.into(),
        });
    }
    relay.relay_message = match r.u8()? {
        0 => None,
        1 => {
            let peer = r.addr()?;
            Some((peer, r.bytes16()?.into()))
        }
        _ => return Err(RecordError::BadValue),
    };
    Ok(Binding {
        key: BindingKey { client_id, link },
        leases,
        relay,
        last_change,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            key: BindingKey {
                client_id: vec![0, 3, 0, 1, 1, 2, 3, 4, 5, 6].into(),
                link: "2001:db8:0:1::1".parse().unwrap(),
            },
            leases: vec![
                Lease {
                    kind: LeaseKind::Address,
                    address: "2001:db8:0:1::42".parse().unwrap(),
                    prefix_len: 128,
                    iaid: 7,
                    preferred_lifetime: 3600,
                    valid_lifetime: 7200,
                    cltt: ServerTime(1000),
                    state: LeaseState::Active,
                },
                Lease {
                    kind: LeaseKind::Prefix,
                    address: "3fff:0:0:100::".parse().unwrap(),
                    prefix_len: 56,
                    iaid: 8,
                    preferred_lifetime: 0,
                    valid_lifetime: 0,
                    cltt: ServerTime(1001),
                    state: LeaseState::Released,
                },
            ],
            relay: RelayInfo {
                relay_ids: vec![vec![0, 2, 0, 0, 0, 9, 1].into()],
                remote_ids: vec![RemoteIdKey {
                    enterprise_number: 9,
                    remote_id: b"ge-0/0/1".to_vec().into(),
                }],
                relay_message: Some(("2001:db8:1::1".parse().unwrap(), vec![12, 0, 1].into())),
            },
            last_change: ServerTime(1001),
        }
    }

    fn encoded(b: Option<&Binding>, bindings: u32, reset: bool, marks: &[(&str, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_v2(b, bindings, reset, marks.iter().copied(), &mut out).unwrap();
        out
    }

    /// `binding()` as lqd wrote it before version 2.
    const V1: &str = "0120010db8000000010000000000000001000003e9000a000300010102030405060002000020010db8000000010000000000000042800000000700000e1000001c20000003e801013fff000000000100000000000000000038000000080000000000000000000003e9010007000200000009010100000009000867652d302f302f310120010db800010000000000000000000100030c0001";

    #[test]
    fn a_binding_reads_back_as_written() {
        let b = binding();
        let out = encoded(Some(&b), 7, false, &[]);
        assert_eq!(decode(&out), Ok(b.clone()));
        assert_eq!(key(&out), Ok((b.key.link, &b.key.client_id[..])));
        assert_eq!(
            read(&out),
            Ok(Payload {
                binding: Some(b.clone()),
                trailer: Some(Trailer {
                    bindings: 7,
                    counted: true,
                    ..Trailer::default()
                }),
                definition: None,
                template: None,
            })
        );
        let bare = Binding {
            relay: RelayInfo::default(),
            leases: vec![],
            ..b
        };
        let out = encoded(Some(&bare), 0, false, &[]);
        assert_eq!(decode(&out), Ok(bare));
    }

    #[test]
    fn a_version_1_record_still_reads() {
        let v1 = hex::decode(V1).unwrap();
        assert_eq!(decode(&v1), Ok(binding()));
        assert_eq!(
            read(&v1),
            Ok(Payload {
                binding: Some(binding()),
                trailer: None,
                definition: None,
                template: None,
            })
        );
        let b = binding();
        assert_eq!(key(&v1), Ok((b.key.link, &b.key.client_id[..])));
        // Version 2 keeps version 1's binding fields as they were, after its flags.
        let v2 = encoded(Some(&b), 1, false, &[]);
        assert_eq!(v2[2..v2.len() - 5], v1[1..]);
    }

    #[test]
    fn marks_ride_with_a_binding_or_alone() {
        let b = binding();
        let marks = [("kea-1", 41), ("relay \u{e9}crit", u64::MAX)];
        let out = encoded(Some(&b), 12, false, &marks);
        let p = read(&out).unwrap();
        assert_eq!(p.binding, Some(b.clone()));
        let t = p.trailer.unwrap();
        assert_eq!((t.bindings, t.reset), (12, false));
        assert_eq!(
            t.marks,
            vec![("kea-1".into(), 41), ("relay \u{e9}crit".into(), u64::MAX)]
        );

        let only = encoded(None, 3, true, &marks[..1]);
        assert_eq!(decode(&only), Err(RecordError::NoBinding));
        assert_eq!(key(&only), Err(RecordError::NoBinding));
        let p = read(&only).unwrap();
        assert_eq!(p.binding, None);
        assert_eq!(
            p.trailer,
            Some(Trailer {
                bindings: 3,
                reset: true,
                counted: true,
                marks: vec![("kea-1".into(), 41)]
            })
        );
    }

    #[test]
    fn marks_that_cannot_be_written_are_refused() {
        let mut out = Vec::new();
        let long = "w".repeat(256);
        let too_long = [(long.as_str(), 1)];
        assert_eq!(
            encode_v2(None, 0, false, too_long.iter().copied(), &mut out),
            Err(RecordError::TooLong)
        );
        out.clear();
        let empty = [("", 1)];
        assert_eq!(
            encode_v2(None, 0, false, empty.iter().copied(), &mut out),
            Err(RecordError::BadValue)
        );
        out.clear();
        let many: Vec<(&str, u64)> = (0..=MAX_MARKS as u64).map(|i| ("w", i)).collect();
        assert_eq!(
            encode_v2(None, 0, false, many.iter().copied(), &mut out),
            Err(RecordError::TooLong)
        );
    }

    #[test]
    fn every_cut_or_extension_is_an_error_never_a_panic() {
        for out in [
            encoded(Some(&binding()), 9, false, &[("w", 5), ("x", 6)]),
            encoded(None, 9, true, &[("w", 5)]),
            hex::decode(V1).unwrap(),
        ] {
            for n in 0..out.len() {
                assert!(read(&out[..n]).is_err(), "{n} octets");
            }
            let mut out = out;
            out.push(0);
            assert_eq!(read(&out), Err(RecordError::Trailing));
            out[0] = 9;
            assert_eq!(decode(&out), Err(RecordError::Version(9)));
            assert_eq!(key(&out), Err(RecordError::Version(9)));
        }
        // Unknown flags, a writer's name that is not UTF-8.
        let mut out = encoded(None, 1, false, &[("w", 5)]);
        out[1] |= 0x80;
        assert_eq!(read(&out), Err(RecordError::BadValue));
        let mut out = encoded(None, 1, false, &[("w", 5)]);
        out[8] = 0xff;
        assert_eq!(read(&out), Err(RecordError::BadValue));
    }

    /// `binding()`, relayed the way a carrier's access relay sends it.
    fn relayed() -> Binding {
        use crate::codec::{BuildOptions, MessageBuilder, MessageType};
        let mut b = binding();
        let peer: Ipv6Addr = "fe80::211:22ff:fe33:4455".parse().unwrap();
        let m = MessageBuilder::relay(MessageType::RelayForw, 0, b.key.link, peer)
            .remote_id(9, b"ge-0/0/1")
            .relay_id(&[0, 2, 0, 0, 0, 9, 1])
            .build()
            .unwrap();
        b.relay.relay_message = Some(("2001:db8:1::1".parse().unwrap(), m.into()));
        b
    }

    fn v3(
        b: Option<&Binding>,
        t: Option<(u32, &Split)>,
        count: Option<u32>,
        marks: &[(&str, u64)],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        encode(b, t, count, false, marks.iter().copied(), &mut out).unwrap();
        out
    }

    #[test]
    fn version_3_reads_back_as_written_with_and_without_a_template() {
        let b = relayed();
        let (from, m) = b.relay.relay_message.clone().unwrap();
        let s = template::split(from, &m).unwrap();
        let mut templates = Templates::new();
        let (id, _) = templates.number(&s.body, 0).unwrap();
        let with = v3(Some(&b), Some((id, &s)), Some(4), &[("w", 3)]);
        let whole = v3(Some(&b), None, None, &[]);
        assert!(with.len() < whole.len(), "{} {}", with.len(), whole.len());
        assert_eq!(decode_in(&with, &templates), Ok(b.clone()));
        assert_eq!(decode(&whole), Ok(b.clone()));
        assert_eq!(decode(&with), Err(RecordError::Template(id)));
        assert_eq!(
            key_in(&with, &templates),
            Ok((b.key.link, &b.key.client_id[..]))
        );
        let p = read_in(&with, &templates).unwrap();
        let t = p.trailer.unwrap();
        assert_eq!((t.bindings, t.counted, t.marks.len()), (4, true, 1));
        assert!(!read(&whole).unwrap().trailer.unwrap().counted);
        // Every form: no relay, another link than the template's, addresses off the link.
        let mut bare = binding();
        bare.relay = RelayInfo::default();
        bare.leases[0].prefix_len = 64;
        bare.leases[1].address = "2001:db8:ffff:1:2:3:4:5".parse().unwrap();
        let out = v3(Some(&bare), None, Some(0), &[]);
        assert_eq!(decode(&out), Ok(bare));
        let mut moved = b.clone();
        moved.key.link = "2001:db8:0:9::1".parse().unwrap();
        let out = v3(Some(&moved), Some((id, &s)), None, &[]);
        assert_eq!(decode_in(&out, &templates), Ok(moved));
        // Ids that are not the message's are written.
        let mut other = b.clone();
        other.relay.relay_ids.push(vec![7, 7].into());
        let out = v3(Some(&other), Some((id, &s)), None, &[]);
        assert_eq!(decode_in(&out, &templates), Ok(other));
        // A definition.
        let mut def = Vec::new();
        encode_definition(id, &s.body, &mut def);
        assert_eq!(definition_of(&def), Some((id, &s.body[..])));
        assert_eq!(read(&def).unwrap().definition, Some((id, s.body.clone())));
        assert_eq!(definition_of(&with), None);
    }

    #[test]
    fn every_cut_of_a_version_3_record_is_an_error_never_a_panic() {
        let b = relayed();
        let (from, m) = b.relay.relay_message.clone().unwrap();
        let s = template::split(from, &m).unwrap();
        let mut templates = Templates::new();
        let (id, _) = templates.number(&s.body, 0).unwrap();
        let mut def = Vec::new();
        encode_definition(id, &s.body, &mut def);
        for out in [
            v3(Some(&b), Some((id, &s)), Some(4), &[("w", 3)]),
            v3(Some(&b), None, None, &[]),
            def,
        ] {
            for n in 0..out.len() {
                assert!(read_in(&out[..n], &templates).is_err(), "{n} octets");
            }
            for i in 0..out.len() {
                for x in [0u8, 0x7f, 0x80, 0xff] {
                    let mut bad = out.clone();
                    bad[i] = x;
                    let _ = read_in(&bad, &templates);
                    let _ = key_in(&bad, &templates);
                }
            }
        }
    }
}
