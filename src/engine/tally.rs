//! What sessions did, counted for the server's metrics (docs/metrics.md): plain numbers the
//! engine adds to as it works, taken and reset by the server after each turn of a connection,
//! so that the engine stays free of shared state.

use crate::codec::{QueryType, Status};

/// The fan-out latency is timed for one journal record in this many (those whose sequence
/// number is a multiple of it), for every requestor it goes to: timing every delivery cost
/// the loop a few percent of its work at 1,000 requestors (BENCHMARKS.md "Metrics"), and
/// which records arrive is independent of their sequence numbers, so the sample's
/// distribution is the whole's.
pub const LATENCY_SAMPLE: u64 = 16;

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

/// Elements a tally's vectors keep allocated between turns. A catch-up delivers thousands of
/// records in a turn; keeping that capacity would cost an idle session tens of KiB for
/// nothing (the fan-out test holds an idle Active session under 8 KiB), so more is given back.
const KEEP: usize = 64;

/// Empties `v`, keeping its allocation only when it is small.
fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > KEEP {
        *v = Vec::new();
    } else {
        v.clear();
    }
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
    /// The journal sequence numbers of the sampled records ([`LATENCY_SAMPLE`]) delivered
    /// into Active streams, in order (for the fan-out latency; noted only when the server asks
    /// for them, `Session::time_deliveries`).
    pub delivered: Vec<u64>,
}

impl Tally {
    /// The counts, with the two lists beside them. Destructured, so that a count added to
    /// the struct cannot be forgotten by [`Self::absorb`] or [`Self::clear`].
    fn parts(&mut self) -> ([&mut u64; 7], &mut Vec<Outcome>, &mut Vec<u64>) {
        let Self {
            deliveries,
            coalesced,
            data_missing,
            catch_ups_started,
            catch_ups_completed,
            starttls_accepted,
            starttls_refused,
            outcomes,
            delivered,
        } = self;
        (
            [
                deliveries,
                coalesced,
                data_missing,
                catch_ups_started,
                catch_ups_completed,
                starttls_accepted,
                starttls_refused,
            ],
            outcomes,
            delivered,
        )
    }

    /// Adds `other` to these counts and empties it. Called for every connection and query
    /// when the server takes the counts, so it only moves what is there.
    pub fn absorb(&mut self, other: &mut Self) {
        let (to_counts, to_outcomes, to_delivered) = self.parts();
        let (counts, outcomes, delivered) = other.parts();
        for (to, from) in to_counts.into_iter().zip(counts) {
            if *from != 0 {
                *to = to.saturating_add(std::mem::take(from));
            }
        }
        if !delivered.is_empty() {
            if to_delivered.is_empty() {
                // The usual case, one query per connection: its vector moves, nothing is
                // copied.
                std::mem::swap(to_delivered, delivered);
            } else {
                to_delivered.append(delivered);
            }
        }
        if !outcomes.is_empty() {
            to_outcomes.append(outcomes);
        }
        // The emptied vectors keep a small capacity for the next turn, not a large one.
        trim(outcomes);
        trim(delivered);
    }

    /// Forgets the counts (after they were added to the metrics), keeping a small capacity.
    pub fn clear(&mut self) {
        let (counts, outcomes, delivered) = self.parts();
        for n in counts {
            *n = 0;
        }
        trim(outcomes);
        trim(delivered);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn full(n: u64) -> Tally {
        let mut t = Tally {
            deliveries: n,
            coalesced: n + 1,
            data_missing: n + 2,
            catch_ups_started: n + 3,
            catch_ups_completed: n + 4,
            starttls_accepted: n + 5,
            starttls_refused: n + 6,
            outcomes: Vec::new(),
            delivered: vec![n * 16],
        };
        t.outcome(QueryMessage::Active, None, Status::Success);
        t
    }

    #[test]
    fn absorb_moves_every_count_and_list_and_empties_the_other() {
        let mut total = full(10);
        let mut turn = full(100);
        total.absorb(&mut turn);
        assert_eq!(
            (
                total.deliveries,
                total.coalesced,
                total.data_missing,
                total.catch_ups_started,
                total.catch_ups_completed,
                total.starttls_accepted,
                total.starttls_refused
            ),
            (110, 112, 114, 116, 118, 120, 122)
        );
        assert_eq!(total.delivered, [160, 1600]);
        assert_eq!(total.outcomes.len(), 2);
        assert_eq!(turn.parts().0.map(|n| *n), [0; 7]);
        assert!(turn.outcomes.is_empty() && turn.delivered.is_empty());
        // Into an empty tally the delivered list moves whole.
        let mut empty = Tally::default();
        let mut turn = full(1);
        empty.absorb(&mut turn);
        assert_eq!(
            (empty.deliveries, empty.delivered.as_slice()),
            (1, &[16][..])
        );
        total.clear();
        assert_eq!(total.parts().0.map(|n| *n), [0; 7]);
        assert!(total.outcomes.is_empty() && total.delivered.is_empty());
    }
}
