//! `'format' = 'avro'` and `'avro-confluent'`: Avro's binary encoding of
//! each row, through arrow-avro (decoded a batch at a time into Arrow
//! columns), as Flink's formats.
//!
//! - `avro`: a message is one Avro datum of the table's schema, without
//!   framing; reader and writer share the schema the table implies.
//! - `avro-confluent`: Confluent's wire format, a zero byte, the writer
//!   schema's registry id (4 bytes, big-endian), then the datum. A reader
//!   fetches each id's schema from `'avro-confluent.url'` once, and reads
//!   it by Avro's schema resolution into the table's schema: a field the
//!   writer did not have is NULL, one the table does not declare is
//!   skipped. A writer registers the table's schema under
//!   `'avro-confluent.subject'` (by default `<topic>-value`, or
//!   `<topic>-key` for a key) and prefixes its id. An id the registry
//!   does not know is a bad record; a registry that does not answer fails
//!   the job.
//!
//! The table's Avro schema is a record named `record` in the namespace
//! `org.apache.flink.avro.generated`, as Flink names it, each column a
//! union of `null` and its type with a `null` default, so that records of
//! older writers resolve.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_avro::reader::{Decoder as AvroStreamDecoder, ReaderBuilder};
use arrow_avro::schema::{
    AVRO_FIELD_DEFAULT_METADATA_KEY, AVRO_NAME_METADATA_KEY, AVRO_NAMESPACE_METADATA_KEY,
    AvroSchema, Fingerprint, FingerprintAlgorithm, FingerprintStrategy, SCHEMA_METADATA_KEY,
    SINGLE_OBJECT_MAGIC, SchemaStore,
};
use arrow_avro::writer::WriterBuilder;
use arrow_avro::writer::format::{AvroBinaryFormat, AvroSoeFormat};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::registry_client::RegistryClient;
use super::{Decoder, Encoder, Format, Records};
use crate::options::{OptionDecl, OptionType, Options};
use crate::{ConnectorError, Result, conform};

pub(crate) const URL: &str = "avro-confluent.url";
pub(crate) const SUBJECT: &str = "avro-confluent.subject";

/// The Arrow schema arrow-avro reads and writes for a table of `schema`:
/// Flink's record name, nullable columns with `null` defaults, and the
/// Avro schema that makes in its metadata.
fn avro_arrow_schema(schema: &SchemaRef) -> Result<(Schema, AvroSchema)> {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = f.metadata().clone();
            metadata.retain(|k, _| k != crate::METADATA_FIELD);
            metadata.insert(AVRO_FIELD_DEFAULT_METADATA_KEY.into(), "null".into());
            f.as_ref()
                .clone()
                .with_nullable(true)
                .with_metadata(metadata)
        })
        .collect();
    let metadata = HashMap::from([
        (AVRO_NAME_METADATA_KEY.to_string(), "record".to_string()),
        (
            AVRO_NAMESPACE_METADATA_KEY.to_string(),
            "org.apache.flink.avro.generated".to_string(),
        ),
    ]);
    let arrow = Schema::new_with_metadata(fields, metadata);
    let avro = AvroSchema::try_from(&arrow)
        .map_err(|e| ConnectorError::Config(format!("these columns have no Avro schema: {e}")))?;
    let mut metadata = arrow.metadata().clone();
    metadata.insert(SCHEMA_METADATA_KEY.into(), avro.json_string.clone());
    Ok((arrow.with_metadata(metadata), avro))
}

#[derive(Debug)]
pub struct AvroFormat;

impl Format for AvroFormat {
    fn name(&self) -> &'static str {
        "avro"
    }

    fn help(&self) -> &'static str {
        "Avro's binary encoding, one datum per message, of the schema the table implies"
    }

    fn options(&self) -> Vec<OptionDecl> {
        Vec::new()
    }

    fn decoder(&self, schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let (_, avro) = avro_arrow_schema(schema)?;
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Rabin);
        let fingerprint = store.register(avro.clone()).map_err(avro_error)?;
        let Fingerprint::Rabin(rabin) = fingerprint else {
            return Err(ConnectorError::Config(
                "an Avro fingerprint is not Rabin".into(),
            ));
        };
        let mut prefix = SINGLE_OBJECT_MAGIC.to_vec();
        prefix.extend_from_slice(&rabin.to_le_bytes());
        Ok(Some(Box::new(AvroDecoder {
            declared: schema.clone(),
            reader: avro,
            framing: Framing::Plain { prefix, store },
            decoder: None,
        })))
    }

    fn encoder(&self, schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        let (arrow, _) = avro_arrow_schema(schema)?;
        Ok(Some(Box::new(AvroEncoder {
            arrow: Arc::new(arrow),
            register: None,
            encoder: None,
        })))
    }

    fn extension(&self) -> &'static str {
        "avro"
    }

    fn line_based(&self) -> bool {
        false
    }
}

#[derive(Debug)]
pub struct AvroConfluentFormat;

impl Format for AvroConfluentFormat {
    fn name(&self) -> &'static str {
        "avro-confluent"
    }

    fn help(&self) -> &'static str {
        "Avro in Confluent's wire format (a schema id, then the datum), with a schema registry"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::unset(
                URL,
                OptionType::String,
                "the schema registry, http://host:port (required)",
            ),
            OptionDecl::unset(
                SUBJECT,
                OptionType::String,
                "the subject a sink registers its schema under (default: <topic>-value, <topic>-key for a key)",
            ),
        ]
    }

    fn decoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        let (_, avro) = avro_arrow_schema(schema)?;
        Ok(Some(Box::new(AvroDecoder {
            declared: schema.clone(),
            reader: avro,
            framing: Framing::Confluent {
                registry: registry(options)?,
                schemas: HashMap::new(),
                unknown: HashSet::new(),
            },
            decoder: None,
        })))
    }

    fn encoder(&self, schema: &SchemaRef, options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        let (arrow, _) = avro_arrow_schema(schema)?;
        let subject = match (options.get(SUBJECT), options.get("topic")) {
            (Some(subject), _) => subject.to_string(),
            (None, Some(topic)) => format!("{topic}-value"),
            (None, None) => {
                return Err(ConnectorError::Option {
                    option: SUBJECT.into(),
                    message: "'avro-confluent' needs 'avro-confluent.subject' here (there is no topic to name it after)".into(),
                });
            }
        };
        Ok(Some(Box::new(AvroEncoder {
            arrow: Arc::new(arrow),
            register: Some((registry(options)?, subject)),
            encoder: None,
        })))
    }

    fn extension(&self) -> &'static str {
        "avro"
    }

    fn line_based(&self) -> bool {
        false
    }
}

/// The options a message key's format sees: `avro-confluent` registers a
/// key's schema under `<topic>-key`, as Confluent's serializers do.
pub(crate) fn key_options(options: &Options) -> Options {
    match options.get("topic") {
        Some(topic) => options.with(SUBJECT, &format!("{topic}-key")),
        None => options.clone(),
    }
}

fn registry(options: &Options) -> Result<RegistryClient> {
    let url = options.get(URL).ok_or_else(|| ConnectorError::Option {
        option: URL.into(),
        message: "'avro-confluent' needs 'avro-confluent.url', the schema registry".into(),
    })?;
    RegistryClient::new(url)
}

fn avro_error(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Config(format!("avro: {e}"))
}

/// How messages name their writer schema.
#[derive(Debug)]
enum Framing {
    /// Not at all: each is given the single-object prefix of the table's
    /// own schema for arrow-avro's stream decoder.
    Plain { prefix: Vec<u8>, store: SchemaStore },
    /// Confluent's prefix: the registry's id.
    Confluent {
        registry: RegistryClient,
        /// The writer schemas seen, by id.
        schemas: HashMap<u32, AvroSchema>,
        /// Ids the registry does not know.
        unknown: HashSet<u32>,
    },
}

#[derive(Debug)]
struct AvroDecoder {
    declared: SchemaRef,
    /// The table's schema, which every writer's is resolved into.
    reader: AvroSchema,
    framing: Framing,
    /// Built for the writer schemas known, again when one is added.
    decoder: Option<AvroStreamDecoder>,
}

/// The registry id of a Confluent-framed message.
fn confluent_id(record: &[u8]) -> std::result::Result<u32, String> {
    match record {
        [0, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err("not in Confluent's wire format (a zero byte, then a 4-byte schema id)".into()),
    }
}

impl AvroDecoder {
    fn build(&self, rows: usize) -> std::result::Result<AvroStreamDecoder, String> {
        let store = match &self.framing {
            Framing::Plain { store, .. } => store.clone(),
            Framing::Confluent { schemas, .. } => {
                let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
                for (id, schema) in schemas {
                    store
                        .set(Fingerprint::Id(*id), schema.clone())
                        .map_err(|e| e.to_string())?;
                }
                store
            }
        };
        ReaderBuilder::new()
            .with_reader_schema(self.reader.clone())
            .with_writer_schema_store(store)
            .with_batch_size(rows.max(1))
            .build_decoder()
            .map_err(|e| e.to_string())
    }

    /// Decodes one message, which must be exactly one datum.
    fn decode_one(
        decoder: &mut AvroStreamDecoder,
        message: &[u8],
        batches: &mut Vec<RecordBatch>,
    ) -> std::result::Result<(), String> {
        let mut at = 0;
        // A message of another writer schema than the last one's waits
        // for the rows before it to be flushed.
        for _ in 0..2 {
            at += decoder.decode(&message[at..]).map_err(|e| e.to_string())?;
            if at == message.len() {
                return Ok(());
            }
            batches.extend(decoder.flush().map_err(|e| e.to_string())?);
        }
        Err(format!(
            "{} bytes after an Avro datum of the schema (not one datum of it)",
            message.len() - at
        ))
    }
}

impl Decoder for AvroDecoder {
    fn prepare(&mut self, records: &Records) -> Result<()> {
        let Framing::Confluent {
            registry,
            schemas,
            unknown,
        } = &mut self.framing
        else {
            return Ok(());
        };
        for record in records.iter() {
            let Ok(id) = confluent_id(record) else {
                continue;
            };
            if schemas.contains_key(&id) || unknown.contains(&id) {
                continue;
            }
            match registry.schema(id)? {
                Some(schema) => {
                    schemas.insert(id, AvroSchema::new(schema));
                    self.decoder = None;
                }
                None => {
                    unknown.insert(id);
                }
            }
        }
        Ok(())
    }

    fn decode(&mut self, records: &Records) -> std::result::Result<RecordBatch, String> {
        if let Framing::Confluent { unknown, .. } = &self.framing {
            for record in records.iter() {
                let id = confluent_id(record)?;
                if unknown.contains(&id) {
                    return Err(format!("schema id {id} is not in the registry"));
                }
            }
        }
        let mut decoder = match self.decoder.take() {
            Some(decoder) => decoder,
            None => self.build(records.len().max(8192))?,
        };
        let mut batches = Vec::new();
        let mut framed = Vec::new();
        for record in records.iter() {
            let message = match &self.framing {
                Framing::Plain { prefix, .. } => {
                    framed.clear();
                    framed.extend_from_slice(prefix);
                    framed.extend_from_slice(record);
                    &framed[..]
                }
                Framing::Confluent { .. } => record,
            };
            // A failed decoder may be mid-datum: it is not kept.
            Self::decode_one(&mut decoder, message, &mut batches)?;
        }
        batches.extend(decoder.flush().map_err(|e| e.to_string())?);
        self.decoder = Some(decoder);
        let mut rows = Vec::with_capacity(batches.len());
        for batch in batches {
            let batch = RecordBatch::try_new(self.declared.clone(), batch.columns().to_vec())
                .or_else(|_| conform_columns(&batch, &self.declared))
                .map_err(|e| e.to_string())?;
            rows.push(batch);
        }
        datafusion::arrow::compute::concat_batches(&self.declared, &rows).map_err(|e| e.to_string())
    }

    fn schema(&self) -> SchemaRef {
        self.declared.clone()
    }
}

/// `batch`'s columns cast to `declared`'s types (Avro's types are
/// coarser: an INT column reads Avro `int`, a TIMESTAMP `long` millis).
fn conform_columns(batch: &RecordBatch, declared: &SchemaRef) -> Result<RecordBatch> {
    let renamed = RecordBatch::try_new(
        Arc::new(Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .zip(declared.fields())
                .map(|(have, want)| have.as_ref().clone().with_name(want.name()))
                .collect::<Vec<_>>(),
        )),
        batch.columns().to_vec(),
    )?;
    conform(renamed, declared)
}

#[derive(Debug)]
struct AvroEncoder {
    /// The rows' schema with the Avro schema in its metadata.
    arrow: SchemaRef,
    /// `avro-confluent`: where the schema is registered, and under what.
    register: Option<(RegistryClient, String)>,
    encoder: Option<arrow_avro::writer::Encoder>,
}

impl AvroEncoder {
    fn encoder(&mut self) -> Result<&mut arrow_avro::writer::Encoder> {
        if self.encoder.is_none() {
            let builder = WriterBuilder::new(self.arrow.as_ref().clone());
            let encoder = match &self.register {
                None => builder.build_encoder::<AvroBinaryFormat>(),
                Some((registry, subject)) => {
                    let schema = self
                        .arrow
                        .metadata()
                        .get(SCHEMA_METADATA_KEY)
                        .cloned()
                        .unwrap_or_default();
                    let id = registry.register(subject, &schema)?;
                    builder
                        .with_fingerprint_strategy(FingerprintStrategy::Id(id))
                        .build_encoder::<AvroSoeFormat>()
                }
            };
            self.encoder = Some(encoder.map_err(avro_error)?);
        }
        self.encoder
            .as_mut()
            .ok_or_else(|| ConnectorError::Config("no Avro encoder".into()))
    }
}

impl Encoder for AvroEncoder {
    fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        for record in self.records(batch)? {
            out.extend_from_slice(&record);
        }
        Ok(())
    }

    fn records(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let batch = RecordBatch::try_new(self.arrow.clone(), batch.columns().to_vec())?;
        let encoder = self.encoder()?;
        encoder.encode(&batch).map_err(avro_error)?;
        Ok(encoder.flush().iter().map(|row| row.to_vec()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{OnBad, decode_records};
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    fn table(columns: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn bids() -> RecordBatch {
        let schema = table(&[
            ("auction", DataType::Int64),
            ("bidder", DataType::Utf8),
            ("ts", DataType::Timestamp(TimeUnit::Millisecond, None)),
        ]);
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(StringArray::from(vec![Some("a\nb"), Some(""), None])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_700_000_000_123),
                    None,
                    Some(0),
                ])),
            ],
        )
        .unwrap()
    }

    fn records(messages: &[Vec<u8>]) -> Records {
        let mut records = Records::default();
        for m in messages {
            records.push(m);
        }
        records
    }

    #[test]
    fn plain_avro_round_trips_and_a_truncated_datum_is_bad() {
        let batch = bids();
        let schema = batch.schema();
        let options = Options::default();
        let mut encoder = AvroFormat.encoder(&schema, &options).unwrap().unwrap();
        let mut messages = encoder.records(&batch).unwrap();
        assert_eq!(messages.len(), 3);
        let mut decoder = AvroFormat.decoder(&schema, &options).unwrap().unwrap();
        assert_eq!(decoder.decode(&records(&messages)).unwrap(), batch);
        // A datum cut short, and one with bytes after it.
        messages[1].pop();
        messages[2].push(0);
        let decoded =
            decode_records(decoder.as_mut(), &records(&messages), OnBad::SetAside, true).unwrap();
        assert_eq!(decoded.batch.unwrap(), batch.slice(0, 1));
        let bad: Vec<usize> = decoded.bad.iter().map(|b| b.record).collect();
        assert_eq!(bad, [1, 2]);
        // What it read before still works.
        assert_eq!(
            decoder.decode(&records(&messages[..1])).unwrap(),
            batch.slice(0, 1)
        );
    }

    /// Confluent framing: a record of an older writer schema (without
    /// `note`) reads `note` as NULL; an unknown id is a bad record.
    #[test]
    fn confluent_records_resolve_older_writers_and_unknown_ids_are_bad() {
        let old = table(&[("auction", DataType::Int64), ("bidder", DataType::Utf8)]);
        let (arrow, avro) = avro_arrow_schema(&old).unwrap();
        let old_batch = RecordBatch::try_new(
            old.clone(),
            vec![
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["x"])),
            ],
        )
        .unwrap();
        let mut writer = WriterBuilder::new(arrow.clone())
            .with_fingerprint_strategy(FingerprintStrategy::Id(41))
            .build_encoder::<AvroSoeFormat>()
            .unwrap();
        writer
            .encode(&RecordBatch::try_new(Arc::new(arrow), old_batch.columns().to_vec()).unwrap())
            .unwrap();
        let old_message = writer.flush().iter().next().unwrap().to_vec();
        assert_eq!(&old_message[..5], &[0, 0, 0, 0, 41]);

        let new = table(&[
            ("auction", DataType::Int64),
            ("bidder", DataType::Utf8),
            ("note", DataType::Utf8),
        ]);
        let mut decoder = AvroDecoder {
            declared: new.clone(),
            reader: avro_arrow_schema(&new).unwrap().1,
            framing: Framing::Confluent {
                registry: RegistryClient::new("http://127.0.0.1:9").unwrap(),
                schemas: HashMap::from([(41, avro)]),
                unknown: HashSet::from([99]),
            },
            decoder: None,
        };
        let mut unknown = old_message.clone();
        unknown[4] = 99;
        let messages = [old_message, unknown, b"{}".to_vec()];
        let decoded =
            decode_records(&mut decoder, &records(&messages), OnBad::SetAside, true).unwrap();
        let batch = decoded.batch.unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).as_ref(), &Int64Array::from(vec![7]));
        assert!(
            batch.column(2).is_null(0),
            "a field the writer lacked is NULL"
        );
        let reasons: Vec<&str> = decoded.bad.iter().map(|b| b.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "schema id 99 is not in the registry",
                "not in Confluent's wire format (a zero byte, then a 4-byte schema id)"
            ]
        );
    }
}
