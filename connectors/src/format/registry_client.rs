//! A client of Confluent's Schema Registry REST API, the subset the
//! `avro-confluent` format needs (Apicurio and Redpanda serve it too):
//!
//! ```text
//!   GET  /schemas/ids/{id}             → {"schema": "<Avro schema JSON>"}   (404: unknown id)
//!   POST /subjects/{subject}/versions  ← {"schema": "..."}  → {"id": n}     (registers, or finds)
//! ```
//!
//! Plain HTTP/1.1 over a TCP stream, one request per connection; `https`
//! is not supported yet. Schemas are immutable per id, so callers cache
//! them.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::{ConnectorError, Result};

const TIMEOUT: Duration = Duration::from_secs(10);
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry at `http://host:port[/path]`.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    url: String,
    host: String,
    port: u16,
    base: String,
}

impl RegistryClient {
    pub fn new(url: &str) -> Result<Self> {
        let bad = |why: &str| ConnectorError::Option {
            option: super::avro::URL.into(),
            message: format!("'{url}' {why}"),
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("is not an http:// URL (https is not supported yet)"))?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad("has a bad port"))?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        Ok(Self {
            url: url.to_string(),
            host: host.to_string(),
            port,
            base: base.to_string(),
        })
    }

    /// The schema registered under `id`; `None` if the registry has none.
    pub fn schema(&self, id: u32) -> Result<Option<String>> {
        let (status, body) = self.request("GET", &format!("/schemas/ids/{id}"), None)?;
        match status {
            200 => match self.field(&body, "schema")? {
                serde_json::Value::String(schema) => Ok(Some(schema)),
                _ => Err(self.error(status, &body)),
            },
            404 => Ok(None),
            _ => Err(self.error(status, &body)),
        }
    }

    /// Registers `schema` under `subject` (or finds it there); its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("/subjects/{subject}/versions");
        let (status, reply) = self.request("POST", &path, Some(&body))?;
        if status != 200 {
            return Err(self.error(status, &reply));
        }
        let id = self.field(&reply, "id")?;
        id.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| self.error(status, &reply))
    }

    fn field(&self, body: &str, name: &str) -> Result<serde_json::Value> {
        let value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
            ConnectorError::Config(format!("schema registry {}: bad reply: {e}", self.url))
        })?;
        let field = match &value[name] {
            serde_json::Value::Null => {
                return Err(ConnectorError::Config(format!(
                    "schema registry {}: no '{name}' in its reply {body}",
                    self.url
                )));
            }
            other => other.clone(),
        };
        Ok(field)
    }

    fn error(&self, status: u16, body: &str) -> ConnectorError {
        ConnectorError::Config(format!(
            "schema registry {}: HTTP {status}: {}",
            self.url,
            body.trim()
        ))
    }

    /// One request on a fresh connection: the status and the body.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let io = |e: std::io::Error| {
            ConnectorError::Config(format!("schema registry {}: {e}", self.url))
        };
        let address = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("no address")))?;
        let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(io)?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nAccept: {CONTENT_TYPE}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.base,
            self.host,
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).map_err(io)?;
        parse_reply(&reply).ok_or_else(|| {
            ConnectorError::Config(format!(
                "schema registry {}: a malformed HTTP reply",
                self.url
            ))
        })
    }
}

/// An HTTP/1.1 reply's status and body (by length, chunks or to the end).
fn parse_reply(reply: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if !chunked {
        return Some((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_replies() {
        let c = RegistryClient::new("http://registry:8081/apis/ccompat/v7/").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.base.as_str()),
            ("registry", 8081, "/apis/ccompat/v7")
        );
        assert!(RegistryClient::new("https://r:1").is_err());
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"id\":1}";
        assert_eq!(parse_reply(plain), Some((200, "{\"id\":1}".into())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_reply(chunked), Some((404, "{\"a\":1}".into())));
    }
}
