//! `eddy sql --server URL`: statements over the server's HTTP API.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header;
use serde_json::{Value, json};

use super::{Backend, Interrupt, print_table};

/// A server's API, through hyper's HTTP/1 client on a small runtime.
pub(super) struct Remote {
    runtime: tokio::runtime::Runtime,
    /// `host:port`.
    authority: String,
    token: Option<String>,
}

impl Remote {
    pub(super) fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--server takes an http:// URL, such as http://127.0.0.1:8080 (not {url})");
        };
        let authority = rest.trim_end_matches('/').to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a runtime")?;
        Ok(Self {
            runtime,
            authority,
            token,
        })
    }

    /// Sends a request; the response, its body still to read.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, String)],
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot reach the server at {}", self.authority))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (k, v) in extra {
            request = request.header(*k, v);
        }
        let bytes = match body {
            Some(b) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        Ok(sender.send_request(request.body(Full::new(bytes))?).await?)
    }

    /// A request whose answer is JSON: its status and body.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        self.runtime.block_on(async {
            let response = self.send(method, path, body, &[]).await?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await?.to_bytes();
            let value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
            Ok((status, value))
        })
    }

    /// `SUBSCRIBE v`: the view's rows, then its changes, until Ctrl-C.
    fn subscribe(&self, view: &str, interrupt: &Interrupt) -> anyhow::Result<()> {
        let (_, views) = self.call("GET", "/api/views", None)?;
        let columns: Vec<String> = views["views"]
            .as_array()
            .and_then(|vs| vs.iter().find(|v| v["name"] == view))
            .map(|v| {
                v["columns"]
                    .as_array()
                    .map(|cs| {
                        cs.iter()
                            .filter_map(|c| c["name"].as_str())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .with_context(|| format!("there is no materialized view '{view}'"))?;
        println!("op | {}", columns.join(" | "));
        self.runtime.block_on(async {
            let response = self
                .send("GET", &format!("/api/views/{view}/subscribe"), None, &[])
                .await?;
            if !response.status().is_success() {
                bail!("the server answered {}", response.status());
            }
            let mut body = response.into_body();
            let mut buffer = String::new();
            loop {
                if interrupt.take() {
                    eprintln!("(stopped following {view})");
                    return Ok(());
                }
                let frame =
                    match tokio::time::timeout(Duration::from_millis(100), body.frame()).await {
                        Err(_) => continue,
                        Ok(None) => return Ok(()),
                        Ok(Some(frame)) => frame?,
                    };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.push_str(&String::from_utf8_lossy(&data));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    print_event(&event, &columns);
                }
            }
        })
    }
}

/// One SSE event as a line: `+I | 1 | 3`, or what ended the stream.
fn print_event(event: &str, columns: &[String]) {
    let field = |name: &str| {
        event
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
    };
    let data: Value = field("data:")
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or(Value::Null);
    match field("event:").as_deref() {
        Some("change") => {
            let row = &data["row"];
            let cells: Vec<String> = columns
                .iter()
                .map(|c| match &row[c] {
                    Value::Null => "NULL".to_string(),
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                })
                .collect();
            println!(
                "{} | {}",
                data["op"].as_str().unwrap_or("?"),
                cells.join(" | ")
            );
        }
        Some("reset") => println!("(the view went back to a checkpoint: its rows follow again)"),
        Some("close") => println!("(closed: {})", data["reason"].as_str().unwrap_or("")),
        _ => {}
    }
}

/// `SUBSCRIBE [TO] name` alone (a `;` after it), if the text is that.
fn subscribe_target(sql: &str) -> Option<String> {
    let words: Vec<&str> = sql
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .collect();
    match words.as_slice() {
        [s, name] if s.eq_ignore_ascii_case("subscribe") => Some(name.to_string()),
        [s, to, name] if s.eq_ignore_ascii_case("subscribe") && to.eq_ignore_ascii_case("to") => {
            Some(name.to_string())
        }
        _ => None,
    }
}

impl Backend for Remote {
    fn run(&mut self, sql: &str, interrupt: &Interrupt) -> anyhow::Result<()> {
        if let Some(view) = subscribe_target(sql) {
            return self.subscribe(&view, interrupt);
        }
        let (status, body) = self.call("POST", "/api/sql", Some(json!({ "sql": sql })))?;
        for result in body["results"].as_array().into_iter().flatten() {
            print_result(result);
        }
        if let Some(e) = body.get("error") {
            match e["rendered"].as_str() {
                Some(rendered) => eprint!("{rendered}"),
                None => eprintln!("error: {}", e["message"].as_str().unwrap_or("?")),
            }
        } else if status == 401 {
            bail!("the server needs its token: --token or EDDY_AUTH_TOKEN");
        } else if !(200..300).contains(&status) {
            bail!("the server answered {status}: {body}");
        }
        Ok(())
    }
}

fn print_result(result: &Value) {
    let text = |k: &str| result[k].as_str().unwrap_or_default().to_string();
    match result["kind"].as_str() {
        Some("created") => println!("created {}", text("name")),
        Some("job") => println!("started job {}", text("job")),
        Some("explain") => print!("{}", text("plan")),
        Some("info") => print!("{}", text("text")),
        Some("rows") => {
            let columns: Vec<String> = result["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect();
            let rows = result["rows"].as_array().cloned().unwrap_or_default();
            print_table(&columns, &rows);
        }
        _ => println!("{result}"),
    }
}

#[cfg(test)]
mod tests {
    use super::subscribe_target;

    #[test]
    fn subscribe_is_recognised_alone() {
        assert_eq!(subscribe_target("SUBSCRIBE v;\n"), Some("v".into()));
        assert_eq!(
            subscribe_target("subscribe to counts ;"),
            Some("counts".into())
        );
        assert_eq!(subscribe_target("SELECT * FROM v;"), None);
        assert_eq!(subscribe_target("SUBSCRIBE v; SELECT 1;"), None);
    }
}
