//! The codec's error type: small, `Copy`, with a human-readable reason.

use core::fmt;

/// What went wrong while parsing or emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ends before a header or a declared length is complete.
    Truncated,
    /// A fixed-size option has the wrong length, or a length is not a multiple of the item size.
    BadLength,
    /// A nested option list, or a message, does not fill its container exactly.
    TrailingBytes,
    /// A field holds a value the protocol forbids (for example a prefix length above 128).
    BadValue,
    /// Options or relay messages are nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    TooDeep,
    /// A message is shorter than its fixed header.
    TooShort,
    /// A TCP frame declares a length above the decoder's limit.
    FrameTooLong,
    /// An emitted option or message would exceed 65535 octets.
    TooLong,
    /// The caller's output buffer is smaller than [`buffer_len`](super::MessageRepr::buffer_len).
    BufferTooSmall,
    /// A relay header was given a client/server message type, or the reverse.
    HeaderMismatch,
}

impl ErrorKind {
    /// A short, human-readable reason, for log lines.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadLength => "bad option length",
            Self::TrailingBytes => "option list does not fill its container",
            Self::BadValue => "invalid field value",
            Self::TooDeep => "nested too deep",
            Self::TooShort => "message shorter than its header",
            Self::FrameTooLong => "frame longer than allowed",
            Self::TooLong => "longer than 65535 octets",
            Self::BufferTooSmall => "output buffer too small",
            Self::HeaderMismatch => "message type does not match header format",
        }
    }
}

/// A codec error: what went wrong, and in which option (0 when at message level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error {
    kind: ErrorKind,
    option: u16,
}

impl Error {
    /// An error at message level.
    #[must_use]
    pub const fn new(kind: ErrorKind) -> Self {
        Self { kind, option: 0 }
    }

    /// An error inside the option with this code.
    #[must_use]
    pub const fn in_option(kind: ErrorKind, option: u16) -> Self {
        Self { kind, option }
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(self) -> ErrorKind {
        self.kind
    }

    /// The code of the innermost option being parsed, or `None` at message level.
    #[must_use]
    pub const fn option(self) -> Option<u16> {
        if self.option == 0 {
            None
        } else {
            Some(self.option)
        }
    }

    /// A short, human-readable reason, for log lines.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        self.kind.reason()
    }

    /// Attach an option code unless a more specific (inner) one is already known.
    pub(crate) const fn within(self, option: u16) -> Self {
        if self.option == 0 {
            Self {
                kind: self.kind,
                option,
            }
        } else {
            self
        }
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self::new(kind)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.option() {
            Some(code) => write!(f, "{} in option {code}", self.kind.reason()),
            None => f.write_str(self.kind.reason()),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for codec results.
pub type Result<T> = core::result::Result<T, Error>;
