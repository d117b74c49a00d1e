//! `cargo run -p xtask -- dist [DIR]`: writes lqd's man pages and shell completions to DIR
//! (default `target/dist`), for the Debian package (`debian/build-deb`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["dist"] | ["dist", _] => {
            let dir = args
                .get(1)
                .map_or_else(|| PathBuf::from("target/dist"), PathBuf::from);
            match xtask::dist(&dir) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("xtask: {}: {e}", dir.display());
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: cargo run -p xtask -- dist [DIR]\n  writes man/ (lqd.8, lq.1, \
                 lqd.toml.5, ...) and completions/ (bash, zsh) under DIR [default: target/dist]"
            );
            ExitCode::from(2)
        }
    }
}
