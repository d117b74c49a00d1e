//! PostgreSQL's `pgoutput` logical decoding messages (protocol version 1), as the `kea-pgsql`
//! source receives them in each XLogData of its replication stream.
//!
//! The replication client ([`pgwire_replication`], D32) frames the stream and decodes Begin and
//! Commit itself (with the commit time); every other message reaches the source as the bytes of
//! one XLogData, decoded here. Only what a follower of Kea's `lease6` table needs is decoded:
//!
//! | tag | message | fields (big-endian) |
//! |---|---|---|
//! | `R` | Relation | relation id u32, namespace cstring, name cstring, replica identity u8, columns i16 × (flags u8 (1 = part of the key), name cstring, type oid u32, type modifier i32) |
//! | `I` | Insert | relation id u32, `N`, tuple |
//! | `U` | Update | relation id u32, optional (`K` or `O`, old tuple), `N`, new tuple |
//! | `D` | Delete | relation id u32, `K` or `O`, old tuple |
//! | `T` | Truncate | relations i32, options u8, relation ids u32 × relations |
//!
//! A tuple is a column count i16 then, per column, `n` (NULL), `u` (an unchanged TOASTed value,
//! not sent) or `t` followed by a length i32 and the value in text format. `O` carries the whole
//! old row, sent when the table's replica identity is FULL (which the source requires, so that
//! a deleted lease still names its client). Every other tag (Type, Origin, Message, the
//! streaming messages of protocol version 2) is [`Message::Other`].
//!
//! Decoding never panics: every length is checked against what is left, and a message that does
//! not fit is a [`DecodeError`].

use std::fmt;

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ended inside a field.
    Truncated,
    /// A field holds what the protocol does not allow; what it was.
    Malformed(&'static str),
}

impl DecodeError {
    /// A short reason for a log line.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Truncated => "truncated pgoutput message",
            Self::Malformed(why) => why,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for DecodeError {}

/// One column of a relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Its type's OID.
    pub type_oid: u32,
    /// Part of the replica identity (the key).
    pub key: bool,
}

/// A Relation message: the columns of a table, sent before its first change in a session and
/// again after its definition changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, which the changes name.
    pub id: u32,
    /// Its schema.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its replica identity: `d` default (primary key), `n` nothing, `f` full, `i` an index.
    pub replica_identity: u8,
    /// Its columns, in the order of the tuples.
    pub columns: Vec<Column>,
}

impl Relation {
    /// The position of the column called `name`.
    #[must_use]
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// One column's value in a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A TOASTed value the update did not change, not sent: it is the old row's.
    Unchanged,
    /// The value in PostgreSQL's text format.
    Text(String),
}

impl Value {
    /// The text, or `None` for NULL or an unsent value.
    #[must_use]
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Null | Self::Unchanged => None,
        }
    }
}

/// A row: one value per column of its relation.
pub type Tuple = Vec<Value>;

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A table's columns.
    Relation(Relation),
    /// A new row.
    Insert {
        /// The relation's OID.
        relation: u32,
        /// The row.
        new: Tuple,
    },
    /// A changed row.
    Update {
        /// The relation's OID.
        relation: u32,
        /// The old row (`O`, replica identity FULL) or its key (`K`, when the key changed);
        /// `None` when neither was sent.
        old: Option<Tuple>,
        /// The new row.
        new: Tuple,
    },
    /// A deleted row.
    Delete {
        /// The relation's OID.
        relation: u32,
        /// The old row (`O`) or only its key (`K`).
        old: Tuple,
        /// True when `old` is the whole row (`O`).
        full: bool,
    },
    /// Tables emptied by TRUNCATE.
    Truncate {
        /// Their OIDs.
        relations: Vec<u32>,
    },
    /// A message the source has no use for (Type, Origin, logical Message, ...): its tag.
    Other(u8),
}

/// A reader over a message's bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self.0.split_at_checked(n).ok_or(DecodeError::Truncated)?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, tail) = self.0.split_first().ok_or(DecodeError::Truncated)?;
        self.0 = tail;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| DecodeError::Truncated)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn cstring(&mut self) -> Result<String, DecodeError> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated)?;
        let bytes = self.take(end)?;
        self.u8()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed("a name not UTF-8"))
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = usize::from(self.u16()?);
        let mut values = Vec::with_capacity(n.min(self.0.len()));
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = usize::try_from(self.u32()?)
                        .map_err(|_| DecodeError::Malformed("a value too long"))?;
                    let bytes = self.take(len)?;
                    Value::Text(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| DecodeError::Malformed("a text value not UTF-8"))?,
                    )
                }
                b'b' => {
                    return Err(DecodeError::Malformed(
                        "a binary value (binary mode is off)",
                    ));
                }
                _ => return Err(DecodeError::Malformed("an unknown column kind in a tuple")),
            });
        }
        Ok(values)
    }
}

/// Decodes one message (the data of one XLogData).
///
/// # Errors
///
/// [`DecodeError`] when the bytes do not hold a whole message of its kind.
pub fn decode(data: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader(data);
    let tag = r.u8()?;
    Ok(match tag {
        b'R' => {
            let id = r.u32()?;
            let namespace = r.cstring()?;
            let name = r.cstring()?;
            let replica_identity = r.u8()?;
            let n = usize::from(r.u16()?);
            let mut columns = Vec::with_capacity(n.min(r.0.len()));
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.cstring()?;
                let type_oid = r.u32()?;
                let _type_modifier = r.u32()?;
                columns.push(Column {
                    name,
                    type_oid,
                    key: flags & 1 == 1,
                });
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err(DecodeError::Malformed("an Insert without its new tuple"));
            }
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                old = Some(r.tuple()?);
                kind = r.u8()?;
            }
            if kind != b'N' {
                return Err(DecodeError::Malformed("an Update without its new tuple"));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let full = match r.u8()? {
                b'O' => true,
                b'K' => false,
                _ => return Err(DecodeError::Malformed("a Delete without its old tuple")),
            };
            Message::Delete {
                relation,
                old: r.tuple()?,
                full,
            }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let mut relations = Vec::new();
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_bytes() -> Vec<u8> {
        let mut b = vec![b'R'];
        b.extend_from_slice(&16_384u32.to_be_bytes());
        b.extend_from_slice(b"public\0lease6\0f");
        b.extend_from_slice(&2u16.to_be_bytes());
        b.push(1);
        b.extend_from_slice(b"address\0");
        b.extend_from_slice(&1043u32.to_be_bytes());
        b.extend_from_slice(&43i32.to_be_bytes());
        b.push(0);
        b.extend_from_slice(b"duid\0");
        b.extend_from_slice(&17u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b
    }

    #[test]
    fn relation() {
        let Message::Relation(r) = decode(&relation_bytes()).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(
            (r.id, &*r.namespace, &*r.name),
            (16_384, "public", "lease6")
        );
        assert_eq!(r.replica_identity, b'f');
        assert_eq!(r.position("duid"), Some(1));
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].type_oid, 17);
    }

    fn tuple_bytes() -> Vec<u8> {
        let mut b = 3u16.to_be_bytes().to_vec();
        b.push(b't');
        b.extend_from_slice(&11u32.to_be_bytes());
        b.extend_from_slice(b"2001:db8::1");
        b.push(b'n');
        b.push(b'u');
        b
    }

    #[test]
    fn insert_update_delete() {
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&7u32.to_be_bytes());
        insert.push(b'N');
        insert.extend_from_slice(&tuple_bytes());
        let want = vec![
            Value::Text("2001:db8::1".into()),
            Value::Null,
            Value::Unchanged,
        ];
        assert_eq!(
            decode(&insert),
            Ok(Message::Insert {
                relation: 7,
                new: want.clone()
            })
        );
        let mut update = vec![b'U'];
        update.extend_from_slice(&7u32.to_be_bytes());
        update.push(b'O');
        update.extend_from_slice(&tuple_bytes());
        update.push(b'N');
        update.extend_from_slice(&tuple_bytes());
        assert_eq!(
            decode(&update),
            Ok(Message::Update {
                relation: 7,
                old: Some(want.clone()),
                new: want.clone()
            })
        );
        let mut delete = vec![b'D'];
        delete.extend_from_slice(&7u32.to_be_bytes());
        delete.push(b'K');
        delete.extend_from_slice(&tuple_bytes());
        assert_eq!(
            decode(&delete),
            Ok(Message::Delete {
                relation: 7,
                old: want,
                full: false
            })
        );
    }

    #[test]
    fn every_cut_is_an_error_not_a_panic() {
        let mut insert = vec![b'I'];
        insert.extend_from_slice(&7u32.to_be_bytes());
        insert.push(b'N');
        insert.extend_from_slice(&tuple_bytes());
        for whole in [relation_bytes(), insert] {
            for cut in 0..whole.len() {
                assert!(decode(&whole[..cut]).is_err(), "cut at {cut}");
            }
            assert!(decode(&whole).is_ok());
        }
        assert_eq!(decode(b"Yxyz"), Ok(Message::Other(b'Y')));
        assert_eq!(
            decode(&[b'I', 0, 0, 0, 7, b'X']),
            Err(DecodeError::Malformed("an Insert without its new tuple"))
        );
    }
}
