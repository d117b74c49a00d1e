//! A binding's state as one journal record payload: what the binding looked like after a change,
//! enough to report it (D5) and to rebuild the mirror at start; and, since version 2, the
//! numbered writers' marks that must be durable together with it.
//!
//! Version 2 (written now; all integers big-endian):
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

/// The payload format's version written now, its first octet.
pub const RECORD_VERSION: u8 = 2;

/// The first payload format (a binding and nothing else), still read.
pub const RECORD_VERSION_1: u8 = 1;

/// The most writers' marks one record carries.
pub const MAX_MARKS: usize = 32;

/// Flags octet (version 2): a binding follows.
const HAS_BINDING: u8 = 1;
/// Flags octet (version 2): the marks of every earlier record are void.
const RESET_MARKS: u8 = 2;

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
    /// Writers' names and the last line of each lqd had taken when it wrote the record.
    pub marks: Vec<(Box<str>, u64)>,
}

/// A payload read back: the binding (absent in a record of marks only) and, from version 2
/// on, the trailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The binding's state after the change.
    pub binding: Option<Binding>,
    /// The store's size and the writers' marks; `None` in a version-1 record.
    pub trailer: Option<Trailer>,
}

/// Appends a version-2 payload to `out`: `binding` (or none, for a record of marks only), the
/// store's binding count, whether earlier marks are void, and `marks` (at most
/// [`MAX_MARKS`], names of 1 to 255 octets). On error `out` may hold part of it.
pub fn encode<'a>(
    binding: Option<&Binding>,
    bindings: u32,
    reset: bool,
    marks: impl ExactSizeIterator<Item = (&'a str, u64)>,
    out: &mut Vec<u8>,
) -> Result<(), RecordError> {
    out.push(RECORD_VERSION);
    let flags =
        if binding.is_some() { HAS_BINDING } else { 0 } | if reset { RESET_MARKS } else { 0 };
    out.push(flags);
    if let Some(b) = binding {
        put_binding(b, out)?;
    }
    out.extend_from_slice(&bindings.to_be_bytes());
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

/// Reads the version octet, and in version 2 the flags: a reader at the binding's first field,
/// and whether there is a binding.
fn open(payload: &[u8]) -> Result<(Reader<'_>, u8, bool), RecordError> {
    let mut r = Reader(payload);
    match r.u8()? {
        RECORD_VERSION_1 => Ok((r, RECORD_VERSION_1, true)),
        RECORD_VERSION => {
            let flags = r.u8()?;
            if flags & !(HAS_BINDING | RESET_MARKS) != 0 {
                return Err(RecordError::BadValue);
            }
            Ok((r, RECORD_VERSION, flags & HAS_BINDING != 0))
        }
        v => Err(RecordError::Version(v)),
    }
}

/// The binding key of a payload, read without allocating: the link and the client's DUID.
pub fn key(payload: &[u8]) -> Result<(Ipv6Addr, &[u8]), RecordError> {
    let (mut r, _, has_binding) = open(payload)?;
    if !has_binding {
        return Err(RecordError::NoBinding);
    }
    let link = r.addr()?;
    r.u32()?;
    Ok((link, r.bytes16()?))
}

/// Reads a payload back into the binding it describes; a record of marks only is
/// [`RecordError::NoBinding`].
pub fn decode(payload: &[u8]) -> Result<Binding, RecordError> {
    read(payload)?.binding.ok_or(RecordError::NoBinding)
}

/// Reads a payload of either version back: its binding, and its trailer (version 2).
pub fn read(payload: &[u8]) -> Result<Payload, RecordError> {
    let (mut r, version, has_binding) = open(payload)?;
    let binding = if has_binding {
        Some(binding_fields(&mut r)?)
    } else {
        None
    };
    let trailer = if version == RECORD_VERSION {
        let reset = payload.get(1).is_some_and(|f| f & RESET_MARKS != 0);
        let bindings = r.u32()?;
        let n = r.u8()?;
        if usize::from(n) > MAX_MARKS {
            return Err(RecordError::BadValue);
        }
        let mut marks = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let len = r.u8()?;
            let name = std::str::from_utf8(r.take(usize::from(len))?)
                .map_err(|_| RecordError::BadValue)?;
            if name.is_empty() {
                return Err(RecordError::BadValue);
            }
            marks.push((name.into(), u64::from_be_bytes(r.array()?)));
        }
        Some(Trailer {
            bindings,
            reset,
            marks,
        })
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err(RecordError::Trailing);
    }
    Ok(Payload { binding, trailer })
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
        encode(b, bindings, reset, marks.iter().copied(), &mut out).unwrap();
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
                    ..Trailer::default()
                })
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
                trailer: None
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
            encode(None, 0, false, too_long.iter().copied(), &mut out),
            Err(RecordError::TooLong)
        );
        out.clear();
        let empty = [("", 1)];
        assert_eq!(
            encode(None, 0, false, empty.iter().copied(), &mut out),
            Err(RecordError::BadValue)
        );
        out.clear();
        let many: Vec<(&str, u64)> = (0..=MAX_MARKS as u64).map(|i| ("w", i)).collect();
        assert_eq!(
            encode(None, 0, false, many.iter().copied(), &mut out),
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
}
