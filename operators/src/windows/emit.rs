//! Emit control shared by the window aggregates (tumbling/hopping/
//! cumulating and session): allowed lateness, early firing, and the `_op`
//! column that either one adds to the output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::updating::OP_COLUMN;
use crate::watermark::Clock;
use crate::{OperatorError, Result};

pub(crate) struct EmitControl {
    /// How long (ms) a fired window still takes late rows; 0 = none.
    pub allowed_lateness: i64,
    /// Emit the running results of open windows this often.
    pub early_fire: Option<Duration>,
    last_early: Option<Instant>,
    pub clock: Clock,
}

impl Default for EmitControl {
    fn default() -> Self {
        Self {
            allowed_lateness: 0,
            early_fire: None,
            last_early: None,
            clock: Box::new(Instant::now),
        }
    }
}

impl EmitControl {
    /// Either option makes the output a changelog.
    pub fn changelog(&self) -> bool {
        self.allowed_lateness > 0 || self.early_fire.is_some()
    }

    pub fn set_allowed_lateness(&mut self, ms: i64) -> Result<()> {
        if ms < 0 {
            return Err(OperatorError::Internal(format!(
                "negative allowed lateness {ms} ms"
            )));
        }
        self.allowed_lateness = ms;
        Ok(())
    }

    /// Whether an early firing is due: `early_fire` has passed since the
    /// last one (the first call starts the count). Checked as input
    /// arrives, and on the runtime's timer ([`Self::next_early_fire`]).
    pub fn early_fire_due(&mut self) -> bool {
        let Some(delay) = self.early_fire else {
            return false;
        };
        let now = (self.clock)();
        let last = *self.last_early.get_or_insert(now);
        if now.saturating_duration_since(last) < delay {
            return false;
        }
        self.last_early = Some(now);
        true
    }

    /// When the next early firing is due, if one is (`pending`: open
    /// windows took rows since the last one): the runtime's timer.
    pub fn next_early_fire(&self, pending: bool) -> Option<Instant> {
        let delay = self.early_fire?;
        if !pending {
            return None;
        }
        Some(
            self.last_early
                .map_or_else(|| (self.clock)(), |last| last + delay),
        )
    }

    /// `schema`, with `_op` appended if the output is a changelog and
    /// does not have it yet.
    pub fn output_schema(&self, schema: &SchemaRef) -> SchemaRef {
        if !self.changelog() || schema.column_with_name(OP_COLUMN).is_some() {
            return schema.clone();
        }
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        Arc::new(Schema::new(fields))
    }
}
