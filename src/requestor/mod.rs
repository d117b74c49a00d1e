//! The requestor side of the leasequery family: a blocking client library (std networking,
//! the [`codec`](crate::codec) and nothing else of this crate) that asks a DHCPv6 server about
//! its bindings and keeps a local replica of them exact and current.
//!
//! | what | type | protocol |
//! |---|---|---|
//! | one question over UDP, retransmitted | [`UdpRequestor`] | RFC 5007 (digest §8.2) |
//! | a TCP connection carrying Bulk queries, each an iterator of bindings | [`Connection`], [`Bulk`] | RFC 5460 + RFC 7653 (digest §9.3) |
//! | an Active subscription that reconnects and catches up by itself: one or more filtered streams on one connection | [`Subscription`] | RFC 7653 (digest §10.5, §10.6) |
//! | a replica: bindings + each stream's saved base-time, persisted atomically | [`Replica`] | |
//! | a replica of a scope (links, relays, Remote-IDs) kept in sync through anything | [`Watch`] | all of the above |
//! | TLS on every TCP connection: STARTTLS, then rustls | [`TlsOptions`], [`TlsClient`], [`Connection::connect_tls`], [`ActiveSettings::tls`] | RFC 7653 (digest §12, D25, D28) |
//! | `lq`'s command line (clap), for the binary and its generated man pages | [`cli::Cli`] | |
//!
//! # Transactions
//!
//! Every transaction gets a fresh random 24-bit xid. Over UDP a retransmission keeps its
//! transaction's xid, and a reply is taken only when its xid, Client-ID (our DUID) and
//! Server-ID say it answers us. Over TCP, [`Connection`] never hands out an xid twice on the
//! same connection (digest §9.3 step 2, §10.3), so late messages of an abandoned query can
//! never be mistaken for a newer query's.
//!
//! # The Active state machine
//!
//! Each stream of a [`Subscription`] (one ACTIVELEASEQUERY, told apart from the connection's
//! other streams by its xid) follows digest §10.6 (decision D3 for the receive timeout):
//!
//! ```text
//! CONNECTING -> AWAIT_REPLY  (ACTIVELEASEQUERY, START_TIME = the resume point, if any)
//! AWAIT_REPLY  --REPLY(error)-------------------> FAILED: Error::Refused, no reconnect
//! AWAIT_REPLY  --REPLY(DataMissing)-------------> LIVE         Event::DataMissing [START, base]
//! AWAIT_REPLY  --REPLY(ok), START_TIME was sent-> CATCHING_UP  (base-times not saved)
//! AWAIT_REPLY  --REPLY(ok), no START_TIME-------> LIVE         (save base-time)
//! CATCHING_UP  --DATA(CatchUpComplete)----------> LIVE         (save base-time from here on)
//! CATCHING_UP  --DATA(DataMissing)--------------> LIVE         Event::DataMissing [START, base]
//! LIVE         --DATA(DataMissing)--------------> LIVE         Event::DataMissing [saved, base]
//! LIVE         --DATA---------------------------> LIVE         (apply, save base-time)
//! AWAIT_REPLY  --nothing for ACTIVE_LQ_RCV_TIMEOUT--> RECONNECT (a query the server left unread)
//! any --DONE / EOF / ACTIVE_LQ_RCV_TIMEOUT / error--> RECONNECT (START_TIME = resume point)
//! ```
//!
//! A connection lost is lost for all its streams; the reconnect sends each its own
//! START_TIME.
//!
//! A stream's *resume point* is the base-time of the most recent message it received while
//! LIVE (keepalives count). While catching up it stays what it was, because catch-up messages come
//! in no time order: a connection lost during catch-up resumes from the same START_TIME
//! again. Nothing received during catch-up is ever saved as a base-time.
//!
//! # Times (digest §11)
//!
//! Server times ([`ServerTime`](crate::codec::ServerTime), seconds since 2000 on the server's
//! clock) are kept as they are and only ever sent back to that server as START/END times.
//! Every relative value in a message (lifetimes, CLT_TIME) is converted to local wall-clock
//! time once, when the message arrives, through its [`TimeBase`]: with base-time `B` and
//! local arrival time `L`, the skew is `δ = L − B`, a lifetime `t` ends at local `L + t`
//! (infinity stays infinity), the last transaction was at `L − clt_time`, and a server time
//! `S` is local `S + δ`. Without a base-time the values are relative to `L` and the skew is
//! taken as zero.
//!
//! # Keeping a replica exact
//!
//! A [`Watch`]'s scope is a list of streams: one per link (QUERY_BY_LINK_ADDRESS), relay
//! agent (QUERY_BY_RELAY_ID) and Remote-ID (QUERY_BY_REMOTE_ID), or the one filter's query,
//! each synced by a Bulk query and followed by an Active query carrying the same
//! OPTION_LQ_QUERY. The server reports only changes to bindings that match (digest §10.4 step
//! 10), so nothing outside the scope enters the replica, and a binding in scope that ends is
//! reported, so it leaves. Without any scope one unfiltered stream follows every change.
//!
//! Active DATA holds one client's current data on one link, without saying which link. The
//! [`Replica`] is keyed by client DUID and keeps what each stream last said about each client
//! (its view); a client's DATA *replaces* that stream's view: leases at lifetime 0 are ended
//! (decision D5) and dropped, leases no longer listed are gone too (a server that coalesces
//! changes for a slow requestor may send only the binding's newest state, with no
//! zero-lifetime record of the lease that ended before it), and a client left without leases
//! in any view is removed. A client holds the union of its views, so a client on two watched
//! links holds both links' leases; within one stream that spans links (a relay serving
//! several), a client with bindings on several of them at once shows only the link last
//! reported.
//!
//! An empty replica starts with the streams' Bulk queries and then each Active stream from
//! its own Bulk answer's first base-time. Leasequery has no query type for "everything":
//! without a scope, the initial sync is an Active query with START_TIME = 1, whose catch-up
//! returns everything the server's history holds.
//!
//! DataMissing on a stream (the server's history does not reach its resume point) is
//! recovered on a second connection, for that stream alone, per [`Recovery`]:
//!
//! - [`Recovery::Resync`] (the default): the stream's Bulk query again, whose answer
//!   *replaces* what the stream reported. This is what keeps the replica exact: a Bulk answer
//!   lists only live bindings, so bindings that ended inside the gap would otherwise never be
//!   removed.
//! - [`Recovery::Window`]: the RFC 7653 way, the stream's Bulk query with START = the resume
//!   point and END = the base-time of the DataMissing message, whose answers are applied as
//!   updates. Cheaper, but it cannot see removals in the gap.
//!
//! The unfiltered stream of a watch without scope has no Bulk query to cover a gap; the event
//! says so and the replica may hold stale bindings until they change again.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod active;
mod binding;
mod bulk;
pub mod cli;
mod conn;
mod error;
mod follow;
mod query;
mod replica;
mod time;
mod tls;
mod udp;
mod watch;

pub use active::{ActiveSettings, Disconnect, Event, Phase, Subscription};
pub use binding::{ClientData, Lease, LeaseKind};
pub use bulk::Bulk;
pub use conn::Connection;
pub use error::{Error, Result};
pub use query::{Query, TimeWindow};
pub use replica::{Change, Client, Replica};
pub use time::TimeBase;
pub use tls::{TlsClient, TlsOptions};
pub use udp::{Retransmission, UdpAnswer, UdpRequestor};
pub use watch::{Recovery, Watch, WatchEvent, WatchSettings};

/// BULK_LQ_DATA_TIMEOUT: how long a Bulk query may wait for the next message, or for a
/// blocked write, before the connection is given up (digest §7, decision D4).
pub const BULK_LQ_DATA_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// ACTIVE_LQ_RCV_TIMEOUT: an Active connection that delivered nothing for this long is dead
/// (digest §7, decision D3).
pub const ACTIVE_LQ_RCV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A random DUID-UUID (type 4), for a requestor that has no DUID of its own.
#[must_use]
pub fn random_duid() -> Vec<u8> {
    let uuid: [u8; 16] = rand::random();
    let mut duid = vec![0, 4];
    duid.extend_from_slice(&uuid);
    duid
}
