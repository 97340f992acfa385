//! `'format' = 'parquet'`: Apache Parquet files, for the file connector.
//!
//! Parquet is not a format of records: a file is row groups of column
//! chunks with a footer that describes them, so it is read and written
//! whole by the file connector (see `file/parquet.rs` and the file sink),
//! not through a [`Decoder`](super::Decoder) or an
//! [`Encoder`](super::Encoder). This module declares its options once and
//! turns them into the writer's properties.
//!
//! Options follow Flink's Parquet format: `parquet.compression` and
//! `parquet.block.size` (the size a row group is closed at).

use ::parquet::basic::{Compression, GzipLevel, ZstdLevel};
use ::parquet::file::properties::WriterProperties;
use datafusion::arrow::datatypes::SchemaRef;

use super::{Decoder, Encoder, Format};
use crate::options::{OptionDecl, OptionType, Options};
use crate::{ConnectorError, Result};

/// The format's name.
pub const PARQUET: &str = "parquet";

const COMPRESSION: &str = "parquet.compression";
const BLOCK_SIZE: &str = "parquet.block.size";
const CODECS: &[&str] = &["snappy", "zstd", "gzip", "lz4", "uncompressed"];

#[derive(Debug)]
pub struct ParquetFormat;

impl Format for ParquetFormat {
    fn name(&self) -> &'static str {
        PARQUET
    }

    fn help(&self) -> &'static str {
        "Apache Parquet files (file connector only): row groups read in parallel, only the columns a query uses decoded"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::optional(
                COMPRESSION,
                OptionType::OneOf(CODECS),
                "snappy",
                "the codec of written column chunks (any is read)",
            )
            .sink_only(),
            OptionDecl::optional(
                BLOCK_SIZE,
                OptionType::MemorySize,
                "128 mb",
                "a row group being written is closed once it holds about this much",
            )
            .sink_only(),
        ]
    }

    /// Read by the file connector, not record by record.
    fn decoder(&self, _schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Decoder>>> {
        Ok(None)
    }

    /// Written by the file sink, not record by record.
    fn encoder(&self, _schema: &SchemaRef, _options: &Options) -> Result<Option<Box<dyn Encoder>>> {
        Ok(None)
    }

    fn extension(&self) -> &'static str {
        "parquet"
    }

    fn line_based(&self) -> bool {
        false
    }
}

/// How a file sink writes Parquet: the writer's properties.
#[derive(Debug, Clone)]
pub struct ParquetWriting {
    pub properties: WriterProperties,
}

impl ParquetWriting {
    pub fn of(options: &Options) -> Result<Self> {
        let codec = options.get(COMPRESSION).unwrap_or("snappy");
        let compression = match codec.to_ascii_lowercase().as_str() {
            "snappy" => Compression::SNAPPY,
            "zstd" => Compression::ZSTD(ZstdLevel::default()),
            "gzip" => Compression::GZIP(GzipLevel::default()),
            "lz4" => Compression::LZ4_RAW,
            "uncompressed" => Compression::UNCOMPRESSED,
            other => {
                return Err(ConnectorError::Option {
                    option: COMPRESSION.into(),
                    message: format!("unknown codec '{other}'"),
                });
            }
        };
        let block_size = options
            .memory_bytes(BLOCK_SIZE)?
            .unwrap_or(128 << 20)
            .max(1);
        Ok(Self {
            properties: WriterProperties::builder()
                .set_compression(compression)
                // Closed at about this size, as Java's `parquet.block.size`.
                .set_max_row_group_bytes(Some(block_size as usize))
                .set_created_by(format!("eddy {}", env!("CARGO_PKG_VERSION")))
                .build(),
        })
    }
}
