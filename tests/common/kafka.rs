//! A real single-node Apache Kafka broker for a test: KRaft (broker and
//! controller in one JVM), on free loopback ports, in a temporary
//! directory, stopped when dropped.
//!
//! The jars come from Maven Central (`tests/kafka/pom.xml`, which names
//! the version); `./dev test` copies them to
//! `~/.cache/eddy-kafka/<version>/lib` and says where in
//! `$EDDY_KAFKA_LIB` before the tests run.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Where the broker's jars are: `$EDDY_KAFKA_LIB`, or the newest version
/// in `~/.cache/eddy-kafka` (a `cargo nextest run` after `./dev test`).
pub fn kafka_lib() -> PathBuf {
    if let Ok(dir) = std::env::var("EDDY_KAFKA_LIB") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cache = PathBuf::from(home).join(".cache/eddy-kafka");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|d| d.flatten().map(|e| e.path().join("lib")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or(cache)
}

/// Two distinct free ports (both held while the second is found).
pub fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("a local address").port();
    (port(&a), port(&b))
}

/// A record read back, its key and value as text.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    /// Empty for a tombstone.
    pub value: String,
    /// It has no value: a delete of its key.
    pub tombstone: bool,
    /// Its headers, values as text.
    pub headers: Vec<(String, Option<String>)>,
    /// Epoch milliseconds.
    pub timestamp: Option<i64>,
}

/// Headers to produce: key, and value if any.
pub type TestHeaders<'a> = &'a [(&'a str, Option<&'a str>)];

/// A running broker.
pub struct Kafka {
    child: Child,
    dir: tempfile::TempDir,
    /// `host:port` for `properties.bootstrap.servers`.
    pub bootstrap: String,
}

impl Kafka {
    /// Starts a broker and waits until it answers.
    pub fn start() -> Kafka {
        let (port, controller) = free_ports();
        Self::start_on(port, controller)
    }

    /// Starts a broker listening on `port` (its controller on
    /// `controller`) and waits until it answers.
    pub fn start_on(port: u16, controller: u16) -> Kafka {
        let lib = kafka_lib();
        let has_kafka = std::fs::read_dir(&lib).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        });
        assert!(
            has_kafka,
            "Kafka's jars are not in {}: `./dev test` fetches them (Maven, tests/kafka/pom.xml)",
            lib.display()
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let properties = dir.path().join("server.properties");
        let data = dir.path().join("data");
        std::fs::write(
            &properties,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.voters=1@127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 log.dirs={}\n\
                 num.partitions=1\n\
                 auto.create.topics.enable=false\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=1\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 transaction.state.log.num.partitions=1\n\
                 group.initial.rebalance.delay.ms=0\n",
                data.display()
            ),
        )
        .expect("write server.properties");
        let log4j = dir.path().join("log4j2.properties");
        std::fs::write(
            &log4j,
            "rootLogger.level=WARN\n\
             rootLogger.appenderRef.stdout.ref=STDOUT\n\
             appender.stdout.type=Console\n\
             appender.stdout.name=STDOUT\n\
             appender.stdout.layout.type=PatternLayout\n\
             appender.stdout.layout.pattern=[%d] %p %m (%c)%n\n",
        )
        .expect("write log4j2.properties");
        let classpath = format!("{}/*", lib.display());
        let java = |main: &str| {
            let mut cmd = Command::new("java");
            cmd.args(["-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .args(["-cp", &classpath, main]);
            cmd
        };
        let format = java("kafka.tools.StorageTool")
            .args(["format", "-t", "ZWRkeS10ZXN0LWNsdXN0ZQ", "-c"])
            .arg(&properties)
            .output()
            .expect("run java (Kafka's StorageTool)");
        assert!(
            format.status.success(),
            "formatting Kafka's storage failed: {}",
            String::from_utf8_lossy(&format.stderr)
        );
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("broker.log");
        let child = java("kafka.Kafka")
            .arg(&properties)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the Kafka broker");
        let kafka = Kafka {
            child,
            dir,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        kafka.wait_ready();
        kafka
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        let consumer: BaseConsumer = self.client().create().expect("a client");
        loop {
            if let Ok(m) = consumer.fetch_metadata(None, Duration::from_secs(2))
                && !m.brokers().is_empty()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the Kafka broker did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// A client configuration for this broker.
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "3");
        config
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: rdkafka::admin::AdminClient<_> =
            self.client().create().expect("an admin client");
        let new = rdkafka::admin::NewTopic::new(
            topic,
            partitions,
            rdkafka::admin::TopicReplication::Fixed(1),
        );
        let results = futures::executor::block_on(
            admin.create_topics([&new], &rdkafka::admin::AdminOptions::new()),
        )
        .expect("create topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
    }

    /// Produces `records` (`(partition, value)`) and waits for them.
    pub fn produce(&self, topic: &str, records: &[(i32, String)]) {
        let producer: BaseProducer = self.client().create().expect("a producer");
        for (partition, value) in records {
            loop {
                match producer.send(
                    BaseRecord::<(), str>::to(topic)
                        .partition(*partition)
                        .payload(value),
                ) {
                    Ok(()) => break,
                    Err((_, _)) => producer.poll(Duration::from_millis(10)),
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Produces keyed records (`(partition, key, value)`, no value: a
    /// tombstone) and waits for them.
    pub fn produce_keyed(&self, topic: &str, records: &[(i32, &str, Option<&str>)]) {
        let producer: BaseProducer = self.client().create().expect("a producer");
        for (partition, key, value) in records {
            let mut record = BaseRecord::<str, str>::to(topic)
                .partition(*partition)
                .key(*key);
            if let Some(value) = value {
                record = record.payload(*value);
            }
            producer.send(record).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Produces values with headers (`(value, [(key, value)])`) to
    /// partition 0 and waits for them.
    pub fn produce_with_headers(&self, topic: &str, records: &[(&str, TestHeaders<'_>)]) {
        let producer: BaseProducer = self.client().create().expect("a producer");
        for (value, headers) in records {
            let mut owned = rdkafka::message::OwnedHeaders::new();
            for (key, value) in *headers {
                owned = owned.insert(rdkafka::message::Header { key, value: *value });
            }
            let record = BaseRecord::<(), str>::to(topic)
                .partition(0)
                .payload(*value)
                .headers(owned);
            producer.send(record).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Every record of `topic` up to its end now, in partition order;
    /// `read_committed` hides aborted and open transactions.
    pub fn read_all(&self, topic: &str, read_committed: bool) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "eddy-test-reader")
            .set("enable.auto.commit", "false")
            .set(
                "isolation.level",
                if read_committed {
                    "read_committed"
                } else {
                    "read_uncommitted"
                },
            )
            .create()
            .expect("a consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions: Vec<i32> = metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.id())
            .collect();
        let mut tpl = TopicPartitionList::new();
        let mut ends = std::collections::HashMap::new();
        // The log's end, markers included: a read_committed client (as
        // librdkafka's clients are by default) would give the last stable
        // offset, which lags a transaction's commit until its markers are
        // written.
        let probe: BaseConsumer = self
            .client()
            .set("isolation.level", "read_uncommitted")
            .create()
            .expect("a client");
        for p in &partitions {
            let (_, high) = probe
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks");
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut records = Vec::new();
        let started = Instant::now();
        loop {
            let position = consumer.position().expect("position");
            let done = partitions.iter().all(|p| {
                let end = ends[p];
                end == 0
                    || matches!(position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= end)
            });
            if done {
                eprintln!(
                    "read {} records of {topic} (ends {ends:?}, position {:?})",
                    records.len(),
                    position.to_topic_map()
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "could not read {topic} to its end"
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let text = |b: Option<&[u8]>| b.map(|p| String::from_utf8_lossy(p).into_owned());
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: text(m.key()),
                    value: text(m.payload()).unwrap_or_default(),
                    tombstone: m.payload().is_none(),
                    headers: m.headers().map_or_else(Vec::new, |h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), text(h.value)))
                            .collect()
                    }),
                    timestamp: m.timestamp().to_millis(),
                });
            }
        }
        records
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `sql` to a file in `dir` and returns its path.
pub fn sql_file(dir: &std::path::Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create the SQL file");
    f.write_all(sql.as_bytes()).expect("write the SQL file");
    path
}
