//! A small schema registry speaking the subset of Confluent's REST API that
//! `avro-confluent` uses, for the tests: register a schema under a subject
//! (the same schema text gets the same id), and get a schema by id.
//!
//! Apicurio Registry serves this API too, but it is a Quarkus application
//! of some hundred megabytes; this stands in for it, on a free port, in a
//! thread of the test.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Schemas {
    /// Schema texts by id (ids from 1).
    by_id: BTreeMap<u32, String>,
    /// Each subject's ids, in registration order.
    subjects: BTreeMap<String, Vec<u32>>,
}

/// A running registry.
pub struct Registry {
    pub url: String,
    schemas: Arc<Mutex<Schemas>>,
}

impl Registry {
    pub fn start() -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let schemas = Arc::new(Mutex::new(Schemas::default()));
        let state = schemas.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &state);
            }
        });
        Registry { url, schemas }
    }

    /// Registers `schema` under `subject`, as a producer would; its id.
    pub fn register(&self, subject: &str, schema: &str) -> u32 {
        register(&mut self.schemas.lock().unwrap(), subject, schema)
    }

    /// The ids registered under `subject`, oldest first.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        let schemas = self.schemas.lock().unwrap();
        schemas.subjects.get(subject).cloned().unwrap_or_default()
    }

    /// The schema text of `id`.
    pub fn schema(&self, id: u32) -> Option<String> {
        self.schemas.lock().unwrap().by_id.get(&id).cloned()
    }
}

fn register(schemas: &mut Schemas, subject: &str, schema: &str) -> u32 {
    let id = match schemas.by_id.iter().find(|(_, s)| *s == schema) {
        Some((id, _)) => *id,
        None => {
            let id = schemas.by_id.len() as u32 + 1;
            schemas.by_id.insert(id, schema.to_string());
            id
        }
    };
    let versions = schemas.subjects.entry(subject.to_string()).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    id
}

fn serve(stream: TcpStream, state: &Mutex<Schemas>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let (status, reply) = answer(method, path, &body, state);
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    )
}

fn answer(method: &str, path: &str, body: &[u8], state: &Mutex<Schemas>) -> (u16, String) {
    let mut schemas = state.lock().unwrap();
    let not_found = |what: &str| {
        let reply =
            serde_json::json!({"error_code": 40403, "message": format!("{what} not found")});
        (404, reply.to_string())
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("GET", ["schemas", "ids", id]) => {
            match id.parse().ok().and_then(|id: u32| schemas.by_id.get(&id)) {
                Some(schema) => (200, serde_json::json!({ "schema": schema }).to_string()),
                None => not_found("Schema"),
            }
        }
        ("POST", ["subjects", subject, "versions"]) => {
            let request: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => return (422, r#"{"error_code":42201,"message":"bad schema"}"#.into()),
            };
            let schema = request["schema"].as_str().unwrap_or_default().to_string();
            let id = register(&mut schemas, subject, &schema);
            (200, serde_json::json!({ "id": id }).to_string())
        }
        _ => not_found("Path"),
    }
}
