//! The shipped example configuration, `contrib/lqd.toml`: read as a document, not only as
//! TOML, because it is the single source of the settings' documentation. The Debian package
//! installs it as `/etc/lqd/lqd.toml`, and `lqd.toml(5)` is rendered from it.
//!
//! Its form, line by line:
//!
//! | line | meaning |
//! |---|---|
//! | `# text` or `#` | documentation; a block of them ends at a blank line or at the setting or table it documents |
//! | `key = value` | a setting the file sets |
//! | `#key = value` (no space after `#`) | a setting shown commented out: its built-in default, or an example where it is unset by default |
//! | `[table]`, `[[table]]`, or the same after `#` | a table; the settings after it belong to it |
//! | blank | ends a documentation block; one not followed by a setting or table is prose of its own |
//!
//! Every setting and table carries the documentation block right above it, with no blank line
//! between.

use std::fmt;

/// The path of the example configuration, from the workspace root.
pub const PATH: &str = "contrib/lqd.toml";

/// The example configuration's text, as built into this tool.
pub const TEXT: &str = include_str!("../../contrib/lqd.toml");

/// The example configuration, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The top-level settings first, then one section per table, in the file's order.
    pub sections: Vec<Section>,
}

/// The top-level settings, or one table and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The table (`None` for the top level).
    pub table: Option<Table>,
    /// Its documentation blocks and settings, in order.
    pub blocks: Vec<Block>,
}

/// A table's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table's key (`tls`, `requestor`).
    pub name: String,
    /// `[[name]]`: an array of tables, each entry an example.
    pub array: bool,
    /// The documentation block above the header.
    pub doc: String,
}

impl Table {
    /// The header as TOML writes it: `[tls]`, `[[requestor]]`.
    #[must_use]
    pub fn header(&self) -> String {
        if self.array {
            format!("[[{}]]", self.name)
        } else {
            format!("[{}]", self.name)
        }
    }
}

/// A piece of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A documentation block that documents no setting.
    Prose(String),
    /// A setting with its documentation.
    Setting(Setting),
}

/// One setting line and its documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key.
    pub key: String,
    /// The value as written (TOML).
    pub value: String,
    /// True when the file sets it; false when it is shown commented out.
    pub active: bool,
    /// The documentation block above it: lines joined by spaces, paragraphs by a blank
    /// line.
    pub doc: String,
    /// Its one-based line number.
    pub line: usize,
}

/// A line that fits none of the forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// One-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PATH}, line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

impl Example {
    /// Parses the example's text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut sections = vec![Section {
            table: None,
            blocks: Vec::new(),
        }];
        let mut doc: Vec<&str> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let trimmed = raw.trim_end();
            let current = sections.len() - 1;
            if trimmed.is_empty() {
                if !doc.is_empty() {
                    sections[current].blocks.push(Block::Prose(join(&doc)));
                    doc.clear();
                }
                continue;
            }
            let (commented, body) = match trimmed.strip_prefix('#') {
                Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                    doc.push(rest.strip_prefix(' ').unwrap_or(rest));
                    continue;
                }
                Some(rest) => (true, rest),
                None => (false, trimmed),
            };
            if let Some(table) = table_header(body) {
                let (name, array) = table.map_err(|reason| ParseError { line, reason })?;
                sections.push(Section {
                    table: Some(Table {
                        name,
                        array,
                        doc: join(&doc),
                    }),
                    blocks: Vec::new(),
                });
                doc.clear();
                continue;
            }
            let Some((key, value)) = body.split_once('=') else {
                return Err(ParseError {
                    line,
                    reason: format!(
                        "`{trimmed}` is neither documentation (`# text`), a setting \
                         (`key = value`, or `#key = value` shown commented out) nor a table"
                    ),
                });
            };
            let key = key.trim();
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(ParseError {
                    line,
                    reason: format!("`{key}` is not a setting's key"),
                });
            }
            sections[current].blocks.push(Block::Setting(Setting {
                key: key.to_owned(),
                value: value.trim().to_owned(),
                active: !commented,
                doc: join(&doc),
                line,
            }));
            doc.clear();
        }
        if !doc.is_empty() {
            let last = sections.len() - 1;
            sections[last].blocks.push(Block::Prose(join(&doc)));
        }
        Ok(Self { sections })
    }

    /// Every setting with the table it is in (`None` for the top level).
    pub fn settings(&self) -> impl Iterator<Item = (Option<&Table>, &Setting)> {
        self.sections.iter().flat_map(|s| {
            s.blocks.iter().filter_map(move |b| match b {
                Block::Setting(setting) => Some((s.table.as_ref(), setting)),
                Block::Prose(_) => None,
            })
        })
    }

    /// The tables, in order.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.sections.iter().filter_map(|s| s.table.as_ref())
    }

    /// The file as lqd reads it with every setting and table uncommented: each key set, to its
    /// default or example value.
    #[must_use]
    pub fn uncommented(&self) -> String {
        let mut out = String::new();
        for section in &self.sections {
            if let Some(table) = &section.table {
                out.push_str(&table.header());
                out.push('\n');
            }
            for (_, setting) in self.settings_of(section) {
                out.push_str(&format!("{} = {}\n", setting.key, setting.value));
            }
        }
        out
    }

    fn settings_of<'a>(
        &'a self,
        section: &'a Section,
    ) -> impl Iterator<Item = (Option<&'a Table>, &'a Setting)> {
        section.blocks.iter().filter_map(move |b| match b {
            Block::Setting(setting) => Some((section.table.as_ref(), setting)),
            Block::Prose(_) => None,
        })
    }
}

/// `Some(Ok((name, array)))` for a table header, `Some(Err(_))` for a malformed one, `None`
/// for anything else.
fn table_header(body: &str) -> Option<Result<(String, bool), String>> {
    let body = body.trim();
    if !body.starts_with('[') {
        return None;
    }
    let (inner, array) = match body.strip_prefix("[[").and_then(|b| b.strip_suffix("]]")) {
        Some(inner) => (inner, true),
        None => match body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            Some(inner) => (inner, false),
            None => return Some(Err(format!("`{body}` is not a table header"))),
        },
    };
    let name = inner.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Some(Err(format!("`{body}` is not a table of lqd's")));
    }
    Some(Ok((name.to_owned(), array)))
}

/// A documentation block's text: its lines joined by spaces, paragraphs (split by a bare `#`)
/// by a blank line.
fn join(lines: &[&str]) -> String {
    lines
        .split(|l| l.trim().is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_parse() {
        let text = "# Intro.\n#\n# Second.\n\n# Doc of a.\na = 1\n# Doc of b,\n# two lines.\n#b = \"x\"\n\n\
                    # A table.\n#[[t]]\n# Doc of c.\n#c = [1]\n";
        let example = Example::parse(text).unwrap();
        assert_eq!(example.sections.len(), 2);
        assert_eq!(
            example.sections[0].blocks[0],
            Block::Prose("Intro.\n\nSecond.".to_owned())
        );
        let settings: Vec<_> = example.settings().collect();
        assert_eq!(settings.len(), 3);
        assert_eq!(settings[0].1.key, "a");
        assert!(settings[0].1.active);
        assert_eq!(settings[1].1.doc, "Doc of b, two lines.");
        assert!(!settings[1].1.active);
        assert_eq!(settings[1].1.value, "\"x\"");
        let table = settings[2].0.unwrap();
        assert_eq!((table.name.as_str(), table.array), ("t", true));
        assert_eq!(table.doc, "A table.");
        assert_eq!(example.uncommented(), "a = 1\nb = \"x\"\n[[t]]\nc = [1]\n");
    }

    #[test]
    fn stray_lines_are_errors_with_their_line() {
        let e = Example::parse("# ok\n#not a setting\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Example::parse("#[tls\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(Example::parse("Key = 1\n").is_err());
    }
}
