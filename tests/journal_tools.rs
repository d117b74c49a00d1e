//! The journal as an operator handles it (issue 20): `lqd journal check` and `lqd journal
//! resize` on whole, damaged, cut-short and resized files, the errors that point at them, and
//! a real lqd restarted on a damaged journal: it starts, says in one line what was lost,
//! keeps the damaged file, serves every intact record, and answers a catch-up from before the
//! damage with DataMissing.

#[path = "common/lqd.rs"]
mod common;

use std::net::Ipv6Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{REQUESTOR, link};
use lqd::codec::{
    BuildOptions, Decoded, FrameDecoder, MessageBuilder, MessageRepr, ServerTime, Status,
};
use lqd::store::journal::{FlushPolicy, HEADER_LEN, JournalFile};
use lqd::store::{Change, History, Lease, LeaseKind, LeaseState, RelayInfo, Store};

const MIB: u64 = 1 << 20;

fn lqd_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lqd"))
        .args(args)
        .output()
        .expect("lqd runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A journal file of `size` octets holding `n` records of 100 octets, one a second from
/// `t0`.
fn journal_with(path: &Path, size: u64, n: u32, t0: u32) {
    let (mut jf, _) = JournalFile::open(path, size, FlushPolicy::Os).expect("create");
    for i in 0..n {
        jf.append(ServerTime(t0 + i), &[i as u8; 100])
            .expect("append");
    }
    jf.flush().expect("flush");
}

#[test]
fn check_reports_a_whole_journal_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lqd-journal");
    journal_with(&path, MIB, 500, 800_000_000);
    let out = lqd_cmd(&["journal", "check", path.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("records: 500"), "{said}");
    assert!(said.contains("no damage"), "{said}");
    // The time span, in Unix seconds (server time 800,000,000 is Unix 1,746,684,800).
    assert!(
        said.contains("Unix time 1746684800 to Unix time 1746685299"),
        "{said}"
    );
}

#[test]
fn check_names_damage_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lqd-journal");
    journal_with(&path, MIB, 500, 800_000_000);
    let mut b = std::fs::read(&path).unwrap();
    // Record 200: 120 octets a record (20 of header, 100 of payload).
    let at = HEADER_LEN + 200 * 120 + 30;
    b[at] ^= 0x5a;
    std::fs::write(&path, &b).unwrap();
    let out = lqd_cmd(&["journal", "check", path.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("records: 499"), "{said}");
    assert!(
        said.contains("damage: 1 records lost between Unix time 1746684999 and 1746685001"),
        "{said}"
    );
    // Checking wrote nothing.
    assert_eq!(std::fs::read(&path).unwrap(), b);
}

#[test]
fn resize_keeps_the_newest_records_that_fit_and_the_old_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lqd-journal");
    journal_with(&path, 2 * MIB, 10_000, 800_000_000);
    let out = lqd_cmd(&["journal", "resize", "512KiB", path.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("set journal_size = 524288"), "{said}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 512 * 1024);
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".before-resize-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old file is kept");
    assert_eq!(kept[0].metadata().unwrap().len(), 2 * MIB);
    // lqd's own opening of the new file: the newest records, in order, up to the last.
    let (jf, rec) = JournalFile::open(&path, 512 * 1024, FlushPolicy::Os).expect("open");
    assert!(rec.holes.is_empty() && rec.discarded.is_none());
    let j = jf.journal();
    let n = j.len();
    assert_eq!(
        n,
        (512 * 1024 - HEADER_LEN as u64) / 120,
        "records of 120 octets in 512 KiB"
    );
    let mut c = j.tail();
    let mut expect = 10_000 - n as u32;
    while let Some(r) = j.read(&mut c).unwrap() {
        assert_eq!(
            (r.time, r.payload[0]),
            (ServerTime(800_000_000 + expect), expect as u8)
        );
        expect += 1;
    }
    assert_eq!(expect, 10_000);
    // Catch-up reaches back to just after the newest record that did not fit.
    assert_eq!(
        j.evicted_time(),
        Some(ServerTime(800_000_000 + 10_000 - n as u32 - 1))
    );
}

#[test]
fn a_journal_cut_short_is_refused_with_the_way_back_and_resize_recovers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lqd-journal");
    journal_with(&path, 2 * MIB, 10_000, 800_000_000);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(MIB).unwrap();
    drop(f);
    // lqd's own opening names the commands.
    let Err(e) = JournalFile::open(&path, 2 * MIB, FlushPolicy::Os) else {
        panic!("a journal cut short is refused")
    };
    let e = e.to_string();
    assert!(e.contains("lqd journal resize 2097152"), "{e}");
    assert!(!e.contains("cannot listen"), "{e}");
    let out = lqd_cmd(&["journal", "check", path.to_str().unwrap()]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cut short"), "{said}");
    // Back to its size: the records of the part that is left.
    let out = lqd_cmd(&["journal", "resize", "2MiB", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (jf, _) = JournalFile::open(&path, 2 * MIB, FlushPolicy::Os).expect("open");
    let n = jf.journal().len();
    assert_eq!(
        n,
        (MIB - HEADER_LEN as u64) / 120,
        "the first megabyte's records"
    );
}

#[test]
fn resize_is_refused_while_lqd_holds_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lqd-journal");
    journal_with(&path, MIB, 10, 800_000_000);
    let held = JournalFile::open(&path, MIB, FlushPolicy::Os).expect("open");
    let out = lqd_cmd(&["journal", "resize", "2MiB", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("locked"), "{}", text(&out));
    drop(held);
}

fn change(n: u16, state: LeaseState, t: u32) -> Change {
    Change {
        client_id: vec![0, 3, 0, 1, 9, (n >> 8) as u8, n as u8].into(),
        link: link(1),
        lease: Lease {
            kind: LeaseKind::Address,
            address: Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 1, n),
            prefix_len: 128,
            iaid: 1,
            preferred_lifetime: 3600,
            valid_lifetime: 7200,
            cltt: ServerTime(t),
            state,
        },
        relay: Some(RelayInfo::default()),
    }
}

/// The statuses in an Active stream's first messages.
fn statuses(s: &mut std::net::TcpStream) -> Vec<Status> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while std::time::Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(_) => {}
        }
    }
    let mut dec = FrameDecoder::default();
    let mut rest = &buf[..];
    let mut out = Vec::new();
    while let Ok(Decoded::Frame { message, consumed }) = dec.decode(rest) {
        if let Some(st) = MessageRepr::parse(message)
            .ok()
            .and_then(|m| m.options.status().map(|x| x.status))
        {
            out.push(st);
        }
        rest = &rest[consumed..];
    }
    out
}

#[test]
fn a_real_lqd_on_a_damaged_journal_starts_keeps_the_file_and_answers_data_missing() {
    // The journal lqd will find: 2,000 changes a second apart, every tenth a release, written
    // by lqd's own history into its state directory; one record in the middle damaged.
    let now = lqd::feed::system_time();
    let t0 = now.0 - 3000;
    let mut damaged = Vec::new();
    let mut span = (0, 0);
    // The state directory the harness makes for this name.
    let empty = std::env::temp_dir()
        .join(format!("lqd-e2e-damaged-journal-{}", std::process::id()))
        .join("empty.jsonl");
    let source = format!("jsonl:{}", empty.display());
    let lqd = common::start_prepared(
        "damaged-journal",
        &["--source", &source],
        "",
        "source: jsonl",
        &[],
        |dir| {
            let journal = dir.join("lqd-journal");
            let (jf, _) = JournalFile::open(&journal, 8 * MIB, FlushPolicy::Os).expect("create");
            let (mut h, _) = History::open(Store::new(), jf);
            for i in 0..2000u32 {
                let n = (i % 300) as u16;
                let state = if i % 10 == 9 {
                    LeaseState::Released
                } else {
                    LeaseState::Active
                };
                h.apply(&change(n, state, t0 + i), ServerTime(t0 + i))
                    .unwrap();
            }
            let (_, mut jf) = h.into_parts();
            jf.flush().unwrap();
            drop(jf);
            let mut b = std::fs::read(&journal).unwrap();
            // Records 999 to 1001, found by sequence number and a length that fits; 1000 is
            // damaged, so the lost span runs from 999's time to 1001's.
            let find = |seq: u64| {
                (HEADER_LEN..b.len() - 20)
                    .step_by(8)
                    .find(|&o| {
                        b[o + 8..o + 16] == seq.to_le_bytes()
                            && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) < 4096
                    })
                    .expect("the record")
            };
            let time_of = |at: usize| u32::from_le_bytes(b[at + 16..at + 20].try_into().unwrap());
            span = (time_of(find(999)), time_of(find(1001)));
            let at = find(1000);
            b[at + 24] ^= 0xff;
            std::fs::write(&journal, &b).unwrap();
            // A source that sends nothing (the demo would re-send every binding).
            std::fs::write(dir.join("empty.jsonl"), "").unwrap();
            damaged = b;
        },
    );
    let dir = lqd.dir.clone();
    let b = damaged;
    let log = lqd.log();
    let line = log
        .lines()
        .find(|l| l.contains("journal damaged:"))
        .unwrap_or_else(|| panic!("no damage line:\n{log}"));
    assert!(
        line.contains(&format!(
            "1 records lost between Unix time {} and {}",
            ServerTime(span.0).to_unix(),
            ServerTime(span.1).to_unix()
        )),
        "{line}"
    );
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept");
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b, "as it was");
    assert!(
        line.contains(&kept[0].path().display().to_string()),
        "{line}"
    );

    // A catch-up from before the damage is told DataMissing; from after it, it is not.
    let ask = |start: u32| {
        let mut s = lqd.connect();
        let q = MessageBuilder::active_leasequery(5)
            .client_id(&REQUESTOR)
            .start_time(ServerTime(start))
            .build_frame()
            .unwrap();
        std::io::Write::write_all(&mut s, &q).unwrap();
        statuses(&mut s)
    };
    let before = ask(span.0 - 100);
    assert_eq!(before.first(), Some(&Status::DataMissing), "{before:?}");
    let after = ask(span.1 + 100);
    assert_eq!(after.first(), Some(&Status::Success), "{after:?}");
    assert!(after.contains(&Status::CatchUpComplete), "{after:?}");
}

/// Issue 19: at start lqd reads the churn off its journal's records and says whether the
/// journal holds `catch_up_window` of it: a warning naming the `journal_size` that would, when
/// it does not; a line saying it does, when it does.
#[test]
fn lqd_warns_at_start_when_the_journal_is_too_small_for_the_catch_up_window() {
    let mut lqd = common::Lqd::start_with_demo(
        "catch-up-window",
        "catch_up_window = 86400\n",
        "clients = 300\nlinks = 4\nchanges_per_sec = 400\nseed = 19\n",
    );
    // The first start has no history to measure.
    assert!(
        lqd.log()
            .contains("too little history to measure the churn"),
        "{}",
        lqd.log()
    );
    // Three seconds of 400 changes a second, in an 8 MiB journal: about a minute's worth.
    std::thread::sleep(Duration::from_millis(3200));
    lqd.kill9_and_restart();
    let log = lqd.log();
    let line = log
        .lines()
        .find(|l| l.contains("too small for catch_up_window"))
        .unwrap_or_else(|| panic!("no warning: {log}"));
    assert!(line.contains("WARN"), "{line}");
    let field = |name: &str| -> f64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        let v: String = line[at..]
            .trim_start_matches('"')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        v.parse().unwrap()
    };
    let rate = field("changes_per_sec");
    assert!((100.0..=2000.0).contains(&rate), "{line}");
    let holds = field("holds_secs");
    assert!(holds < 86_400.0, "{line}");
    // The size named holds a day at that churn: far more than the 8 MiB journal.
    assert!(
        field("needed") > 8.0 * MIB as f64 * 86_400.0 / holds * 0.9,
        "{line}"
    );

    // A window the journal holds: no warning, a line saying so.
    let config = lqd.dir.join("lqd.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("catch_up_window = 86400", "catch_up_window = 5");
    std::fs::write(&config, text).unwrap();
    lqd.kill9_and_restart();
    let log = lqd.log();
    assert!(!log.contains("too small for catch_up_window"), "{log}");
    assert!(log.contains("the journal holds catch_up_window"), "{log}");
}
