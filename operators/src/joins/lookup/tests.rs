//! The lookup join through the task loop, against expected rows worked out
//! by hand: keys computed from the input, NULL keys, several matches, a
//! residual condition, LEFT padding, a changelog input, and a table that
//! changes between batches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, Int8Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Operator as BinOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;
use eddy_state::MemoryBackend;

use super::{LookupJoinOperator, LookupJoinSpec, LookupJoinType, LookupTable};
use crate::message::Message;
use crate::runtime::run_operator_harness;
use crate::updating::{OP_DELETE, OP_INSERT};

/// A version and its `(key, value)` rows.
type Versioned = (u64, Vec<(Option<i64>, &'static str)>);

/// A table in memory whose rows a test can replace (a new version).
#[derive(Debug)]
struct Table {
    rows: Mutex<Versioned>,
}

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, true),
        Field::new("value", DataType::Utf8, true),
    ]))
}

impl LookupTable for Table {
    fn name(&self) -> String {
        "test table".into()
    }

    fn load(&self) -> crate::Result<Vec<RecordBatch>> {
        let rows = self.rows.lock().unwrap();
        let batch = RecordBatch::try_new(
            table_schema(),
            vec![
                Arc::new(Int64Array::from_iter(rows.1.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.1.iter().map(|r| r.1))),
            ],
        )?;
        Ok(vec![batch])
    }

    fn version(&self) -> Option<u64> {
        Some(self.rows.lock().unwrap().0)
    }
}

/// The input: `(a, _op)`.
fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("_op", DataType::Int8, false),
    ]))
}

fn data(rows: &[(Option<i64>, i8)]) -> Message {
    Message::Data(
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int8Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap(),
    )
}

/// `(a, key, value, _op)`.
fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("key", DataType::Int64, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("_op", DataType::Int8, false),
    ]))
}

/// `a % 10`: the key computed from the input.
fn probe_key() -> Arc<dyn PhysicalExpr> {
    Arc::new(BinaryExpr::new(
        Arc::new(Column::new("a", 0)),
        BinOp::Modulo,
        Arc::new(Literal::new(ScalarValue::Int64(Some(10)))),
    ))
}

fn operator(
    table: Arc<Table>,
    join_type: LookupJoinType,
    residual: Option<Arc<dyn PhysicalExpr>>,
) -> LookupJoinOperator {
    LookupJoinOperator::try_new(LookupJoinSpec {
        table,
        table_schema: table_schema(),
        table_keys: vec![0],
        probe_keys: vec![probe_key()],
        join_type,
        residual,
        output: output_schema(),
        op_column: Some(1),
        recheck: Duration::ZERO,
    })
    .unwrap()
}

/// Output rows as `(a, key, value, op)`.
type Out = (Option<i64>, Option<i64>, Option<String>, i8);

fn rows(messages: &[Message]) -> Vec<Out> {
    let mut out = Vec::new();
    for m in messages {
        if let Message::Data(b) = m {
            let a = b.column(0).as_primitive::<Int64Type>();
            let k = b.column(1).as_primitive::<Int64Type>();
            let v = b.column(2).as_string::<i32>();
            let op = b.column(3).as_primitive::<Int8Type>();
            for i in 0..b.num_rows() {
                out.push((
                    a.is_valid(i).then(|| a.value(i)),
                    k.is_valid(i).then(|| k.value(i)),
                    v.is_valid(i).then(|| v.value(i).to_string()),
                    op.value(i),
                ));
            }
        }
    }
    out.sort();
    out
}

fn table() -> Arc<Table> {
    Arc::new(Table {
        rows: Mutex::new((
            1,
            vec![
                (Some(1), "one"),
                (Some(2), "two"),
                (Some(2), "deux"),
                (None, "null"),
            ],
        )),
    })
}

fn run(op: LookupJoinOperator, input: Vec<Message>) -> Vec<Out> {
    rows(
        &run_operator_harness(
            Box::new(op),
            Arc::new(MemoryBackend::default()),
            vec![input],
        )
        .unwrap(),
    )
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn inner_and_left_lookups_with_computed_keys() {
    let input = || {
        vec![
            data(&[
                (Some(11), OP_INSERT),
                (Some(22), OP_INSERT),
                (Some(3), OP_INSERT),
                (None, OP_INSERT),
            ]),
            Message::EndOfStream,
        ]
    };
    // 11 % 10 = 1 matches "one"; 22 % 10 = 2 matches both 2s; 3 matches
    // nothing; a NULL key matches nothing (not even the table's NULL key).
    let inner = vec![
        (Some(11), Some(1), s("one"), OP_INSERT),
        (Some(22), Some(2), s("deux"), OP_INSERT),
        (Some(22), Some(2), s("two"), OP_INSERT),
    ];
    assert_eq!(
        run(operator(table(), LookupJoinType::Inner, None), input()),
        inner
    );
    let mut left = inner.clone();
    left.extend([
        (None, None, None, OP_INSERT),
        (Some(3), None, None, OP_INSERT),
    ]);
    left.sort();
    assert_eq!(
        run(operator(table(), LookupJoinType::Left, None), input()),
        left
    );
}

#[test]
fn the_residual_condition_decides_matches_and_padding() {
    // value <> 'two' (column 2 of input ++ table).
    let residual: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
        Arc::new(Column::new("value", 2)),
        BinOp::NotEq,
        Arc::new(Literal::new(ScalarValue::Utf8(Some("two".into())))),
    ));
    let input = vec![
        data(&[(Some(12), OP_INSERT), (Some(11), OP_INSERT)]),
        data(&[(Some(12), OP_DELETE)]),
        Message::EndOfStream,
    ];
    // "two" fails the condition, "deux" passes; a retraction looks up and
    // keeps its op.
    let op = operator(table(), LookupJoinType::Left, Some(residual.clone()));
    assert_eq!(
        run(op, input.clone()),
        vec![
            (Some(11), Some(1), s("one"), OP_INSERT),
            (Some(12), Some(2), s("deux"), OP_INSERT),
            (Some(12), Some(2), s("deux"), OP_DELETE),
        ]
    );
    // With only "two" for key 2, the condition leaves 12 unmatched: padded.
    let only_two = Arc::new(Table {
        rows: Mutex::new((1, vec![(Some(2), "two")])),
    });
    let op = operator(only_two, LookupJoinType::Left, Some(residual));
    assert_eq!(
        run(op, input),
        vec![
            (Some(11), None, None, OP_INSERT),
            (Some(12), None, None, OP_INSERT),
            (Some(12), None, None, OP_DELETE),
        ]
    );
}

/// A table that changes once its first lookup happened: the operator sees
/// the new version on the next batch.
#[derive(Debug)]
struct Changing {
    inner: Arc<Table>,
    loads: Mutex<u32>,
}

impl LookupTable for Changing {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn load(&self) -> crate::Result<Vec<RecordBatch>> {
        *self.loads.lock().unwrap() += 1;
        self.inner.load()
    }

    fn version(&self) -> Option<u64> {
        // Every check after the first load finds version 2, with new rows.
        if *self.loads.lock().unwrap() >= 1 {
            *self.inner.rows.lock().unwrap() = (2, vec![(Some(1), "uno")]);
        }
        self.inner.version()
    }
}

#[test]
fn a_changed_table_is_read_again() {
    let changing = Arc::new(Changing {
        inner: table(),
        loads: Mutex::new(0),
    });
    let op = LookupJoinOperator::try_new(LookupJoinSpec {
        table: changing.clone(),
        table_schema: table_schema(),
        table_keys: vec![0],
        probe_keys: vec![probe_key()],
        join_type: LookupJoinType::Inner,
        residual: None,
        output: output_schema(),
        op_column: Some(1),
        recheck: Duration::ZERO,
    })
    .unwrap();
    let got = run(
        op,
        vec![
            data(&[(Some(1), OP_INSERT)]),
            data(&[(Some(21), OP_INSERT)]),
            Message::EndOfStream,
        ],
    );
    assert_eq!(
        got,
        vec![
            (Some(1), Some(1), s("uno"), OP_INSERT),
            (Some(21), Some(1), s("uno"), OP_INSERT)
        ]
    );
    assert_eq!(*changing.loads.lock().unwrap(), 2);
}
