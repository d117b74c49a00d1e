//! What became of an attack's connections, from lqd's log and the attacker's side: refused at
//! accept, closed by lqd (and why, and how long after it was opened), or still open when the
//! wait ran out (then closed by loadgen), or never named in the log at all.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::lqdlog::{End, Line, Said, by_requestor, count, ends};
use super::tracker::Conn;

/// How long after being opened lqd ended the connections of one kind (`refused: why` or
/// `closed: why`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Timing {
    /// Connections.
    pub(super) count: u64,
    /// From the attacker's connect to lqd's log line, seconds: median and worst.
    pub(super) p50_seconds: f64,
    pub(super) max_seconds: f64,
}

/// The fates of an attack's connections.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Fates {
    /// Connections opened (lqd's side accepted them at the TCP level).
    pub(super) connections: u64,
    /// Connects that failed (never lqd's connection).
    pub(super) connect_failed: u64,
    /// The first connect error.
    pub(super) connect_error: Option<String>,
    /// Refused at accept, by lqd's reason.
    pub(super) refused: BTreeMap<String, u64>,
    /// Closed by lqd, by its reason.
    pub(super) closed: BTreeMap<String, u64>,
    /// Not closed by lqd when the wait ran out: loadgen closed them.
    pub(super) not_closed: u64,
    /// Neither refused nor closed in lqd's log.
    pub(super) no_log_line: u64,
    /// Of those lqd refused or closed, how many the attacker saw end (end of stream or reset).
    pub(super) seen_closed: u64,
    /// How long lqd took, by `refused: why` / `closed: why`.
    pub(super) timing: BTreeMap<String, Timing>,
    /// Of those loadgen closed, how long lqd took to notice (its log line after loadgen's
    /// close), by lqd's reason.
    pub(super) freed_after_close: BTreeMap<String, Timing>,
    /// A log line lqd wrote for one of them, as an example.
    pub(super) example: Option<String>,
}

impl Fates {
    /// Every connection was refused or closed by lqd, with a log line naming the peer and a
    /// reason.
    pub(super) fn all_closed_by_lqd(&self) -> bool {
        self.not_closed == 0
            && self.no_log_line == 0
            && self
                .refused
                .keys()
                .chain(self.closed.keys())
                .all(|r| !r.is_empty())
    }
}

/// The peers of `conns`, as lqd prints them.
pub(super) fn peers(conns: &[(SocketAddr, SystemTime)]) -> Vec<(String, SystemTime)> {
    conns.iter().map(|(a, t)| (a.to_string(), *t)).collect()
}

/// The numbers of the connections lqd has ended itself (refused or closed for a reason of its
/// own), by `lines`.
pub(super) fn ended_by_lqd(conns: &[(SocketAddr, SystemTime)], lines: &[Line]) -> HashSet<usize> {
    ends(&peers(conns), lines)
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_ref().is_some_and(|e| !by_requestor(&e.why)))
        .map(|(i, _)| i)
        .collect()
}

/// Sums up `conns` (every connection of the attack, finished) by `lines` (lqd's log from the
/// attack's start on).
pub(super) fn fates(
    conns: &[Conn],
    lines: &[Line],
    connect_failed: u64,
    connect_error: Option<String>,
) -> Fates {
    let peers: Vec<(String, SystemTime)> = conns
        .iter()
        .map(|c| (c.local.to_string(), c.opened))
        .collect();
    let found = ends(&peers, lines);
    let mut f = Fates {
        connections: conns.len() as u64,
        connect_failed,
        connect_error,
        ..Fates::default()
    };
    let mut times: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut freed: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for (c, end) in conns.iter().zip(&found) {
        let Some(End { time, how, why }) = end else {
            f.no_log_line += 1;
            continue;
        };
        // What lqd logs after loadgen closed the connection is not lqd closing it.
        let after_ours = c
            .closed_by_us
            .is_some_and(|t| *time >= t.checked_sub(Duration::from_millis(1)).unwrap_or(t));
        if by_requestor(why) || after_ours {
            f.not_closed += 1;
            if let Some(t) = c.closed_by_us {
                freed
                    .entry(numbers_as_n(why))
                    .or_default()
                    .push(time.duration_since(t).unwrap_or_default());
            }
            continue;
        }
        let map = if *how == "refused" {
            &mut f.refused
        } else {
            &mut f.closed
        };
        let why_kind = numbers_as_n(why);
        *map.entry(why_kind.clone()).or_insert(0) += 1;
        if c.seen_closed.is_some() {
            f.seen_closed += 1;
        }
        times
            .entry(format!("{how}: {why_kind}"))
            .or_default()
            .push(time.duration_since(c.opened).unwrap_or_default());
        if f.example.is_none() {
            f.example = Some(format!("{how} peer={} reason={why:?}", c.local));
        }
    }
    f.timing = timings(times);
    f.freed_after_close = timings(freed);
    f
}

/// The median and worst of each list.
fn timings(lists: BTreeMap<String, Vec<Duration>>) -> BTreeMap<String, Timing> {
    lists
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            let p50 = v.get(v.len() / 2).copied().unwrap_or_default();
            let max = v.last().copied().unwrap_or_default();
            let t = Timing {
                count: v.len() as u64,
                p50_seconds: p50.as_secs_f64(),
                max_seconds: max.as_secs_f64(),
            };
            (k, t)
        })
        .collect()
}

/// lqd's reason with each number in it as `N`: one kind of reason, whatever the option code
/// or message type it names.
fn numbers_as_n(why: &str) -> String {
    let mut out = String::with_capacity(why.len());
    let mut in_number = false;
    for c in why.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// Lines saying `what` about the attack's peers.
pub(super) fn said_of(conns: &[Conn], lines: &[Line], what: impl Fn(&Said) -> bool) -> u64 {
    let peers: HashSet<String> = conns.iter().map(|c| c.local.to_string()).collect();
    count(lines, what)
        .iter()
        .filter(|(p, _)| peers.contains(**p))
        .map(|(_, n)| *n as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostile::lqdlog::parse;

    fn conn(local: &str, opened: &str, closed_by_us: Option<&str>) -> Conn {
        let at = |s: &str| {
            parse(&format!("{s}  INFO lqd::server: x peer=a:1"))
                .unwrap()
                .time
        };
        Conn {
            local: local.parse().unwrap(),
            opened: at(opened),
            seen_closed: None,
            closed_by_us: closed_by_us.map(at),
            received: Vec::new(),
        }
    }

    #[test]
    fn fates_say_who_closed_what_and_why() {
        let lines: Vec<Line> = [
            "2026-01-01T00:00:01.000100Z  WARN lqd::server: connection refused: per-requestor \
             limit peer=127.11.0.1:1000 limit=10",
            "2026-01-01T00:00:01.100000Z  INFO lqd::server: connection closed \
             peer=127.11.0.1:1001 reason=\"unparsable message: truncated in option 4711\"",
            "2026-01-01T00:00:01.200000Z  INFO lqd::server: connection closed \
             peer=127.11.0.1:1002 reason=\"unparsable message: truncated in option 12\"",
            "2026-01-01T00:00:09.000000Z  INFO lqd::server: connection closed \
             peer=127.11.0.1:1003 reason=\"requestor closed the connection\"",
        ]
        .iter()
        .map(|l| parse(l).unwrap())
        .collect();
        let conns = [
            conn("127.11.0.1:1000", "2026-01-01T00:00:01Z", None),
            conn("127.11.0.1:1001", "2026-01-01T00:00:01Z", None),
            conn("127.11.0.1:1002", "2026-01-01T00:00:01Z", None),
            conn(
                "127.11.0.1:1003",
                "2026-01-01T00:00:01Z",
                Some("2026-01-01T00:00:08.9Z"),
            ),
            conn("127.11.0.1:1004", "2026-01-01T00:00:01Z", None),
        ];
        let f = fates(&conns, &lines, 2, None);
        assert_eq!(f.connections, 5);
        assert_eq!(f.refused.get("per-requestor limit"), Some(&1));
        assert_eq!(
            f.closed.get("unparsable message: truncated in option N"),
            Some(&2),
            "one kind of reason, whatever the option"
        );
        assert_eq!(f.not_closed, 1, "loadgen closed it");
        assert_eq!(f.no_log_line, 1);
        assert!(!f.all_closed_by_lqd());
        let t = &f.timing["closed: unparsable message: truncated in option N"];
        assert_eq!(t.count, 2);
        assert!((t.max_seconds - 0.2).abs() < 1e-6);
        let ended = ended_by_lqd(
            &conns
                .iter()
                .map(|c| (c.local, c.opened))
                .collect::<Vec<_>>(),
            &lines,
        );
        assert_eq!(ended, HashSet::from([0, 1, 2]));
        let all = fates(&conns[..3], &lines, 0, None);
        assert!(all.all_closed_by_lqd());
    }
}
