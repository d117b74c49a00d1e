//! Relay templates (decision D42): what the relayed messages of many clients share, kept once.
//!
//! A binding's relayed message (OPTION_LQ_RELAY_DATA) is the RELAY-FORW chain of its relays. Of
//! its octets, few are the client's own: the innermost peer-address (the client's link-local
//! address) and the remote-id of its line. Everything else (the hops' headers, the
//! interface-ids, the relay-ids, the aggregation relays, the address the message came from) is
//! the same for every client behind the same relays. A *template* is the chain with those two
//! parts cut out: its hops, outermost first, each with its options in their order, where a
//! remote-id keeps its enterprise number and the part of its value up to its first `/` (the
//! access node, in the common `node/slot/port` forms) and the rest is a hole.
//!
//! A record of a relayed binding names its template by number and carries only the holes.
//! The journal holds each template in a record of its own (a *definition*); lqd writes one
//! before the first record that uses the template, and writes it again when the ring is about
//! to drop it while newer records still use it, so that every record in the ring has its
//! template's definition in the ring too. At start the definitions are read first (order in the
//! ring does not matter), then the records.
//!
//! A message that is not a chain this splits and rebuilds octet for octet is kept whole in its
//! record: the split is checked by rebuilding before it is used.

use std::collections::HashMap;
use std::net::Ipv6Addr;

/// Option codes the split knows.
const OPTION_RELAY_MSG: u16 = 9;
const OPTION_REMOTE_ID: u16 = 37;
const OPTION_RELAY_ID: u16 = 53;

/// Hops a template holds at most (RFC 8415's HOP_COUNT_LIMIT is 8).
const MAX_HOPS: usize = 8;

/// The most templates lqd keeps; bindings beyond them are recorded with their message whole.
pub const MAX_TEMPLATES: usize = 1 << 20;

/// Option kinds in a template's serialised hop.
const KIND_LITERAL: u8 = 0;
const KIND_REMOTE_ID: u8 = 1;
const KIND_NESTED: u8 = 2;

/// A relayed message split into its template and its holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The template's body: the address the message came from (16), then the hops.
    pub body: Vec<u8>,
    /// The innermost hop's peer-address.
    pub peer: Ipv6Addr,
    /// The remote-ids' values after their template part, in the order of the chain.
    pub holes: Vec<Vec<u8>>,
    /// The innermost hop's link-address.
    pub link: Ipv6Addr,
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads a LEB128 number of at most 10 octets; `None` when cut short or too long.
pub(crate) fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10u32 {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(x & 0x7f).checked_shl(7 * i)?;
        if x & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Some(h)
}

fn addr(b: &[u8]) -> Option<Ipv6Addr> {
    <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from)
}

/// The options of `b`: (code, value) pairs, `None` unless they cover `b` exactly.
fn options(mut b: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let h = take(&mut b, 4)?;
        let code = u16::from_be_bytes([*h.first()?, *h.get(1)?]);
        let len = usize::from(u16::from_be_bytes([*h.get(2)?, *h.get(3)?]));
        out.push((code, take(&mut b, len)?));
    }
    Some(out)
}

/// Splits `message` (received from `from`); `None` when it is not a chain of RELAY-FORW-shaped
/// hops this rebuilds exactly.
#[must_use]
pub fn split(from: Ipv6Addr, message: &[u8]) -> Option<Split> {
    let mut s = Split {
        body: from.octets().to_vec(),
        peer: Ipv6Addr::UNSPECIFIED,
        holes: Vec::new(),
        link: Ipv6Addr::UNSPECIFIED,
    };
    split_hop(message, &mut s, 0)?;
    let mut again = Vec::with_capacity(message.len());
    let holes: Vec<&[u8]> = s.holes.iter().map(Vec::as_slice).collect();
    let (f, l) = rebuild(&s.body, s.peer, &holes, &mut again)?;
    (again == message && f == from && l == s.link).then_some(s)
}

fn split_hop(m: &[u8], s: &mut Split, depth: usize) -> Option<()> {
    if depth >= MAX_HOPS || m.len() < 34 {
        return None;
    }
    let opts = options(m.get(34..)?)?;
    let nested = opts.iter().filter(|(c, _)| *c == OPTION_RELAY_MSG).count();
    if nested > 1 {
        return None;
    }
    s.body.extend_from_slice(m.get(..18)?);
    if nested == 0 {
        s.peer = addr(m.get(18..34)?)?;
        s.link = addr(m.get(2..18)?)?;
        s.body.extend_from_slice(&[0; 16]);
    } else {
        s.body.extend_from_slice(m.get(18..34)?);
    }
    put_varint(&mut s.body, opts.len() as u64);
    for (code, value) in opts {
        s.body.extend_from_slice(&code.to_be_bytes());
        match code {
            OPTION_RELAY_MSG => {
                s.body.push(KIND_NESTED);
                split_hop(value, s, depth + 1)?;
            }
            OPTION_REMOTE_ID if value.len() >= 4 => {
                let (ent, id) = value.split_at(4);
                let cut = id
                    .iter()
                    .take(64)
                    .position(|&c| c == b'/')
                    .map_or(0, |i| i + 1);
                let (head, tail) = id.split_at(cut);
                s.body.push(KIND_REMOTE_ID);
                s.body.extend_from_slice(ent);
                put_varint(&mut s.body, head.len() as u64);
                s.body.extend_from_slice(head);
                s.holes.push(tail.to_vec());
            }
            _ => {
                s.body.push(KIND_LITERAL);
                put_varint(&mut s.body, value.len() as u64);
                s.body.extend_from_slice(value);
            }
        }
    }
    Some(())
}

/// Rebuilds a message from a template's `body`, the innermost `peer` and the remote-ids'
/// `holes` into `out`; the address it came from and the innermost link-address. `None` when
/// the body is malformed or the holes do not fit it.
pub fn rebuild(
    body: &[u8],
    peer: Ipv6Addr,
    holes: &[&[u8]],
    out: &mut Vec<u8>,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let mut it = holes.iter().copied();
    let r = rebuild_with(body, peer, &mut || it.next(), out)?;
    it.next().is_none().then_some(r)
}

/// A template compiled for rebuilding many messages from it (the store's relayed messages,
/// issue 19): the message's octets with every hole empty and the peer-address zero, and the
/// places where the peer-address, each hole and each length that grows with the holes go. A
/// rebuild is then a few copies, not a walk over the body's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    from: Ipv6Addr,
    skeleton: Vec<u8>,
    /// By place in the skeleton.
    steps: Vec<Step>,
    holes: usize,
}

/// One place in a [`Compiled`] skeleton.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The 16 octets here are the innermost peer-address.
    Peer(usize),
    /// Hole `.1` goes here.
    Hole(usize, usize),
    /// The 16-bit length here grows by the lengths of holes `.1` up to `.2` (excluded).
    Len(usize, usize, usize),
}

impl Compiled {
    /// `body` compiled; `None` when malformed (as [`rebuild`] would find it).
    #[must_use]
    pub fn of(body: &[u8]) -> Option<Self> {
        let mut b = body;
        let from = addr(take(&mut b, 16)?)?;
        let mut c = Self {
            from,
            skeleton: Vec::new(),
            steps: Vec::new(),
            holes: 0,
        };
        c.hop(&mut b, 0)?;
        if !b.is_empty() {
            return None;
        }
        c.steps.sort_by_key(|s| match *s {
            Step::Peer(at) | Step::Hole(at, _) | Step::Len(at, _, _) => at,
        });
        Some(c)
    }

    fn hop(&mut self, b: &mut &[u8], depth: usize) -> Option<()> {
        if depth >= MAX_HOPS {
            return None;
        }
        let head = take(b, 34)?;
        let start = self.skeleton.len();
        self.skeleton.extend_from_slice(head);
        let n = get_varint(b)?;
        let mut nested = false;
        for _ in 0..n {
            let code = take(b, 2)?;
            let kind = *take(b, 1)?.first()?;
            self.skeleton.extend_from_slice(code);
            let len_at = self.skeleton.len();
            self.skeleton.extend_from_slice(&[0, 0]);
            let first_hole = self.holes;
            match kind {
                KIND_LITERAL => {
                    let len = usize::try_from(get_varint(b)?).ok()?;
                    self.skeleton.extend_from_slice(take(b, len)?);
                }
                KIND_REMOTE_ID => {
                    self.skeleton.extend_from_slice(take(b, 4)?);
                    let len = usize::try_from(get_varint(b)?).ok()?;
                    self.skeleton.extend_from_slice(take(b, len)?);
                    self.steps.push(Step::Hole(self.skeleton.len(), self.holes));
                    self.holes += 1;
                }
                KIND_NESTED if !nested => {
                    nested = true;
                    self.hop(b, depth + 1)?;
                }
                _ => return None,
            }
            let len = u16::try_from(self.skeleton.len().checked_sub(len_at + 2)?).ok()?;
            self.skeleton
                .get_mut(len_at..len_at + 2)?
                .copy_from_slice(&len.to_be_bytes());
            if self.holes > first_hole {
                self.steps.push(Step::Len(len_at, first_hole, self.holes));
            }
        }
        if !nested {
            self.steps.push(Step::Peer(start + 18));
        }
        Some(())
    }

    /// Appends the message of `peer` and `holes` to `out` (as [`rebuild`] does); the address
    /// it came from, or `None` (`out` as it was) when the holes do not fit.
    pub fn rebuild(&self, peer: Ipv6Addr, holes: &[&[u8]], out: &mut Vec<u8>) -> Option<Ipv6Addr> {
        if holes.len() != self.holes {
            return None;
        }
        let start = out.len();
        let mut at = 0;
        let sk = &self.skeleton;
        let done = self.steps.iter().try_for_each(|step| {
            match *step {
                Step::Peer(p) => {
                    out.extend_from_slice(sk.get(at..p)?);
                    out.extend_from_slice(&peer.octets());
                    at = p + 16;
                }
                Step::Hole(p, i) => {
                    out.extend_from_slice(sk.get(at..p)?);
                    out.extend_from_slice(holes.get(i)?);
                    at = p;
                }
                Step::Len(p, a, z) => {
                    out.extend_from_slice(sk.get(at..p)?);
                    let base = u16::from_be_bytes(*sk.get(p..p + 2)?.first_chunk::<2>()?);
                    let grown = holes
                        .get(a..z)?
                        .iter()
                        .try_fold(usize::from(base), |n, h| n.checked_add(h.len()))?;
                    out.extend_from_slice(&u16::try_from(grown).ok()?.to_be_bytes());
                    at = p + 2;
                }
            }
            Some(())
        });
        match done.and_then(|()| sk.get(at..)) {
            Some(rest) => {
                out.extend_from_slice(rest);
                Some(self.from)
            }
            None => {
                out.truncate(start);
                None
            }
        }
    }
}

/// A template body's innermost link-address and number of holes; `None` when malformed.
#[must_use]
pub fn shape(body: &[u8]) -> Option<(Ipv6Addr, usize)> {
    let mut n = 0usize;
    let mut out = Vec::new();
    let (_, link) = rebuild_with(
        body,
        Ipv6Addr::UNSPECIFIED,
        &mut || {
            n += 1;
            Some(&[])
        },
        &mut out,
    )?;
    Some((link, n))
}

fn rebuild_with<'h>(
    body: &[u8],
    peer: Ipv6Addr,
    holes: &mut dyn FnMut() -> Option<&'h [u8]>,
    out: &mut Vec<u8>,
) -> Option<(Ipv6Addr, Ipv6Addr)> {
    let mut b = body;
    let from = addr(take(&mut b, 16)?)?;
    let mut link = Ipv6Addr::UNSPECIFIED;
    rebuild_hop(&mut b, peer, holes, out, 0, &mut link)?;
    b.is_empty().then_some((from, link))
}

fn rebuild_hop<'h>(
    b: &mut &[u8],
    peer: Ipv6Addr,
    holes: &mut dyn FnMut() -> Option<&'h [u8]>,
    out: &mut Vec<u8>,
    depth: usize,
    link: &mut Ipv6Addr,
) -> Option<()> {
    if depth >= MAX_HOPS {
        return None;
    }
    let head = take(b, 34)?;
    let start = out.len();
    out.extend_from_slice(head);
    let n = get_varint(b)?;
    let mut nested = false;
    for _ in 0..n {
        let code = take(b, 2)?;
        let kind = *take(b, 1)?.first()?;
        out.extend_from_slice(code);
        let len_at = out.len();
        out.extend_from_slice(&[0, 0]);
        match kind {
            KIND_LITERAL => {
                let len = usize::try_from(get_varint(b)?).ok()?;
                out.extend_from_slice(take(b, len)?);
            }
            KIND_REMOTE_ID => {
                out.extend_from_slice(take(b, 4)?);
                let len = usize::try_from(get_varint(b)?).ok()?;
                out.extend_from_slice(take(b, len)?);
                out.extend_from_slice(holes()?);
            }
            KIND_NESTED if !nested => {
                nested = true;
                rebuild_hop(b, peer, holes, out, depth + 1, link)?;
            }
            _ => return None,
        }
        let len = u16::try_from(out.len().checked_sub(len_at + 2)?).ok()?;
        out.get_mut(len_at..len_at + 2)?
            .copy_from_slice(&len.to_be_bytes());
    }
    if !nested {
        out.get_mut(start + 18..start + 34)?
            .copy_from_slice(&peer.octets());
        *link = addr(head.get(2..18)?)?;
    }
    Some(())
}

/// A message's relay-ids, and its remote-ids as (enterprise number, value).
pub type Ids<'a> = (Vec<&'a [u8]>, Vec<(u32, &'a [u8])>);

/// The relay-ids and remote-ids (enterprise, value) of a relayed message, innermost hop first
/// (`inner_first`) or outermost first; `None` when it is not a chain of hops.
#[must_use]
pub fn ids_of(message: &[u8], inner_first: bool) -> Option<Ids<'_>> {
    let mut hops = Vec::new();
    let mut m = message;
    loop {
        if hops.len() >= MAX_HOPS {
            return None;
        }
        let opts = options(m.get(34..)?)?;
        let next = opts
            .iter()
            .find(|(c, _)| *c == OPTION_RELAY_MSG)
            .map(|(_, v)| *v);
        hops.push(opts);
        match next {
            Some(n) => m = n,
            None => break,
        }
    }
    if inner_first {
        hops.reverse();
    }
    let (mut relay, mut remote) = (Vec::new(), Vec::new());
    for opts in &hops {
        for (code, value) in opts {
            match *code {
                OPTION_RELAY_ID if !value.is_empty() => relay.push(*value),
                OPTION_REMOTE_ID if value.len() >= 4 => {
                    let (e, id) = value.split_at(4);
                    let e = u32::from_be_bytes(e.try_into().ok()?);
                    remote.push((e, id));
                }
                _ => {}
            }
        }
    }
    Some((relay, remote))
}

/// A template lqd knows: its body, and where the journal holds it.
#[derive(Debug, Clone)]
struct Entry {
    body: Box<[u8]>,
    /// The innermost link-address and the number of holes.
    link: Ipv6Addr,
    holes: usize,
    /// The newest record defining it (`None`: never written, or dropped by the ring).
    defined: Option<u64>,
    /// The newest record using it.
    used: u64,
}

/// The templates of one journal, by number.
#[derive(Debug, Default, Clone)]
pub struct Templates {
    entries: Vec<Option<Entry>>,
    by_body: HashMap<Box<[u8]>, u32>,
    /// The oldest definition of a template used by a newer record (`u64::MAX`: none).
    oldest_pending: u64,
}

/// A record carrying a template's definition older than this share of the ring's records
/// (its oldest eighth) has the definition written again when a newer record uses it.
const REFRESH: u64 = 8;

impl Templates {
    /// No template.
    #[must_use]
    pub fn new() -> Self {
        Self {
            oldest_pending: u64::MAX,
            ..Self::default()
        }
    }

    /// Templates known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_body.len()
    }

    /// True when none is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_body.is_empty()
    }

    fn entry(&self, id: u32) -> Option<&Entry> {
        self.entries.get(usize::try_from(id).ok()?)?.as_ref()
    }

    /// Template `id`'s body.
    #[must_use]
    pub fn body(&self, id: u32) -> Option<&[u8]> {
        self.entry(id).map(|e| &*e.body)
    }

    /// Template `id`'s innermost link-address and number of holes.
    #[must_use]
    pub fn shape(&self, id: u32) -> Option<(Ipv6Addr, usize)> {
        self.entry(id).map(|e| (e.link, e.holes))
    }

    /// A definition read from the journal, in record `seq`.
    pub fn learn(&mut self, id: u32, body: &[u8], seq: u64) {
        let Ok(i) = usize::try_from(id) else {
            return;
        };
        if i >= MAX_TEMPLATES {
            return;
        }
        let Some((link, holes)) = shape(body) else {
            return;
        };
        if self.entries.len() <= i {
            self.entries.resize(i + 1, None);
        }
        if let Some(slot) = self.entries.get_mut(i) {
            if let Some(old) = slot.take() {
                self.by_body.remove(&old.body);
            }
            self.by_body.insert(body.into(), id);
            *slot = Some(Entry {
                body: body.into(),
                link,
                holes,
                defined: Some(seq),
                used: seq,
            });
        }
    }

    /// The number of the template with `body`, made when new; `None` when lqd holds
    /// [`MAX_TEMPLATES`] already. The second value is true when the journal holds no
    /// definition of it from `first` on: one must be written before the record using it.
    pub fn number(&mut self, body: &[u8], first: u64) -> Option<(u32, bool)> {
        if let Some(&id) = self.by_body.get(body) {
            let e = self.entries.get(usize::try_from(id).ok()?)?.as_ref()?;
            return Some((id, e.defined.is_none_or(|d| d < first)));
        }
        let (link, holes) = shape(body)?;
        let i = match self.entries.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.entries.len() < MAX_TEMPLATES => {
                self.entries.push(None);
                self.entries.len() - 1
            }
            None => return None,
        };
        let id = u32::try_from(i).ok()?;
        *self.entries.get_mut(i)? = Some(Entry {
            body: body.into(),
            link,
            holes,
            defined: None,
            used: 0,
        });
        self.by_body.insert(body.into(), id);
        Some((id, true))
    }

    /// Record `seq` defines template `id`.
    pub fn defined(&mut self, id: u32, seq: u64) {
        if let Some(Some(e)) = usize::try_from(id)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            e.defined = Some(seq);
        }
    }

    /// Record `seq` uses template `id`.
    pub fn used(&mut self, id: u32, seq: u64) {
        if let Some(Some(e)) = usize::try_from(id)
            .ok()
            .and_then(|i| self.entries.get_mut(i))
        {
            e.used = seq;
            if let Some(d) = e.defined {
                self.oldest_pending = self.oldest_pending.min(d);
            }
        }
    }

    /// The templates whose definition must be written again: used by a record newer than
    /// their definition, which is in the oldest eighth of the records from `first` to `next`
    /// (a quarter, so that one pass serves a while).
    pub fn due(&mut self, first: u64, next: u64) -> Vec<u32> {
        let span = next.saturating_sub(first);
        if self.oldest_pending >= first.saturating_add(span / REFRESH) {
            return Vec::new();
        }
        let limit = first.saturating_add(span / 4);
        let mut due = Vec::new();
        let mut oldest = u64::MAX;
        for (i, e) in self.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let Some(d) = e.defined else { continue };
            if e.used > d {
                if d < limit {
                    due.extend(u32::try_from(i).ok());
                } else {
                    oldest = oldest.min(d);
                }
            }
        }
        // The due ones get a definition at `next` or later.
        self.oldest_pending = oldest.min(next);
        due
    }
}

// ---- snapshot (D43) ----------------------------------------------------------------------

impl Templates {
    /// Writes every template into a snapshot: its body, the newest record defining it and the
    /// newest using it, by number.
    pub(crate) fn save_snapshot<W: std::io::Write>(
        &self,
        w: &mut crate::store::snapshot::Writer<W>,
    ) -> std::io::Result<()> {
        w.len32(self.entries.len())?;
        for e in &self.entries {
            let Some(e) = e else {
                w.u8(0)?;
                continue;
            };
            w.u8(1)?;
            w.blob(&e.body)?;
            w.u8(u8::from(e.defined.is_some()))?;
            w.u64(e.defined.unwrap_or(0))?;
            w.u64(e.used)?;
        }
        Ok(())
    }

    /// The templates a snapshot holds; a body that is not a template refuses it.
    pub(crate) fn load_snapshot<R: std::io::Read>(
        r: &mut crate::store::snapshot::Reader<R>,
    ) -> Result<Self, crate::store::snapshot::SnapshotError> {
        use crate::store::snapshot::damaged;
        let n = r.count32(1)?;
        if n > MAX_TEMPLATES {
            return Err(damaged(format!("{n} relay templates")));
        }
        let mut t = Self::new();
        t.entries.reserve_exact(n);
        for i in 0..n {
            if !r.flag()? {
                t.entries.push(None);
                continue;
            }
            let body = r.blob()?;
            let defined = r.flag()?;
            let at = r.u64()?;
            let used = r.u64()?;
            let Some((link, holes)) = shape(&body) else {
                return Err(damaged("a relay template that is none"));
            };
            let id = u32::try_from(i).map_err(|_| damaged("too many relay templates"))?;
            if t.by_body.insert(body.clone(), id).is_some() {
                return Err(damaged("a relay template twice"));
            }
            t.entries.push(Some(Entry {
                body,
                link,
                holes,
                defined: defined.then_some(at),
                used,
            }));
        }
        // Looked at again by the next `due`.
        t.oldest_pending = 0;
        Ok(t)
    }

    /// Each template's number, body and newest definition (tests comparing two journals').
    #[cfg(test)]
    pub(crate) fn entries_for_test(&self) -> Vec<(u32, Box<[u8]>, Option<u64>)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                Some((
                    u32::try_from(i).ok()?,
                    e.as_ref()?.body.clone(),
                    e.as_ref()?.defined,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BuildOptions, DhcpOption, MessageBuilder, MessageType};

    fn chain(remote: &str, two_hops: bool) -> (Ipv6Addr, Vec<u8>) {
        let link: Ipv6Addr = "2001:db8:0:7::1".parse().unwrap();
        let peer: Ipv6Addr = "fe80::211:22ff:fe33:4455".parse().unwrap();
        let inner = MessageBuilder::relay(MessageType::RelayForw, 0, link, peer)
            .option(DhcpOption::InterfaceId(b"ge-0/0/7"))
            .remote_id(2636, remote.as_bytes())
            .relay_id(&[0, 2, 0, 0, 0x0a, 0x4c, 1, 2, 3])
            .build()
            .unwrap();
        if !two_hops {
            return ("2001:db8:ffff::7".parse().unwrap(), inner);
        }
        let outer = MessageBuilder::relay(
            MessageType::RelayForw,
            1,
            Ipv6Addr::UNSPECIFIED,
            "2001:db8:ffff::7".parse().unwrap(),
        )
        .relay_id(&[0, 2, 0, 0, 0x0a, 0x4c, 9])
        .relay_msg(&inner)
        .build()
        .unwrap();
        ("2001:db8:fffe::1".parse().unwrap(), outer)
    }

    #[test]
    fn a_chain_splits_and_rebuilds_octet_for_octet() {
        for two in [false, true] {
            let (from, m) = chain("juniper-8/1234/5", two);
            let s = split(from, &m).expect("splits");
            assert_eq!(s.holes, vec![b"1234/5".to_vec()]);
            assert_eq!(
                s.peer,
                "fe80::211:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap()
            );
            assert_eq!(s.link, "2001:db8:0:7::1".parse::<Ipv6Addr>().unwrap());
            // Another client behind the same relays: the same template.
            let (_, m2) = chain("juniper-8/99999/63", two);
            let s2 = split(from, &m2).unwrap();
            assert_eq!(s.body, s2.body);
            let mut out = Vec::new();
            let holes: Vec<&[u8]> = s2.holes.iter().map(Vec::as_slice).collect();
            assert_eq!(
                rebuild(&s.body, s2.peer, &holes, &mut out),
                Some((from, s.link))
            );
            assert_eq!(out, m2);
            let (relay, remote) = ids_of(&m, true).unwrap();
            assert_eq!(relay.len(), if two { 2 } else { 1 });
            assert_eq!(relay[0], &[0, 2, 0, 0, 0x0a, 0x4c, 1, 2, 3][..]);
            assert_eq!(remote, vec![(2636, &b"juniper-8/1234/5"[..])]);
        }
    }

    /// A compiled template rebuilds exactly what the body does, for one and two hops, holes
    /// of every length (the lengths around them grow), and refuses what does not fit.
    #[test]
    fn a_compiled_template_rebuilds_as_the_body_does() {
        for two in [false, true] {
            let (from, m) = chain("juniper-8/1234/5", two);
            let s = split(from, &m).unwrap();
            let c = Compiled::of(&s.body).unwrap();
            for line in [
                "juniper-8/",
                "juniper-8/1/2",
                "juniper-8/99999/63/some/more/octets",
            ] {
                let (_, m2) = chain(line, two);
                let s2 = split(from, &m2).unwrap();
                assert_eq!(s2.body, s.body);
                let holes: Vec<&[u8]> = s2.holes.iter().map(Vec::as_slice).collect();
                let mut out = vec![7];
                assert_eq!(c.rebuild(s2.peer, &holes, &mut out), Some(from));
                assert_eq!(&out[1..], &m2[..], "{line}");
            }
            let mut out = vec![7];
            assert_eq!(c.rebuild(s.peer, &[], &mut out), None);
            assert_eq!(out, vec![7]);
        }
        // Every cut body: compiled exactly when the walk rebuilds it.
        let (from, m) = chain("x/1", true);
        let s = split(from, &m).unwrap();
        for n in 0..s.body.len() {
            let mut out = Vec::new();
            let walked = rebuild(&s.body[..n], s.peer, &[b"1".as_slice()], &mut out);
            let compiled = Compiled::of(&s.body[..n]).and_then(|c| {
                let mut o = Vec::new();
                c.rebuild(s.peer, &[b"1".as_slice()], &mut o)
                    .map(|f| (f, o))
            });
            assert_eq!(walked.map(|(f, _)| (f, out)), compiled, "cut at {n}");
        }
    }

    #[test]
    fn what_is_not_a_chain_does_not_split_and_no_body_panics() {
        let (from, m) = chain("x", true);
        for n in 0..m.len() {
            // A cut is either no chain or one that rebuilds to itself (split checks it).
            if let Some(s) = split(from, &m[..n]) {
                let mut out = Vec::new();
                let holes: Vec<&[u8]> = s.holes.iter().map(Vec::as_slice).collect();
                rebuild(&s.body, s.peer, &holes, &mut out).unwrap();
                assert_eq!(out, &m[..n]);
            } else {
                assert!(n != 34 || m.len() == 34, "{n}");
            }
        }
        let s = split(from, &m).unwrap();
        for n in 0..s.body.len() {
            let mut out = Vec::new();
            let _ = rebuild(&s.body[..n], s.peer, &[b"".as_slice()], &mut out);
        }
        let mut out = Vec::new();
        assert!(rebuild(&s.body, s.peer, &[], &mut out).is_none());
    }

    #[test]
    fn definitions_are_due_again_before_the_ring_drops_them() {
        let mut t = Templates::new();
        let (from, m) = chain("r/1", false);
        let body = split(from, &m).unwrap().body;
        assert_eq!(t.number(b"not a body", 0), None);
        let (id, new) = t.number(&body, 0).unwrap();
        assert!(new);
        t.defined(id, 10);
        t.used(id, 11);
        assert_eq!(t.number(&body, 5), Some((id, false)));
        assert_eq!(t.number(&body, 11), Some((id, true)));
        assert!(t.due(0, 50).is_empty());
        assert_eq!(t.due(5, 100), vec![id]);
        t.defined(id, 100);
        assert!(t.due(50, 200).is_empty());
        let mut varint = Vec::new();
        put_varint(&mut varint, 300);
        assert_eq!(get_varint(&mut &varint[..]), Some(300));
        assert_eq!(get_varint(&mut &[0x80u8; 11][..]), None);
    }
}
