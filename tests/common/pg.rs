//! A temporary PostgreSQL cluster for the `kea-pgsql` tests: Debian's PostgreSQL (initdb,
//! pg_ctl) in a directory of the test's own, with `wal_level=logical`, its Unix socket in that
//! directory and a free loopback TCP port; Kea's lease database made by Kea's own
//! `kea-admin db-init pgsql`. Run as the `postgres` user when the test runs as root (initdb
//! refuses root). Stopped and removed when dropped.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Kea's database role and its password (scram-sha-256 over TCP).
pub(crate) const KEA_USER: &str = "kea";
pub(crate) const KEA_PASSWORD: &str = "kea-test-secret";

/// Debian's PostgreSQL binaries: the newest installed major version.
fn bin(tool: &str) -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's PostgreSQL (apt-get install postgresql; .ci/setup does)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let v = versions.last().expect("a PostgreSQL version installed");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/{tool}"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// A command run as the cluster's owner.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn check(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running temporary cluster.
pub(crate) struct Pg {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

impl Pg {
    /// initdb and start a cluster for the test `name`.
    pub(crate) fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lqd-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .output()
                    .unwrap(),
                "chown",
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        check(
            as_owner(&bin("initdb"))
                .args(["-D"])
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
                .output()
                .unwrap(),
            "initdb",
        );
        let conf = format!(
            "wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n\
             listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nshared_buffers = 16MB\nwal_sender_timeout = 20s\n\
             log_min_messages = warning\n",
            dir.display()
        );
        let pg_conf = data.join("postgresql.conf");
        let mut old = std::fs::read_to_string(&pg_conf).unwrap();
        old.push_str(&conf);
        std::fs::write(&pg_conf, old).unwrap();
        let pg = Self { dir, port };
        pg.pg_ctl("start");
        pg
    }

    fn pg_ctl(&self, action: &str) {
        let mut c = as_owner(&bin("pg_ctl"));
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-l"])
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "30", "-m", "fast", action]);
        let out = c.output().unwrap();
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let activity = Command::new("ps").args(["-ef"]).output().unwrap();
            let ps = String::from_utf8_lossy(&activity.stdout);
            let mine: Vec<&str> = ps.lines().filter(|l| l.contains("postgres:")).collect();
            panic!(
                "pg_ctl {action}: {}\nserver log:\n{log}\nprocesses:\n{}",
                String::from_utf8_lossy(&out.stdout),
                mine.join("\n")
            );
        }
    }

    /// Stops the cluster (fast shutdown), as an administrator restarting it would.
    pub(crate) fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts it again.
    pub(crate) fn start_again(&self) {
        self.pg_ctl("start");
    }

    /// The directory of the Unix socket.
    pub(crate) fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs SQL as the superuser in `db`; psql's unaligned, tuples-only output.
    pub(crate) fn sql(&self, db: &str, sql: &str) -> String {
        check(
            Command::new("psql")
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
                .output()
                .unwrap(),
            sql,
        )
    }

    /// Makes Kea's lease database `db`, owned by the role `kea` (a replication role with a
    /// password), with Kea's own `kea-admin db-init pgsql`.
    pub(crate) fn kea_db(&self, db: &str) {
        let roles = self.sql("postgres", "SELECT 1 FROM pg_roles WHERE rolname = 'kea'");
        if roles.trim().is_empty() {
            self.sql(
                "postgres",
                &format!("CREATE ROLE {KEA_USER} LOGIN REPLICATION PASSWORD '{KEA_PASSWORD}'"),
            );
        }
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {db} OWNER {KEA_USER}"),
        );
        let out = Command::new("kea-admin")
            .args(["db-init", "pgsql", "-h", "127.0.0.1", "-P"])
            .arg(self.port.to_string())
            .args(["-u", KEA_USER, "-p", KEA_PASSWORD, "-n", db])
            .output()
            .expect("kea-admin (Debian's kea-admin; .ci/setup installs it)");
        check(out, "kea-admin db-init pgsql");
    }

    /// The URI lqd follows `db` with over TCP as the role `kea` (the password comes from
    /// elsewhere).
    pub(crate) fn uri(&self, db: &str, slot: &str) -> String {
        format!(
            "postgresql://{KEA_USER}@127.0.0.1:{}/{db}?slot={slot}",
            self.port
        )
    }

    /// Waits until `sql` gives `want` (trimmed), up to `secs`.
    pub(crate) fn wait_for(&self, db: &str, sql: &str, want: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.sql(db, sql);
            if got.trim() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql}: wanted {want:?}, got {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut c = as_owner(&bin("pg_ctl"));
        let _ = c
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-w", "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
