//! A source file's bytes: as they are, or decompressed (`.gz`, `.zst`).
//!
//! A compressed file cannot be cut into byte ranges or sought in: it is
//! one split, read from its start, and a position in it is an offset in
//! its decompressed bytes, reached again after a restore by decompressing
//! up to it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a file is compressed, by its name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz" | "gzip") => Compression::Gzip,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// A file's bytes, buffered, from some decompressed offset on.
pub(crate) struct Input {
    reader: BufReader<Box<dyn Read + Send>>,
    /// Bytes of the file itself read so far, for progress (a compressed
    /// file's are fewer than the bytes it gives).
    read: Arc<AtomicU64>,
}

/// Counts the bytes read through it.
struct Counting {
    file: File,
    read: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Input {
    /// `path`'s bytes from decompressed offset `offset` on.
    pub(crate) fn open_at(path: &Path, offset: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let compression = Compression::of(path);
        if compression == Compression::None {
            file.seek(SeekFrom::Start(offset))?;
        }
        let read = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            file,
            read: read.clone(),
        };
        let stream: Box<dyn Read + Send> = match compression {
            Compression::None => Box::new(counting),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counting)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(counting)?),
        };
        let mut input = Self {
            reader: BufReader::with_capacity(256 << 10, stream),
            read,
        };
        if compression != Compression::None {
            let skipped = io::copy(&mut (&mut input.reader).take(offset), &mut io::sink())?;
            if skipped < offset {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ends at byte {skipped} of its contents, before {offset}"),
                ));
            }
        }
        Ok(input)
    }

    /// Bytes of the file itself read so far.
    pub(crate) fn file_bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for Input {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount);
    }
}
