//! lqd: a DHCPv6 leasequery front end.
//!
//! lqd serves UDP Leasequery (RFC 5007), Bulk Leasequery (RFC 5460, with the RFC 7653 time
//! options) and Active Leasequery (RFC 7653) from one event-loop thread, over a mirror of a lease
//! store's bindings and a persistent change journal.
//!
//! The design is in `ARCHITECTURE.md` and `docs/decisions.md` at the repository's root, the
//! protocol in `docs/leasequery-digest.md` (cited as "digest §N"), running lqd in
//! `docs/operations.md`. The layers:
//!
//! - [`codec`]: the complete leasequery wire format, zero-copy and panic-free.
//! - [`store`]: the lease mirror, bindings and their query indexes, and the change journal.
//! - [`feed`]: how lease changes reach lqd: [`feed::FeedHandle`] and the built-in sources.
//! - [`engine`]: the protocol engine, sans-IO: queries, UDP answers, Bulk answers, Active
//!   streams, sessions.
//! - [`server`]: the mio event loop that serves them.
//! - [`config`]: settings from defaults, the TOML file and the flags.
//! - [`requestor`]: the other side, used by `lq`: UDP, Bulk and Active Leasequery clients and a
//!   replica kept in sync; it depends on the codec only.
#![deny(unsafe_code)]

pub mod codec;
pub mod config;
pub mod engine;
pub mod feed;
pub mod requestor;
pub mod server;
pub mod store;
