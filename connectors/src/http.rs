//! `connector = 'http'`: rows sent to a URL in batches, for webhooks and
//! event gateways, over hyper's HTTP/1 client.
//!
//! Each subtask keeps the rows since the last request and sends them at
//! every checkpoint barrier (and whenever `'sink.batch.max-rows'` are
//! waiting): in JSON, a request's body is an array of the rows' objects;
//! in another format, its records a line each. A request that fails to
//! connect, times out, or is answered 408, 429 or 5xx is sent again after
//! a backoff that doubles from `'sink.retry.initial-backoff'` to
//! `'sink.retry.max-backoff'`, up to `'sink.retry.max-attempts'` in all;
//! then, or at another 4xx, the job fails (and its restart strategy takes
//! over). Every request carries an idempotency key (`Idempotency-Key`),
//! the same on each of its retries, so a receiver can drop a repeat.
//!
//! At-least-once: the barrier waits for the rows before it to be
//! accepted, and a restore sends the rows since the last checkpoint
//! again, in new requests with new keys (their batches may be cut
//! otherwise, so a receiver must not take one for another).

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_operators::operator::OperatorContext;
use eddy_operators::sink::{Sink, SinkCommit};
use eddy_operators::{DeliveryGuarantee, OperatorError, SinkProvider};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::format::{Encoder, Format};
use crate::options::{OptionDecl, OptionType, Options};
use crate::registry::{Connector, ConnectorContext, FormatSupport};
use crate::{ConnectorError, Result, option_error};

const URL: &str = "url";
const METHOD: &str = "method";
const HEADERS: &str = "headers.*";
const MAX_ROWS: &str = "sink.batch.max-rows";
const ATTEMPTS: &str = "sink.retry.max-attempts";
const INITIAL: &str = "sink.retry.initial-backoff";
const MAX_BACKOFF: &str = "sink.retry.max-backoff";
const TIMEOUT: &str = "sink.request-timeout";
/// The header of a request's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// `connector = 'http'`.
#[derive(Debug)]
pub struct HttpConnector;

impl Connector for HttpConnector {
    fn name(&self) -> &'static str {
        "http"
    }

    fn help(&self) -> &'static str {
        "rows sent to an HTTP endpoint in batches (webhooks), retried with backoff, each request with an idempotency key; at-least-once"
    }

    fn options(&self) -> Vec<OptionDecl> {
        vec![
            OptionDecl::required(
                URL,
                OptionType::String,
                "http://host:port/path (TLS is not built in: put a proxy in front of an https endpoint)",
            ),
            OptionDecl::optional(
                METHOD,
                OptionType::OneOf(&["POST", "PUT"]),
                "POST",
                "the request's method",
            ),
            OptionDecl::unset(
                HEADERS,
                OptionType::String,
                "a header of every request (headers.Authorization = 'Bearer ...')",
            ),
            OptionDecl::optional(
                MAX_ROWS,
                OptionType::Count,
                "500",
                "rows per request at most",
            ),
            OptionDecl::optional(
                ATTEMPTS,
                OptionType::Count,
                "5",
                "sends of a request before the job fails with its last error",
            ),
            OptionDecl::optional(
                INITIAL,
                OptionType::Duration,
                "100 ms",
                "the first wait before a retry, doubled each time",
            ),
            OptionDecl::optional(
                MAX_BACKOFF,
                OptionType::Duration,
                "10 s",
                "the longest wait between retries",
            ),
            OptionDecl::optional(
                TIMEOUT,
                OptionType::Duration,
                "30 s",
                "how long a request may take before it is sent again",
            ),
        ]
        .into_iter()
        .map(OptionDecl::sink_only)
        .collect()
    }

    fn format(&self) -> FormatSupport {
        FormatSupport::Optional("json")
    }

    fn is_sink(&self) -> bool {
        true
    }

    fn sink(&self, ctx: &ConnectorContext<'_>) -> Result<Arc<dyn SinkProvider>> {
        Ok(Arc::new(HttpSinkProvider::try_new(ctx)?))
    }

    fn guarantee(&self, _options: &Options) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

/// Where and how requests go, shared by the writers.
#[derive(Debug)]
struct Endpoint {
    /// `host:port`.
    authority: String,
    /// The path and query.
    path: String,
    method: hyper::Method,
    headers: Vec<(String, String)>,
    max_rows: usize,
    attempts: u64,
    initial: Duration,
    max_backoff: Duration,
    timeout: Duration,
    /// JSON: a request's body is an array.
    json: bool,
    content_type: &'static str,
}

/// `connector = 'http'` as a sink.
#[derive(Debug)]
pub struct HttpSinkProvider {
    endpoint: Arc<Endpoint>,
    format: Arc<dyn Format>,
    options: Options,
    schema: datafusion::arrow::datatypes::SchemaRef,
    table: String,
}

impl HttpSinkProvider {
    fn try_new(ctx: &ConnectorContext<'_>) -> Result<Self> {
        let options = ctx.options;
        let url = options.require(URL)?.trim();
        if url.starts_with("https://") {
            return Err(option_error(
                URL,
                "this build has no TLS: send to http:// (a proxy in front of the https endpoint)",
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| option_error(URL, format!("'{url}' is not an http:// URL")))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(option_error(URL, format!("'{url}' names no host")));
        }
        let authority = match authority.contains(':') {
            true => authority.to_string(),
            false => format!("{authority}:80"),
        };
        let format = ctx.formats.chosen(options)?.clone();
        format.encoder(ctx.schema, options)?.ok_or_else(|| {
            ConnectorError::Config(format!("the format '{}' cannot be written", format.name()))
        })?;
        let headers = options
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("headers.")?.to_string(), v.clone())))
            .collect();
        let ms = |key: &str, default: u64| -> Result<Duration> {
            Ok(Duration::from_millis(
                options
                    .duration_ms(key)?
                    .map_or(default, |ms| ms.max(1) as u64),
            ))
        };
        let json = format.name() == "json";
        let endpoint = Endpoint {
            authority,
            path: path.to_string(),
            method: match options.get(METHOD) {
                Some("PUT") => hyper::Method::PUT,
                _ => hyper::Method::POST,
            },
            headers,
            max_rows: options.count(MAX_ROWS)?.unwrap_or(500).max(1) as usize,
            attempts: options.count(ATTEMPTS)?.unwrap_or(5).max(1),
            initial: ms(INITIAL, 100)?,
            max_backoff: ms(MAX_BACKOFF, 10_000)?,
            timeout: ms(TIMEOUT, 30_000)?,
            json,
            content_type: if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            },
        };
        Ok(Self {
            endpoint: Arc::new(endpoint),
            format,
            options: options.clone(),
            schema: ctx.schema.clone(),
            table: ctx.name.to_string(),
        })
    }
}

impl SinkProvider for HttpSinkProvider {
    fn writer(&self) -> eddy_operators::Result<Box<dyn Sink>> {
        let encoder = self
            .format
            .encoder(&self.schema, &self.options)?
            .ok_or_else(|| OperatorError::Connector("http: the format cannot be written".into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OperatorError::Connector(format!("http: a runtime: {e}")))?;
        Ok(Box::new(HttpWriter {
            endpoint: self.endpoint.clone(),
            encoder,
            runtime,
            rows: Vec::new(),
            key_prefix: String::new(),
            requests: 0,
            table: self.table.clone(),
        }))
    }

    fn guarantee(&self) -> DeliveryGuarantee {
        DeliveryGuarantee::AtLeastOnce
    }
}

struct HttpWriter {
    endpoint: Arc<Endpoint>,
    encoder: Box<dyn Encoder>,
    runtime: tokio::runtime::Runtime,
    /// Encoded rows not yet sent.
    rows: Vec<Vec<u8>>,
    /// `<table>-<subtask>-<start ms>-`: a request's key is this and its
    /// number, new in every run.
    key_prefix: String,
    requests: u64,
    table: String,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    reason: String,
    retry: bool,
}

impl HttpWriter {
    /// Sends the waiting rows, `max_rows` a request.
    fn send_all(&mut self) -> eddy_operators::Result<()> {
        let rows = std::mem::take(&mut self.rows);
        for chunk in rows.chunks(self.endpoint.max_rows) {
            self.send(chunk)?;
        }
        Ok(())
    }

    /// One request of `rows`, retried with backoff.
    fn send(&mut self, rows: &[Vec<u8>]) -> eddy_operators::Result<()> {
        let e = self.endpoint.clone();
        let mut body = Vec::new();
        if e.json {
            body.push(b'[');
        }
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                body.push(if e.json { b',' } else { b'\n' });
            }
            body.extend_from_slice(row);
        }
        body.push(if e.json { b']' } else { b'\n' });
        let body = Bytes::from(body);
        self.requests += 1;
        let key = format!("{}{}", self.key_prefix, self.requests);
        let mut backoff = e.initial;
        for attempt in 1..=e.attempts {
            let failure = match self.runtime.block_on(attempt_once(&e, body.clone(), &key)) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if !failure.retry || attempt == e.attempts {
                return Err(OperatorError::Connector(format!(
                    "http: {} {}{} for {} (request {key}, attempt {attempt} of {}): {}",
                    e.method, e.authority, e.path, self.table, e.attempts, failure.reason
                )));
            }
            tracing::warn!(
                "http: {}{}: {}; sending again in {} ms",
                e.authority,
                e.path,
                failure.reason,
                backoff.as_millis()
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(e.max_backoff);
        }
        Ok(())
    }
}

/// One attempt of a request.
async fn attempt_once(e: &Endpoint, body: Bytes, key: &str) -> std::result::Result<(), Failure> {
    let retry = |reason: String| Failure {
        reason,
        retry: true,
    };
    let request = async {
        let stream = tokio::net::TcpStream::connect(&e.authority)
            .await
            .map_err(|err| retry(format!("cannot connect: {err}")))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|err| retry(err.to_string()))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(e.method.clone())
            .uri(&e.path)
            .header(hyper::header::HOST, &e.authority)
            .header(hyper::header::CONTENT_TYPE, e.content_type)
            .header(IDEMPOTENCY_KEY, key);
        for (name, value) in &e.headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|err| Failure {
            reason: format!("a header that HTTP does not take: {err}"),
            retry: false,
        })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| retry(err.to_string()))?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let reason = format!(
            "answered {status}: {}",
            text.chars().take(200).collect::<String>()
        );
        Err(Failure {
            reason,
            retry: status.is_server_error() || matches!(status.as_u16(), 408 | 429),
        })
    };
    match tokio::time::timeout(e.timeout, request).await {
        Ok(result) => result,
        Err(_) => Err(retry(format!("no answer in {} ms", e.timeout.as_millis()))),
    }
}

impl Sink for HttpWriter {
    fn name(&self) -> String {
        format!("http {}{}", self.endpoint.authority, self.endpoint.path)
    }

    fn open(&mut self, ctx: &OperatorContext) -> eddy_operators::Result<()> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        self.key_prefix = format!("{}-{}-{started}-", self.table, ctx.subtask);
        Ok(())
    }

    fn write_batch(&mut self, batch: &RecordBatch) -> eddy_operators::Result<()> {
        self.rows.extend(self.encoder.records(batch)?);
        if self.rows.len() >= self.endpoint.max_rows {
            self.send_all()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> eddy_operators::Result<()> {
        self.send_all()
    }

    fn pre_commit(&mut self, _checkpoint: u64, _last: bool) -> eddy_operators::Result<SinkCommit> {
        self.send_all()?;
        Ok(SinkCommit::default())
    }
}
