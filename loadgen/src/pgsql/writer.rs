//! The lease writes: Kea's `lease6` rows as Kea 2.2 writes them, through one `psql` connected
//! over TCP as Kea's role (the database's ordinary client), one statement a transaction as
//! Kea commits each lease.
//!
//! Change `k` of the [`Model`] is binding `k mod M` renewed (an `UPDATE` of its row with the
//! new lifetimes and expiry), or, one change in `--release-every`, the client releasing its
//! lease (Kea deletes the row) and coming back for it (a new row): a `DELETE` and an `INSERT`,
//! two transactions. Every row carries Kea's extended info (`store-extended-info`): the relay
//! layer's link-address and a remote-id, in `user_context`, from which lqd takes the link. The
//! client's last transaction time is the writer's clock in whole seconds at the write (Kea's
//! `expire - valid_lifetime`), never after the database's commit time.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv6Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::cluster::{Cluster, DB, KEA_PASSWORD, KEA_USER};
use crate::fanout::changes::{KeaLease, Model};
use crate::fanout::inject::Sink;

/// How psql's connection names itself (`pg_stat_activity.application_name`).
const APP: &str = "loadgen-writer";
/// The last line the writer asks psql to print: every statement before it has been run.
const WRITTEN: &str = "loadgen: every change written";
/// How long the writer waits for psql to catch up with what it was given.
const CATCH_UP: Duration = Duration::from_secs(120);
/// Rows a statement of the initial load inserts.
const LOAD_BATCH: u32 = 1000;

/// What a change writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteKind {
    /// `UPDATE`: a renewal.
    Update,
    /// `DELETE`, then `INSERT`: a release, and the client back for its lease.
    ReleaseAndReturn,
}

/// What change `k` writes when one change in `release_every` is a release (0: none).
pub(crate) fn write_of(k: u64, release_every: u64) -> WriteKind {
    if release_every > 0 && k % release_every == release_every - 1 {
        WriteKind::ReleaseAndReturn
    } else {
        WriteKind::Update
    }
}

/// How many of the changes `0..total` are releases.
pub(crate) fn releases(total: u64, release_every: u64) -> u64 {
    total.checked_div(release_every).unwrap_or(0)
}

/// Kea's extended info for a lease relayed from `link`: one relay layer with a remote-id
/// (RFC 4649: enterprise 32473, the binding's number).
fn user_context(link: Ipv6Addr, binding: u32) -> String {
    format!(
        "{{\"ISC\": {{\"relays\": [{{\"hop\": 0, \"link\": \"{link}\", \"peer\": \"fe80::1\", \
         \"options\": \"0x0025000800007ed9{binding:08x}\"}}]}}}}"
    )
}

/// The values of a lease's row, in the order of [`COLUMNS`].
fn values(l: &KeaLease, cltt: u64, out: &mut String) {
    let duid: String = l.duid.iter().map(|o| format!("{o:02x}")).collect();
    let _ = write!(
        out,
        "('{}', decode('{duid}', 'hex'), {}, to_timestamp({}), 1, {}, 0, 1, 128, false, false, \
         '', 0, '{}')",
        l.address,
        l.valid,
        cltt + u64::from(l.valid),
        l.valid / 2,
        user_context(l.link, l.binding),
    );
}

/// The columns loadgen writes (Kea 2.2's `lease6`; the others keep their defaults).
const COLUMNS: &str = "address, duid, valid_lifetime, expire, subnet_id, pref_lifetime, \
                       lease_type, iaid, prefix_len, fqdn_fwd, fqdn_rev, hostname, state, \
                       user_context";

/// Appends the SQL of change `k` (written at `cltt`, Unix seconds) to `out`.
pub(crate) fn change_sql(model: Model, k: u64, release_every: u64, cltt: u64, out: &mut String) {
    let l = model.kea_lease(k);
    match write_of(k, release_every) {
        WriteKind::Update => {
            let duid: String = l.duid.iter().map(|o| format!("{o:02x}")).collect();
            let _ = writeln!(
                out,
                "UPDATE lease6 SET duid = decode('{duid}', 'hex'), valid_lifetime = {}, expire = \
                 to_timestamp({}), subnet_id = 1, pref_lifetime = {}, lease_type = 0, iaid = 1, \
                 prefix_len = 128, fqdn_fwd = false, fqdn_rev = false, hostname = '', state = 0, \
                 user_context = '{}' WHERE address = '{}';",
                l.valid,
                cltt + u64::from(l.valid),
                l.valid / 2,
                user_context(l.link, l.binding),
                l.address,
            );
        }
        WriteKind::ReleaseAndReturn => {
            let _ = writeln!(out, "DELETE FROM lease6 WHERE address = '{}';", l.address);
            insert(&l, cltt, out);
        }
    }
}

fn insert(l: &KeaLease, cltt: u64, out: &mut String) {
    let _ = write!(out, "INSERT INTO lease6 ({COLUMNS}) VALUES ");
    values(l, cltt, out);
    out.push_str(";\n");
}

/// Writes the SQL file that gives `lease6` changes `0..count` of `model` (one row each, the
/// first generation), in one transaction.
pub(crate) fn initial_load(model: Model, count: u32, path: &Path) -> Result<(), String> {
    let cltt = unix_now();
    let mut sql = String::from("BEGIN;\n");
    let mut k = 0u32;
    while k < count {
        let end = k.saturating_add(LOAD_BATCH).min(count);
        let _ = write!(sql, "INSERT INTO lease6 ({COLUMNS}) VALUES ");
        for j in k..end {
            if j > k {
                sql.push_str(",\n");
            }
            values(&model.kea_lease(u64::from(j)), cltt, &mut sql);
        }
        sql.push_str(";\n");
        k = end;
    }
    sql.push_str("COMMIT;\n");
    std::fs::write(path, sql).map_err(|e| format!("{}: {e}", path.display()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The writer's `psql`, connected.
pub(crate) struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
    backend: u32,
    errors: PathBuf,
}

impl Writer {
    /// Starts psql connected to Kea's database as Kea's role, and learns its backend's
    /// process id.
    pub(crate) fn start(cluster: &Cluster) -> Result<Self, String> {
        let errors = cluster.dir().join(format!("writer-{}.log", unix_now()));
        let err_file = File::create(&errors).map_err(|e| format!("{}: {e}", errors.display()))?;
        let mut child = Command::new(cluster.psql())
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
            ])
            .arg(cluster.port.to_string())
            .args(["-U", KEA_USER, "-d", DB])
            .env("PGPASSWORD", KEA_PASSWORD)
            .env("PGAPPNAME", APP)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file))
            .spawn()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        let stdout = child.stdout.take().ok_or("psql's standard output")?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("loadgen-psql-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("cannot start psql's reader: {e}"))?;
        let mut w = Self {
            stdin: child.stdin.take(),
            child,
            lines: Some(rx),
            backend: 0,
            errors,
        };
        w.send("SELECT pg_backend_pid();\n")?;
        let line = w.line(Duration::from_secs(30))?;
        w.backend = line
            .trim()
            .parse()
            .map_err(|_| format!("psql printed {line:?}, not its backend's process id"))?;
        Ok(w)
    }

    fn send(&mut self, sql: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("psql's input is closed")?;
        stdin
            .write_all(sql.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to psql: {e}; {}", self.error_text()))
    }

    fn line(&self, wait: Duration) -> Result<String, String> {
        let lines = self.lines.as_ref().ok_or("psql's output is taken")?;
        lines
            .recv_timeout(wait)
            .map_err(|e| format!("psql said nothing ({e}); {}", self.error_text()))
    }

    fn error_text(&self) -> String {
        let text = std::fs::read_to_string(&self.errors).unwrap_or_default();
        format!("psql's errors: {:?}", text.trim())
    }

    /// The process id of psql's backend in the database.
    pub(crate) const fn backend(&self) -> u32 {
        self.backend
    }

    /// psql's own process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The injector's sink writing `model`'s changes through this psql (once: it takes the
    /// output). psql's input stays open until [`finish`](Self::finish), so its backend is
    /// still there to be measured after the last change.
    pub(crate) fn sink(&mut self, model: Model, release_every: u64) -> Result<PsqlSink, String> {
        let stdin = self.stdin.as_ref().ok_or("psql's input is closed")?;
        let out = stdin
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("psql's input: {e}"))?;
        Ok(PsqlSink {
            out: File::from(out),
            lines: self.lines.take().ok_or("psql's output is taken")?,
            model,
            release_every,
            sql: String::with_capacity(1 << 16),
            errors: self.errors.clone(),
        })
    }

    /// Closes psql's input and waits for it to end.
    pub(crate) fn finish(mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for psql: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("psql exited with {status}; {}", self.error_text()))
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The injector's sink: each change's SQL to psql's input.
pub(crate) struct PsqlSink {
    out: File,
    lines: Receiver<String>,
    model: Model,
    release_every: u64,
    sql: String,
    errors: PathBuf,
}

impl PsqlSink {
    fn error_text(&self) -> String {
        let text = std::fs::read_to_string(&self.errors).unwrap_or_default();
        format!("psql's errors: {:?}", text.trim())
    }
}

impl Sink for PsqlSink {
    fn write(&mut self, first: u64, end: u64) -> Result<(), String> {
        let cltt = unix_now();
        self.sql.clear();
        for k in first..end {
            change_sql(self.model, k, self.release_every, cltt, &mut self.sql);
        }
        self.out
            .write_all(self.sql.as_bytes())
            .map_err(|e| format!("writing to psql: {e}; {}", self.error_text()))
    }

    /// Waits until psql has run every statement (it prints a marker after the last).
    fn finish(&mut self) -> Result<(), String> {
        self.out
            .write_all(format!("SELECT '{WRITTEN}';\n").as_bytes())
            .map_err(|e| format!("writing to psql: {e}; {}", self.error_text()))?;
        let deadline = Instant::now() + CATCH_UP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.trim() == WRITTEN => return Ok(()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "psql had not run every change {CATCH_UP:?} after the last was given; {}",
                        self.error_text()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("psql ended early; {}", self.error_text()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_in_release_every_is_a_release_and_a_return() {
        let m = Model::new(10).unwrap().after(1);
        let kinds: Vec<WriteKind> = (0..6).map(|k| write_of(k, 3)).collect();
        assert_eq!(
            kinds,
            [
                WriteKind::Update,
                WriteKind::Update,
                WriteKind::ReleaseAndReturn,
                WriteKind::Update,
                WriteKind::Update,
                WriteKind::ReleaseAndReturn
            ]
        );
        assert_eq!(releases(6, 3), 2);
        assert_eq!(releases(6, 0), 0);
        assert!((0..100).all(|k| write_of(k, 0) == WriteKind::Update));
        let mut sql = String::new();
        change_sql(m, 2, 3, 1_700_000_000, &mut sql);
        let lines: Vec<&str> = sql.lines().collect();
        assert_eq!(
            lines[0],
            "DELETE FROM lease6 WHERE address = '2001:db8:1::1:2';"
        );
        assert!(lines[1].starts_with("INSERT INTO lease6 ("), "{sql}");
        // Generation 1 (the first after the initial load): 86,401 s, expiring that long after
        // the write.
        assert!(
            lines[1].contains(", 86401, to_timestamp(1700086401), 1, 43200,"),
            "{sql}"
        );
        assert!(
            lines[1].contains("\"link\": \"2001:db8:1::1\""),
            "the relay's link: {sql}"
        );
        assert!(lines[1].contains("0x0025000800007ed900000002"), "{sql}");
        sql.clear();
        change_sql(m, 1, 3, 1_700_000_000, &mut sql);
        assert!(sql.starts_with("UPDATE lease6 SET duid = decode('000200007ed900000001', 'hex'), valid_lifetime = 86401,"), "{sql}");
        assert!(
            sql.trim_end()
                .ends_with("WHERE address = '2001:db8:1::1:1';"),
            "{sql}"
        );
    }
}
