//! Small helpers for the reports.

use std::time::Duration;

/// KiB to MiB.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `count` per second of `over`.
pub(crate) fn rate(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}
