//! A temporary PostgreSQL cluster holding Kea's lease database, and the processes measured in
//! it.
//!
//! Debian's PostgreSQL (the newest major version under `/usr/lib/postgresql`): `initdb` in a
//! directory of its own (as the `postgres` user when loadgen runs as root, since initdb
//! refuses root), `wal_level = logical`, a free loopback TCP port and the Unix socket in that
//! directory; Kea's schema made by Kea's own `kea-admin db-init pgsql`, owned by the role
//! `kea` (a replication role with a password, as lqd connects). `fsync = off`: the figures are
//! the database's CPU, not this machine's disk; `synchronous_commit` stays on, so a commit's
//! WAL is flushed (a no-op without fsync) before it returns, and the WAL senders, which send
//! only flushed WAL, see it at once. Stopped and removed when dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Kea's database, its role and the role's password (scram-sha-256 over TCP).
pub(crate) const DB: &str = "kea";
pub(crate) const KEA_USER: &str = "kea";
pub(crate) const KEA_PASSWORD: &str = "loadgen-kea-secret";

/// `/proc/PID/stat` times are in clock ticks of `USER_HZ`, 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// Debian's PostgreSQL binaries (the newest major version installed), or why there are none.
pub(crate) fn bin_dir() -> Result<PathBuf, String> {
    let missing = "no PostgreSQL server binaries under /usr/lib/postgresql (Debian: apt-get \
                   install postgresql kea-admin; .ci/setup installs them)";
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| missing.to_owned())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|v| Path::new(&format!("/usr/lib/postgresql/{v}/bin/initdb")).is_file())
        .collect();
    versions.sort_unstable();
    let v = versions.last().ok_or(missing)?;
    let dir = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
    for tool in ["pg_ctl", "psql"] {
        if !dir.join(tool).is_file() {
            return Err(format!("{missing}: {} has no {tool}", dir.display()));
        }
    }
    if !Path::new("/usr/sbin/kea-admin").is_file() && which("kea-admin").is_none() {
        return Err(
            "no kea-admin, which makes Kea's lease database (Debian: apt-get install \
                    kea-admin; .ci/setup installs it)"
                .to_owned(),
        );
    }
    Ok(dir)
}

/// `name` on the PATH, if there.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// Standard output of a command that succeeded, or its output as the error.
fn check(out: std::io::Result<Output>, what: &str) -> Result<String, String> {
    let out = out.map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running temporary cluster.
pub(crate) struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub(crate) port: u16,
    root: bool,
    keep: bool,
}

impl Cluster {
    /// initdb and start a cluster, and make Kea's lease database in it.
    pub(crate) fn start(keep: bool) -> Result<Self, String> {
        let bin = bin_dir()?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("loadgen-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let root = is_root();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let cluster = Self {
            dir,
            bin,
            port,
            root,
            keep,
        };
        if root {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.dir)
                    .output(),
                "chown postgres",
            )?;
        }
        let data = cluster.dir.join("data");
        check(
            cluster
                .as_owner("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output(),
            "initdb",
        )?;
        let conf = format!(
            "wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n\
             listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 64MB\nmax_wal_size = 1GB\n\
             wal_sender_timeout = 30s\nlog_min_messages = warning\n",
            cluster.dir.display()
        );
        let pg_conf = data.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&pg_conf).map_err(|e| format!("{}: {e}", pg_conf.display()))?;
        text.push_str(&conf);
        std::fs::write(&pg_conf, text).map_err(|e| format!("{}: {e}", pg_conf.display()))?;
        check(
            cluster
                .as_owner("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.join("server.log"))
                .args(["-w", "-t", "60", "start"])
                .output(),
            "pg_ctl start",
        )?;
        cluster.sql_in(
            "postgres",
            &format!("CREATE ROLE {KEA_USER} LOGIN REPLICATION PASSWORD '{KEA_PASSWORD}'"),
        )?;
        cluster.sql_in(
            "postgres",
            &format!("CREATE DATABASE {DB} OWNER {KEA_USER}"),
        )?;
        check(
            Command::new("kea-admin")
                .args(["db-init", "pgsql", "-h", "127.0.0.1", "-P"])
                .arg(port.to_string())
                .args(["-u", KEA_USER, "-p", KEA_PASSWORD, "-n", DB])
                .output(),
            "kea-admin db-init pgsql",
        )?;
        std::fs::write(cluster.password_file(), format!("{KEA_PASSWORD}\n"))
            .map_err(|e| format!("{}: {e}", cluster.password_file().display()))?;
        Ok(cluster)
    }

    /// One of the server's tools, run as the cluster's owner.
    fn as_owner(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    /// The file holding the `kea` role's password, for lqd's `password_file=`.
    pub(crate) fn password_file(&self) -> PathBuf {
        self.dir.join("kea-password")
    }

    /// Where `psql` and `kea-admin` write what they have to say.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `psql`.
    pub(crate) fn psql(&self) -> PathBuf {
        self.bin.join("psql")
    }

    /// Runs `sql` (one statement, or several run as one transaction) as the superuser in
    /// Kea's database, over the Unix socket: psql's unaligned, tuples-only output.
    pub(crate) fn sql(&self, sql: &str) -> Result<String, String> {
        self.sql_in(DB, sql)
    }

    fn sql_in(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.psql())
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output();
        check(out, &format!("psql -c {sql:?}"))
    }

    /// Runs the SQL file `path` as the superuser in Kea's database.
    pub(crate) fn sql_file(&self, path: &Path) -> Result<(), String> {
        let out = Command::new(self.psql())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                DB,
                "-f",
            ])
            .arg(path)
            .output();
        check(out, &format!("psql -f {}", path.display())).map(|_| ())
    }

    /// lqd's source for Kea's database, following it with replication slot `slot`.
    pub(crate) fn source(&self, slot: &str) -> String {
        format!(
            "kea-pgsql:postgresql://{KEA_USER}@127.0.0.1:{}/{DB}?slot={slot}&password_file={}",
            self.port,
            self.password_file().display()
        )
    }

    /// The replication slots and the process id of the WAL sender serving each (none when
    /// the slot is not in use).
    pub(crate) fn slots(&self) -> Result<Vec<(String, Option<u32>)>, String> {
        let out =
            self.sql("SELECT slot_name, coalesce(active_pid, 0) FROM pg_replication_slots")?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (name, pid) = l.split_once('|')?;
                let pid: u32 = pid.trim().parse().ok()?;
                Some((name.to_owned(), (pid != 0).then_some(pid)))
            })
            .collect())
    }

    /// Drops every replication slot, waiting up to 30 s for their WAL senders to go (lqd has
    /// been stopped).
    pub(crate) fn drop_slots(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let slots = self.slots()?;
            if slots.is_empty() {
                return Ok(());
            }
            for (name, pid) in &slots {
                if pid.is_none() {
                    // It may have gone meanwhile: what is left is looked at again.
                    let _ = self.sql(&format!("SELECT pg_drop_replication_slot('{name}')"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "replication slots still in use after 30 s: {slots:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's current WAL position, octets from the start of WAL.
    pub(crate) fn wal_position(&self) -> Result<u64, String> {
        let out = self.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")?;
        out.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| v as u64)
            .ok_or_else(|| format!("pg_current_wal_lsn gave {out:?}"))
    }

    /// The postmaster's process id.
    pub(crate) fn postmaster(&self) -> Result<u32, String> {
        let path = self.dir.join("data").join("postmaster.pid");
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
            .ok_or_else(|| format!("no process id in {}", path.display()))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        if self.keep {
            eprintln!(
                "loadgen: the PostgreSQL cluster's directory kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The parent and the CPU time (utime + stime, seconds) of process `pid`, from
/// `/proc/PID/stat`; none when it has gone.
pub(crate) fn stat(pid: u32) -> Option<(u32, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after its end.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state, ppid (field 4 of stat(5)), ..., utime and stime (14 and 15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, (utime + stime) as f64 / USER_HZ))
}

/// The CPU time of the postmaster and of each of its children (the backends, the WAL
/// senders, the background processes), by process id.
pub(crate) fn server_cpu(postmaster: u32) -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    if let Some((_, cpu)) = stat(postmaster) {
        out.insert(postmaster, cpu);
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, cpu)) = stat(pid) {
            if ppid == postmaster {
                out.insert(pid, cpu);
            }
        }
    }
    out
}

/// The CPU the processes of `after` used since `before`, seconds (a process started in
/// between counts from its start).
pub(crate) fn cpu_since(before: &HashMap<u32, f64>, after: &HashMap<u32, f64>) -> f64 {
    after
        .iter()
        .map(|(pid, a)| a - before.get(pid).copied().unwrap_or(0.0))
        .filter(|d| *d > 0.0)
        .sum()
}
