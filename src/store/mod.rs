//! The lease mirror: bindings and the indexes that answer every query type without a scan.

mod history;
mod index;
pub mod journal;
mod links;
pub mod model;
mod postings;
pub mod record;
pub mod snapshot;

pub use history::{History, Log, Restored, SnapshotRead, SnapshotStart, read_snapshot};
pub use index::{Applied, BindingId, BindingRef, Outcome, Store};
pub use links::{LinkDef, LinkMap, LinkMapError};
pub use model::{
    Binding, BindingKey, BindingView, Change, Lease, LeaseKind, LeaseState, RelayInfo, RemoteIdKey,
    prefix_contains,
};
pub use postings::{PostingKey, Postings, Seed, Tag};
