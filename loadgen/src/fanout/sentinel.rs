//! Feeding lqd a batch of changes and knowing it has journaled them: a sentinel requestor.
//!
//! lqd reads its JSON-lines feed on its own schedule, so a change written to the socket is in
//! the journal some time later. To know that every change of a batch is, one requestor, the
//! sentinel, starts an Active query for every change (unfiltered, whatever the run's filter)
//! before the first is written, and must receive all of them. The batch is at most M changes
//! (`--bindings`), each of a different binding, so that lqd has no reason to coalesce any
//! for a sentinel that falls behind.
//!
//! `loadgen catch-up` makes the changes its requestors miss while away this way, and
//! `--preload` of `loadgen active` and `loadgen ramp` creates the population.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::changes::{Model, Schedule};
use super::inject::{self, JsonlSink};
use super::progress::Progress;
use super::receiver::{Plan, Protocol, Receivers};
use super::run::{Server, merge, wait_complete, wait_ready};

/// How long the sentinel may take to receive the last change after the injector is due to
/// have written it.
const GRACE: Duration = Duration::from_secs(60);

/// Writes changes `0..k` of `model` to lqd's feed socket, at `rate` changes a second or, with
/// none, as fast as lqd takes them, and waits until a sentinel requestor has received every
/// one of them; how long that took, from the first write. `stage` names the progress bar.
pub(crate) fn feed_journaled(
    progress: &Progress,
    server: &mut Server,
    model: Model,
    k: u64,
    rate: Option<f64>,
    stage: &str,
) -> Result<Duration, String> {
    if k > u64::from(model.bindings()) {
        return Err(format!(
            "{k} changes to confirm through a sentinel, more than the {} bindings: some would \
             coalesce",
            model.bindings()
        ));
    }
    // A clone of the feed: the server keeps its own for the changes that follow.
    let feed = match server {
        Server::Lqd(_, Some(feed)) => feed
            .try_clone()
            .map_err(|e| format!("lqd's feed socket: {e}"))?,
        Server::Lqd(_, None) => return Err("lqd's feed socket is gone".to_owned()),
        _ => return Err("only lqd is fed changes".to_owned()),
    };
    let sentinel = Receivers::start(
        Plan {
            addr: server.addr(),
            protocol: Protocol::Active,
            model,
            requestors: 1,
            expected: k,
            filtered: false,
            start_times: None,
            catch_up: false,
            // Cleartext: lqd under `--tls` offers TLS, and the sentinel is not measured.
            tls: None,
        },
        1,
    )?;
    if let Err(e) = wait_ready(server, &sentinel, 1, progress) {
        let _ = sentinel.finish();
        return Err(format!("the sentinel requestor: {e}"));
    }
    progress.stage(stage, k);
    let started = Instant::now();
    let schedule = Schedule {
        t0: started,
        rate: rate.unwrap_or(f64::INFINITY),
        total: k,
    };
    let abort = Arc::new(AtomicBool::new(false));
    let injector = inject::spawn(
        Box::new(JsonlSink::new(feed, model)),
        schedule,
        Arc::clone(&abort),
    )?;
    let seen = wait_complete(
        progress,
        server,
        &sentinel,
        1,
        schedule.end() + GRACE,
        stage,
    );
    let took = started.elapsed();
    abort.store(true, Ordering::Relaxed);
    let injected = injector
        .join()
        .unwrap_or_else(|_| Err("the injector panicked".to_owned()));
    let reports = sentinel.finish();
    if seen? {
        injected?;
        return Ok(took);
    }
    let m = merge(reports?)?;
    let injector = injected.map_or_else(|e| format!(" (the injector: {e})"), |_| String::new());
    Err(format!(
        "{stage}: the sentinel requestor received {} of the {k} changes in {took:?}{injector}; \
         its errors: {:?}",
        m.received, m.errors
    ))
}
