//! A decoder of PostgreSQL's `pgoutput` logical replication messages (protocol version 1).
//!
//! The format is documented in the PostgreSQL manual, "Logical Replication Message Formats".
//! Only what change capture needs is kept: transaction boundaries, relation (table) shapes,
//! and row changes with their tuple images. Values arrive in their text form.

use thiserror::Error;

/// A decoding error: the bytes are not the message they claim to be.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(pub String);

/// One column of a relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the key).
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
}

/// A table's shape, sent before its first change and after every schema change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub id: u32,
    /// Schema.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting: `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns in table order.
    pub columns: Vec<RelationColumn>,
}

/// One column value of a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TupleValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change (its content is not sent).
    UnchangedToast,
    /// The value in text form.
    Text(String),
}

/// A row image.
pub type Tuple = Vec<TupleValue>;

/// The old image sent with an update or delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OldTuple {
    /// Key columns only (`K`): other columns are null.
    Key(Tuple),
    /// The whole old row (`O`, replica identity full).
    Full(Tuple),
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutput {
    /// A transaction starts.
    Begin {
        /// LSN of the commit record.
        final_lsn: u64,
        /// Commit time, µs since 2000-01-01.
        commit_time: i64,
        /// Transaction id.
        xid: u32,
    },
    /// The transaction committed.
    Commit {
        /// LSN of the commit record.
        commit_lsn: u64,
        /// End of the commit record: decoding resumes after it.
        end_lsn: u64,
        /// Commit time, µs since 2000-01-01.
        commit_time: i64,
    },
    /// A relation's shape.
    Relation(Relation),
    /// A row was inserted.
    Insert {
        /// Relation OID.
        relation: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row was updated.
    Update {
        /// Relation OID.
        relation: u32,
        /// The old key or row, when the replica identity sends it.
        old: Option<OldTuple>,
        /// The new row.
        new: Tuple,
    },
    /// A row was deleted.
    Delete {
        /// Relation OID.
        relation: u32,
        /// The old key or row.
        old: OldTuple,
    },
    /// Tables were truncated.
    Truncate {
        /// Relation OIDs.
        relations: Vec<u32>,
    },
    /// Anything else (type, origin, logical message): not needed for capture.
    Other(u8),
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| DecodeError(format!("truncated at byte {}", self.at)))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    /// A NUL-terminated string.
    fn string(&mut self) -> Result<String, DecodeError> {
        let rest = &self.bytes[self.at..];
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| DecodeError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.i16()?;
        let mut out = Vec::with_capacity(n.max(0) as usize);
        for _ in 0..n {
            out.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.i32()?;
                    let len = usize::try_from(len)
                        .map_err(|_| DecodeError(format!("negative value length {len}")))?;
                    TupleValue::Text(String::from_utf8_lossy(self.take(len)?).into_owned())
                }
                k => return Err(DecodeError(format!("unknown tuple value kind {k:#x}"))),
            });
        }
        Ok(out)
    }
}

/// Decodes one pgoutput message.
pub fn decode(bytes: &[u8]) -> Result<PgOutput, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let tag = r.u8()?;
    Ok(match tag {
        b'B' => PgOutput::Begin {
            final_lsn: r.u64()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            PgOutput::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_time: r.i64()?,
            }
        }
        b'R' => {
            let id = r.u32()?;
            let namespace = r.string()?;
            let name = r.string()?;
            let replica_identity = r.u8()?;
            let n = r.i16()?;
            let mut columns = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.string()?;
                let type_oid = r.u32()?;
                let _typmod = r.i32()?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            PgOutput::Relation(Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => PgOutput::Insert {
                    relation,
                    new: r.tuple()?,
                },
                k => return Err(DecodeError(format!("insert: unexpected tuple tag {k:#x}"))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, tag) = match r.u8()? {
                b'K' => (Some(OldTuple::Key(r.tuple()?)), r.u8()?),
                b'O' => (Some(OldTuple::Full(r.tuple()?)), r.u8()?),
                t => (None, t),
            };
            if tag != b'N' {
                return Err(DecodeError(format!(
                    "update: unexpected tuple tag {tag:#x}"
                )));
            }
            PgOutput::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                k => return Err(DecodeError(format!("delete: unexpected tuple tag {k:#x}"))),
            };
            PgOutput::Delete { relation, old }
        }
        b'T' => {
            let n = r.i32()?;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(n.max(0) as usize);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            PgOutput::Truncate { relations }
        }
        other => PgOutput::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Vec<u8> {
        let mut b = vec![b't'];
        b.extend_from_slice(&(v.len() as i32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
        b
    }

    #[test]
    fn transaction_relation_and_changes() -> Result<(), DecodeError> {
        let mut b = vec![b'B'];
        b.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        b.extend_from_slice(&1_000_000i64.to_be_bytes());
        b.extend_from_slice(&750u32.to_be_bytes());
        assert_eq!(
            decode(&b)?,
            PgOutput::Begin {
                final_lsn: 0x1_0000_0010,
                commit_time: 1_000_000,
                xid: 750
            }
        );

        let mut b = vec![b'R'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.extend_from_slice(b"public\0customers\0d");
        b.extend_from_slice(&2i16.to_be_bytes());
        b.push(1);
        b.extend_from_slice(b"customer_id\0");
        b.extend_from_slice(&20u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(0);
        b.extend_from_slice(b"email\0");
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let PgOutput::Relation(rel) = decode(&b)? else {
            panic!("relation")
        };
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "customers")
        );
        assert_eq!(rel.columns.len(), 2);
        assert!(rel.columns[0].key && !rel.columns[1].key);

        let mut b = vec![b'U'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.push(b'N');
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend(text("7"));
        b.push(b'u');
        assert_eq!(
            decode(&b)?,
            PgOutput::Update {
                relation: 16384,
                old: None,
                new: vec![TupleValue::Text("7".into()), TupleValue::UnchangedToast]
            }
        );

        let mut b = vec![b'D'];
        b.extend_from_slice(&16384u32.to_be_bytes());
        b.push(b'K');
        b.extend_from_slice(&2i16.to_be_bytes());
        b.extend(text("7"));
        b.push(b'n');
        assert_eq!(
            decode(&b)?,
            PgOutput::Delete {
                relation: 16384,
                old: OldTuple::Key(vec![TupleValue::Text("7".into()), TupleValue::Null])
            }
        );
        Ok(())
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(decode(b"B\0\0").is_err());
        assert!(decode(b"").is_err());
        let mut b = vec![b'I'];
        b.extend_from_slice(&1u32.to_be_bytes());
        b.push(b'N');
        b.extend_from_slice(&1i16.to_be_bytes());
        b.push(b't');
        b.extend_from_slice(&100i32.to_be_bytes());
        assert!(decode(&b).is_err());
    }
}
