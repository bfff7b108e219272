//! Values crossing the storage boundary: [`Val`] into a statement, [`Row`] out of a query,
//! converted to and from each driver's types here and nowhere else.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use super::StorageError;

/// A statement argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// An integer (`INTEGER` / `BIGINT`).
    Int(i64),
    /// A float (`REAL` / `DOUBLE PRECISION`).
    Real(f64),
    /// Text (`TEXT`; also `JSONB` on PostgreSQL, from its JSON text).
    Text(String),
    /// Bytes (`BLOB` / `BYTEA`).
    Bytes(Vec<u8>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Val {
        Val::Int(i64::from(v))
    }
}

impl From<u64> for Val {
    /// Saturates at `i64::MAX` (neither engine stores larger integers).
    fn from(v: u64) -> Val {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Val {
    /// Saturates at `i64::MAX`.
    fn from(v: usize) -> Val {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Val {
    fn from(v: f64) -> Val {
        Val::Real(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_owned())
    }
}

impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}

impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Val {
        Val::Bytes(v)
    }
}

impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Val {
        Val::Bytes(v.to_vec())
    }
}

impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Val::Null => ToSqlOutput::Owned(Value::Null),
            Val::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Val::Real(v) => ToSqlOutput::Owned(Value::Real(*v)),
            Val::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Val::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
        })
    }
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => Err(format!("an integer cannot go into a column of type {ty}").into()),
            },
            Val::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(format!("a float cannot go into a column of type {ty}").into()),
            },
            Val::Text(v) => match *ty {
                // JSONB's binary form: format version 1, then the JSON text
                Type::JSONB => {
                    out.put_u8(1);
                    out.put_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.put_slice(v.as_bytes());
                    Ok(IsNull::No)
                }
                _ => v.as_str().to_sql(ty, out),
            },
            Val::Bytes(v) => match *ty {
                Type::BYTEA => v.as_slice().to_sql(ty, out),
                _ => Err(format!("bytes cannot go into a column of type {ty}").into()),
            },
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
                | Type::JSON
                | Type::JSONB
                | Type::BYTEA
        )
    }

    to_sql_checked!();
}

/// One row of a query's result.
pub struct Row<'r>(RowKind<'r>);

enum RowKind<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl<'r> Row<'r> {
    pub(super) fn sqlite(row: &'r rusqlite::Row<'r>) -> Row<'r> {
        Row(RowKind::Sqlite(row))
    }

    pub(super) fn postgres(row: &'r postgres::Row) -> Row<'r> {
        Row(RowKind::Postgres(row))
    }

    /// The integer in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is NULL or not an integer.
    pub fn int(&self, i: usize) -> Result<i64, StorageError> {
        self.opt_int(i)?.ok_or(StorageError::Type {
            column: i,
            wanted: "an integer",
        })
    }

    /// The integer or NULL in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is something else.
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StorageError> {
        match self.0 {
            RowKind::Sqlite(row) => Ok(row.get(i)?),
            RowKind::Postgres(row) => Ok(row.try_get::<_, Option<AnyInt>>(i)?.map(|v| v.0)),
        }
    }

    /// The float in column `i` (an integer is taken as a float).
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is NULL or not a number.
    pub fn real(&self, i: usize) -> Result<f64, StorageError> {
        self.opt_real(i)?.ok_or(StorageError::Type {
            column: i,
            wanted: "a number",
        })
    }

    /// The float or NULL in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is something else.
    pub fn opt_real(&self, i: usize) -> Result<Option<f64>, StorageError> {
        match self.0 {
            RowKind::Sqlite(row) => Ok(row.get(i)?),
            RowKind::Postgres(row) => Ok(row.try_get::<_, Option<AnyReal>>(i)?.map(|v| v.0)),
        }
    }

    /// The text in column `i` (a JSONB column's JSON text on PostgreSQL).
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is NULL or not text.
    pub fn text(&self, i: usize) -> Result<String, StorageError> {
        self.opt_text(i)?.ok_or(StorageError::Type {
            column: i,
            wanted: "text",
        })
    }

    /// The bytes in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is NULL or not bytes.
    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, StorageError> {
        self.opt_bytes(i)?.ok_or(StorageError::Type {
            column: i,
            wanted: "bytes",
        })
    }

    /// The bytes or NULL in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is something else.
    pub fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StorageError> {
        match self.0 {
            RowKind::Sqlite(row) => Ok(row.get(i)?),
            RowKind::Postgres(row) => Ok(row.try_get::<_, Option<Vec<u8>>>(i)?),
        }
    }

    /// The value in column `i` whatever its type (integer, float, text — JSON as its text —
    /// bytes, or NULL): for copying rows between engines.
    ///
    /// # Errors
    /// [`StorageError::Type`] for a type none of those.
    pub fn value(&self, i: usize) -> Result<Val, StorageError> {
        match self.0 {
            RowKind::Sqlite(row) => {
                use rusqlite::types::ValueRef;
                Ok(match row.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Real(v) => Val::Real(v),
                    ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
                })
            }
            RowKind::Postgres(row) => {
                let ty = row.columns().get(i).map(|c| c.type_().clone());
                Ok(match ty {
                    Some(t) if <AnyInt as FromSql>::accepts(&t) => self.opt_int(i)?.into(),
                    Some(Type::FLOAT4 | Type::FLOAT8) => self.opt_real(i)?.into(),
                    Some(t) if <AnyText as FromSql>::accepts(&t) => self.opt_text(i)?.into(),
                    Some(Type::BYTEA) => self.opt_bytes(i)?.into(),
                    _ => {
                        return Err(StorageError::Type {
                            column: i,
                            wanted: "a number or text",
                        });
                    }
                })
            }
        }
    }

    /// The text or NULL in column `i`.
    ///
    /// # Errors
    /// [`StorageError::Type`] when it is something else.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StorageError> {
        match self.0 {
            RowKind::Sqlite(row) => Ok(row.get(i)?),
            RowKind::Postgres(row) => Ok(row.try_get::<_, Option<AnyText>>(i)?.map(|v| v.0)),
        }
    }
}

/// An integer column of any width.
struct AnyInt(i64);

impl<'a> FromSql<'a> for AnyInt {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<AnyInt, Box<dyn Error + Sync + Send>> {
        Ok(AnyInt(match *ty {
            Type::INT2 => i64::from(i16::from_sql(ty, raw)?),
            Type::INT4 => i64::from(i32::from_sql(ty, raw)?),
            _ => i64::from_sql(ty, raw)?,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT2 | Type::INT4 | Type::INT8)
    }
}

/// A float or integer column.
struct AnyReal(f64);

impl<'a> FromSql<'a> for AnyReal {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<AnyReal, Box<dyn Error + Sync + Send>> {
        Ok(AnyReal(match *ty {
            Type::FLOAT4 => f64::from(f32::from_sql(ty, raw)?),
            Type::FLOAT8 => f64::from_sql(ty, raw)?,
            _ => AnyInt::from_sql(ty, raw)?.0 as f64,
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::FLOAT4 | Type::FLOAT8) || <AnyInt as FromSql>::accepts(ty)
    }
}

/// A text or JSON column, as text.
struct AnyText(String);

impl<'a> FromSql<'a> for AnyText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<AnyText, Box<dyn Error + Sync + Send>> {
        let text = match *ty {
            Type::JSONB => match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unknown JSONB format version".into()),
            },
            _ => raw,
        };
        Ok(AnyText(std::str::from_utf8(text)?.to_owned()))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON | Type::JSONB
        ) || <&str as FromSql>::accepts(ty)
    }
}
