//! Flink's one-table Nexmark schema: every event is a row of
//! `event_type INT` (0 person, 1 auction, 2 bid) and three `ROW` columns,
//! `person`, `auction` and `bid`, of which only the event's own is set.
//! Flink's Nexmark scripts declare it once and split it into views.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Builder, StructArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::generator::{EventType, GeneratorConfig};
use super::{Col, Event, native_schema, normalize};
use crate::{ConnectorError, Result, conform};

/// What a one-table schema asks for, column by column.
#[derive(Debug)]
pub(crate) struct OneTable {
    columns: Vec<Column>,
    schema: SchemaRef,
}

#[derive(Debug)]
enum Column {
    EventType,
    /// A `ROW` of one kind's fields: for each declared field, the index
    /// of the kind's native column.
    Kind {
        kind: EventType,
        fields: Vec<usize>,
    },
}

/// The columns being built for one batch.
enum Building {
    EventType(Int32Builder),
    Kind {
        kind: EventType,
        fields: Vec<usize>,
        children: Vec<Col>,
        valid: Vec<bool>,
    },
}

fn code(kind: EventType) -> i32 {
    match kind {
        EventType::Person => 0,
        EventType::Auction => 1,
        EventType::Bid => 2,
    }
}

impl OneTable {
    /// The plan of `schema` if it is a one-table schema (it has an
    /// `event_type` column).
    pub fn plan(schema: &SchemaRef) -> Result<Option<Self>> {
        if !schema
            .fields()
            .iter()
            .any(|f| normalize(f.name()) == "eventtype")
        {
            return Ok(None);
        }
        let mut columns = Vec::new();
        for f in schema.fields() {
            let kind = match normalize(f.name()).as_str() {
                "eventtype" => {
                    columns.push(Column::EventType);
                    continue;
                }
                "person" => EventType::Person,
                "auction" => EventType::Auction,
                "bid" => EventType::Bid,
                other => {
                    return Err(ConnectorError::Config(format!(
                        "the one-table nexmark schema has the columns event_type, person, auction and bid, not '{other}'"
                    )));
                }
            };
            let DataType::Struct(declared) = f.data_type() else {
                return Err(ConnectorError::Config(format!(
                    "nexmark column '{}' is a ROW<...> of the {} fields",
                    f.name(),
                    f.name()
                )));
            };
            let native = native_schema(kind);
            let fields = declared
                .iter()
                .map(|d| {
                    let wanted = normalize(d.name());
                    native
                        .fields()
                        .iter()
                        .position(|n| normalize(n.name()) == wanted)
                        .ok_or_else(|| {
                            let names: Vec<&str> =
                                native.fields().iter().map(|n| n.name().as_str()).collect();
                            ConnectorError::Config(format!(
                                "nexmark ROW '{}' has no field '{}' (it has: {})",
                                f.name(),
                                d.name(),
                                names.join(", ")
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            columns.push(Column::Kind { kind, fields });
        }
        Ok(Some(Self {
            columns,
            schema: schema.clone(),
        }))
    }

    /// Generates up to `batch_size` events from `*next` on (stopping at
    /// `end`): the batch, if any, and the time of the last event.
    pub fn generate(
        &self,
        cfg: &GeneratorConfig,
        next: &mut u64,
        end: u64,
        batch_size: usize,
    ) -> Result<(Option<RecordBatch>, i64)> {
        let mut building: Vec<Building> = self
            .columns
            .iter()
            .map(|c| match c {
                Column::EventType => Building::EventType(Int32Builder::with_capacity(batch_size)),
                Column::Kind { kind, fields } => {
                    let native = native_schema(*kind);
                    Building::Kind {
                        kind: *kind,
                        fields: fields.clone(),
                        children: fields
                            .iter()
                            .map(|&i| Col::for_type(native.field(i).data_type(), batch_size))
                            .collect(),
                        valid: Vec::with_capacity(batch_size),
                    }
                }
            })
            .collect();
        let mut rows = 0;
        let mut last_ts = 0;
        while rows < batch_size && *next < end {
            let (number, id) = cfg.event_id(*next);
            *next += 1;
            let t = cfg.timestamp(number);
            let kind = cfg.event_type(id);
            last_ts = t;
            rows += 1;
            let mut event = None;
            for b in &mut building {
                match b {
                    Building::EventType(col) => col.append_value(code(kind)),
                    Building::Kind {
                        kind: own,
                        fields,
                        children,
                        valid,
                    } => {
                        valid.push(*own == kind);
                        if *own != kind {
                            children.iter_mut().for_each(Col::null);
                            continue;
                        }
                        let event =
                            event.get_or_insert_with(|| Event::new(cfg, kind, number, id, t));
                        for (col, &i) in children.iter_mut().zip(fields.iter()) {
                            event.append(col, i);
                        }
                    }
                }
            }
        }
        if rows == 0 {
            return Ok((None, last_ts));
        }
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (b, declared) in building.iter_mut().zip(self.schema.fields()) {
            match b {
                Building::EventType(col) => {
                    fields.push(Field::new(declared.name(), DataType::Int32, true));
                    arrays.push(Arc::new(col.finish()));
                }
                Building::Kind {
                    kind,
                    fields: idx,
                    children,
                    valid,
                } => {
                    let native = native_schema(*kind);
                    let DataType::Struct(names) = declared.data_type() else {
                        unreachable!("planned as a ROW");
                    };
                    let child_fields: Fields = idx
                        .iter()
                        .zip(names.iter())
                        .map(|(&i, n)| {
                            Field::new(n.name(), native.field(i).data_type().clone(), true)
                        })
                        .collect();
                    let values: Vec<ArrayRef> = children.iter_mut().map(Col::finish).collect();
                    let nulls = NullBuffer::from(std::mem::take(valid));
                    let array = StructArray::try_new(child_fields.clone(), values, Some(nulls))?;
                    fields.push(Field::new(
                        declared.name(),
                        DataType::Struct(child_fields),
                        true,
                    ));
                    arrays.push(Arc::new(array));
                }
            }
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
        Ok((Some(conform(batch, &self.schema)?), last_ts))
    }
}
