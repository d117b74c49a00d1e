//! A binding's state as one journal record payload: what the binding looked like after a change,
//! enough to report it (D5) and to rebuild the mirror at start.
//!
//! Layout (all integers big-endian):
//!
//! | field | size | meaning |
//! |---|---|---|
//! | version | 1 | [`RECORD_VERSION`] |
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

use std::fmt;
use std::net::Ipv6Addr;

use super::model::{Binding, BindingKey, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey};
use crate::codec::ServerTime;

/// The payload format's version, its first octet.
pub const RECORD_VERSION: u8 = 1;

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
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "unknown record version {v}"),
            Self::Truncated => f.write_str("record truncated"),
            Self::BadValue => f.write_str("record holds an out-of-range lease kind or state"),
            Self::Trailing => f.write_str("octets after the end of the record"),
            Self::TooLong => f.write_str("a field is too long for a record"),
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

/// Appends `binding`'s record payload to `out`. On error `out` may hold part of it.
pub fn encode(binding: &Binding, out: &mut Vec<u8>) -> Result<(), RecordError> {
    out.push(RECORD_VERSION);
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

/// The binding key of a payload, read without allocating: the link and the client's DUID.
pub fn key(payload: &[u8]) -> Result<(Ipv6Addr, &[u8]), RecordError> {
    let mut r = Reader(payload);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
    let link = r.addr()?;
    r.u32()?;
    Ok((link, r.bytes16()?))
}

/// Reads a payload back into the binding it describes.
pub fn decode(payload: &[u8]) -> Result<Binding, RecordError> {
    let mut r = Reader(payload);
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(RecordError::Version(version));
    }
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
    if !r.0.is_empty() {
        return Err(RecordError::Trailing);
    }
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

    #[test]
    fn a_binding_reads_back_as_written() {
        let b = binding();
        let mut out = Vec::new();
        encode(&b, &mut out).unwrap();
        assert_eq!(decode(&out), Ok(b.clone()));
        assert_eq!(key(&out), Ok((b.key.link, &b.key.client_id[..])));
        let bare = Binding {
            relay: RelayInfo::default(),
            leases: vec![],
            ..b
        };
        out.clear();
        encode(&bare, &mut out).unwrap();
        assert_eq!(decode(&out), Ok(bare));
    }

    #[test]
    fn every_cut_or_extension_is_an_error_never_a_panic() {
        let mut out = Vec::new();
        encode(&binding(), &mut out).unwrap();
        for n in 0..out.len() {
            assert!(decode(&out[..n]).is_err(), "{n} octets");
        }
        out.push(0);
        assert_eq!(decode(&out), Err(RecordError::Trailing));
        out[0] = 9;
        assert_eq!(decode(&out), Err(RecordError::Version(9)));
        assert_eq!(key(&out), Err(RecordError::Version(9)));
    }
}
