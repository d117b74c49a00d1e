//! Lists that are either validated wire bytes or caller-owned typed items.
//!
//! Parsing never allocates: a parsed list keeps the validated wire bytes and decodes its items
//! lazily while iterating. A list built for emission borrows a slice of typed items. Both forms
//! compare equal when they hold the same items in the same order.

use core::fmt;
use core::net::Ipv6Addr;

use super::error::{Error, ErrorKind, Result};
use super::{Ctx, Writer};

/// An element of a [`List`]: how one item is checked, decoded and emitted.
///
/// Checking and decoding are separate on purpose: a list is validated once, when its message is
/// parsed, without building any item; iteration then decodes each item straight from bytes
/// known to be valid.
pub trait Item<'a>: Copy + PartialEq + fmt::Debug + Sized + 'a {
    /// The octets every item takes, for items of one fixed size; 0 when items vary.
    const FIXED_LEN: usize = 0;

    /// Validates one item at the start of `buf` (and everything nested in it); returns the
    /// bytes after it.
    #[doc(hidden)]
    fn check_item(buf: &'a [u8], ctx: Ctx) -> Result<&'a [u8]>;
    /// Decodes one item from the start of bytes that [`check_item`](Self::check_item)
    /// accepted, and advances `buf` past it. `None` ends iteration.
    #[doc(hidden)]
    fn decode_item(buf: &mut &'a [u8]) -> Option<Self>;
    /// The octets this item takes on the wire.
    fn item_len(&self) -> usize;
    /// Writes this item.
    #[doc(hidden)]
    fn emit_item(&self, w: &mut Writer<'_>) -> Result<()>;
}

#[derive(Clone, Copy)]
enum Inner<'a, T> {
    Wire(&'a [u8]),
    Items(&'a [T]),
}

/// A list of items: validated wire bytes (from parsing) or a borrowed slice (for emitting).
#[derive(Clone, Copy)]
pub struct List<'a, T> {
    inner: Inner<'a, T>,
}

/// A list of options: a message's options or the nested options of a container option.
pub type Options<'a> = List<'a, super::DhcpOption<'a>>;
/// A list of option codes (OPTION_ORO).
pub type CodeList<'a> = List<'a, u16>;
/// A list of IPv6 addresses (OPTION_LQ_CLIENT_LINK).
pub type AddrList<'a> = List<'a, Ipv6Addr>;

impl<'a, T: Item<'a>> List<'a, T> {
    /// An empty list.
    pub const EMPTY: Self = Self {
        inner: Inner::Items(&[]),
    };

    /// Parses and validates a complete list: every item must parse and the items must fill
    /// `buf` exactly.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        Self::check(buf, Ctx::TOP)?;
        Ok(Self::trusted(buf))
    }

    /// Validates every item of a list held in `buf`.
    #[inline]
    pub(crate) fn check(buf: &'a [u8], ctx: Ctx) -> Result<()> {
        let mut rest = buf;
        while !rest.is_empty() {
            rest = T::check_item(rest, ctx)?;
        }
        Ok(())
    }

    /// Wraps bytes that [`check`](Self::check) accepted.
    #[inline]
    pub(crate) const fn trusted(buf: &'a [u8]) -> Self {
        Self {
            inner: Inner::Wire(buf),
        }
    }

    /// A list for emission, borrowing typed items.
    #[must_use]
    pub const fn from_items(items: &'a [T]) -> Self {
        Self {
            inner: Inner::Items(items),
        }
    }

    /// The wire bytes, when this list came from parsing.
    #[must_use]
    pub const fn wire_bytes(&self) -> Option<&'a [u8]> {
        match self.inner {
            Inner::Wire(b) => Some(b),
            Inner::Items(_) => None,
        }
    }

    /// Iterates the items.
    #[must_use]
    pub fn iter(&self) -> Iter<'a, T> {
        Iter { inner: self.inner }
    }

    /// True when the list has no items.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        match self.inner {
            Inner::Wire(b) => b.is_empty(),
            Inner::Items(s) => s.is_empty(),
        }
    }

    /// The number of items (walks a parsed list).
    #[must_use]
    pub fn len(&self) -> usize {
        match self.inner {
            Inner::Wire(_) => self.iter().count(),
            Inner::Items(s) => s.len(),
        }
    }

    /// The first item that satisfies `pred`.
    pub fn find(&self, pred: impl FnMut(&T) -> bool) -> Option<T> {
        self.iter().find(pred)
    }

    /// The octets the list takes on the wire, when known without walking typed items: a
    /// parsed list, or an empty one.
    #[inline]
    pub(crate) const fn known_len(&self) -> Option<usize> {
        match self.inner {
            Inner::Wire(b) => Some(b.len()),
            Inner::Items([]) => Some(0),
            Inner::Items(_) => None,
        }
    }

    /// The octets the list takes on the wire.
    #[must_use]
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self.inner {
            Inner::Wire(b) => b.len(),
            Inner::Items(s) if T::FIXED_LEN > 0 => s.len().saturating_mul(T::FIXED_LEN),
            Inner::Items(s) => s.iter().fold(0usize, |n, i| n.saturating_add(i.item_len())),
        }
    }

    #[inline]
    pub(crate) fn emit(&self, w: &mut Writer<'_>) -> Result<()> {
        match self.inner {
            Inner::Wire(b) => w.put(b),
            Inner::Items(s) => s.iter().try_for_each(|i| i.emit_item(w)),
        }
    }
}

impl<'a, T: Item<'a>> Default for List<'a, T> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<'a, T: Item<'a>> PartialEq for List<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        if let (Inner::Wire(a), Inner::Wire(b)) = (self.inner, other.inner) {
            if a == b {
                return true;
            }
        }
        self.iter().eq(other.iter())
    }
}

impl<'a, T: Item<'a>> fmt::Debug for List<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a, T: Item<'a>> IntoIterator for List<'a, T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// Iterator over a [`List`].
#[derive(Clone)]
pub struct Iter<'a, T> {
    inner: Inner<'a, T>,
}

impl<'a, T: Item<'a>> Iterator for Iter<'a, T> {
    type Item = T;

    #[inline]
    fn next(&mut self) -> Option<T> {
        match &mut self.inner {
            Inner::Items(s) => {
                let (first, rest) = s.split_first()?;
                *s = rest;
                Some(*first)
            }
            Inner::Wire(b) => {
                // The bytes were validated when the list was parsed, so decoding cannot fail;
                // should it, iteration simply ends.
                let item = T::decode_item(b);
                if item.is_none() {
                    *b = &[];
                }
                item
            }
        }
    }
}

impl<'a> Item<'a> for u16 {
    const FIXED_LEN: usize = 2;

    #[inline]
    fn check_item(buf: &'a [u8], _ctx: Ctx) -> Result<&'a [u8]> {
        buf.split_first_chunk::<2>()
            .map(|(_, rest)| rest)
            .ok_or(Error::new(ErrorKind::BadLength))
    }

    #[inline]
    fn decode_item(buf: &mut &'a [u8]) -> Option<Self> {
        let (v, rest) = buf.split_first_chunk::<2>()?;
        *buf = rest;
        Some(Self::from_be_bytes(*v))
    }

    fn item_len(&self) -> usize {
        2
    }

    fn emit_item(&self, w: &mut Writer<'_>) -> Result<()> {
        w.put_u16(*self)
    }
}

impl<'a> Item<'a> for Ipv6Addr {
    const FIXED_LEN: usize = 16;

    #[inline]
    fn check_item(buf: &'a [u8], _ctx: Ctx) -> Result<&'a [u8]> {
        buf.split_first_chunk::<16>()
            .map(|(_, rest)| rest)
            .ok_or(Error::new(ErrorKind::BadLength))
    }

    #[inline]
    fn decode_item(buf: &mut &'a [u8]) -> Option<Self> {
        let (v, rest) = buf.split_first_chunk::<16>()?;
        *buf = rest;
        Some(Self::from(*v))
    }

    fn item_len(&self) -> usize {
        16
    }

    fn emit_item(&self, w: &mut Writer<'_>) -> Result<()> {
        w.put_array(self.octets())
    }
}
