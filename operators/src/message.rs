//! What travels on the edges of a dataflow.
//!
//! ```text
//!   Data(batch) Data(batch) Watermark(t) Data(batch) Barrier(n) ... Watermark(MAX) EndOfStream
//! ```
//!
//! - `Watermark(t)`: no row with event time `<= t` is expected any more (in
//!   milliseconds since the epoch). Watermarks on one edge never decrease.
//! - `Barrier(n)`: marks the cut for checkpoint `n`.
//! - `Idle`: the sender will have no rows for a while; the receiver's
//!   watermark does not wait for this edge until it sends rows or a
//!   watermark again.
//! - `EndOfStream`: the last message on an edge. A bounded source sends
//!   `Watermark(i64::MAX)` before it, so every open window fires.

use datafusion::arrow::record_batch::RecordBatch;

/// Event time in milliseconds since the Unix epoch.
pub type Timestamp = i64;

/// The watermark that closes every window: sent at end of input.
pub const MAX_WATERMARK: Timestamp = i64::MAX;

#[derive(Debug, Clone)]
pub enum Message {
    Data(RecordBatch),
    Watermark(Timestamp),
    Barrier(u64),
    Idle,
    EndOfStream,
}
