//! Where the `kea-pgsql` source connects: the connection URI, and the password from a file or
//! the environment (never from the command line, so never in the URI).
//!
//! The URI is libpq's form, `postgresql://[USER@][HOST][:PORT][/DBNAME][?PARAM=VALUE&...]`
//! (`postgres://` too). A HOST starting with `/` (percent-encoded as `%2F`, or given as the
//! `host` parameter) is the directory of PostgreSQL's Unix socket, the default being
//! `/var/run/postgresql`. Parameters:
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `host`, `port`, `user`, `dbname` | as in the URI's parts (the parameter wins) | `/var/run/postgresql`, 5432, `kea`, `kea` |
//! | `slot` | this lqd's replication slot: one per lqd instance | `lqd` |
//! | `publication` | the publication on `lease6` | `lqd_kea` |
//! | `password_file` | a file holding only the password | |
//! | `passfile` | a libpq password file (`host:port:dbname:user:password` lines) | `PGPASSFILE`, then `~/.pgpass` |
//! | `application_name` | shown in `pg_stat_replication` | `lqd` |
//! | `sslmode` | `disable` or `prefer` (lqd speaks plain PostgreSQL: use a Unix socket or a trusted network) | |
//!
//! The password is looked for, at each connection, in `password_file`, then the environment
//! variables `LQD_PGPASSWORD` and `PGPASSWORD`, then the libpq password file; without one,
//! lqd connects without (peer or trust authentication). A URI holding a password
//! (`user:secret@` or `password=`) is refused: it would show in `ps` and in logs.

use std::fmt;
use std::path::PathBuf;

/// The environment variable lqd reads the database password from first.
pub const PASSWORD_ENV: &str = "LQD_PGPASSWORD";

/// Slot names are PostgreSQL identifiers of lower-case letters, digits and `_`; lqd keeps them
/// short enough to name the source's writer mark.
pub const MAX_SLOT: usize = 50;

/// The parsed connection URI (no password in it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgTarget {
    /// A host name or address, or a socket directory (starting with `/`).
    pub host: String,
    /// The port (also names the Unix socket).
    pub port: u16,
    /// The role lqd logs in as.
    pub user: String,
    /// Kea's lease database.
    pub dbname: String,
    /// This instance's replication slot.
    pub slot: String,
    /// The publication on `lease6`.
    pub publication: String,
    /// `password_file`.
    pub password_file: Option<PathBuf>,
    /// `passfile`.
    pub passfile: Option<PathBuf>,
    /// `application_name`.
    pub application_name: String,
}

impl fmt::Display for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.starts_with('/') {
            write!(
                f,
                "postgresql://{}@/{}?host={}&port={}&slot={}",
                self.user, self.dbname, self.host, self.port, self.slot
            )
        } else if self.host.contains(':') {
            write!(
                f,
                "postgresql://{}@[{}]:{}/{}?slot={}",
                self.user, self.host, self.port, self.dbname, self.slot
            )
        } else {
            write!(
                f,
                "postgresql://{}@{}:{}/{}?slot={}",
                self.user, self.host, self.port, self.dbname, self.slot
            )
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

fn valid_identifier(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_SLOT
        || !name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        return Err(format!(
            "{what} {name:?}: use 1 to {MAX_SLOT} lower-case letters, digits and _"
        ));
    }
    Ok(())
}

impl PgTarget {
    /// Parses a connection URI.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong, including a password in the URI.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("postgresql://")
            .or_else(|| uri.strip_prefix("postgres://"))
            .ok_or_else(|| {
                format!("{uri:?}: a kea-pgsql source is a URI postgresql://USER@HOST:PORT/DBNAME")
            })?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = main.split_once('/').unwrap_or((main, ""));
        let mut t = Self {
            host: "/var/run/postgresql".into(),
            port: 5432,
            user: "kea".into(),
            dbname: "kea".into(),
            slot: "lqd".into(),
            publication: "lqd_kea".into(),
            password_file: None,
            passfile: None,
            application_name: "lqd".into(),
        };
        let hostport = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                if userinfo.contains(':') {
                    return Err(
                        "the URI must not hold a password (it would show in ps and in logs): put \
                         it in a file named by ?password_file=PATH, or in LQD_PGPASSWORD"
                            .into(),
                    );
                }
                t.user = percent_decode(userinfo)?;
                hostport
            }
            None => authority,
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (h, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{uri:?}: an unclosed [ in the host"))?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?, Some(p)),
                None => (percent_decode(hostport)?, None),
            }
        };
        if !host.is_empty() {
            t.host = host;
        }
        if let Some(p) = port.filter(|p| !p.is_empty()) {
            t.port = p.parse().map_err(|_| format!("{uri:?}: port {p:?}"))?;
        }
        if !path.is_empty() {
            t.dbname = percent_decode(path)?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v)?;
            match k {
                "host" => t.host = v,
                "port" => t.port = v.parse().map_err(|_| format!("{uri:?}: port {v:?}"))?,
                "user" => t.user = v,
                "dbname" => t.dbname = v,
                "slot" => t.slot = v,
                "publication" => t.publication = v,
                "password_file" => t.password_file = Some(v.into()),
                "passfile" => t.passfile = Some(v.into()),
                "application_name" => t.application_name = v,
                "sslmode" if v == "disable" || v == "prefer" => {}
                "sslmode" => {
                    return Err(format!(
                        "sslmode={v}: lqd speaks plain PostgreSQL (sslmode=disable or prefer); \
                         reach the database over its Unix socket or a trusted network"
                    ));
                }
                "password" => {
                    return Err(
                        "the URI must not hold a password (it would show in ps and in logs): put \
                         it in a file named by ?password_file=PATH, or in LQD_PGPASSWORD"
                            .into(),
                    );
                }
                other => return Err(format!("{uri:?}: unknown parameter {other:?}")),
            }
        }
        valid_identifier(&t.slot, "slot")?;
        valid_identifier(&t.publication, "publication")?;
        if t.user.is_empty() || t.dbname.is_empty() {
            return Err(format!("{uri:?}: an empty user or database name"));
        }
        Ok(t)
    }

    /// The password, looked for now (see the module documentation); `None` to connect without.
    ///
    /// # Errors
    ///
    /// When `password_file` is set but cannot be read.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(file) = &self.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("password_file {}: {e}", file.display()))?;
            return Ok(Some(text.trim_end_matches(['\n', '\r']).to_owned()));
        }
        for var in [PASSWORD_ENV, "PGPASSWORD"] {
            if let Ok(p) = std::env::var(var)
                && !p.is_empty()
            {
                return Ok(Some(p));
            }
        }
        let passfile = self
            .passfile
            .clone()
            .or_else(|| std::env::var_os("PGPASSFILE").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
        Ok(passfile
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|text| self.passfile_password(&text)))
    }

    /// The password of the first line of a libpq password file that matches this target.
    fn passfile_password(&self, text: &str) -> Option<String> {
        let host = if self.host.starts_with('/') {
            "localhost"
        } else {
            &self.host
        };
        let port = self.port.to_string();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let fields = split_passfile(line);
            let [h, p, d, u, pw] = fields.as_slice() else {
                continue;
            };
            let m = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            if m(h, host) && m(p, &port) && m(d, &self.dbname) && m(u, &self.user) {
                return Some(pw.clone());
            }
        }
        None
    }
}

/// Splits a password file line at unescaped `:` (`\:` and `\\` are escapes).
fn split_passfile(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(n), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(n);
                }
            }
            ':' => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let t = PgTarget::parse("postgresql://kea@db.example:5433/leases?slot=lqd_a").unwrap();
        assert_eq!(
            (&*t.host, t.port, &*t.user, &*t.dbname, &*t.slot),
            ("db.example", 5433, "kea", "leases", "lqd_a")
        );
        let t = PgTarget::parse("postgres://%2Ftmp%2Fpg/kea").unwrap();
        assert_eq!(
            (&*t.host, t.port, &*t.publication),
            ("/tmp/pg", 5432, "lqd_kea")
        );
        let t = PgTarget::parse("postgresql:///kea?host=/run/pg&port=6000&user=lqd").unwrap();
        assert_eq!((&*t.host, t.port, &*t.user), ("/run/pg", 6000, "lqd"));
        let t = PgTarget::parse("postgresql://u@[2001:db8::5]:5432/kea").unwrap();
        assert_eq!(t.host, "2001:db8::5");
        assert_eq!(
            t.to_string(),
            "postgresql://u@[2001:db8::5]:5432/kea?slot=lqd"
        );
    }

    #[test]
    fn a_password_in_the_uri_is_refused() {
        for uri in [
            "postgresql://kea:secret@localhost/kea",
            "postgresql://kea@localhost/kea?password=secret",
        ] {
            let e = PgTarget::parse(uri).unwrap_err();
            assert!(e.contains("must not hold a password"), "{e}");
            assert!(
                !e.contains("secret"),
                "the refusal repeats no password: {e}"
            );
        }
    }

    #[test]
    fn bad_uris() {
        for (uri, want) in [
            ("mysql://kea@h/kea", "postgresql://"),
            ("postgresql://h/kea?slot=Bad-Name", "slot"),
            ("postgresql://h/kea?sslmode=require", "sslmode"),
            ("postgresql://h:x/kea", "port"),
            ("postgresql://h/kea?colour=blue", "unknown parameter"),
        ] {
            let e = PgTarget::parse(uri).unwrap_err();
            assert!(e.contains(want), "{uri}: {e}");
        }
    }

    #[test]
    fn passfile_lines() {
        let t = PgTarget::parse("postgresql://kea@db:5432/kea").unwrap();
        let text = "# comment\nother:5432:kea:kea:no\ndb:*:kea:kea:a\\:b\n*:*:*:*:later\n";
        assert_eq!(t.passfile_password(text).as_deref(), Some("a:b"));
        let local = PgTarget::parse("postgresql:///kea?host=/run/pg").unwrap();
        assert_eq!(
            local
                .passfile_password("localhost:5432:kea:kea:s\n")
                .as_deref(),
            Some("s")
        );
    }
}
