//! The server's DUID: generated once and kept in a file, so requestors see the same server
//! across restarts.

use std::fs;
use std::io;
use std::path::Path;

use rand::RngCore;

/// Reads the DUID (hex, one line) from `path`, or makes a DUID-UUID (RFC 6355) and writes it
/// there first.
pub fn load_or_create(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let hex: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
            let bytes =
                hex::decode(&hex).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if bytes.len() < 3 || bytes.len() > 130 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a DUID (3 to 130 octets)",
                ));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut uuid = [0u8; 16];
            rand::thread_rng().fill_bytes(&mut uuid);
            // Version 4, variant 1 (RFC 4122), as DUID-UUID asks.
            uuid[6] = (uuid[6] & 0x0f) | 0x40;
            uuid[8] = (uuid[8] & 0x3f) | 0x80;
            let mut duid = vec![0, 4];
            duid.extend_from_slice(&uuid);
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, format!("{}\n", hex::encode(&duid)))?;
            fs::rename(&tmp, path)?;
            Ok(duid)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_kept() {
        let dir = std::env::temp_dir().join(format!("lqd-duid-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("duid");
        let _ = fs::remove_file(&path);
        let first = load_or_create(&path).unwrap();
        assert_eq!(first.len(), 18);
        assert_eq!(&first[..2], &[0, 4]);
        assert_eq!(load_or_create(&path).unwrap(), first);
        fs::write(&path, "zz").unwrap();
        assert!(load_or_create(&path).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
