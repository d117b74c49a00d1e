//! The snapshot (D43): a history restored from a snapshot and the records after it answers
//! exactly as one rebuilt from the whole journal; each way a snapshot can be wrong refuses it,
//! and the start falls back to the whole journal; no octet of a snapshot makes the reader
//! panic.

use std::path::{Path, PathBuf};

use super::*;
use crate::feed::{DemoConfig, DemoSource};
use crate::store::journal::Journal;
use crate::store::{BindingView, History, LinkDef, Restored, SnapshotStart, Store};

type Mem = Journal<Vec<u8>>;

fn demo(seed: u64, clients: usize) -> DemoSource {
    DemoSource::new(DemoConfig {
        clients,
        links: 6,
        seed,
        relay_share: 1.0,
        two_hop_share: 0.5,
        pd_share: 0.5,
        // Short lifetimes: some leases expire between the changes.
        valid_lifetime: 600,
        preferred_lifetime: 300,
        ..DemoConfig::default()
    })
}

/// A history fed by `demo`: `changes` changes from time `*t`, every third one a numbered line
/// of writer `w`, expiries run every 100 changes.
fn feed(h: &mut History<Mem>, demo: &mut DemoSource, changes: u32, t: &mut u32, line: &mut u64) {
    for k in 0..changes {
        let now = ServerTime(*t);
        let c = demo.next_change(now);
        if k % 3 == 0 {
            *line += 1;
            h.apply_numbered(&c, now, "w", *line).unwrap();
        } else {
            h.apply(&c, now).unwrap();
        }
        if k % 100 == 99 {
            h.expire(now).unwrap();
        }
        if k % 5 == 4 {
            *t += 1;
        }
    }
}

fn fresh(ring: usize) -> History<Mem> {
    History::open(Store::new(), Journal::format(vec![0u8; ring]).unwrap()).0
}

/// The journal's octets, as a clean stop leaves them.
fn bytes_of(h: History<Mem>) -> Vec<u8> {
    h.into_parts().1.into_inner()
}

fn reopen(bytes: &[u8]) -> Mem {
    Journal::open(bytes.to_vec()).unwrap().0
}

/// What every query type answers from `s`, bindings named by client and link (their numbers
/// differ between two stores built apart).
fn answers(s: &Store) -> Vec<String> {
    let name = |id| {
        s.get(id)
            .map(|b| format!("{} {}", hex::encode(b.client_id()), b.link()))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut all: Vec<_> = s.iter().collect();
    all.sort_by_key(|(_, b)| (b.client_id().to_vec(), b.link()));
    for (id, b) in &all {
        let mut line = format!("{}:", name(*id));
        for l in b.leases() {
            line += &format!(
                " {} -> {};",
                l.address,
                s.by_address(l.address).map(name).unwrap_or_default()
            );
        }
        let links: Vec<_> = s.by_client(b.client_id()).map(name).collect();
        line += &format!(" client {links:?};");
        line += &format!(" link {};", s.by_link(b.link(), None).any(|x| x == *id));
        for r in b.relay_ids() {
            line += &format!(" relay {};", s.by_relay_id(r, None).any(|x| x == *id));
        }
        for (e, r) in b.remote_ids() {
            let key = crate::store::RemoteIdKey {
                enterprise_number: e,
                remote_id: r.into(),
            };
            line += &format!(" remote {};", s.by_remote_id(&key, None).any(|x| x == *id));
            assert!(b.has_remote_id(&key));
        }
        out.push(line);
    }
    out.push(format!("links {:?}", s.links().collect::<Vec<_>>()));
    out.push(format!("leases {:?}", s.lease_counts()));
    let mut changed: Vec<_> = s
        .changed_between(None, None)
        .map(|id| (s.get(id).map(|b| b.last_change()), name(id)))
        .collect();
    changed.sort();
    out.push(format!("changed {changed:?}"));
    out.push(format!("next expiry {:?}", s.next_expiry()));
    let mut expired: Vec<_> = s
        .expired(ServerTime(u32::MAX - 1))
        .into_iter()
        .map(|c| format!("{c:?}"))
        .collect();
    expired.sort();
    out.push(format!("expired {expired:?}"));
    out
}

/// The two histories rebuilt the same mirror and answer the same.
fn assert_same(a: &History<Mem>, b: &History<Mem>) {
    let (x, y) = (a.rebuilt_for_test(), b.rebuilt_for_test());
    assert_eq!(x.bindings.len(), y.bindings.len(), "bindings");
    for (p, q) in x.bindings.iter().zip(&y.bindings) {
        assert_eq!(p, q);
    }
    assert_eq!(x.tombstones, y.tombstones, "tombstones");
    assert_eq!(x.marks, y.marks, "marks");
    assert_eq!(x.marks_reset, y.marks_reset, "marks reset");
    assert_eq!(x.templates, y.templates, "templates");
    assert_eq!(x.postings.len(), y.postings.len(), "posting keys");
    // A hashed key's tag depends on its history's seed (D44): the lists compared by their
    // records and loss marks, the lease keys by tag as well.
    let lists = |v: &[(crate::store::Tag, Vec<u64>, Option<u64>)]| {
        let mut out: Vec<_> = v.iter().map(|l| (l.0.lease(), l.1.clone(), l.2)).collect();
        out.sort();
        out
    };
    for (p, q) in lists(&x.postings).iter().zip(&lists(&y.postings)) {
        assert_eq!(p, q);
    }
    assert_eq!(answers(a.store()), answers(b.store()));
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// The journal after the snapshot and the records after it.
    bytes: Vec<u8>,
    covered: u64,
}

/// A history of `before` changes, its snapshot, then `after` changes more.
fn setup(ring: usize, seed: u64, before: u32, after: u32) -> Setup {
    setup_at(ring, seed, before, after, 800_000_000)
}

/// The same from time `t0`.
fn setup_at(ring: usize, seed: u64, before: u32, after: u32, t0: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = path_for(&dir.path().join("lqd-journal"));
    let mut h = fresh(ring);
    let (mut d, mut t, mut line) = (demo(seed, 400), t0, 0u64);
    feed(&mut h, &mut d, before, &mut t, &mut line);
    let w = h.write_snapshot(&path).unwrap().unwrap();
    assert_eq!(w.covered, h.journal().next_seq() - 1);
    assert_eq!(w.bindings, h.store().len());
    assert_eq!(w.octets, std::fs::metadata(&path).unwrap().len());
    assert!(!temp_path(&path).exists(), "the temporary file is renamed");
    feed(&mut h, &mut d, after, &mut t, &mut line);
    Setup {
        _dir: dir,
        path,
        bytes: bytes_of(h),
        covered: w.covered,
    }
}

fn with_snapshot(
    bytes: &[u8],
    path: &Path,
    store: Store,
) -> (History<Mem>, Restored, SnapshotStart) {
    History::open_with_snapshot(store, reopen(bytes), path)
}

#[test]
fn a_snapshot_and_the_records_after_it_rebuild_what_the_whole_journal_does() {
    let s = setup(16 << 20, 1, 6000, 1500);
    let (full, all) = History::open(Store::new(), reopen(&s.bytes));
    let (snap, restored, start) = with_snapshot(&s.bytes, &s.path, Store::new());
    assert!(
        matches!(start, SnapshotStart::Loaded { covered, .. } if covered == s.covered),
        "{start:?}"
    );
    let next = snap.journal().next_seq();
    assert_eq!(
        restored.replayed,
        next - s.covered - 1,
        "only the records after it"
    );
    assert!(restored.replayed < all.replayed / 3);
    assert_eq!(
        (
            restored.records,
            restored.bindings,
            restored.marks,
            restored.marks_void
        ),
        (all.records, all.bindings, all.marks, all.marks_void)
    );
    assert!(
        restored.bindings > 200 && restored.marks == 1 && !restored.marks_void,
        "{restored:?}"
    );
    assert!(full.tombstones() > 0, "some bindings ended");
    assert!(!full.templates().is_empty());
    assert_same(&full, &snap);
    // Both go on alike: the next changes change the same bindings. (Not into the same
    // sequence numbers: the snapshot knows which records use each relay template, so it may
    // write a template's definition again sooner than a history that replayed the journal.)
    let (mut full, mut snap) = (full, snap);
    let mut d = demo(9, 50);
    for k in 0..300u32 {
        let now = ServerTime(900_000_000 + k);
        let c = d.next_change(now);
        assert_eq!(full.apply(&c, now).unwrap(), snap.apply(&c, now).unwrap());
    }
    let bindings = |h: &History<Mem>| {
        h.rebuilt_for_test()
            .bindings
            .into_iter()
            .map(|(b, _)| b)
            .collect::<Vec<_>>()
    };
    assert_eq!(bindings(&full), bindings(&snap));
    assert_eq!(answers(full.store()), answers(snap.store()));
}

#[test]
fn a_snapshot_covering_the_newest_record_replays_nothing() {
    let s = setup(16 << 20, 2, 3000, 0);
    let (full, _) = History::open(Store::new(), reopen(&s.bytes));
    let (snap, restored, start) = with_snapshot(&s.bytes, &s.path, Store::new());
    assert!(matches!(start, SnapshotStart::Loaded { .. }), "{start:?}");
    assert_eq!(restored.replayed, 0);
    assert_same(&full, &snap);
}

/// A ring that wrapped since the snapshot (but still holds the record it covers): the lists
/// lose what the ring dropped, and the rest is as the whole journal rebuilds it.
#[test]
fn records_the_ring_dropped_after_the_snapshot_leave_its_lists_too() {
    // About 400 bindings re-recorded often: the ring holds every live binding's newest record.
    let ring = 600 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = path_for(&dir.path().join("lqd-journal"));
    let mut h = fresh(ring);
    let (mut d, mut t, mut line) = (demo(3, 400), 800_000_000u32, 0u64);
    feed(&mut h, &mut d, 8000, &mut t, &mut line);
    let first_before = h.journal().first_seq().unwrap();
    assert!(first_before > 0, "the ring wrapped");
    let w = h.write_snapshot(&path).unwrap().unwrap();
    let records = h.journal().len();
    feed(
        &mut h,
        &mut d,
        u32::try_from(records / 3).unwrap(),
        &mut t,
        &mut line,
    );
    let first = h.journal().first_seq().unwrap();
    assert!(
        first > first_before && first <= w.covered,
        "dropped some, not the covered"
    );
    let bytes = bytes_of(h);
    let (mut full, all) = History::open(Store::new(), reopen(&bytes));
    let (mut snap, restored, start) = with_snapshot(&bytes, &path, Store::new());
    assert!(matches!(start, SnapshotStart::Loaded { .. }), "{start:?}");
    assert!(!all.marks_void && !restored.marks_void);
    // Tombstones and emptied lists whose records are gone are dropped alike.
    full.prune(|_| false);
    snap.prune(|_| false);
    let (x, y) = (full.rebuilt_for_test(), snap.rebuilt_for_test());
    assert_eq!(x.bindings, y.bindings);
    assert_eq!(x.tombstones, y.tombstones);
    assert_eq!(x.marks, y.marks);
    assert_eq!(answers(full.store()), answers(snap.store()));
    // Every list holds the same records; the snapshot's also know what they lost before.
    // (The hashed keys' tags depend on each history's seed: compared by their records, the
    // lease keys by tag too.)
    let lists = |v: &[(crate::store::Tag, Vec<u64>, Option<u64>)]| {
        let mut out = v
            .iter()
            .filter(|l| !l.1.is_empty())
            .map(|l| (l.0.lease(), l.1.clone()))
            .collect::<Vec<_>>();
        out.sort();
        out
    };
    assert_eq!(lists(&x.postings), lists(&y.postings));
    assert!(y.postings.iter().any(|l| l.2.is_some()), "lost marks kept");
    assert!(x.postings.iter().all(|l| l.2.is_none_or(|m| m <= first)));
}

/// Each refusal falls back to the whole journal: the same mirror as without a snapshot.
fn assert_refused(s: &Setup, bytes: &[u8], store: impl Fn() -> Store, want: &str) -> String {
    let (full, all) = History::open(store(), reopen(bytes));
    let (snap, restored, start) = with_snapshot(bytes, &s.path, store());
    let SnapshotStart::Refused(why) = start else {
        panic!("not refused: {start:?}");
    };
    let why = why.to_string();
    assert!(why.contains(want), "{why}");
    assert_eq!(
        restored.replayed, all.replayed,
        "the whole journal replayed"
    );
    assert_same(&full, &snap);
    why
}

#[test]
fn a_damaged_octet_refuses_the_snapshot() {
    let s = setup(8 << 20, 4, 2000, 100);
    let mut file = std::fs::read(&s.path).unwrap();
    let at = file.len() / 2;
    file[at] ^= 0x20;
    std::fs::write(&s.path, &file).unwrap();
    assert_refused(
        &s,
        &s.bytes,
        Store::new,
        "damaged: a chunk's CRC does not match",
    );
}

#[test]
fn a_snapshot_cut_short_is_refused() {
    let s = setup(8 << 20, 5, 2000, 100);
    let file = std::fs::read(&s.path).unwrap();
    for len in [file.len() / 2, file.len() - 1, 20, 5] {
        std::fs::write(&s.path, &file[..len]).unwrap();
        let why = assert_refused(&s, &s.bytes, Store::new, "");
        assert!(
            why.contains("cut short") || why.contains("not a snapshot"),
            "{why}"
        );
    }
    // Magic of another file.
    std::fs::write(&s.path, b"GARBAGE GARBAGE GARBAGE").unwrap();
    assert_refused(&s, &s.bytes, Store::new, "no snapshot magic");
}

#[test]
fn a_snapshot_of_another_journal_is_refused() {
    let s = setup(8 << 20, 6, 2000, 100);
    // The same changes an hour later: the same sequence numbers, other records.
    let other = setup_at(8 << 20, 6, 2000, 100, 800_003_600);
    assert_eq!(reopen(&other.bytes).next_seq(), reopen(&s.bytes).next_seq());
    let why = assert_refused(&s, &other.bytes, Store::new, "not the one it covers");
    assert!(why.contains(&s.covered.to_string()), "{why}");
}

#[test]
fn a_snapshot_ahead_of_the_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = path_for(&dir.path().join("lqd-journal"));
    let mut h = fresh(8 << 20);
    let (mut d, mut t, mut line) = (demo(8, 300), 800_000_000u32, 0u64);
    feed(&mut h, &mut d, 1000, &mut t, &mut line);
    let older = bytes_of(h);
    let mut h = History::open(Store::new(), reopen(&older)).0;
    feed(&mut h, &mut d, 500, &mut t, &mut line);
    h.write_snapshot(&path).unwrap().unwrap();
    let s = Setup {
        _dir: dir,
        path,
        bytes: older.clone(),
        covered: 0,
    };
    assert_refused(&s, &older, Store::new, "ahead of the journal");
}

#[test]
fn a_snapshot_whose_covered_record_the_ring_dropped_is_refused() {
    let s = setup(400 * 1024, 9, 1000, 0);
    let mut h = History::open(Store::new(), reopen(&s.bytes)).0;
    let (mut d, mut t, mut line) = (demo(10, 300), 900_000_000u32, 0u64);
    while h.journal().first_seq().unwrap() <= s.covered {
        feed(&mut h, &mut d, 500, &mut t, &mut line);
    }
    let bytes = bytes_of(h);
    assert_refused(&s, &bytes, Store::new, "which the ring has dropped");
}

#[test]
fn a_snapshot_made_under_other_links_is_refused() {
    let s = setup(8 << 20, 11, 2000, 100);
    let links = || {
        Store::with_links(
            LinkMap::new(&[LinkDef {
                address: DemoSource::link_address(1),
                prefixes: vec!["2001:db8:0:1::/64".parse().unwrap()],
                pd_pools: vec![],
            }])
            .unwrap(),
        )
    };
    assert_refused(&s, &s.bytes, links, "other configured links");
    // And one made under links is refused without them.
    let dir = tempfile::tempdir().unwrap();
    let path = path_for(&dir.path().join("lqd-journal"));
    let mut h = History::open(links(), Journal::format(vec![0u8; 8 << 20]).unwrap()).0;
    let (mut d, mut t, mut line) = (demo(12, 200), 800_000_000u32, 0u64);
    feed(&mut h, &mut d, 500, &mut t, &mut line);
    h.write_snapshot(&path).unwrap().unwrap();
    let bytes = bytes_of(h);
    let (_, _, start) = with_snapshot(&bytes, &path, links());
    assert!(matches!(start, SnapshotStart::Loaded { .. }), "{start:?}");
    let s = Setup {
        _dir: dir,
        path,
        bytes: bytes.clone(),
        covered: 0,
    };
    assert_refused(&s, &bytes, Store::new, "other configured links");
}

/// The stream of a snapshot file, its chunks joined.
fn stream_of(file: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 12;
    while at + 8 <= file.len() {
        let len = u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
        out.extend_from_slice(&file[at + 8..at + 8 + len]);
        at += 8 + len;
    }
    out
}

/// A snapshot file of `stream`, in chunks of `chunk` octets with their CRCs.
fn file_of(stream: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    for c in stream.chunks(chunk).chain(std::iter::once(&[][..])) {
        out.extend_from_slice(&(c.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(c).to_le_bytes());
        out.extend_from_slice(c);
    }
    out
}

/// Octets changed under valid CRCs (what a bug, not the disk, would write) never make the
/// reader panic or allocate past the file: each such snapshot loads or is refused, and the
/// history is whole either way.
#[test]
fn no_octet_of_a_snapshot_makes_the_reader_panic() {
    let s = setup(4 << 20, 13, 400, 50);
    let file = std::fs::read(&s.path).unwrap();
    let stream = stream_of(&file);
    // Re-chunked as it is, in small chunks: the reader does not care where chunks end.
    std::fs::write(&s.path, file_of(&stream, 77)).unwrap();
    let (_, _, start) = with_snapshot(&s.bytes, &s.path, Store::new());
    assert!(matches!(start, SnapshotStart::Loaded { .. }), "{start:?}");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut refused = 0;
    let tries = 200;
    for i in 0..tries {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let mut changed = stream.clone();
        // The header's first octets (the covered record) are checked against the journal:
        // change the parts after it more often.
        let at = if i % 4 == 0 {
            (rng as usize) % changed.len()
        } else {
            24 + (rng as usize) % (changed.len() - 24)
        };
        changed[at] = changed[at].wrapping_add(1 + (rng >> 40) as u8 % 255);
        if i % 7 == 0 {
            changed.truncate(at);
        }
        std::fs::write(&s.path, file_of(&changed, 4096)).unwrap();
        let (h, restored, start) = with_snapshot(&s.bytes, &s.path, Store::new());
        if matches!(start, SnapshotStart::Refused(_)) {
            refused += 1;
        }
        assert_eq!(restored.bindings, h.store().len());
    }
    // Many changes are still a valid mirror (another lifetime, another octet of a DUID).
    assert!(refused > tries / 5, "{refused} of {tries} refused");
}
