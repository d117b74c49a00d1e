//! The settings lqd knows, asked of lqd's own configuration type rather than listed by hand.
//!
//! [`lqd::config::Config`] and its tables refuse unknown keys (`deny_unknown_fields`), and
//! serde's refusal lists the keys that are known. So a key that is surely unknown, put at the
//! top level and inside each table, makes lqd's deserializer name every setting it has: a key
//! added to the code is found here the moment it exists, and the example configuration's
//! test fails until the key is documented there.

use std::collections::BTreeMap;

use lqd::config::Config;

/// A key no setting will ever have.
const PROBE: &str = "zz_probe_not_a_setting";

/// lqd's settings: the top-level keys (under `""`), and each table's keys under its name.
///
/// A top-level key that is a table (`tls`, `requestor`) is listed at the top level and has
/// an entry of its own.
pub fn known() -> Result<BTreeMap<String, Vec<String>>, String> {
    let top = refused_fields(&format!("{PROBE} = 1\n"))
        .ok_or_else(|| "lqd's configuration accepted an unknown top-level key".to_owned())?;
    let mut keys = BTreeMap::new();
    for key in &top {
        // A table refuses the probe with its own list; a plain value refuses the table.
        let inside = refused_fields(&format!("[{key}]\n{PROBE} = 1\n"))
            .or_else(|| refused_fields(&format!("[[{key}]]\n{PROBE} = 1\n")));
        if let Some(fields) = inside {
            keys.insert(key.clone(), fields);
        }
    }
    keys.insert(String::new(), top);
    Ok(keys)
}

/// The known fields serde lists when it refuses [`PROBE`] in `text`; `None` when the text
/// fails otherwise (or parses).
fn refused_fields(text: &str) -> Option<Vec<String>> {
    let error = toml::from_str::<Config>(text).err()?;
    let message = error.message();
    let (_, expected) = message
        .strip_prefix(&format!("unknown field `{PROBE}`"))?
        .split_once("expected")?;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_and_their_keys_are_found() {
        let keys = known().unwrap();
        let top = &keys[""];
        for key in [
            "listen",
            "source",
            "state_dir",
            "journal_size",
            "requestor",
            "tls",
        ] {
            assert!(top.iter().any(|k| k == key), "{key} in {top:?}");
        }
        assert!(keys["tls"].iter().any(|k| k == "handshake_timeout"));
        assert!(keys["requestor"].iter().any(|k| k == "query_types"));
        assert!(keys["link"].iter().any(|k| k == "pd_pools"));
        assert!(keys["demo"].iter().any(|k| k == "clients"));
        assert!(!keys.contains_key("listen"), "a value is not a table");
    }
}
