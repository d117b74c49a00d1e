//! The man pages: `lqd(8)` and `lq(1)` (with a page per subcommand, as git has) from the clap
//! definitions the binaries parse with, and `lqd.toml(5)` from the example configuration.
//! Nothing in them is written twice, so they cannot drift from the programs.

use std::io;

use clap::CommandFactory;
use clap_mangen::Man;
use roff::{Roff, bold, roman};

use crate::example::{Block, Example, Section, Setting};

/// One generated page: its file name (`lqd.8`) and roff source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The file name: command, dot, section.
    pub file: String,
    /// The page, in roff (man macros).
    pub roff: String,
}

/// The manual every page belongs to (the centre of the footer).
const MANUAL: &str = "lqd manual";

/// A section of our own, after clap's: a heading and paragraphs, or preformatted lines.
struct Extra {
    heading: &'static str,
    body: Body,
}

enum Body {
    /// Paragraphs of running text.
    Paragraphs(&'static [&'static str]),
    /// Tagged paragraphs: a term in bold, then its text.
    Terms(&'static [(&'static str, &'static str)]),
    /// Lines kept as they are.
    Preformatted(String),
    /// One line of running text.
    Line(String),
}

const LQD_FILES: &[(&str, &str)] = &[
    (
        "/etc/lqd/lqd.toml",
        "The configuration the packaged service reads (lqd.toml(5)); loopback only and no \
         source as installed.",
    ),
    (
        "/var/lib/lqd/lqd-journal",
        "The change journal Active requestors catch up from (journal_file, journal_size).",
    ),
    (
        "/var/lib/lqd/lqd-server-duid",
        "The server DUID lqd generated on its first start (duid_file), unless server_duid is set.",
    ),
    (
        "/usr/lib/systemd/system/lqd.service",
        "The systemd unit: user _lqd, CAP_NET_BIND_SERVICE for port 547, reload by SIGHUP.",
    ),
];

const LQD_SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT",
        "Stop: running queries end with LEASEQUERY-DONE QueryTerminated, the journal is \
         written, and lqd exits 0.",
    ),
    (
        "SIGHUP",
        "Read again what can change while lqd runs (systemctl reload lqd).",
    ),
];

const LQD_ENVIRONMENT: &[(&str, &str)] = &[
    (
        "LQD_KEA_CONFIG",
        "Kea's DHCPv6 configuration, whose subnets the kea-csv source reads (default \
         /etc/kea/kea-dhcp6.conf).",
    ),
    (
        "NOTIFY_SOCKET",
        "Set by systemd for a Type=notify service: lqd reports READY=1 once it listens and \
         its journal is open, and STOPPING=1 when it stops.",
    ),
];

const LQD_SEE_ALSO: &[&str] = &["lqd.toml(5), lq(1), systemctl(1), journalctl(1)"];

const LQ_SEE_ALSO: &[&str] = &["lq-query(1), lq-bulk(1), lq-watch(1), lqd(8), lqd.toml(5)"];

/// Every page, ready to be written to `man/`.
pub fn pages() -> io::Result<Vec<Page>> {
    let mut out = Vec::new();
    let lqd = lqd::config::Cli::command();
    command_pages(
        lqd,
        "8",
        &[
            Extra {
                heading: "FILES",
                body: Body::Terms(LQD_FILES),
            },
            Extra {
                heading: "SIGNALS",
                body: Body::Terms(LQD_SIGNALS),
            },
            Extra {
                heading: "ENVIRONMENT",
                body: Body::Terms(LQD_ENVIRONMENT),
            },
            Extra {
                heading: "SEE ALSO",
                body: Body::Paragraphs(LQD_SEE_ALSO),
            },
        ],
        &mut out,
    )?;
    let lq = lqd::requestor::cli::Cli::command();
    command_pages(
        lq,
        "1",
        &[Extra {
            heading: "SEE ALSO",
            body: Body::Paragraphs(LQ_SEE_ALSO),
        }],
        &mut out,
    )?;
    out.push(config_page(
        &Example::parse(crate::example::TEXT).map_err(io::Error::other)?,
    ));
    Ok(out)
}

/// The page of `cmd` and of each of its subcommands, in `section`; `extra` sections end the
/// top command's page.
fn command_pages(
    cmd: clap::Command,
    section: &str,
    extra: &[Extra],
    out: &mut Vec<Page>,
) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    command_page(&cmd, section, extra, out)
}

fn command_page(
    cmd: &clap::Command,
    section: &str,
    extra: &[Extra],
    out: &mut Vec<Page>,
) -> io::Result<()> {
    let man = Man::new(cmd.clone())
        .section(section)
        .manual(MANUAL)
        .source(format!("lqd {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut buf)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut buf)?;
    }
    // After-help text is aligned in columns (examples, exit codes): keep its lines.
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        let text = after.to_string();
        let (heading, body) = match text.split_once(":\n") {
            Some((title, rest)) if !title.contains('\n') => (title.to_uppercase(), rest),
            _ => ("NOTES".to_owned(), text.as_str()),
        };
        let heading = if heading == "EXIT CODES" {
            "EXIT STATUS".to_owned()
        } else {
            heading
        };
        render_extra(
            &mut buf,
            &heading,
            &Body::Preformatted(body.trim_end().to_owned()),
        )?;
    }
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    if extra.is_empty() {
        // A subcommand's page points at its command's.
        let parent = name.rsplit_once('-').map_or(name, |(p, _)| p);
        render_extra(
            &mut buf,
            "SEE ALSO",
            &Body::Line(format!("{parent}({section})")),
        )?;
    }
    for e in extra {
        render_extra(&mut buf, e.heading, &e.body)?;
    }
    out.push(Page {
        file: format!("{name}.{section}"),
        roff: String::from_utf8(buf).map_err(io::Error::other)?,
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_page(sub, section, &[], out)?;
    }
    Ok(())
}

fn render_extra(buf: &mut Vec<u8>, heading: &str, body: &Body) -> io::Result<()> {
    let mut roff = Roff::new();
    roff.control("SH", [heading]);
    match body {
        Body::Paragraphs(paragraphs) => {
            for (i, p) in paragraphs.iter().enumerate() {
                if i > 0 {
                    roff.control("PP", []);
                }
                roff.text([roman(*p)]);
            }
        }
        Body::Terms(terms) => {
            for (term, text) in *terms {
                roff.control("TP", []);
                roff.text([bold(*term)]);
                roff.text([roman(*text)]);
            }
        }
        Body::Line(text) => {
            roff.text([roman(text.as_str())]);
        }
        Body::Preformatted(text) => {
            roff.control("nf", []);
            for line in text.lines() {
                roff.text([roman(line)]);
            }
            roff.control("fi", []);
        }
    }
    roff.to_writer(buf)
}

/// `lqd.toml(5)`: the example configuration's documentation, section by section.
#[must_use]
pub fn config_page(example: &Example) -> Page {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "LQD.TOML",
            "5",
            "",
            &format!("lqd {}", env!("CARGO_PKG_VERSION")),
            MANUAL,
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman(
        "lqd.toml - configuration of lqd, the DHCPv6 leasequery server",
    )]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([bold("/etc/lqd/lqd.toml")]);
    for (i, section) in example.sections.iter().enumerate() {
        config_section(&mut roff, section, i == 0);
    }
    roff.control("SH", ["FILES"]);
    roff.control("TP", []);
    roff.text([bold("/etc/lqd/lqd.toml")]);
    roff.text([roman(
        "The packaged service's configuration, installed from the example this page is made \
         of: every setting is in it, commented out where it shows the default.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman("lqd(8), lq(1)")]);
    Page {
        file: "lqd.toml.5".to_owned(),
        roff: roff.render(),
    }
}

fn config_section(roff: &mut Roff, section: &Section, top: bool) {
    let mut blocks = section.blocks.iter().peekable();
    if top {
        // The file's opening prose describes the file.
        roff.control("SH", ["DESCRIPTION"]);
        let mut first = true;
        while let Some(Block::Prose(p)) = blocks.peek() {
            for paragraph in p.split("\n\n") {
                if !first {
                    roff.control("PP", []);
                }
                roff.text([roman(paragraph)]);
                first = false;
            }
            blocks.next();
        }
        roff.control("SH", ["SETTINGS"]);
    }
    if let Some(table) = &section.table {
        let heading = if table.array {
            format!("{} TABLES", table.header())
        } else {
            format!("THE {} TABLE", table.header())
        };
        roff.control("SH", [heading.as_str()]);
        paragraphs(roff, &table.doc, "PP");
    }
    for block in blocks {
        match block {
            Block::Prose(p) => {
                roff.control("PP", []);
                paragraphs(roff, p, "PP");
            }
            Block::Setting(s) => setting(roff, s),
        }
    }
}

fn setting(roff: &mut Roff, s: &Setting) {
    roff.control("TP", []);
    roff.text([bold(s.key.as_str()), roman(format!(" = {}", s.value))]);
    if s.active {
        paragraphs(roff, &format!("{} (Set as shipped.)", s.doc), "IP");
    } else {
        paragraphs(roff, &s.doc, "IP");
    }
}

/// `doc`'s paragraphs, each after the first opened by the macro `next` (`PP` in running text,
/// `IP` inside a tagged paragraph).
fn paragraphs(roff: &mut Roff, doc: &str, next: &str) {
    for (i, paragraph) in doc.split("\n\n").enumerate() {
        if i > 0 {
            roff.control(next, []);
        }
        roff.text([roman(paragraph)]);
    }
}
