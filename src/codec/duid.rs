//! DUIDs: opaque byte strings compared byte for byte, with helpers for the four known types.

use core::fmt;

use super::code::DuidType;
use super::wire::{read_array, read_u16, read_u32};

/// A DHCP Unique Identifier, as opaque bytes (RFC 8415 §11).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duid<'a>(pub &'a [u8]);

/// The type-specific contents of a DUID, when its type is one of RFC 8415's four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuidKind<'a> {
    /// DUID-LLT (type 1).
    LinkLayerTime {
        /// `hardware type` (IANA ARP hardware type).
        hw_type: u16,
        /// `time`: seconds since 2000-01-01T00:00:00Z, modulo 2^32.
        time: u32,
        /// `link-layer address`.
        link_layer_address: &'a [u8],
    },
    /// DUID-EN (type 2).
    Enterprise {
        /// `enterprise-number`.
        enterprise_number: u32,
        /// `identifier`.
        identifier: &'a [u8],
    },
    /// DUID-LL (type 3).
    LinkLayer {
        /// `hardware type`.
        hw_type: u16,
        /// `link-layer address`.
        link_layer_address: &'a [u8],
    },
    /// DUID-UUID (type 4).
    Uuid([u8; 16]),
    /// Another type, or a known type whose body is too short for its fixed fields.
    Other {
        /// `DUID-type`.
        duid_type: DuidType,
        /// The bytes after the type.
        data: &'a [u8],
    },
}

impl<'a> Duid<'a> {
    /// The bytes of the DUID.
    #[must_use]
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// `DUID-type`, or `None` when the DUID is shorter than two octets.
    #[must_use]
    pub fn duid_type(&self) -> Option<DuidType> {
        read_u16(self.0, 0).ok().map(DuidType::from)
    }

    /// Decodes the type-specific fields. `None` when the DUID is shorter than two octets.
    #[must_use]
    pub fn kind(&self) -> Option<DuidKind<'a>> {
        let duid_type = self.duid_type()?;
        let data = self.0.get(2..).unwrap_or(&[]);
        let other = DuidKind::Other { duid_type, data };
        Some(match duid_type {
            DuidType::LinkLayerTime => {
                match (read_u16(data, 0), read_u32(data, 2), data.get(6..)) {
                    (Ok(hw_type), Ok(time), Some(link_layer_address)) => DuidKind::LinkLayerTime {
                        hw_type,
                        time,
                        link_layer_address,
                    },
                    _ => other,
                }
            }
            DuidType::Enterprise => match (read_u32(data, 0), data.get(4..)) {
                (Ok(enterprise_number), Some(identifier)) => DuidKind::Enterprise {
                    enterprise_number,
                    identifier,
                },
                _ => other,
            },
            DuidType::LinkLayer => match (read_u16(data, 0), data.get(2..)) {
                (Ok(hw_type), Some(link_layer_address)) => DuidKind::LinkLayer {
                    hw_type,
                    link_layer_address,
                },
                _ => other,
            },
            DuidType::Uuid if data.len() == 16 => match read_array::<16>(data, 0) {
                Ok(uuid) => DuidKind::Uuid(uuid),
                Err(_) => other,
            },
            _ => other,
        })
    }

    /// Writes a DUID-LL (type 3) into `out` and returns it as bytes: a helper for tests and
    /// configuration. Returns `None` when `out` is too small.
    pub fn write_link_layer<'b>(
        out: &'b mut [u8],
        hw_type: u16,
        link_layer_address: &[u8],
    ) -> Option<Duid<'b>> {
        let len = link_layer_address.len().checked_add(4)?;
        let dst = out.get_mut(..len)?;
        let (head, tail) = dst.split_at_mut(4);
        head.copy_from_slice(&[0, 3, (hw_type >> 8) as u8, hw_type as u8]);
        tail.copy_from_slice(link_layer_address);
        Some(Duid(dst))
    }
}

impl fmt::Debug for Duid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duid({self})")
    }
}

/// Colon-separated hex, the way DHCP servers print DUIDs (`00:03:00:01:...`).
impl fmt::Display for Duid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_four_types() {
        // digest §15: server DUID-LLT and requestor DUID-LL.
        let llt = [0, 1, 0, 1, 0x2f, 0x07, 0x7a, 0, 0, 0, 0, 0, 0xca, 0xfe];
        assert_eq!(
            Duid(&llt).kind(),
            Some(DuidKind::LinkLayerTime {
                hw_type: 1,
                time: 0x2f07_7a00,
                link_layer_address: &[0, 0, 0, 0, 0xca, 0xfe]
            })
        );
        let ll = [0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(
            Duid(&ll).kind(),
            Some(DuidKind::LinkLayer {
                hw_type: 1,
                link_layer_address: &ll[4..]
            })
        );
        let en = [0, 2, 0, 0, 0, 9, 1, 2, 3, 4, 5];
        assert_eq!(
            Duid(&en).kind(),
            Some(DuidKind::Enterprise {
                enterprise_number: 9,
                identifier: &[1, 2, 3, 4, 5]
            })
        );
        let mut uuid = vec![0, 4];
        uuid.extend(1..=16u8);
        assert!(matches!(Duid(&uuid).kind(), Some(DuidKind::Uuid(u)) if u[0] == 1 && u[15] == 16));
        assert_eq!(
            Duid(&[0, 4, 1]).kind(),
            Some(DuidKind::Other {
                duid_type: DuidType::Uuid,
                data: &[1]
            })
        );
        assert_eq!(
            Duid(&[0, 1, 0]).kind(),
            Some(DuidKind::Other {
                duid_type: DuidType::LinkLayerTime,
                data: &[0]
            })
        );
        assert_eq!(Duid(&[7]).kind(), None);
        assert_eq!(Duid(&ll).to_string(), "00:03:00:01:00:11:22:33:44:55");
    }

    #[test]
    fn writes_link_layer_duid() {
        let mut buf = [0u8; 16];
        let duid = Duid::write_link_layer(&mut buf, 1, &[0, 0x11, 0x22, 0x33, 0x44, 0x55]).unwrap();
        assert_eq!(
            duid.as_bytes(),
            &[0, 3, 0, 1, 0, 0x11, 0x22, 0x33, 0x44, 0x55]
        );
        assert!(Duid::write_link_layer(&mut [0u8; 5], 1, &[1, 2]).is_none());
    }
}
