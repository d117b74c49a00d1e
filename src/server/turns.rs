//! How long the loop's turns take, and where the long ones spend their time.
//!
//! A change that arrives during a turn waits for the next one to be sent: live latency is about
//! a turn. The loop times each turn's steps with a handful of clock reads, counts every turn
//! into `lqd_loop_turn_seconds`, and at most every [`REPORT_EVERY`] logs the turns that took
//! [`LONG_TURN`] or more, with the step their time went to (issue 19: live changes during a
//! catch-up storm).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// The steps of a turn, in the order the loop takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Accepts and the readiness events.
    Events = 0,
    /// The feed's changes applied and journaled.
    Feed,
    /// The queries the new records concern woken, and the UDP sockets served.
    Wake,
    /// The TCP connections served (live streams, then catch-ups and Bulk answers in the slice).
    Conns,
    /// The rest: retries, new settings, the once-a-second housekeeping.
    Rest,
}

const STEPS: usize = 5;
const STEP_NAMES: [&str; STEPS] = ["events", "feed", "wake", "conns", "rest"];

/// A turn this long delays the live changes that arrived during it by about as much; such
/// turns are logged.
pub(super) const LONG_TURN: Duration = Duration::from_millis(25);
/// Long turns are logged at most this often, in one line.
pub(super) const REPORT_EVERY: Duration = Duration::from_secs(10);

/// One turn's clock: the time spent in each step so far.
#[derive(Debug)]
pub(super) struct TurnClock {
    start: Instant,
    last: Instant,
    spent: [Duration; STEPS],
}

impl TurnClock {
    /// Starts timing a turn (after the poll: the wait is not the turn's).
    pub(super) fn start() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            spent: [Duration::ZERO; STEPS],
        }
    }

    /// Ends step `step`: the time since the previous mark is its.
    pub(super) fn mark(&mut self, step: Step) {
        let now = Instant::now();
        if let Some(s) = self.spent.get_mut(step as usize) {
            *s += now.saturating_duration_since(self.last);
        }
        self.last = now;
    }

    /// The turn so far.
    pub(super) fn total(&self) -> Duration {
        self.last.saturating_duration_since(self.start)
    }
}

/// What a turn did, beside its time.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TurnWork {
    /// Changes journaled from the feed.
    pub(super) changes: u64,
    /// TCP connections served.
    pub(super) served: usize,
    /// Connections left for the next turn when the slice ran out.
    pub(super) deferred: usize,
}

/// The long turns since the last report.
#[derive(Debug, Default)]
pub(super) struct LongTurns {
    count: u64,
    spent: [Duration; STEPS],
    longest: Option<(Duration, [Duration; STEPS], TurnWork)>,
}

impl LongTurns {
    /// Notes a finished turn; only a long one is kept.
    pub(super) fn note(&mut self, total: Duration, spent: &[Duration; STEPS], work: TurnWork) {
        if total < LONG_TURN {
            return;
        }
        self.count += 1;
        for (sum, s) in self.spent.iter_mut().zip(spent) {
            *sum += *s;
        }
        if self.longest.is_none_or(|(t, _, _)| total > t) {
            self.longest = Some((total, *spent, work));
        }
    }

    /// Notes the turn `clock` timed.
    pub(super) fn note_clock(&mut self, clock: &TurnClock, work: TurnWork) {
        self.note(clock.total(), &clock.spent, work);
    }

    /// The report of the long turns since the last one, and a fresh start; `None` when there
    /// were none.
    pub(super) fn take_report(&mut self) -> Option<LongTurnReport> {
        let (longest, longest_steps, work) = self.longest.take()?;
        let report = LongTurnReport {
            turns: self.count,
            longest,
            steps: steps_text(&self.spent),
            longest_steps: steps_text(&longest_steps),
            longest_work: work,
        };
        *self = Self::default();
        Some(report)
    }
}

/// The long turns of a reporting period, for the log.
#[derive(Debug)]
pub(super) struct LongTurnReport {
    pub(super) turns: u64,
    pub(super) longest: Duration,
    /// The long turns' time by step, all of them together.
    pub(super) steps: String,
    /// The longest turn's time by step.
    pub(super) longest_steps: String,
    pub(super) longest_work: TurnWork,
}

/// `events 1.2 ms, feed 0.4 ms, ...`: the steps that took any time.
fn steps_text(spent: &[Duration; STEPS]) -> String {
    let mut out = String::new();
    for (name, d) in STEP_NAMES.iter().zip(spent) {
        if d.is_zero() {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{name} {:.1} ms", d.as_secs_f64() * 1e3);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn only_long_turns_are_reported_with_where_their_time_went() {
        let mut long = LongTurns::default();
        long.note(
            ms(5),
            &[ms(1), ms(1), ms(1), ms(2), ms(0)],
            TurnWork::default(),
        );
        assert!(long.take_report().is_none(), "a short turn is not reported");
        long.note(
            ms(30),
            &[ms(1), ms(2), ms(3), ms(24), ms(0)],
            TurnWork::default(),
        );
        let work = TurnWork {
            changes: 90,
            served: 40,
            deferred: 7,
        };
        long.note(ms(40), &[ms(30), ms(2), ms(3), ms(5), ms(0)], work);
        long.note(
            ms(24),
            &[ms(20), ms(1), ms(1), ms(2), ms(0)],
            TurnWork::default(),
        );
        let r = long.take_report().expect("two long turns");
        assert_eq!(r.turns, 2);
        assert_eq!(r.longest, ms(40));
        assert_eq!(r.longest_work.changes, 90);
        assert_eq!(r.longest_work.deferred, 7);
        assert_eq!(
            r.steps,
            "events 31.0 ms, feed 4.0 ms, wake 6.0 ms, conns 29.0 ms"
        );
        assert_eq!(
            r.longest_steps,
            "events 30.0 ms, feed 2.0 ms, wake 3.0 ms, conns 5.0 ms"
        );
        assert!(long.take_report().is_none(), "each turn is reported once");
    }

    #[test]
    fn a_clock_gives_each_step_the_time_since_the_last_mark() {
        let mut clock = TurnClock::start();
        std::thread::sleep(ms(2));
        clock.mark(Step::Feed);
        clock.mark(Step::Conns);
        assert!(clock.spent[Step::Feed as usize] >= ms(2));
        assert_eq!(clock.spent[Step::Events as usize], Duration::ZERO);
        assert_eq!(clock.total(), clock.spent.iter().sum::<Duration>());
    }
}
