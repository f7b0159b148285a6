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

/// One column's Arrow builder, by the column's Arrow type.
enum ColumnBuilder {
    Long(Int64Builder),
    Int(Int32Builder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Bool(BooleanBuilder),
    Decimal(Decimal128Builder, u8, i8),
    String(StringBuilder),
    Binary(LargeBinaryBuilder),
}

impl ColumnBuilder {
    fn new(data_type: &DataType, capacity: usize) -> Option<Self> {
        Some(match data_type {
            DataType::Int64 => ColumnBuilder::Long(Int64Builder::with_capacity(capacity)),
            DataType::Int32 => ColumnBuilder::Int(Int32Builder::with_capacity(capacity)),
            DataType::Date32 => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            DataType::Timestamp(_, tz) => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                tz.clone(),
            ),
            DataType::Boolean => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            DataType::Decimal128(p, s) => {
                ColumnBuilder::Decimal(Decimal128Builder::with_capacity(capacity), *p, *s)
            }
            DataType::Utf8 => {
                ColumnBuilder::String(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            DataType::LargeBinary => {
                ColumnBuilder::Binary(LargeBinaryBuilder::with_capacity(capacity, capacity * 64))
            }
            _ => return None,
        })
    }

    /// Appends `value` `n` times; `false` (nothing appended) when the value is of another
    /// type than the column. Every column takes nulls.
    fn append(&mut self, value: &Value, n: usize) -> bool {
        macro_rules! repeat {
            ($b:expr, $x:expr) => {{
                for _ in 0..n {
                    $b.append_value($x);
                }
            }};
        }
        match (self, value) {
            (ColumnBuilder::Long(b), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Int(b), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Date(b), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Timestamp(b, _), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Bool(b), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Decimal(b, _, _), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::String(b), Value::Null) => (0..n).for_each(|_| b.append_null()),
            (ColumnBuilder::Binary(b), Value::Null) => b.append_nulls(n),
            (ColumnBuilder::Long(b), Value::Long(x)) => repeat!(b, *x),
            (ColumnBuilder::Int(b), Value::Int(x)) => repeat!(b, *x),
            (ColumnBuilder::Date(b), Value::Int(x)) => repeat!(b, *x),
            (ColumnBuilder::Timestamp(b, _), Value::Long(x)) => repeat!(b, *x),
            (ColumnBuilder::Bool(b), Value::Bool(x)) => repeat!(b, *x),
            (ColumnBuilder::Decimal(b, _, _), Value::Decimal(x)) => repeat!(b, *x),
            (ColumnBuilder::String(b), Value::String(x)) => repeat!(b, x.as_str()),
            (ColumnBuilder::Binary(b), Value::Binary(x)) => repeat!(b, x),
            _ => return false,
        }
        true
    }

    fn finish(self) -> Result<ArrayRef, arrow::error::ArrowError> {
        Ok(match self {
            ColumnBuilder::Long(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b, tz) => Arc::new(b.finish().with_timezone_opt(tz)),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(p, s)?)
            }
            ColumnBuilder::String(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(mut b) => Arc::new(b.finish()),
        })
    }
}

/// Builds a record batch of `rows` (each repeated `count` times) with `schema`, the Arrow
/// schema of the table (carrying Iceberg field ids). Rows are read once each, in order, every
/// cell appended to its column's builder (column by column, each row was visited once per
/// column: the committer's largest cost in perf).
pub fn to_record_batch<'a>(
    table: &TableDef,
    schema: &ArrowSchemaRef,
    rows: impl Iterator<Item = (&'a Row, usize)> + Clone,
) -> Result<RecordBatch, LakeError> {
    let name = || table.qualified_name();
    let capacity: usize = rows.clone().map(|(_, n)| n).sum();
    let mut builders = table
        .columns
        .iter()
        .zip(schema.fields())
        .map(|(_, field)| {
            ColumnBuilder::new(field.data_type(), capacity).ok_or_else(|| {
                LakeError::Data(format!(
                    "table {}: unsupported Arrow type {}",
                    name(),
                    field.data_type()
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (row, n) in rows {
        for (i, builder) in builders.iter_mut().enumerate() {
            let value = row.get(i).unwrap_or(&Value::Null);
            if !builder.append(value, n) {
                return Err(type_error(&name(), &table.columns[i].name, value));
            }
        }
    }
    let columns = builders
        .into_iter()
        .map(ColumnBuilder::finish)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LakeError::Data(format!("table {}: {e}", name())))?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| LakeError::Data(format!("table {}: building a record batch: {e}", name())))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> TableDef {
        use ColumnType::*;
        TableDef::new(
            "t",
            "every_type",
            TableMode::Append,
            vec![
                Column::required("long", Long),
                Column::optional("int", Int),
                Column::optional("string", String),
                Column::optional("bool", Bool),
                Column::optional("money", Decimal(18, 2)),
                Column::optional("at", Timestamptz),
                Column::optional("day", Date),
                Column::optional("bytes", Binary),
            ],
        )
    }

    fn arrow_schema(def: &TableDef) -> ArrowSchemaRef {
        Arc::new(iceberg::arrow::schema_to_arrow_schema(&def.schema().unwrap()).unwrap())
    }

    #[test]
    fn rows_round_trip_through_a_record_batch_with_their_copies() {
        let def = every_type();
        let full = vec![
            Value::Long(-7),
            Value::Int(3),
            Value::String("a string longer than twenty-three bytes".into()),
            Value::Bool(true),
            Value::Decimal(-1250),
            Value::Long(1_764_000_000_123_456),
            Value::Int(20_419),
            Value::Binary(vec![0xff, 0x00, 0xfe]),
        ];
        let mut nulls = vec![Value::Long(1)];
        nulls.resize(def.columns.len(), Value::Null);
        let short = vec![Value::Long(2)]; // missing cells are nulls
        let rows = [(&full, 2), (&nulls, 1), (&short, 1)];
        let batch = to_record_batch(&def, &arrow_schema(&def), rows.iter().copied()).unwrap();
        assert_eq!(batch.num_rows(), 4);
        let mut padded = short.clone();
        padded.resize(def.columns.len(), Value::Null);
        assert_eq!(
            from_record_batch(&batch).unwrap(),
            vec![full.clone(), full, nulls, padded]
        );
    }

    #[test]
    fn a_value_of_another_type_names_table_and_column() {
        let def = every_type();
        let row = vec![Value::Long(1), Value::String("3".into())];
        let err = to_record_batch(&def, &arrow_schema(&def), [(&row, 1)].into_iter())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("t.every_type") && err.contains("`int`"),
            "{err}"
        );
    }
}
