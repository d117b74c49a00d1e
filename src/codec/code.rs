//! Code points: message types, option codes, status codes, query types, DUID types.
//!
//! Each is an open enum: values this crate does not know are kept in an `Unknown` variant and
//! pass through parse and emit unchanged (decision D1 fixes the RFC 7653 numbers).

use core::fmt;

/// Declares an open enum over an integer: named variants plus `Unknown(n)` for everything else.
macro_rules! open_enum {
    (
        $(#[$attr:meta])*
        pub enum $name:ident($ty:ty) {
            $( $(#[$vattr:meta])* $variant:ident = $value:expr => $text:expr, )+
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vattr])* $variant, )+
            /// A value this crate has no name for, kept as it was on the wire.
            Unknown($ty),
        }

        impl From<$ty> for $name {
            #[inline]
            fn from(value: $ty) -> Self {
                match value {
                    $( $value => Self::$variant, )+
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            #[inline]
            fn from(value: $name) -> Self {
                match value {
                    $( $name::$variant => $value, )+
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// The wire value.
            #[must_use]
            #[inline]
            pub fn value(self) -> $ty {
                self.into()
            }

            /// The protocol name, or `None` for an unknown value.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($text), )+
                    Self::Unknown(_) => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(text) => f.write_str(text),
                    None => write!(f, "unknown({})", self.value()),
                }
            }
        }
    };
}

open_enum! {
    /// DHCPv6 message type (`msg-type`, one octet).
    pub enum MessageType(u8) {
        /// RELAY-FORW (RFC 8415).
        RelayForw = 12 => "RELAY-FORW",
        /// RELAY-REPL (RFC 8415).
        RelayRepl = 13 => "RELAY-REPL",
        /// LEASEQUERY (RFC 5007).
        Leasequery = 14 => "LEASEQUERY",
        /// LEASEQUERY-REPLY (RFC 5007).
        LeasequeryReply = 15 => "LEASEQUERY-REPLY",
        /// LEASEQUERY-DONE (RFC 5460).
        LeasequeryDone = 16 => "LEASEQUERY-DONE",
        /// LEASEQUERY-DATA (RFC 5460).
        LeasequeryData = 17 => "LEASEQUERY-DATA",
        /// ACTIVELEASEQUERY (RFC 7653).
        ActiveLeasequery = 22 => "ACTIVELEASEQUERY",
        /// STARTTLS (RFC 7653).
        StartTls = 23 => "STARTTLS",
    }
}

impl MessageType {
    /// True for RELAY-FORW and RELAY-REPL, which use the 34-octet relay header.
    #[must_use]
    #[inline]
    pub const fn is_relay(self) -> bool {
        matches!(self, Self::RelayForw | Self::RelayRepl)
    }
}

open_enum! {
    /// DHCPv6 option code (`option-code`, two octets).
    pub enum OptionCode(u16) {
        /// OPTION_CLIENTID.
        ClientId = 1 => "OPTION_CLIENTID",
        /// OPTION_SERVERID.
        ServerId = 2 => "OPTION_SERVERID",
        /// OPTION_IA_NA.
        IaNa = 3 => "OPTION_IA_NA",
        /// OPTION_IAADDR.
        IaAddr = 5 => "OPTION_IAADDR",
        /// OPTION_ORO.
        Oro = 6 => "OPTION_ORO",
        /// OPTION_RELAY_MSG.
        RelayMsg = 9 => "OPTION_RELAY_MSG",
        /// OPTION_STATUS_CODE.
        StatusCode = 13 => "OPTION_STATUS_CODE",
        /// OPTION_INTERFACE_ID.
        InterfaceId = 18 => "OPTION_INTERFACE_ID",
        /// OPTION_IA_PD.
        IaPd = 25 => "OPTION_IA_PD",
        /// OPTION_IAPREFIX.
        IaPrefix = 26 => "OPTION_IAPREFIX",
        /// OPTION_REMOTE_ID (RFC 4649).
        RemoteId = 37 => "OPTION_REMOTE_ID",
        /// OPTION_LQ_QUERY (RFC 5007).
        LqQuery = 44 => "OPTION_LQ_QUERY",
        /// OPTION_CLIENT_DATA (RFC 5007).
        ClientData = 45 => "OPTION_CLIENT_DATA",
        /// OPTION_CLT_TIME (RFC 5007).
        CltTime = 46 => "OPTION_CLT_TIME",
        /// OPTION_LQ_RELAY_DATA (RFC 5007).
        LqRelayData = 47 => "OPTION_LQ_RELAY_DATA",
        /// OPTION_LQ_CLIENT_LINK (RFC 5007).
        LqClientLink = 48 => "OPTION_LQ_CLIENT_LINK",
        /// OPTION_RELAY_ID (RFC 5460).
        RelayId = 53 => "OPTION_RELAY_ID",
        /// OPTION_LQ_BASE_TIME (RFC 7653).
        LqBaseTime = 100 => "OPTION_LQ_BASE_TIME",
        /// OPTION_LQ_START_TIME (RFC 7653).
        LqStartTime = 101 => "OPTION_LQ_START_TIME",
        /// OPTION_LQ_END_TIME (RFC 7653).
        LqEndTime = 102 => "OPTION_LQ_END_TIME",
    }
}

open_enum! {
    /// DHCPv6 status code (OPTION_STATUS_CODE `status-code`, two octets).
    pub enum Status(u16) {
        /// Success; the same as an absent status option.
        Success = 0 => "Success",
        /// UnspecFail.
        UnspecFail = 1 => "UnspecFail",
        /// NoAddrsAvail.
        NoAddrsAvail = 2 => "NoAddrsAvail",
        /// NoBinding.
        NoBinding = 3 => "NoBinding",
        /// NotOnLink.
        NotOnLink = 4 => "NotOnLink",
        /// UseMulticast.
        UseMulticast = 5 => "UseMulticast",
        /// NoPrefixAvail.
        NoPrefixAvail = 6 => "NoPrefixAvail",
        /// UnknownQueryType (RFC 5007).
        UnknownQueryType = 7 => "UnknownQueryType",
        /// MalformedQuery (RFC 5007).
        MalformedQuery = 8 => "MalformedQuery",
        /// NotConfigured (RFC 5007).
        NotConfigured = 9 => "NotConfigured",
        /// NotAllowed (RFC 5007).
        NotAllowed = 10 => "NotAllowed",
        /// QueryTerminated (RFC 5460).
        QueryTerminated = 11 => "QueryTerminated",
        /// DataMissing (RFC 7653).
        DataMissing = 12 => "DataMissing",
        /// CatchUpComplete (RFC 7653).
        CatchUpComplete = 13 => "CatchUpComplete",
        /// NotSupported (RFC 7653).
        NotSupported = 14 => "NotSupported",
        /// TLSConnectionRefused (RFC 7653).
        TlsConnectionRefused = 15 => "TLSConnectionRefused",
    }
}

open_enum! {
    /// OPTION_LQ_QUERY `query-type` (one octet).
    pub enum QueryType(u8) {
        /// QUERY_BY_ADDRESS (RFC 5007).
        ByAddress = 1 => "QUERY_BY_ADDRESS",
        /// QUERY_BY_CLIENTID (RFC 5007).
        ByClientId = 2 => "QUERY_BY_CLIENTID",
        /// QUERY_BY_RELAY_ID (RFC 5460).
        ByRelayId = 3 => "QUERY_BY_RELAY_ID",
        /// QUERY_BY_LINK_ADDRESS (RFC 5460).
        ByLinkAddress = 4 => "QUERY_BY_LINK_ADDRESS",
        /// QUERY_BY_REMOTE_ID (RFC 5460).
        ByRemoteId = 5 => "QUERY_BY_REMOTE_ID",
    }
}

open_enum! {
    /// DUID type (the first two octets of a DUID).
    pub enum DuidType(u16) {
        /// DUID-LLT: link-layer address plus time.
        LinkLayerTime = 1 => "DUID-LLT",
        /// DUID-EN: enterprise number plus identifier.
        Enterprise = 2 => "DUID-EN",
        /// DUID-LL: link-layer address.
        LinkLayer = 3 => "DUID-LL",
        /// DUID-UUID: a 16-octet UUID.
        Uuid = 4 => "DUID-UUID",
    }
}

/// A transaction id: 24 bits, unique per connection (not globally).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Xid(u32);

impl Xid {
    /// The largest transaction id, 2^24 - 1.
    pub const MAX: Self = Self(0x00FF_FFFF);

    /// A transaction id from the low 24 bits of `value` (higher bits are dropped).
    #[must_use]
    pub const fn new(value: u32) -> Self {
        Self(value & 0x00FF_FFFF)
    }

    /// The 24-bit value.
    #[must_use]
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The three wire octets, big-endian.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }

    /// From the three wire octets, big-endian.
    #[must_use]
    pub const fn from_bytes(b: [u8; 3]) -> Self {
        Self(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06x}", self.0)
    }
}

/// A server-context absolute time: seconds since 2000-01-01T00:00:00Z as an unsigned 32-bit
/// count (OPTION_LQ_BASE_TIME, OPTION_LQ_START_TIME, OPTION_LQ_END_TIME; RFC 7653).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServerTime(pub u32);

impl ServerTime {
    /// Seconds between the Unix epoch and 2000-01-01T00:00:00Z.
    pub const UNIX_OFFSET: u64 = 946_684_800;

    /// From Unix seconds. Times before 2000 clamp to 0; times past 2136 wrap modulo 2^32.
    #[must_use]
    pub const fn from_unix(unix: u64) -> Self {
        Self(unix.saturating_sub(Self::UNIX_OFFSET) as u32)
    }

    /// To Unix seconds (no wrap handling: valid until 2136).
    #[must_use]
    pub const fn to_unix(self) -> u64 {
        (self.0 as u64).saturating_add(Self::UNIX_OFFSET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_enums_round_trip_known_and_unknown() {
        for v in 0..=u8::MAX {
            assert_eq!(MessageType::from(v).value(), v);
            assert_eq!(QueryType::from(v).value(), v);
        }
        for v in 0..=300u16 {
            assert_eq!(OptionCode::from(v).value(), v);
            assert_eq!(Status::from(v).value(), v);
            assert_eq!(DuidType::from(v).value(), v);
        }
        assert_eq!(MessageType::from(22), MessageType::ActiveLeasequery);
        assert_eq!(MessageType::from(23), MessageType::StartTls);
        assert_eq!(Status::from(15), Status::TlsConnectionRefused);
        assert_eq!(Status::from(16), Status::Unknown(16));
        assert_eq!(QueryType::from(6), QueryType::Unknown(6));
        assert_eq!(OptionCode::from(102).to_string(), "OPTION_LQ_END_TIME");
        assert_eq!(Status::Unknown(99).to_string(), "unknown(99)");
    }

    #[test]
    fn xid_is_24_bits() {
        assert_eq!(Xid::new(0xFF12_3456).value(), 0x12_3456);
        assert_eq!(Xid::new(0x12_3456).to_bytes(), [0x12, 0x34, 0x56]);
        assert_eq!(Xid::from_bytes([0xab, 0xcd, 0xef]), Xid::new(0xabcdef));
    }

    #[test]
    fn server_time_epoch_is_2000() {
        // digest §15: 2025-01-01T00:00:00Z is 789004800.
        assert_eq!(
            ServerTime::from_unix(1_735_689_600),
            ServerTime(789_004_800)
        );
        assert_eq!(ServerTime(789_004_800).to_unix(), 1_735_689_600);
        assert_eq!(ServerTime::from_unix(0), ServerTime(0));
    }
}
