//! A progress bar on stderr while a run goes on (indicatif), hidden when stderr is not a
//! terminal; log lines go above it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar, shared by every run of an invocation.
pub(crate) struct Progress {
    bar: ProgressBar,
    visible: bool,
}

impl Progress {
    /// A bar on stderr, or a hidden one.
    pub(crate) fn new() -> Self {
        let visible = std::io::stderr().is_terminal();
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>28} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar, visible }
    }

    /// Starts a stage: `label` on the left, `total` units to go.
    pub(crate) fn stage(&self, label: &str, total: u64) {
        self.bar.set_prefix(label.to_owned());
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.reset_elapsed();
    }

    /// Units done so far.
    pub(crate) fn set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// A log line on stderr, above the bar.
    pub(crate) fn println(&self, line: &str) {
        if self.visible {
            self.bar.println(line);
        } else {
            eprintln!("{line}");
        }
    }
}

impl Progress {
    /// Removes the bar (before the report is printed).
    pub(crate) fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
