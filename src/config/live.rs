//! Which settings change while lqd runs (decision D31): on SIGHUP lqd reads its file again,
//! applies the flags over it as at start, and takes every setting but those listed in
//! [`RESTART_ONLY`], which it reports and keeps. `kea_config` names the file the `kea-csv`
//! source reads its subnet ids from at start, so a new path takes a restart; the file itself is
//! read again for its links (D30). `log_format` is the shape of the log the process set up at
//! start; the log filter (`log`) changes live.

use super::Config;

/// The settings lqd reads only at start: its sockets, its files, and its source. A reload that
/// changes one says so in the log ("needs a restart") and keeps the running value.
pub const RESTART_ONLY: [&str; 13] = [
    "listen",
    "source",
    "state_dir",
    "server_duid",
    "duid_file",
    "journal_file",
    "journal_size",
    "journal_flush",
    "catch_up_window",
    "udp_receive_buffer",
    "demo",
    "kea_config",
    "log_format",
];

impl Config {
    /// The settings of [`RESTART_ONLY`] whose value in `new` differs from this running one.
    #[must_use]
    pub fn restart_only_changes(&self, new: &Self) -> Vec<&'static str> {
        let differ = [
            self.listen != new.listen,
            self.source != new.source,
            self.state_dir != new.state_dir,
            self.server_duid != new.server_duid,
            self.duid_file != new.duid_file,
            self.journal_file != new.journal_file,
            self.journal_size != new.journal_size,
            self.journal_flush != new.journal_flush,
            self.catch_up_window != new.catch_up_window,
            self.udp_receive_buffer != new.udp_receive_buffer,
            self.demo != new.demo,
            self.kea_config != new.kea_config,
            self.log_format != new.log_format,
        ];
        RESTART_ONLY
            .iter()
            .zip(differ)
            .filter_map(|(key, d)| d.then_some(*key))
            .collect()
    }

    /// Takes the running values of the [`RESTART_ONLY`] settings from `running`: what lqd
    /// runs with after a reload.
    pub fn keep_restart_only(&mut self, running: &Self) {
        self.listen.clone_from(&running.listen);
        self.source.clone_from(&running.source);
        self.state_dir.clone_from(&running.state_dir);
        self.server_duid.clone_from(&running.server_duid);
        self.duid_file.clone_from(&running.duid_file);
        self.journal_file.clone_from(&running.journal_file);
        self.journal_size = running.journal_size;
        self.journal_flush = running.journal_flush;
        self.catch_up_window = running.catch_up_window;
        self.udp_receive_buffer = running.udp_receive_buffer;
        self.demo = running.demo;
        self.kea_config.clone_from(&running.kea_config);
        self.log_format = running.log_format;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogFormat;

    #[test]
    fn every_restart_only_setting_is_reported_and_kept() {
        let running = Config::default();
        let mut new = Config {
            log_format: LogFormat::Json,
            journal_size: running.journal_size * 2,
            log: "debug".to_owned(),
            ..Config::default()
        };
        assert_eq!(
            running.restart_only_changes(&new),
            ["journal_size", "log_format"]
        );
        new.keep_restart_only(&running);
        assert_eq!(new.log_format, LogFormat::Text);
        assert_eq!(new.journal_size, running.journal_size);
        // A live setting keeps its new value.
        assert_eq!(new.log, "debug");
        assert!(running.restart_only_changes(&new).is_empty());
    }
}
