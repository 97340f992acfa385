//! The source's reader against librdkafka's in-process mock cluster: fast
//! checks of positions, ends and offset commits. The end-to-end tests
//! (tests/kafka.rs) run the binary against a real broker.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use eddy_operators::source::{Poll, SourceProvider, SourceReader, Split};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::KafkaSource;
use crate::format::FormatRegistry;
use crate::options::Options;
use crate::registry::ConnectorContext;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]))
}

/// A mock cluster with topic `t` of `partitions`, each holding `n` records
/// `{"v": i}` (i from 0, per partition).
fn cluster(
    partitions: i32,
    n: i64,
) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", partitions, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    for p in 0..partitions {
        for i in 0..n {
            let value = format!(r#"{{"v": {i}}}"#);
            producer
                .send(BaseRecord::<(), str>::to("t").partition(p).payload(&value))
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    cluster
}

fn source(bootstrap: &str, extra: &[(&str, &str)]) -> KafkaSource {
    source_of(&schema(), bootstrap, extra)
}

/// A source of `t` read from its earliest offset to its latest, as JSON.
fn source_of(schema: &SchemaRef, bootstrap: &str, extra: &[(&str, &str)]) -> KafkaSource {
    let mut pairs = vec![
        ("connector", "kafka"),
        ("topic", "t"),
        ("properties.bootstrap.servers", bootstrap),
        ("scan.startup.mode", "earliest-offset"),
        ("scan.bounded.mode", "latest-offset"),
        ("format", "json"),
    ];
    pairs.extend_from_slice(extra);
    let options = Options::new(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let formats = FormatRegistry::default();
    let context = ConnectorContext {
        options: &options,
        name: "orders",
        schema,
        primary_key: &[],
        formats: &formats,
    };
    KafkaSource::try_new(&context, false).unwrap()
}

fn values(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// Polls until every split given is finished, or `stop_after` batches.
fn read(reader: &mut dyn SourceReader, splits: usize, stop_after: usize) -> Vec<(usize, Vec<i64>)> {
    let (mut got, mut open, mut batches) = (Vec::new(), splits, 0);
    let started = Instant::now();
    while open > 0 && batches < stop_after {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reader never ended"
        );
        match reader.poll().unwrap() {
            Poll::Batch(split, batch) => {
                got.push((split, values(&batch)));
                batches += 1;
            }
            Poll::Finished(_) => open -= 1,
            Poll::Pending => reader.wait(Duration::from_millis(10)),
            Poll::Rejected(_, r, _) => panic!("unexpected bad records: {r:?}"),
        }
    }
    got
}

fn assign(reader: &mut dyn SourceReader, splits: &[Split]) {
    for (i, split) in splits.iter().enumerate() {
        reader.add_split(i, split.clone()).unwrap();
    }
}

#[test]
fn partitions_are_splits_read_to_their_bounded_ends() {
    let cluster = cluster(3, 50);
    let source = source(&cluster.bootstrap_servers(), &[]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let ids: Vec<&str> = splits.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["t-0", "t-1", "t-2"]);
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    let got = read(&mut *reader, splits.len(), usize::MAX);
    for split in 0..3 {
        let rows: Vec<i64> = got
            .iter()
            .filter(|(s, _)| *s == split)
            .flat_map(|(_, v)| v.clone())
            .collect();
        assert!(
            rows == (0..50).collect::<Vec<_>>(),
            "split {split}: {rows:?}"
        );
    }
}

#[test]
fn a_reader_resumes_from_its_positions_without_gap_or_repeat() {
    let cluster = cluster(2, 20_000);
    let source = source(&cluster.bootstrap_servers(), &[]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut first = source.reader().unwrap();
    assign(&mut *first, &splits);
    // Hand over a batch, then take the positions as a barrier would: more
    // records are polled and decoded than handed over.
    let before = read(&mut *first, splits.len(), 1);
    let positions = first.positions();
    assert_eq!(positions.len(), 2, "both splits are still held");
    drop(first);
    let mut second = source.reader().unwrap();
    for (index, position) in &positions {
        let mut split = splits[*index].clone();
        split.position = position.clone();
        second.add_split(*index, split).unwrap();
    }
    let after = read(&mut *second, splits.len(), usize::MAX);
    for split in 0..2 {
        let rows: Vec<i64> = before
            .iter()
            .chain(&after)
            .filter(|(s, _)| *s == split)
            .flat_map(|(_, v)| v.clone())
            .collect();
        let first_wrong = rows.iter().enumerate().find(|(i, v)| **v != *i as i64);
        assert!(
            rows.len() == 20_000 && first_wrong.is_none(),
            "split {split}: {} rows, first out of place: {first_wrong:?}; batches before: {:?}",
            rows.len(),
            before
                .iter()
                .map(|(s, v)| (*s, v.first(), v.len()))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_lag_is_each_partitions_end_minus_what_was_handed_over() {
    let cluster = cluster(2, 20_000);
    let source = source(&cluster.bootstrap_servers(), &[]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    let handed = read(&mut *reader, splits.len(), 1);
    // librdkafka's statistics (every second) tell the ends; waiting polls
    // records but hands none over.
    let started = Instant::now();
    let mut lag = reader.lag();
    while lag.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no lag: {lag:?}"
        );
        reader.wait(Duration::from_millis(100));
        lag = reader.lag();
    }
    lag.sort();
    let expected: Vec<(String, u64)> = splits
        .iter()
        .enumerate()
        .map(|(i, split)| {
            let rows: usize = handed
                .iter()
                .filter(|(s, _)| *s == i)
                .map(|(_, v)| v.len())
                .sum();
            (split.id.clone(), 20_000 - rows as u64)
        })
        .collect();
    assert_eq!(lag, expected);
}

#[test]
fn a_completed_checkpoint_commits_its_offsets_to_the_group() {
    let cluster = cluster(1, 20);
    let bootstrap = cluster.bootstrap_servers();
    let source = source(&bootstrap, &[("properties.group.id", "lag")]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    read(&mut *reader, 1, 1);
    let positions = reader.positions();
    assert_eq!(positions.len(), 1, "the split is still held");
    reader.checkpoint_complete(1, &positions);
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "lag")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("t", 0);
    let started = Instant::now();
    loop {
        // The commit is asynchronous: serve it, then look.
        let _ = reader.poll();
        let committed = group
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .unwrap();
        if let Some(Offset::Offset(o)) = committed.find_partition("t", 0).map(|e| e.offset()) {
            let position: serde_json::Value = serde_json::from_slice(&positions[0].1).unwrap();
            assert_eq!(Some(o), position["next"].as_i64());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing was committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn key_columns_are_read_from_the_key_with_except_key() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 1, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    for i in 0..5 {
        let (key, value) = (
            format!(r#"{{"id": {i}}}"#),
            format!(r#"{{"v": {}}}"#, i * 10),
        );
        producer
            .send(BaseRecord::to("t").partition(0).key(&key).payload(&value))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let pairs = [
        ("connector", "kafka"),
        ("topic", "t"),
        ("properties.bootstrap.servers", &cluster.bootstrap_servers()),
        ("scan.startup.mode", "earliest-offset"),
        ("scan.bounded.mode", "latest-offset"),
        ("key.fields", "id"),
        ("key.format", "json"),
        ("value.fields-include", "EXCEPT_KEY"),
        ("value.format", "json"),
    ];
    let registry = crate::ConnectorRegistry::default();
    let given: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let validated = registry.validate(&given, crate::Role::Source).unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("v", DataType::Int64, true),
        Field::new("id", DataType::Int64, true),
    ]));
    let source = registry
        .source(&validated, crate::Table::new("t", &schema))
        .unwrap();
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    let mut rows = Vec::new();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reader never ended"
        );
        match reader.poll().unwrap() {
            Poll::Batch(_, batch) => {
                let v = batch.column(0).as_primitive::<Int64Type>();
                let id = batch.column(1).as_primitive::<Int64Type>();
                rows.extend(v.values().iter().zip(id.values()).map(|(v, id)| (*v, *id)));
            }
            Poll::Finished(_) => break,
            Poll::Pending => reader.wait(Duration::from_millis(10)),
            Poll::Rejected(_, r, _) => panic!("unexpected bad records: {r:?}"),
        }
    }
    assert_eq!(rows, (0..5).map(|i| (i * 10, i)).collect::<Vec<_>>());
}

#[test]
fn metadata_columns_come_from_the_records() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 2, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    for i in 0..4i64 {
        let value = format!(r#"{{"v": {i}}}"#);
        let record = BaseRecord::<(), str>::to("t")
            .partition((i % 2) as i32)
            .timestamp(1_700_000_000_000 + i)
            .payload(&value);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let meta = |name: &str, t: DataType, key: &str| {
        Field::new(name, t, true)
            .with_metadata([(crate::METADATA_FIELD.to_string(), key.to_string())].into())
    };
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        meta("part", DataType::Int64, "partition"),
        Field::new("v", DataType::Int64, true),
        meta("off", DataType::Int64, "offset"),
        meta(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            "timestamp",
        ),
        meta("topic", DataType::Utf8, "topic"),
    ]));
    let source = source_of(&schema, &cluster.bootstrap_servers(), &[]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    let (mut rows, mut open) = (Vec::new(), 2);
    let started = Instant::now();
    while open > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reader never ended"
        );
        match reader.poll().unwrap() {
            Poll::Batch(_, batch) => {
                let int = |i: usize| {
                    batch
                        .column(i)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                };
                let ts = batch
                    .column(3)
                    .as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>()
                    .values()
                    .to_vec();
                let topics = batch.column(4).as_string::<i32>();
                assert!(topics.iter().all(|t| t == Some("t")));
                let (v, part, off) = (int(1), int(0), int(2));
                for (r, ts) in ts.into_iter().enumerate() {
                    rows.push((v[r], part[r], off[r], ts));
                }
            }
            Poll::Finished(_) => open -= 1,
            Poll::Pending => reader.wait(Duration::from_millis(10)),
            Poll::Rejected(_, r, _) => panic!("unexpected bad records: {r:?}"),
        }
    }
    rows.sort_unstable();
    // (v, partition, offset, timestamp): v = i went to partition i % 2 at
    // offset i / 2, stamped 1_700_000_000_000 + i.
    let want: Vec<_> = (0..4)
        .map(|i| (i, i % 2, i / 2, 1_700_000_000_000 + i))
        .collect();
    assert_eq!(rows, want);
}

#[test]
fn a_pattern_discovers_new_topics_from_their_start() {
    let cluster = cluster(1, 3);
    let bootstrap = cluster.bootstrap_servers();
    let options = Options::new(
        [
            ("connector", "kafka"),
            ("topic-pattern", "t|u"),
            ("properties.bootstrap.servers", bootstrap.as_str()),
            ("scan.startup.mode", "latest-offset"),
            ("scan.topic-partition-discovery.interval", "1 s"),
            ("format", "json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let (formats, schema) = (FormatRegistry::default(), schema());
    let source = KafkaSource::try_new(
        &ConnectorContext {
            options: &options,
            name: "t",
            schema: &schema,
            primary_key: &[],
            formats: &formats,
        },
        false,
    )
    .unwrap();
    let mut enumerator = source.enumerator().unwrap();
    assert_eq!(
        enumerator.discovery_interval(),
        Some(Duration::from_secs(1))
    );
    let first = enumerator.list().unwrap();
    assert_eq!(first.len(), 1);
    // Listed at the first start: the startup mode (latest) holds.
    let at: serde_json::Value = serde_json::from_slice(&first[0].position).unwrap();
    assert_eq!(at["next"], 3);
    cluster.create_topic("u", 2, 1).unwrap();
    cluster.create_topic("v", 1, 1).unwrap();
    let started = Instant::now();
    let again = loop {
        let again = enumerator.list().unwrap();
        if again.len() > 1 {
            break again;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "u never appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let ids: Vec<&str> = again.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["t-0", "u-0", "u-1"], "v does not match the pattern");
    // Found later: read from the start, as Flink does.
    for split in &again[1..] {
        let at: serde_json::Value = serde_json::from_slice(&split.position).unwrap();
        assert_eq!(at["next"], 0, "{}", split.id);
    }
}

/// Bad records (not JSON, a type mismatch, an empty value) are set aside
/// with their offsets; the good ones keep their own metadata.
#[test]
fn bad_records_go_to_dead_letters_with_their_offsets() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("t", 1, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .create()
        .unwrap();
    let values = [
        r#"{"v": 0}"#,
        "{oops",
        r#"{"v": 2}"#,
        r#"{"v": "x"}"#,
        "",
        r#"{"v": 5}"#,
    ];
    for value in values {
        let record = BaseRecord::<(), str>::to("t").partition(0).payload(value);
        producer.send(record).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("v", DataType::Int64, true),
        Field::new("off", DataType::Int64, true)
            .with_metadata([(crate::METADATA_FIELD.to_string(), "offset".to_string())].into()),
    ]));
    let bootstrap = cluster.bootstrap_servers();
    let source = source_of(&schema, &bootstrap, &[("bad-data", "dead-letter")]);
    let splits = source.enumerator().unwrap().list().unwrap();
    let mut reader = source.reader().unwrap();
    assign(&mut *reader, &splits);
    let (mut good, mut letters) = (Vec::new(), Vec::new());
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(30), "never ended");
        match reader.poll().unwrap() {
            Poll::Batch(_, batch) => good.push(batch),
            Poll::Rejected(_, eddy_operators::source::Rejected::DeadLetters(dead), batch) => {
                letters.push(dead);
                good.extend(batch);
            }
            Poll::Rejected(_, other, _) => panic!("{other:?}"),
            Poll::Finished(_) => break,
            Poll::Pending => reader.wait(Duration::from_millis(10)),
        }
    }
    let mut rows = Vec::new();
    for batch in &good {
        let int = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
        let (v, off) = (int(0), int(1));
        rows.extend((0..batch.num_rows()).map(|r| (v.value(r), off.value(r))));
    }
    let mut dead = Vec::new();
    for batch in &letters {
        let text = |c: usize, r: usize| {
            datafusion::arrow::util::display::array_value_to_string(batch.column(c), r).unwrap()
        };
        for r in 0..batch.num_rows() {
            dead.push((text(0, r), text(3, r), text(4, r), text(5, r)));
        }
    }
    assert_eq!(rows, vec![(0, 0), (2, 2), (5, 5)]);
    let at = |record: &str, offset: &str| {
        (
            record.to_string(),
            "orders".to_string(),
            "t-0".to_string(),
            offset.to_string(),
        )
    };
    assert_eq!(
        dead,
        vec![at("{oops", "1"), at(r#"{"v": "x"}"#, "3"), at("", "4")]
    );
}
