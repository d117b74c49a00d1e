//! What sessions did, counted for the server's metrics (docs/metrics.md): plain numbers the
//! engine adds to as it works, taken and reset by the server after each turn of a connection,
//! so that the engine stays free of shared state.

use crate::codec::{QueryType, Status};

/// The message a query came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMessage {
    /// LEASEQUERY over TCP (Bulk).
    Leasequery,
    /// ACTIVELEASEQUERY.
    Active,
    /// LEASEQUERY over UDP.
    Udp,
}

/// A query's final status, counted once per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The message it came in.
    pub message: QueryMessage,
    /// Its query type; `None` for an Active query without OPTION_LQ_QUERY (every change).
    pub query_type: Option<QueryType>,
    /// Its final status: a Bulk answer's when it ends, a UDP reply's, an Active query's first
    /// answer's.
    pub status: Status,
}

/// Counts since the server last took them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Binding updates written into Active streams.
    pub deliveries: u64,
    /// Journal records an Active stream skipped: a newer record of the binding superseded
    /// them before they were sent.
    pub coalesced: u64,
    /// DataMissing sent (in a LEASEQUERY-REPLY or a LEASEQUERY-DATA).
    pub data_missing: u64,
    /// Catch-ups started (an ACTIVELEASEQUERY with OPTION_LQ_START_TIME).
    pub catch_ups_started: u64,
    /// Catch-ups that ended with CatchUpComplete.
    pub catch_ups_completed: u64,
    /// STARTTLS accepted.
    pub starttls_accepted: u64,
    /// STARTTLS refused (TLSConnectionRefused).
    pub starttls_refused: u64,
    /// Queries that reached their final status.
    pub outcomes: Vec<Outcome>,
    /// The journal sequence numbers of the records delivered into Active streams, in order
    /// (for the fan-out latency).
    pub delivered: Vec<u64>,
}

impl Tally {
    /// Adds `other` to these counts.
    pub fn absorb(&mut self, other: &mut Self) {
        self.deliveries = self.deliveries.saturating_add(other.deliveries);
        self.coalesced = self.coalesced.saturating_add(other.coalesced);
        self.data_missing = self.data_missing.saturating_add(other.data_missing);
        self.catch_ups_started = self
            .catch_ups_started
            .saturating_add(other.catch_ups_started);
        self.catch_ups_completed = self
            .catch_ups_completed
            .saturating_add(other.catch_ups_completed);
        self.starttls_accepted = self
            .starttls_accepted
            .saturating_add(other.starttls_accepted);
        self.starttls_refused = self.starttls_refused.saturating_add(other.starttls_refused);
        self.outcomes.append(&mut other.outcomes);
        self.delivered.append(&mut other.delivered);
        // The emptied vectors keep their capacity for the next turn.
        *other = Self {
            outcomes: std::mem::take(&mut other.outcomes),
            delivered: std::mem::take(&mut other.delivered),
            ..Self::default()
        };
    }

    /// Forgets the counts (after they were added to the metrics), keeping the capacity.
    pub fn clear(&mut self) {
        *self = Self {
            outcomes: std::mem::take(&mut self.outcomes),
            delivered: std::mem::take(&mut self.delivered),
            ..Self::default()
        };
        self.outcomes.clear();
        self.delivered.clear();
    }

    /// Records a query's final status.
    pub fn outcome(
        &mut self,
        message: QueryMessage,
        query_type: Option<QueryType>,
        status: Status,
    ) {
        self.outcomes.push(Outcome {
            message,
            query_type,
            status,
        });
    }
}
