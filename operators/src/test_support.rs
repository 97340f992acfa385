//! Helpers shared by the operators' tests.

use std::collections::BTreeMap;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use eddy_state::StateBackend;

use crate::checkpoint::CheckpointHandle;
use crate::operator::{Collector, Emit, Operator, OperatorContext};
use crate::updating::{OP_COLUMN, OP_DELETE, OP_UPDATE_BEFORE, op_name};

/// A small deterministic generator (an LCG): the tests need no seed file.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `n`.
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The net effect of a changelog: each row with how many times it is
/// present at the end (rows that cancel out are left out).
pub fn net<K: Ord + Clone>(changes: &[(i8, K)]) -> BTreeMap<K, i64> {
    let mut net = BTreeMap::new();
    for (op, row) in changes {
        let d = if matches!(*op, OP_DELETE | OP_UPDATE_BEFORE) {
            -1
        } else {
            1
        };
        *net.entry(row.clone()).or_insert(0) += d;
    }
    net.retain(|_, n| *n != 0);
    net
}

/// An operator driven hook by hook, with what it emitted rendered as
/// `a,b,c` rows (`+I a,b` with a changelog).
pub struct Driven {
    op: Box<dyn Operator>,
    ctx: OperatorContext,
}

impl Driven {
    pub fn open(op: Box<dyn Operator>, state: &Arc<dyn StateBackend>) -> Self {
        let mut op = op;
        let ctx = OperatorContext {
            task_name: "ttl-test".into(),
            operator_id: "ttl-op".into(),
            subtask: 0,
            parallelism: 1,
            state: state.clone(),
            metrics: crate::metrics::JobMetrics::default(),
            checkpoints: CheckpointHandle::default(),
        };
        op.open(&ctx).unwrap();
        Self { op, ctx }
    }

    pub fn input(&mut self, input: usize, batch: RecordBatch) -> Vec<String> {
        let mut out = Collector::default();
        self.op.process_input_batch(input, batch, &mut out).unwrap();
        render(out.take())
    }

    pub fn watermark(&mut self, watermark: i64) -> Vec<String> {
        let mut out = Collector::default();
        self.op.handle_watermark(watermark, &mut out).unwrap();
        render(out.take())
    }

    pub fn checkpoint(&mut self) {
        self.op
            .handle_checkpoint(1, &mut Collector::default())
            .unwrap();
    }

    pub fn expired_keys(&self) -> u64 {
        self.ctx.metrics.expired_keys()
    }

    pub fn late_rows(&self) -> u64 {
        self.ctx.metrics.late_rows()
    }
}

pub fn render(items: Vec<Emit>) -> Vec<String> {
    let mut rows = Vec::new();
    for item in items {
        let Emit::Data(b) = item else { continue };
        let op = b.schema().index_of(OP_COLUMN).ok();
        for r in 0..b.num_rows() {
            let values: Vec<String> = (0..b.num_columns())
                .filter(|&c| Some(c) != op)
                .map(|c| array_value_to_string(b.column(c), r).unwrap())
                .collect();
            let values = values.join(",");
            rows.push(match op {
                Some(c) => {
                    let code = b
                        .column(c)
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::Int8Array>();
                    format!("{} {values}", op_name(code.unwrap().value(r)))
                }
                None => values,
            });
        }
    }
    rows
}
