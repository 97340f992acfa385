//! A test connector registered the way an embedding program registers
//! its own: `connector = 'channel'`, a source whose rows the test pushes
//! while the job runs. Each split is a queue; a reader with an empty queue
//! has nothing *now* (it never blocks), and a split ends when the test
//! closes it. What a broker with quiet partitions looks like to the
//! runtime.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use eddy_connectors::options::{OptionDecl, OptionType};
use eddy_connectors::{Connector, ConnectorContext};
use eddy_operators::source::{
    Poll, SourceProvider, SourceReader, Split, SplitAssignment, SplitEnumerator,
};

/// The queues of a channel source's splits.
#[derive(Debug, Clone, Default)]
pub struct Channel {
    splits: Arc<Mutex<Vec<Queue>>>,
}

#[derive(Debug, Default)]
struct Queue {
    rows: VecDeque<RecordBatch>,
    closed: bool,
}

/// The rows a channel source has: `k` BIGINT, `ts` TIMESTAMP(3).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

impl Channel {
    /// A channel of `splits` splits.
    pub fn new(splits: usize) -> Self {
        let channel = Channel::default();
        channel
            .splits
            .lock()
            .unwrap()
            .resize_with(splits, Queue::default);
        channel
    }

    /// Rows `(k, ts in ms)` for split `split`.
    pub fn push(&self, split: usize, rows: &[(i64, i64)]) {
        let ks = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let ts = TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(ks), Arc::new(ts)]).unwrap();
        self.splits.lock().unwrap()[split].rows.push_back(batch);
    }

    /// Split `split` has no more rows.
    pub fn close(&self, split: usize) {
        self.splits.lock().unwrap()[split].closed = true;
    }

    /// The connector to register, named `channel`.
    pub fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(ChannelConnector(self.clone()))
    }
}

#[derive(Debug)]
struct ChannelConnector(Channel);

impl Connector for ChannelConnector {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn help(&self) -> &'static str {
        "rows a test pushes while the job runs"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![OptionDecl::optional(
            "note",
            OptionType::String,
            "",
            "ignored",
        )]
    }

    fn is_source(&self) -> bool {
        true
    }

    fn source(
        &self,
        _ctx: &ConnectorContext<'_>,
    ) -> eddy_connectors::Result<Arc<dyn SourceProvider>> {
        Ok(Arc::new(self.0.clone()))
    }
}

impl SourceProvider for Channel {
    fn enumerator(&self) -> eddy_operators::Result<Box<dyn SplitEnumerator>> {
        Ok(Box::new(self.clone()))
    }

    fn reader(&self) -> eddy_operators::Result<Box<dyn SourceReader>> {
        Ok(Box::new(ChannelReader {
            channel: self.clone(),
            held: Vec::new(),
            turn: 0,
        }))
    }

    fn assignment(&self) -> SplitAssignment {
        SplitAssignment::Spread
    }

    fn max_parallelism(&self) -> Option<usize> {
        Some(self.splits.lock().unwrap().len())
    }
}

impl SplitEnumerator for Channel {
    fn list(&mut self) -> eddy_operators::Result<Vec<Split>> {
        let n = self.splits.lock().unwrap().len();
        Ok((0..n)
            .map(|i| Split {
                id: format!("queue-{i}"),
                position: i.to_le_bytes().to_vec(),
                size: None,
            })
            .collect())
    }
}

struct ChannelReader {
    channel: Channel,
    /// (runtime number, queue index)
    held: Vec<(usize, usize)>,
    turn: usize,
}

impl SourceReader for ChannelReader {
    fn name(&self) -> String {
        "channel".into()
    }

    fn add_split(&mut self, split: usize, assigned: Split) -> eddy_operators::Result<()> {
        let queue = usize::from_le_bytes(assigned.position.try_into().unwrap());
        self.held.push((split, queue));
        Ok(())
    }

    fn poll(&mut self) -> eddy_operators::Result<Poll> {
        let mut queues = self.channel.splits.lock().unwrap();
        for _ in 0..self.held.len() {
            let at = self.turn % self.held.len();
            self.turn += 1;
            let (split, queue) = self.held[at];
            let q = &mut queues[queue];
            if let Some(batch) = q.rows.pop_front() {
                return Ok(Poll::Batch(split, batch));
            }
            if q.closed {
                self.held.remove(at);
                return Ok(Poll::Finished(split));
            }
        }
        Ok(Poll::Pending)
    }

    fn positions(&self) -> Vec<(usize, Vec<u8>)> {
        // Not replayable: a restore reads what is pushed after it.
        self.held
            .iter()
            .map(|&(split, queue)| (split, queue.to_le_bytes().to_vec()))
            .collect()
    }
}
