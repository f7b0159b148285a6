//! Table definitions and row values of the lakehouse sink, and their mapping onto Iceberg
//! schemas, partition specs and Arrow record batches.
//!
//! A pipeline describes each of its tables once ([`TableDef`]: columns, partitioning, and
//! whether it is append-only or a current-state table) and maps its rows onto [`Value`]s. The
//! sink derives everything Iceberg needs from that: field ids, the Arrow schema Parquet files
//! are written with, and the partition of every row.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, BooleanBuilder, Date32Array, Date32Builder,
    Decimal128Array, Decimal128Builder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    LargeBinaryArray, LargeBinaryBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, SchemaRef as ArrowSchemaRef};
use iceberg::spec::{
    Datum, Literal, NestedField, PartitionSpec, PrimitiveType, Schema, Struct, Transform, Type,
    UnboundPartitionSpec,
};
use iceberg::transform::create_transform_function;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::LakeError;

/// The type of a column, and the Iceberg type it is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// `long`
    Long,
    /// `int`
    Int,
    /// `string`
    String,
    /// `boolean`
    Bool,
    /// `decimal(precision, scale)`; values are unscaled integers.
    Decimal(u8, u8),
    /// `timestamptz`, microseconds since the epoch, UTC.
    Timestamptz,
    /// `date`, days since 1970-01-01.
    Date,
    /// `binary` (bytes kept as they came).
    Binary,
}

impl ColumnType {
    fn iceberg(self) -> PrimitiveType {
        match self {
            ColumnType::Long => PrimitiveType::Long,
            ColumnType::Int => PrimitiveType::Int,
            ColumnType::String => PrimitiveType::String,
            ColumnType::Bool => PrimitiveType::Boolean,
            ColumnType::Decimal(p, s) => PrimitiveType::Decimal {
                precision: p as u32,
                scale: s as u32,
            },
            ColumnType::Timestamptz => PrimitiveType::Timestamptz,
            ColumnType::Date => PrimitiveType::Date,
            ColumnType::Binary => PrimitiveType::Binary,
        }
    }
}

/// A column of a table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether the column may never be null.
    pub required: bool,
}

impl Column {
    /// A nullable column.
    pub fn optional(name: &str, ty: ColumnType) -> Self {
        Column {
            name: name.into(),
            ty,
            required: false,
        }
    }
    /// A column that is never null.
    pub fn required(name: &str, ty: ColumnType) -> Self {
        Column {
            name: name.into(),
            ty,
            required: true,
        }
    }
}

/// How a table's snapshots relate to the collection it mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableMode {
    /// Rows are only ever added (bronze, quarantine, `dq.results`): each epoch appends files.
    Append,
    /// The table holds the current rows of a collection: each epoch's retractions and
    /// insertions are committed as new data files and position deletes (merge-on-read).
    CurrentState,
}

/// One table of the lake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableDef {
    /// Namespace, e.g. `gold`.
    pub namespace: String,
    /// Table name, e.g. `daily_sales`.
    pub name: String,
    /// Columns, in order; field ids are 1, 2, ...
    pub columns: Vec<Column>,
    /// Partitioning: a source column and an Iceberg transform (`day`, `identity`, `bucket[n]`).
    pub partition: Option<(String, Transform)>,
    /// Append-only or current state.
    pub mode: TableMode,
}

impl TableDef {
    /// A table definition.
    pub fn new(namespace: &str, name: &str, mode: TableMode, columns: Vec<Column>) -> Self {
        TableDef {
            namespace: namespace.into(),
            name: name.into(),
            columns,
            partition: None,
            mode,
        }
    }

    /// Partitions the table by `transform(column)`.
    pub fn partitioned_by(mut self, column: &str, transform: Transform) -> Self {
        self.partition = Some((column.into(), transform));
        self
    }

    /// `namespace.name`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }

    /// The Iceberg schema (field ids 1..=n in column order).
    pub fn schema(&self) -> Result<Schema, LakeError> {
        let fields = self.columns.iter().enumerate().map(|(i, c)| {
            let ty = Type::Primitive(c.ty.iceberg());
            Arc::new(if c.required {
                NestedField::required(i as i32 + 1, &c.name, ty)
            } else {
                NestedField::optional(i as i32 + 1, &c.name, ty)
            })
        });
        Schema::builder()
            .with_schema_id(0)
            .with_fields(fields)
            .build()
            .map_err(|e| LakeError::iceberg(format!("schema of {}", self.qualified_name()), e))
    }

    /// The partition spec to create the table with.
    pub fn partition_spec(&self) -> Result<UnboundPartitionSpec, LakeError> {
        let mut spec = UnboundPartitionSpec::builder().with_spec_id(0);
        if let Some((column, transform)) = &self.partition {
            let index = self.column_index(column)?;
            let name = match transform {
                Transform::Identity => column.clone(),
                Transform::Day => format!("{column}_day"),
                Transform::Month => format!("{column}_month"),
                Transform::Bucket(n) => format!("{column}_bucket_{n}"),
                other => format!("{column}_{other}"),
            };
            spec = spec
                .add_partition_field(index as i32 + 1, name, *transform)
                .map_err(|e| {
                    LakeError::iceberg(format!("partition spec of {}", self.qualified_name()), e)
                })?;
        }
        Ok(spec.build())
    }

    fn column_index(&self, column: &str) -> Result<usize, LakeError> {
        self.columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| {
                LakeError::Config(format!(
                    "table {}: partition column `{column}` is not a column",
                    self.qualified_name()
                ))
            })
    }

    /// A function from rows to their partition value under this table's spec.
    pub fn partitioner(&self) -> Result<Partitioner, LakeError> {
        let Some((column, transform)) = &self.partition else {
            return Ok(Partitioner { column: None });
        };
        let index = self.column_index(column)?;
        let function = create_transform_function(transform).map_err(|e| {
            LakeError::iceberg(format!("transform of {}", self.qualified_name()), e)
        })?;
        Ok(Partitioner {
            column: Some((index, self.columns[index].ty, Arc::from(function))),
        })
    }
}

/// Computes the partition value ([`Struct`]) of rows of one table.
#[derive(Clone)]
pub struct Partitioner {
    column: Option<(
        usize,
        ColumnType,
        Arc<dyn iceberg::transform::TransformFunction>,
    )>,
}

impl Partitioner {
    /// The partition of `row` (the empty struct for unpartitioned tables).
    pub fn partition(&self, row: &[Value]) -> Result<Struct, LakeError> {
        let Some((index, ty, function)) = &self.column else {
            return Ok(Struct::empty());
        };
        let datum = row.get(*index).and_then(|v| v.datum(*ty));
        let value = match datum {
            None => None,
            Some(d) => function
                .transform_literal(&d)
                .map_err(|e| LakeError::iceberg("computing a partition value".into(), e))?,
        };
        Ok(Struct::from_iter([
            value.map(|d| Literal::Primitive(d.literal().clone()))
        ]))
    }
}

/// A cell of a row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Value {
    /// SQL null.
    Null,
    /// `boolean`
    Bool(bool),
    /// `int` and `date` (days).
    Int(i32),
    /// `long` and `timestamptz` (microseconds).
    Long(i64),
    /// `decimal`: the unscaled value.
    Decimal(i128),
    /// `string` (inline up to 23 bytes: a worker maps a row's short strings without
    /// allocating)
    String(SmolStr),
    /// `binary`
    Binary(Vec<u8>),
}

impl Value {
    /// `Some(v)` as a string value, `None` as null.
    pub fn opt_string(v: Option<&str>) -> Value {
        v.map_or(Value::Null, |s| Value::String(s.into()))
    }
    /// `Some(v)` as a long value, `None` as null.
    pub fn opt_long(v: Option<i64>) -> Value {
        v.map_or(Value::Null, Value::Long)
    }

    fn datum(&self, ty: ColumnType) -> Option<Datum> {
        Some(match (self, ty) {
            (Value::Null, _) => return None,
            (Value::Long(v), ColumnType::Timestamptz) => Datum::timestamptz_micros(*v),
            (Value::Long(v), _) => Datum::long(*v),
            (Value::Int(v), ColumnType::Date) => Datum::date(*v),
            (Value::Int(v), _) => Datum::int(*v),
            (Value::String(s), _) => Datum::string(s),
            (Value::Bool(b), _) => Datum::bool(*b),
            (Value::Binary(b), _) => Datum::binary(b.clone()),
            (Value::Decimal(_), _) => return None,
        })
    }
}

/// A row: one value per column, in column order.
pub type Row = Vec<Value>;

fn type_error(table: &str, column: &str, value: &Value) -> LakeError {
    LakeError::Data(format!(
        "table {table}: value {value:?} does not fit column `{column}`"
    ))
}

/// Builds a record batch of `rows` (each repeated `count` times) with `schema`, the Arrow
/// schema of the table (carrying Iceberg field ids).
pub fn to_record_batch<'a>(
    table: &TableDef,
    schema: &ArrowSchemaRef,
    rows: impl Iterator<Item = (&'a Row, usize)> + Clone,
) -> Result<RecordBatch, LakeError> {
    let name = table.qualified_name();
    let capacity: usize = rows.clone().map(|(_, n)| n).sum();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(table.columns.len());
    for (i, (column, field)) in table.columns.iter().zip(schema.fields()).enumerate() {
        let values = rows
            .clone()
            .flat_map(|(row, n)| std::iter::repeat_n(row.get(i).unwrap_or(&Value::Null), n));
        let err = |v: &Value| type_error(&name, &column.name, v);
        // One builder per Arrow type; each accepts nulls and its one `Value` variant.
        macro_rules! build {
            ($builder:expr, $variant:ident) => {{
                let mut b = $builder;
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        Value::$variant(x) => b.append_value(*x),
                        other => return Err(err(other)),
                    }
                }
                b.finish()
            }};
        }
        let array: ArrayRef = match field.data_type() {
            DataType::Int64 => Arc::new(build!(Int64Builder::with_capacity(capacity), Long)),
            DataType::Int32 => Arc::new(build!(Int32Builder::with_capacity(capacity), Int)),
            DataType::Date32 => Arc::new(build!(Date32Builder::with_capacity(capacity), Int)),
            DataType::Timestamp(_, tz) => Arc::new(
                build!(TimestampMicrosecondBuilder::with_capacity(capacity), Long)
                    .with_timezone_opt(tz.clone()),
            ),
            DataType::Boolean => Arc::new(build!(BooleanBuilder::with_capacity(capacity), Bool)),
            DataType::Decimal128(p, s) => Arc::new(
                build!(Decimal128Builder::with_capacity(capacity), Decimal)
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| LakeError::Data(format!("table {name}: {e}")))?,
            ),
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(capacity, capacity * 16);
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        Value::String(x) => b.append_value(x),
                        other => return Err(err(other)),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::LargeBinary => {
                let mut b = LargeBinaryBuilder::with_capacity(capacity, capacity * 64);
                for v in values {
                    match v {
                        Value::Null => b.append_null(),
                        Value::Binary(x) => b.append_value(x),
                        other => return Err(err(other)),
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                return Err(LakeError::Data(format!(
                    "table {name}: unsupported Arrow type {other}"
                )))
            }
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| LakeError::Data(format!("table {name}: building a record batch: {e}")))
}

/// Reads the rows of a record batch back as [`Value`]s (columns matched by position).
pub fn from_record_batch(batch: &RecordBatch) -> Result<Vec<Row>, LakeError> {
    let mut rows: Vec<Row> = vec![Vec::with_capacity(batch.num_columns()); batch.num_rows()];
    for column in batch.columns() {
        let any = column.as_any();
        macro_rules! fill {
            ($ty:ty, $f:expr) => {{
                let a = any
                    .downcast_ref::<$ty>()
                    .ok_or_else(|| LakeError::Data("unexpected column type".into()))?;
                for (i, row) in rows.iter_mut().enumerate() {
                    row.push(if a.is_null(i) { Value::Null } else { $f(a, i) });
                }
            }};
        }
        match column.data_type() {
            DataType::Int64 => fill!(Int64Array, |a: &Int64Array, i| Value::Long(a.value(i))),
            DataType::Int32 => fill!(Int32Array, |a: &Int32Array, i| Value::Int(a.value(i))),
            DataType::Date32 => fill!(Date32Array, |a: &Date32Array, i| Value::Int(a.value(i))),
            DataType::Timestamp(..) => fill!(
                TimestampMicrosecondArray,
                |a: &TimestampMicrosecondArray, i| Value::Long(a.value(i))
            ),
            DataType::Boolean => {
                fill!(BooleanArray, |a: &BooleanArray, i| Value::Bool(a.value(i)))
            }
            DataType::Decimal128(..) => fill!(Decimal128Array, |a: &Decimal128Array, i| {
                Value::Decimal(a.value(i))
            }),
            DataType::Utf8 => fill!(StringArray, |a: &StringArray, i| Value::String(
                a.value(i).into()
            )),
            DataType::LargeBinary => fill!(LargeBinaryArray, |a: &LargeBinaryArray, i| {
                Value::Binary(a.value(i).to_vec())
            }),
            DataType::Binary => fill!(BinaryArray, |a: &BinaryArray, i| Value::Binary(
                a.value(i).to_vec()
            )),
            other => {
                return Err(LakeError::Data(format!(
                    "reading back a data file: unsupported Arrow type {other}"
                )))
            }
        }
    }
    Ok(rows)
}

/// Rows (with a payload such as a count) grouped by partition value.
pub type PartitionGroups<'a, T> = HashMap<Struct, Vec<(&'a Row, T)>>;

/// Groups `rows` by partition value.
pub fn group_by_partition<'a, T>(
    partitioner: &Partitioner,
    rows: impl IntoIterator<Item = (&'a Row, T)>,
) -> Result<PartitionGroups<'a, T>, LakeError> {
    let mut groups: PartitionGroups<'a, T> = HashMap::new();
    for (row, t) in rows {
        groups
            .entry(partitioner.partition(row)?)
            .or_default()
            .push((row, t));
    }
    Ok(groups)
}

/// The bound partition spec of a table, for writers.
pub fn bound_spec(table: &iceberg::table::Table) -> PartitionSpec {
    table.metadata().default_partition_spec().as_ref().clone()
}
