//! lqd's log, read as it grows: what lqd said about each peer, and when.
//!
//! lqd logs through `tracing`'s plain formatter (no colours: its standard error is a file):
//!
//! ```text
//! 2026-12-07T04:22:01.770743Z  INFO lqd::server: connection closed peer=[::1]:37676 reason="unparsable message: truncated"
//! 2026-12-07T04:22:01.771002Z  WARN lqd::server: connection refused: per-requestor limit peer=127.1.0.1:40112 limit=10
//! ```
//!
//! A line is its time (UTC, RFC 3339), its level, its target, its message, then its fields as
//! `key=value` (a string field in double quotes). The lines that matter here name a peer: a
//! connection opened, refused at accept (the message says why), closed (the `reason` field
//! says why), a query dropped for its running xid (D21), a STARTTLS refused (D25).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a line says about its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Said {
    /// `connection opened`.
    Opened,
    /// `connection refused: WHY`, at accept.
    Refused(String),
    /// `connection closed`, with its `reason`.
    Closed(String),
    /// `query dropped: its xid is already running` (D21).
    XidDropped,
    /// `STARTTLS refused: ...` (D25).
    StartTlsRefused,
    /// Anything else naming a peer.
    Other(String),
}

impl Said {
    /// The connection's last word: refused or closed, with why.
    pub(super) fn end(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::Refused(why) => Some(("refused", why)),
            Self::Closed(why) => Some(("closed", why)),
            _ => None,
        }
    }
}

/// One line that names a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// Its time stamp.
    pub(super) time: SystemTime,
    /// The peer, as lqd prints a socket address (`127.0.0.1:80`, `[::1]:80`).
    pub(super) peer: String,
    pub(super) said: Said,
}

/// The reason lqd gives when the requestor closed first.
pub(super) const REQUESTOR_CLOSED: &str = "requestor closed the connection";

/// The reason lqd gives when the requestor reset the connection (or lqd's write met the broken
/// pipe after a reset).
pub(super) const REQUESTOR_RESET: &str = "requestor reset the connection";

/// True when lqd's close reason `why` says the requestor ended the connection, not lqd.
pub(super) fn by_requestor(why: &str) -> bool {
    why == REQUESTOR_CLOSED || why == REQUESTOR_RESET
}

/// Reads the lines lqd appends to its log, from a starting point on.
pub(super) struct LogReader {
    path: PathBuf,
    offset: u64,
    /// An incomplete last line, kept for the next read.
    partial: String,
}

impl LogReader {
    /// A reader of the lines written to `path` from now on.
    pub(super) fn from_end(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self {
            path,
            offset,
            partial: String::new(),
        }
    }

    /// Octets of the log read so far (from the file's start).
    pub(super) const fn offset(&self) -> u64 {
        self.offset
    }

    /// The lines naming a peer written since the last call.
    pub(super) fn read_new(&mut self) -> Result<Vec<Line>, String> {
        let mut f = File::open(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut out = Vec::new();
        let text = std::mem::take(&mut self.partial);
        let mut rest = text.as_str();
        while let Some((line, after)) = rest.split_once('\n') {
            out.extend(parse(line));
            rest = after;
        }
        self.partial = rest.to_owned();
        Ok(out)
    }
}

/// Parses one log line; `None` when it names no peer or is not lqd's format.
pub(super) fn parse(line: &str) -> Option<Line> {
    let mut parts = line.splitn(2, ' ');
    let time = timestamp(parts.next()?)?;
    let rest = parts.next()?.trim_start();
    // The level, then the target ("lqd::server:"), then the message and its fields.
    let (_, rest) = rest.split_once(' ')?;
    let (_, body) = rest.trim_start().split_once(": ")?;
    let at = body.find(" peer=")?;
    let message = body.get(..at)?;
    let fields = body.get(at + 1..)?;
    let peer = field(fields, "peer")?;
    let said = if message == "connection opened" {
        Said::Opened
    } else if let Some(why) = message.strip_prefix("connection refused: ") {
        Said::Refused(why.to_owned())
    } else if message == "connection closed" {
        Said::Closed(field(fields, "reason").unwrap_or_default())
    } else if message.starts_with("query dropped: its xid is already running") {
        Said::XidDropped
    } else if message.starts_with("STARTTLS refused") {
        Said::StartTlsRefused
    } else {
        Said::Other(message.to_owned())
    };
    Some(Line { time, peer, said })
}

/// The value of `key=` among `fields`: up to the next space, or a double-quoted string.
fn field(fields: &str, key: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = fields.get(from..)?.find(&format!("{key}=")) {
        let at = from + i;
        let starts_field = at == 0 || fields.get(at - 1..at) == Some(" ");
        let value = fields.get(at + key.len() + 1..)?;
        if starts_field {
            return Some(match value.strip_prefix('"') {
                Some(quoted) => unquote(quoted),
                None => value.split(' ').next().unwrap_or_default().to_owned(),
            });
        }
        from = at + key.len() + 1;
    }
    None
}

/// A Rust debug-quoted string's contents, from after its opening quote.
fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-07T04:22:01.770743Z` as a time.
fn timestamp(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(str::parse::<u64>);
    let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits = frac.len().min(9);
    let nanos = frac.get(..digits)?.parse::<u64>().ok()? * 10u64.pow(9 - digits as u32);
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// What became of one attacking connection, by lqd's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct End {
    /// When lqd logged it.
    pub(super) time: SystemTime,
    /// `refused` or `closed`.
    pub(super) how: &'static str,
    /// Why, as lqd said.
    pub(super) why: String,
}

/// Pairs each connection (`peer`, opened at) with the line that ended it: the lines of each
/// peer in order, each connection taking the first unused ending line logged no earlier than
/// it was opened (less a millisecond of clock rounding). A port can serve several connections
/// in turn; each gets its own line. `None` for a connection no line ended.
pub(super) fn ends(conns: &[(String, SystemTime)], lines: &[Line]) -> Vec<Option<End>> {
    let mut by_peer: HashMap<&str, Vec<(SystemTime, &'static str, &str)>> = HashMap::new();
    for l in lines {
        if let Some((how, why)) = l.said.end() {
            by_peer
                .entry(l.peer.as_str())
                .or_default()
                .push((l.time, how, why));
        }
    }
    let mut order: Vec<usize> = (0..conns.len()).collect();
    order.sort_by_key(|&i| conns.get(i).map(|c| c.1));
    let mut used: HashMap<&str, usize> = HashMap::new();
    let mut out = vec![None; conns.len()];
    for i in order {
        let Some((peer, opened)) = conns.get(i) else {
            continue;
        };
        let Some(list) = by_peer.get(peer.as_str()) else {
            continue;
        };
        let next = used.entry(peer.as_str()).or_insert(0);
        let earliest = opened
            .checked_sub(Duration::from_millis(1))
            .unwrap_or(*opened);
        while let Some(&(time, how, why)) = list.get(*next) {
            *next += 1;
            if time >= earliest {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(End {
                        time,
                        how,
                        why: why.to_owned(),
                    });
                }
                break;
            }
        }
    }
    out
}

/// How many lines of each peer say `what`.
pub(super) fn count(lines: &[Line], what: impl Fn(&Said) -> bool) -> HashMap<&str, usize> {
    let mut out = HashMap::new();
    for l in lines.iter().filter(|l| what(&l.said)) {
        *out.entry(l.peer.as_str()).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        timestamp(s).unwrap()
    }

    #[test]
    fn lqds_lines_name_peer_and_reason() {
        let l = parse(
            "2026-12-07T04:22:01.770743Z  INFO lqd::server: connection closed \
             peer=[::1]:37676 reason=\"unparsable message: truncated\"",
        )
        .unwrap();
        assert_eq!(l.peer, "[::1]:37676");
        assert_eq!(l.said, Said::Closed("unparsable message: truncated".into()));
        let secs = l.time.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 1_796_617_321);
        assert_eq!(secs.subsec_micros(), 770_743);

        let l = parse(
            "2026-12-07T04:22:01.771002Z  WARN lqd::server: connection refused: \
             per-requestor limit peer=127.1.0.1:40112 limit=10",
        )
        .unwrap();
        assert_eq!(l.peer, "127.1.0.1:40112");
        assert_eq!(l.said, Said::Refused("per-requestor limit".into()));

        let l = parse(
            "2026-12-07T04:22:02.000000Z  INFO lqd::server::conn: query dropped: its xid is \
             already running peer=127.18.0.1:5000 xid=0x780001",
        )
        .unwrap();
        assert_eq!(l.said, Said::XidDropped);
        assert!(parse("2026-12-07T04:22:00.250768Z  INFO lqd::feed::demo: demo: sent").is_none());
        assert!(parse("garbage").is_none());
    }

    #[test]
    fn the_calendar_is_unix_time() {
        assert_eq!(at("1970-01-01T00:00:00Z"), UNIX_EPOCH);
        assert_eq!(
            at("2000-03-01T00:00:00.5Z"),
            UNIX_EPOCH + Duration::from_millis(951_868_800_500)
        );
    }

    #[test]
    fn each_connection_takes_its_own_line() {
        let line = |t: &str, peer: &str, said: Said| Line {
            time: at(t),
            peer: peer.into(),
            said,
        };
        let lines = [
            line("2026-01-01T00:00:01Z", "p:1", Said::Opened),
            line("2026-01-01T00:00:01Z", "p:1", Said::Refused("limit".into())),
            line(
                "2026-01-01T00:00:02Z",
                "p:1",
                Said::Closed("bad frame".into()),
            ),
            line("2026-01-01T00:00:09Z", "q:1", Said::Closed("late".into())),
        ];
        let conns = [
            ("p:1".to_owned(), at("2026-01-01T00:00:01.5Z")),
            ("p:1".to_owned(), at("2026-01-01T00:00:00.9Z")),
            ("p:1".to_owned(), at("2026-01-01T00:00:03Z")),
            ("r:1".to_owned(), at("2026-01-01T00:00:03Z")),
        ];
        let ends = ends(&conns, &lines);
        assert_eq!(
            ends[1].as_ref().unwrap().why,
            "limit",
            "the earlier connection first"
        );
        assert_eq!(ends[0].as_ref().unwrap().why, "bad frame");
        assert_eq!(ends[2], None, "no line after it was opened");
        assert_eq!(ends[3], None);
    }
}
