//! lqd's build tasks, run with `cargo run -p xtask -- dist DIR`: the man pages and shell
//! completions the Debian package installs, generated from the sources they document.
//!
//! - [`man`]: `lqd(8)` and `lq(1)` (and a page per subcommand) from the clap definitions the
//!   binaries parse with (`lqd::config::Cli`, `lqd::requestor::cli::Cli`), and `lqd.toml(5)`
//!   from the example configuration;
//! - [`completions`]: bash and zsh completions, from the same clap definitions;
//! - [`example`]: the example configuration `contrib/lqd.toml` (installed as
//!   `/etc/lqd/lqd.toml`), the one place the settings are documented;
//! - [`keys`]: the settings lqd knows, asked of its configuration type, against which the
//!   example is checked (`xtask/tests/shipped_config.rs`).
//!
//! A separate crate, so that building lqd never compiles the generators.

pub mod completions;
pub mod example;
pub mod keys;
pub mod man;

use std::io;
use std::path::Path;

/// Writes every man page to `dir/man/` and every completion script to `dir/completions/`;
/// returns the files written.
pub fn dist(dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut written = Vec::new();
    let man_dir = dir.join("man");
    let completions_dir = dir.join("completions");
    for d in [&man_dir, &completions_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    for page in man::pages()? {
        let path = man_dir.join(&page.file);
        std::fs::write(&path, page.roff)?;
        written.push(path);
    }
    for script in completions::scripts() {
        let path = completions_dir.join(&script.file);
        std::fs::write(&path, script.text)?;
        written.push(path);
    }
    Ok(written)
}
