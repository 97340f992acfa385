//! A RabbitMQ broker of Debian's `rabbitmq-server` package, started for a
//! test as its own node on free ports with its data in a temporary
//! directory, and stopped when dropped; and a small client over lapin.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

pub struct RabbitMq {
    pub port: u16,
    dist: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    runtime: tokio::runtime::Runtime,
}

impl RabbitMq {
    pub fn start() -> RabbitMq {
        let dir = tempfile::tempdir().unwrap();
        let (port, dist) = super::kafka::free_ports();
        std::fs::write(dir.path().join("enabled_plugins"), "[].").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut broker = RabbitMq {
            port,
            dist,
            dir,
            child: None,
            runtime,
        };
        broker.run();
        broker
    }

    /// Starts the node on its ports and data, and waits until it takes
    /// connections.
    fn run(&mut self) {
        let path = |p: &str| self.dir.path().join(p).to_string_lossy().into_owned();
        let child = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server")
            .env("HOME", self.dir.path())
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist.to_string())
            .env("RABBITMQ_NODENAME", format!("eddy{}@localhost", self.port))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", path("mnesia"))
            .env("RABBITMQ_LOG_BASE", path("log"))
            .env("RABBITMQ_PID_FILE", path("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", path("plugins"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server (Debian's rabbitmq-server package: ./dev test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.runtime.block_on(self.try_channel()).is_err() {
            assert!(Instant::now() < deadline, "rabbitmq-server did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Kills the node (durable queues and persistent messages stay on
    /// disk).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The Erlang node the script started outlives it: it is known by
        // its home, this broker's directory.
        let _ = Command::new("pkill")
            .args(["-9", "-f", "--"])
            .arg(format!("home {}", self.dir.path().display()))
            .status();
    }

    /// Starts it again on the same ports and data, after [`Self::stop`].
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    async fn try_channel(&self) -> lapin::Result<(Connection, Channel)> {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let connection = Connection::connect(&self.url(), properties).await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }

    /// Declares a durable queue.
    pub fn declare(&self, queue: &str) {
        self.runtime.block_on(async {
            let (_c, channel) = self.try_channel().await.unwrap();
            let durable = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue, durable, FieldTable::default())
                .await
                .unwrap();
        });
    }

    /// Publishes `payloads` to `queue` (through the default exchange),
    /// confirmed.
    pub fn publish(&self, queue: &str, payloads: &[String]) {
        self.runtime.block_on(async {
            let (_c, channel) = self.try_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let mut confirms = Vec::new();
            for p in payloads {
                let confirm = channel
                    .basic_publish(
                        "",
                        queue,
                        BasicPublishOptions::default(),
                        p.as_bytes(),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap();
                confirms.push(confirm);
            }
            for c in confirms {
                assert!(c.await.unwrap().is_ack());
            }
        });
    }

    /// Messages ready in `queue`.
    pub fn count(&self, queue: &str) -> u32 {
        self.runtime.block_on(async {
            let (_c, channel) = self.try_channel().await.unwrap();
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue, passive, FieldTable::default())
                .await
                .unwrap()
                .message_count()
        })
    }

    /// Takes every message of `queue`.
    pub fn drain(&self, queue: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let (_c, channel) = self.try_channel().await.unwrap();
            let mut out = Vec::new();
            while let Some(message) = channel
                .basic_get(queue, BasicGetOptions::default())
                .await
                .unwrap()
            {
                out.push(String::from_utf8(message.delivery.data.clone()).unwrap());
                message
                    .delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .unwrap();
            }
            out
        })
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
    }
}
