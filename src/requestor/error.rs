//! The requestor's one error type: every variant prints as one line.

use core::fmt;
use std::path::PathBuf;

use crate::codec::Status;

/// What went wrong with a leasequery exchange, a connection or the state file.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed: `what` says which.
    Io {
        /// What was being done (`"connect"`, `"send"`, `"receive"`, ...).
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// UDP: no reply after every transmission the retransmission rules allow.
    NoAnswer {
        /// How many times the query was sent.
        transmissions: u32,
    },
    /// TCP: nothing arrived for BULK_LQ_DATA_TIMEOUT while an answer was expected.
    Timeout,
    /// The server closed the connection while an answer was still expected.
    Closed,
    /// The server refused the query: its LEASEQUERY-REPLY carried an error status.
    Refused {
        /// The status (UnknownQueryType, MalformedQuery, NotConfigured, NotAllowed, ...).
        status: Status,
        /// The status message, if any.
        message: String,
    },
    /// A Bulk answer ended with a LEASEQUERY-DONE carrying an error status (for example
    /// QueryTerminated): what came before it is incomplete.
    Incomplete {
        /// The status in the LEASEQUERY-DONE.
        status: Status,
        /// The status message, if any.
        message: String,
    },
    /// The query itself is invalid (it cannot be encoded, or a value is out of range).
    Invalid(String),
    /// The server sent something no server may send here.
    Protocol(String),
    /// The stop flag was set while waiting.
    Stopped,
    /// The server refused STARTTLS: its answer carried an error status (TLSConnectionRefused,
    /// in a STARTTLS or a LEASEQUERY-REPLY; decision D25). The connection is not used.
    TlsRefused {
        /// The status (TLSConnectionRefused, or whatever error the server chose).
        status: Status,
        /// The status message, if any.
        message: String,
    },
    /// TLS failed on the connection: the server's certificate was not accepted (untrusted
    /// CA, a name mismatch, expired), the server did not accept ours, the handshake broke
    /// down, or the server did not answer STARTTLS.
    Tls(String),
    /// The TLS setup cannot be made: a CA, certificate or key file cannot be read or holds
    /// nothing usable, or the key does not fit the certificate.
    TlsConfig(String),
    /// The state file could not be read, parsed or written.
    State {
        /// The state file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The requestor's result type.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }

    /// True for the TLS errors ([`TlsRefused`](Self::TlsRefused), [`Tls`](Self::Tls),
    /// [`TlsConfig`](Self::TlsConfig)): a reconnect with the same setup would fail the same
    /// way, so a subscription or a watch ends with them instead of retrying (decision D28).
    #[must_use]
    pub const fn is_tls(&self) -> bool {
        matches!(
            self,
            Self::TlsRefused { .. } | Self::Tls(_) | Self::TlsConfig(_)
        )
    }

    pub(crate) fn state(path: &std::path::Path, reason: impl fmt::Display) -> Self {
        Self::State {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

fn with_message(f: &mut fmt::Formatter<'_>, status: Status, message: &str) -> fmt::Result {
    if message.is_empty() {
        write!(f, "{status}")
    } else {
        write!(f, "{status} ({message})")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::NoAnswer { transmissions } => {
                write!(f, "no answer after {transmissions} transmissions")
            }
            Self::Timeout => f.write_str("no data from the server for BULK_LQ_DATA_TIMEOUT"),
            Self::Closed => f.write_str("the server closed the connection mid-answer"),
            Self::Refused { status, message } => {
                f.write_str("the server refused the query: ")?;
                with_message(f, *status, message)
            }
            Self::Incomplete { status, message } => {
                f.write_str("the answer is incomplete: ")?;
                with_message(f, *status, message)
            }
            Self::Invalid(what) => f.write_str(what),
            Self::Stopped => f.write_str("stopped"),
            Self::Protocol(what) => write!(f, "protocol error: {what}"),
            Self::TlsRefused { status, message } => {
                f.write_str("the server refused STARTTLS: ")?;
                with_message(f, *status, message)
            }
            Self::Tls(what) => write!(f, "TLS: {what}"),
            Self::TlsConfig(what) => write!(f, "TLS setup: {what}"),
            Self::State { path, reason } => {
                write!(f, "state file {}: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
